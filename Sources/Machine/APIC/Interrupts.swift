// Interrupt delivery between vCPUs: per-vCPU interrupt state (the APIC plus INIT/SIPI/NMI
// flags and the run state other threads change), the router that resolves destinations to
// vCPU indices and delivers to each, and the APIC timer thread.
import Foundation
import KVM
import Synchronization

/// Where a vCPU's thread is in its life (changed by its own thread and by INIT/SIPI senders).
public enum VCPURunState: Equatable, Sendable {
    /// After INIT (and at power-on for APs): stays out of KVM_RUN until a SIPI.
    case waitingForSIPI
    case running
    /// After HLT: parked until an interrupt it can take (IF was `interruptsEnabled`), an NMI,
    /// an INIT or a stop.
    case halted(interruptsEnabled: Bool)
}

/// One vCPU's interrupt state. Threading: every field is guarded by `cond` (an NSCondition,
/// broadcast whenever something a parked vCPU waits for changes). Never take another vCPU's
/// lock or the timer lock while holding this one.
public final class VCPUInterrupts: @unchecked Sendable {
    public let index: Int
    let cond = NSCondition()
    var apic: LocalAPIC
    var pendingNMI = false
    var pendingINIT = false
    var sipiVector: UInt8?
    var state: VCPURunState
    /// Set once the vCPU exists locally; used to kick it out of KVM_RUN.
    var vcpu: VCPU?

