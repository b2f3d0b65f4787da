// Per-vCPU interrupt state: the local APIC plus the INIT/SIPI/NMI flags and the run state that
// other threads change (IPI senders, the IOAPIC, the APIC timer, a stop), and the vCPU thread's
// side of it: what to do before each entry (`nextEntry`, deciding with `VCPUEntry.decide`), the
// guest's APIC accesses, CR8 and HLT.
//
// Threading: every field is guarded by `cond` (an NSCondition, broadcast whenever something a
// parked vCPU waits for changes). Never take another vCPU's lock or the timer lock while holding
// this one. No KVM here: the vCPU is reached only through `kick`.
import Foundation

/// Where a vCPU's thread is in its life (changed by its own thread and by INIT/SIPI senders).
public enum VCPURunState: Equatable, Sendable {
    /// After INIT (and at power-on for APs): stays out of KVM_RUN until a SIPI.
    case waitingForSIPI
    case running
    /// After HLT: parked until an interrupt it can take (IF was `interruptsEnabled`), an NMI,
    /// an INIT or a stop.
    case halted(interruptsEnabled: Bool)
}

/// One vCPU's interrupt state (see the file comment for the locking rules).
public final class VCPUInterrupts: @unchecked Sendable {
    public let index: Int
    let cond = NSCondition()
    var apic: LocalAPIC
    var pendingNMI = false
    var pendingINIT = false
    var sipiVector: UInt8?
    var state: VCPURunState
    /// Level of LINT0 as the 8259's INT output drives it (the boot vCPU's; false elsewhere).
    var lint0 = false
    /// Live migration (VCPUMigration.swift): this node runs the vCPU (false: it lives on another
    /// node and this copy is idle), a requested departure, the state that arrived for it.
    var resident = true
    var departure: UInt32?
    var arrival: (any Sendable)?
    /// Forces the vCPU out of guest mode (any thread; `VCPU.kick()` for a KVM vCPU). Called
    /// without this lock held.
    let kick: @Sendable () -> Void

    /// `state`: `.running` for the boot vCPU, `.waitingForSIPI` for the others.
    public init(index: Int, busHz: UInt64, state: VCPURunState, kick: @escaping @Sendable () -> Void = {}) {
        self.index = index
        self.apic = LocalAPIC(id: UInt8(truncatingIfNeeded: index), busHz: busHz)
        self.state = state
        self.kick = kick
    }

    /// Runs body under the lock.
    func locked<R>(_ body: (VCPUInterrupts) throws -> R) rethrows -> R {
        cond.lock()
        defer { cond.unlock() }
        return try body(self)
    }

    /// A snapshot of the APIC (tests, register dumps).
    public var apicSnapshot: LocalAPIC { locked { $0.apic } }
    public var runState: VCPURunState { locked { $0.state } }

    /// Wakes the vCPU's thread wherever it waits: parked (broadcast) or in guest mode (kick).
    /// Used to make it notice a stop.
    public func wake() {
        cond.lock()
        cond.broadcast()
        cond.unlock()
        kick()
    }

    /// Applies an interrupt message (the local half of delivery). Returns true when the vCPU
    /// must be kicked out of KVM_RUN: only when it is running. A halted or SIPI-waiting vCPU is
    /// not in KVM_RUN and re-checks its state under this lock before sleeping, so the broadcast
    /// is enough.
    func receive(_ m: InterruptMessage) -> Bool {
        cond.lock()
        defer { cond.unlock() }
        return receiveLocked(m)
    }

    /// `receive` with the lock held.
    func receiveLocked(_ m: InterruptMessage) -> Bool {
        if apic.mode == .disabled { return false }   // a hardware-disabled APIC takes no message
        var wake = true
        switch m.mode {
        case .fixed, .lowestPriority, .extINT:
            wake = apic.accept(vector: m.vector, levelTriggered: m.levelTriggered)
        case .nmi:
            pendingNMI = true
        case .initialize:
            pendingINIT = true
            sipiVector = nil
        case .startup:
            if (state == .waitingForSIPI || pendingINIT) && sipiVector == nil {
                sipiVector = m.vector
            } else {
                wake = false // a SIPI to a running CPU is ignored (the usual second SIPI)
            }
        case .smi, .reserved3:
            wake = false
        }
        if wake { cond.broadcast() }
        return wake && state == .running
    }

    // ---- the vCPU thread's side ----------------------------------------------------------------

