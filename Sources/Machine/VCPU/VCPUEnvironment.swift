// What the vCPU runners of one machine share and act on besides their own vCPU and interrupt
// state: the I/O bus, the interrupt router, the stop flag, the clock, the coherence fence, where a
// level-triggered EOI goes, and the APIC timer. The Machine builds one; the runner tests build one
// around a bare bus and router (no KVM).
//
// Threading: immutable after init except the stop flag (atomic); read from every vCPU thread.
import Interrupts
import Synchronization

final class VCPUEnvironment: @unchecked Sendable {
    let bus: IOBus
    let router: InterruptRouter
    /// Monotonic nanoseconds (the APIC timers' time base).
    let clock: () -> UInt64
    /// The coherence plugin's fence (nil: none): GVM_FENCE_RELEASE before the VMM acts on an I/O
    /// or MMIO exit and on HLT, GVM_FENCE_ACQUIRE when an interrupt is injected; on the vCPU's
    /// thread with its global index.
    let fence: ((_ vcpu: Int, _ kind: UInt32) -> Void)?
    /// A level-triggered EOI from a local APIC: to the IOAPIC here, or forwarded to its node.
    let levelEOI: (UInt8) -> Void
    /// An APIC timer was (re)programmed.
    let rearmTimer: () -> Void
    /// The 8259's interrupt acknowledge (INTA) when a vCPU takes its ExtINT: the vector, or nil
    /// when there is no 8259 on this node.
    let acknowledgeExtINT: () -> UInt8?
    /// Guest RAM size: an xAPIC page moved below it is shadowed by RAM (KVM maps RAM first).
    let ramBytes: UInt64
    private let stopFlag = Atomic<Bool>(false)
    /// Where departing vCPUs' states go (live migration; set before the vCPUs run).
    var migration: (any VCPUMigrationSink)?

    init(bus: IOBus, router: InterruptRouter, clock: @escaping () -> UInt64,
         fence: ((_ vcpu: Int, _ kind: UInt32) -> Void)?, levelEOI: @escaping (UInt8) -> Void,
         rearmTimer: @escaping () -> Void, acknowledgeExtINT: @escaping () -> UInt8? = { nil }, ramBytes: UInt64 = 0) {
        self.acknowledgeExtINT = acknowledgeExtINT
        self.ramBytes = ramBytes
        self.bus = bus
        self.router = router
        self.clock = clock
        self.fence = fence
        self.levelEOI = levelEOI
        self.rearmTimer = rearmTimer
    }

    var isStopping: Bool { stopFlag.load(ordering: .acquiring) }

    /// Sets the stop flag (the caller then wakes every vCPU: `VCPUInterrupts.wake()`).
    func markStopping() { stopFlag.store(true, ordering: .releasing) }
}