    init(index: Int, busHz: UInt64, state: VCPURunState) {
        self.index = index
        self.apic = LocalAPIC(id: UInt8(truncatingIfNeeded: index), busHz: busHz)
        self.state = state
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

    /// Applies an interrupt message (the local half of delivery). Returns true when the vCPU
    /// must be kicked out of KVM_RUN: only when it is running. A halted or SIPI-waiting vCPU is
    /// not in KVM_RUN and re-checks its state under this lock before sleeping, so the broadcast
    /// is enough.
    func receive(_ m: InterruptMessage) -> Bool {
        cond.lock()
        defer { cond.unlock() }
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
}

/// Resolves interrupt destinations to vCPU indices and delivers to each. Delivery to a vCPU of
/// another node goes through `remoteDelivery` (a later issue forwards it over the cluster);
/// today every vCPU is local. Threading: any thread.
public final class InterruptRouter: @unchecked Sendable {
    /// Every vCPU of the VM, by global index (nil = lives on another node).
    let local: [VCPUInterrupts?]
    /// Destination-resolution view of every APIC (kept in step by `addressingChanged`).
    let addresses: Mutex<[APICAddress]>
    /// Hook for vCPUs that are not local: (global index, message). Set before the VM runs.
    public var remoteDelivery: ((Int, InterruptMessage) -> Void)?
    /// Hook called when a local APIC's ID, LDR or DFR changed (global index, new address), so
    /// the change can be broadcast to the other nodes. Set before the VM runs.
    public var addressingChanged: ((Int, APICAddress) -> Void)?
    /// Counters for the stop summary.
    let delivered = Atomic<UInt64>(0)
    /// Interrupt messages delivered to vCPUs so far (IPIs, timer excluded, IOAPIC included).
    public var deliveredCount: UInt64 { delivered.load(ordering: .relaxed) }

    init(local: [VCPUInterrupts?]) {
        self.local = local
        addresses = Mutex(local.indices.map { APICAddress(id: UInt8(truncatingIfNeeded: $0)) })
    }

    /// Sends an IPI from vCPU `source` (an ICR write).
    func send(_ cmd: InterruptCommand, from source: Int) {
        if cmd.isINITDeassert { return }
        let targets = resolve(cmd, source: source)
        let m = InterruptMessage(mode: cmd.mode, vector: cmd.vector, levelTriggered: cmd.levelTriggered)
        for t in targets { deliver(to: t, m, kick: t != source) }
    }

    /// "Deliver to vCPU i": local now, through `remoteDelivery` for a vCPU on another node.
    public func deliver(to index: Int, _ m: InterruptMessage, kick: Bool = true) {
        guard index >= 0 && index < local.count else { return }
        delivered.add(1, ordering: .relaxed)
        guard let target = local[index] else {
            remoteDelivery?(index, m)
            return
        }
        if target.receive(m) && kick { target.vcpu?.kick() }
    }

    /// Delivers a message addressed the way the IOAPIC (or an MSI) addresses it: physical APIC
    /// id or logical destination, fixed or lowest priority (then one target).
    public func deliver(_ m: InterruptMessage, destination: UInt8, logical: Bool) {
        var low = UInt32(m.mode.rawValue) << 8 | UInt32(m.vector) | (1 << 14)
        if logical { low |= 1 << 11 }
        if m.levelTriggered { low |= 1 << 15 }
        let cmd = InterruptCommand(low: low, high: UInt32(destination) << 24)
        for t in resolve(cmd, source: -1) { deliver(to: t, m) }
    }

    /// Destination resolution over the address table; for lowest priority, local vCPUs'
    /// current TPRs are read first (no vCPU lock is held by callers of send/deliver).
    func resolve(_ cmd: InterruptCommand, source: Int) -> [Int] {
        var table = addresses.withLock { $0 }
        if cmd.mode == .lowestPriority {
            for case let irq? in local { table[irq.index].tpr = irq.locked { $0.apic.tpr } }
        }
        return DestinationResolver.resolve(cmd, source: source, apics: table)
    }

    /// Refreshes vCPU `index`'s entry in the destination tables (a local APIC write, or a
    /// change broadcast by another node).
    public func updateAddress(of index: Int, _ a: APICAddress) {
        guard index >= 0 && index < local.count else { return }
        addresses.withLock { $0[index] = a }
        if local[index] != nil { addressingChanged?(index, a) }
    }
}

/// One thread for every local APIC timer: sleeps until the earliest deadline, raises the timer
/// interrupt on each expired APIC, kicks that vCPU. Threading: `rearm()` from any thread (never
/// while holding a vCPU lock); lock order is timer lock, then a vCPU lock.
final class APICTimerThread: @unchecked Sendable {
    let cond = NSCondition()
    var stopped = false
    var generation: UInt64 = 0
    let vcpus: [VCPUInterrupts]
    var thread: Thread?
    let done = DispatchSemaphore(value: 0)
    let clock: () -> UInt64

    init(vcpus: [VCPUInterrupts], clock: @escaping () -> UInt64) {
        self.vcpus = vcpus
        self.clock = clock
    }

    func start() {
        let t = Thread { [self] in loop(); done.signal() }
        t.name = "apic-timer"
        thread = t
        t.start()
    }

    func rearm() {
        cond.lock()
        generation &+= 1
        cond.signal()
        cond.unlock()
    }

    func stop() {
        cond.lock()
        stopped = true
        cond.signal()
        cond.unlock()
        if thread != nil { _ = done.wait(timeout: .now() + 5) }
    }

    private func loop() {
        cond.lock()
        while !stopped {
            let now = clock()
            var earliest: UInt64?
            for v in vcpus {
                v.cond.lock()
                var fired = false
                if let d = v.apic.timerDeadline, d <= now {
                    if v.apic.timerExpired(now: now) {
                        v.cond.broadcast()
                        fired = v.state == .running
                    }
                }
                if let d = v.apic.timerDeadline { earliest = min(earliest ?? d, d) }
                v.cond.unlock()
                if fired { v.vcpu?.kick() }
            }
            let gen = generation
            if let e = earliest {
                let now2 = clock()
                if e > now2 {
                    _ = cond.wait(until: Date(timeIntervalSinceNow: Double(e - now2) / 1e9))
                }
            } else {
                while generation == gen && !stopped { cond.wait() }
            }
        }
        cond.unlock()
    }
}