    /// Before each entry, on the vCPU's thread: decides what to do (`VCPUEntry.decide`) and
    /// applies the interrupt-state half of the decision under the lock — INIT consumed and the
    /// APIC reset, SIPI vector consumed, NMI taken, the injected vector acknowledged (IRR to ISR),
    /// the run state updated — parking on the lock's condition while the decision is `.park`.
    /// Never returns `.park`. `canInject`: the guest could take an external interrupt after its
    /// last exit (kvm_run ready_for_interrupt_injection and IF); `stopping` is re-read after
    /// every wake-up.
    public func nextEntry(canInject: Bool, stopping: () -> Bool) -> VCPUEntry.Action {
        cond.lock()
        defer { cond.unlock() }
        while true {
            if let m = migrationAction(stopping: stopping()) {   // VCPUMigration.swift
                if m == .park { cond.wait(); continue }
                return m
            }
            let action = VCPUEntry.decide(VCPUEntry.State(
                stopping: stopping(), runState: state, pendingINIT: pendingINIT, sipiVector: sipiVector,
                pendingNMI: pendingNMI, deliverableVector: apic.deliverableVector, canInject: canInject,
                cr8: apic.cr8, extINT: extINTPending))
            switch action {
            case .stop:
                break
            case .park:
                cond.wait()
                continue
            case .reset:
                pendingINIT = false
                pendingNMI = false
                state = .waitingForSIPI
                apic.reset()
            case .start:
                sipiVector = nil
                state = .running
            case let .enter(e):
                state = .running
                if e.nmi { pendingNMI = false }
                if let v = e.inject { apic.acknowledge(v) }
            case .depart, .arrive:
                break   // decide never returns them (migrationAction does)
            }
            return action
        }
    }

    /// The guest halted (HLT exit) with RFLAGS.IF = `interruptsEnabled`.
    public func halt(interruptsEnabled: Bool) {
        locked { $0.state = .halted(interruptsEnabled: interruptsEnabled) }
    }

    /// The guest changed CR8 (the TPR class) while it ran.
    public func guestSetCR8(_ cr8: UInt64) {
        locked { $0.apic.setCR8(cr8) }
    }

    /// A guest write to its APIC register `offset` (4-byte aligned within the 16-byte slot):
    /// the effects to carry out, and the APIC's address after the write.
    public func writeAPIC(_ offset: UInt32, _ value: UInt32, now: UInt64) -> (effects: [APICEffect], address: APICAddress) {
        locked { s in (s.apic.write(offset, value, now: now), s.apic.address) }
    }

    /// A guest read of its APIC register `offset`.
    public func readAPIC(_ offset: UInt32, now: UInt64) -> UInt32 {
        locked { $0.apic.read(offset, now: now) }
    }

    // ---- IA32_APIC_BASE, x2APIC, LINT0 ------------------------------------------------------------

    /// IA32_APIC_BASE changed to `value` (KVM accepted the guest's WRMSR): the effects and the
    /// APIC's address afterwards.
    public func setAPICBase(_ value: UInt64) -> (effects: [APICEffect], address: APICAddress) {
        locked { s in
            let e = s.apic.setBaseMSR(value)
            if !e.isEmpty { s.cond.broadcast() }
            return (e, s.apic.address)
        }
    }

    /// RDMSR of an x2APIC MSR: the value, or nil for #GP.
    public func readX2APIC(_ msr: UInt32, now: UInt64) -> UInt64? {
        locked { $0.apic.readMSR(msr, now: now) }
    }

    /// WRMSR of an x2APIC MSR: the effects (nil for #GP) and the APIC's address afterwards.
    public func writeX2APIC(_ msr: UInt32, _ value: UInt64, now: UInt64) -> (effects: [APICEffect]?, address: APICAddress) {
        locked { s in (s.apic.writeMSR(msr, value, now: now), s.apic.address) }
    }

    /// The 8259's INTR as LINT0 sees it: ExtINT (and a hardware-disabled APIC's pass-through)
    /// follows the level; Fixed and NMI entries fire on the rising edge. Kicks the vCPU out of
    /// KVM_RUN when it must take the interrupt.
    public func setLINT0(_ level: Bool) {
        if lockedSetLINT0(level) { kick() }
    }

    func lockedSetLINT0(_ level: Bool) -> Bool {
        cond.lock()
        defer { cond.unlock() }
        let rising = level && !lint0
        lint0 = level
        var wake = extINTPending
        if rising, apic.mode != .disabled, let m = apic.lintMessage(pin: 0) {
            switch m.mode {
            case .fixed: wake = apic.accept(vector: m.vector, levelTriggered: false) || wake
            case .nmi: pendingNMI = true; wake = true
            default: break
            }
        }
        if wake { cond.broadcast() }
        return wake && state == .running
    }

    /// Called with the lock held: the 8259's INTR reaches the CPU now.
    var extINTPending: Bool {
        guard lint0 else { return false }
        if apic.mode == .disabled { return true }
        return apic.lintMessage(pin: 0)?.mode == .extINT
    }
}
