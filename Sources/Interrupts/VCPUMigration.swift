// Live vCPU migration, the interrupt side. Every node of a VM holds a VCPUInterrupts for every
// vCPU; exactly one node has it `resident` (runs it). Handing a vCPU from node A to node B:
//
//   A  `requestDeparture(to: B)` (any thread) wakes the vCPU's thread, which at its next exit
//      (or at once when halted / waiting for SIPI) sees `.depart(B)`, captures the KVM state, then
//      `completeDeparture` — under this vCPU's lock: the APIC and INIT/SIPI/NMI/run state are
//      encoded, the vCPU stops being resident here, and the caller's `send` (the migrator) moves
//      the placement to B and sends the state, all before any other thread can deliver to it.
//      From then on a delivery here finds it not resident and is forwarded to B — after the
//      state on the same ordered A→B link, so B has it by then.
//   B  `installArrival` (transport thread): the APIC state is loaded, the vCPU becomes resident,
//      its thread wakes, sees `.arrive`, loads the KVM state (`takeArrival`) and runs.
//
// No interrupt is lost or delivered twice: a message is applied only where the vCPU is
// resident, under the same lock that makes it non-resident; anything else is forwarded once.
//
// The timer travels as time remaining (each node's monotonic clock is its own).
import Foundation

extension VCPUInterrupts {
    /// What a non-resident or migrating vCPU's thread does before the next entry (nil: the
    /// normal decision). Under the lock.
    func migrationAction(stopping: Bool) -> VCPUEntry.Action? {
        if stopping { return nil }
        if arrival != nil { return .arrive }   // first: a departure asked before the state is loaded waits for it
        if resident, let to = departure { return .depart(node: to) }
        return resident ? nil : .park
    }

    /// True when this node runs the vCPU.
    public var isResident: Bool { locked { $0.resident } }

    /// Applies an interrupt message when the vCPU is resident here: nil when it is not (the
    /// caller forwards it to the vCPU's node), else whether to kick (as `receive`).
    public func receiveIfResident(_ m: InterruptMessage) -> Bool? {
        cond.lock()
        defer { cond.unlock() }
        guard resident else { return nil }
        return receiveLocked(m)
    }

    /// Asks the vCPU's thread to hand the vCPU to `node` at its next exit. False when it is not
    /// resident here or already leaving.
    public func requestDeparture(to node: UInt32) -> Bool {
        let ok = locked { s -> Bool in
            guard s.resident, s.departure == nil else { return false }
            s.departure = node
            s.cond.broadcast()
            return true
        }
        if ok { kick() }
        return ok
    }

    /// On the vCPU's thread after it captured the KVM state: encodes the interrupt state and
    /// calls `send` with it under the lock, then leaves this copy idle (not resident, timer off,
    /// nothing pending). `send` must not block nor take another vCPU's lock.
    public func completeDeparture(now: UInt64, _ send: ([UInt8]) throws -> Void) rethrows {
        try locked { s in
            let bytes = s.encodeMigrationState(now: now)
            try send(bytes)
            s.resident = false
            s.departure = nil
            s.apic.timerDeadline = nil
            s.apic.irr = VectorSet()
            s.apic.isr = VectorSet()
            s.pendingNMI = false
            s.pendingINIT = false
            s.sipiVector = nil
        }
    }

    /// Drops a requested departure that could not happen (the caller reports why).
    public func cancelDeparture() { locked { $0.departure = nil } }

    /// On the destination (any thread): loads the interrupt state that arrived with the vCPU,
    /// makes it resident and wakes its thread to load `kvmState` (`takeArrival`).
    public func installArrival(_ bytes: [UInt8], kvmState: any Sendable, now: UInt64) throws {
        try locked { s in
            guard !s.resident else { throw MigrationStateError("vCPU \(s.index) is already resident on this node") }
            try s.decodeMigrationState(bytes, now: now)
            s.resident = true
            s.departure = nil
            s.arrival = kvmState
            s.cond.broadcast()
        }
    }

    /// The vCPU's thread takes the KVM state that arrived (once).
    public func takeArrival() -> (any Sendable)? {
        locked { s in
            defer { s.arrival = nil }
            return s.arrival
        }
    }

    /// Makes this node's copy resident or not at start (the initial placement).
    public func setResident(_ r: Bool) { locked { $0.resident = r } }

    // ---- the wire form ---------------------------------------------------------------------

    /// Bytes: version u8=1, id u8, tpr u8, ldr u32, dfr u32, svr u32, irr/isr/tmr 3x4 u64,
    /// esr u32, esrPending u32, icrLow u32, icrHigh u32, lvt 7 u32, timer initial u32, divide u32,
    /// timer elapsed since start u64, timer remaining u64 (UInt64.max: not counting), NMI u8,
    /// INIT u8, SIPI u8 (0: none, 1: vector follows) + vector u8, run state u8 (0 waiting for
    /// SIPI, 1 running, 2 halted with IF clear, 3 halted with IF set); version 2 adds the APIC's
    /// mode u8 (APICMode) and base address u64 (IA32_APIC_BASE), so an x2APIC, disabled or
    /// relocated APIC stays so on the new node.
    func encodeMigrationState(now: UInt64) -> [UInt8] {
        var out: [UInt8] = [2]
        func u8(_ v: UInt8) { out.append(v) }
        func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { out += $0 } }
        func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { out += $0 } }
        let a = apic
        u8(a.id); u8(a.tpr); u32(a.ldr); u32(a.dfr); u32(a.svr)
        for set in [a.irr, a.isr, a.tmr] { for i in 0..<4 { u64(set.word(i)) } }
        u32(a.esr); u32(a.esrPending); u32(a.icrLow); u32(a.icrHigh)
        for i in 0..<7 { u32(i < a.lvt.count ? a.lvt[i] : 0x1_0000) }
        u32(a.timerInitialCount); u32(a.timerDivideConfig)
        u64(now >= a.timerStart ? now - a.timerStart : 0)
        u64(a.timerDeadline.map { $0 > now ? $0 - now : 0 } ?? UInt64.max)
        u8(pendingNMI ? 1 : 0); u8(pendingINIT ? 1 : 0)
        u8(sipiVector == nil ? 0 : 1); u8(sipiVector ?? 0)
        switch state {
        case .waitingForSIPI: u8(0)
        case .running: u8(1)
        case let .halted(ie): u8(ie ? 3 : 2)
        }
        u8(a.mode.rawValue); u64(a.base)
        return out
    }

    func decodeMigrationState(_ b: [UInt8], now: UInt64) throws {
        var o = 0
        func need(_ n: Int) throws { guard o + n <= b.count else { throw MigrationStateError("interrupt state truncated at byte \(o) of \(b.count)") } }
        func u8() throws -> UInt8 { try need(1); defer { o += 1 }; return b[o] }
        func u32() throws -> UInt32 { try need(4); var v: UInt32 = 0; for i in 0..<4 { v |= UInt32(b[o + i]) << (8 * UInt32(i)) }; o += 4; return v }
        func u64() throws -> UInt64 { try need(8); var v: UInt64 = 0; for i in 0..<8 { v |= UInt64(b[o + i]) << (8 * UInt64(i)) }; o += 8; return v }
        let version = try u8()
        guard version == 1 || version == 2 else { throw MigrationStateError("interrupt state version \(version) (this node reads 1 and 2)") }
        var a = apic
        a.id = try u8(); a.tpr = try u8(); a.ldr = try u32(); a.dfr = try u32(); a.svr = try u32()
        var sets = [VectorSet(), VectorSet(), VectorSet()]
        for k in 0..<3 { for i in 0..<4 { sets[k].setWord(i, try u64()) } }
        a.irr = sets[0]; a.isr = sets[1]; a.tmr = sets[2]
        a.esr = try u32(); a.esrPending = try u32(); a.icrLow = try u32(); a.icrHigh = try u32()
        var lvt: [UInt32] = []
        for _ in 0..<7 { lvt.append(try u32()) }
        a.lvt = lvt
        a.timerInitialCount = try u32(); a.timerDivideConfig = try u32()
        let elapsed = try u64(), remaining = try u64()
        a.timerStart = now >= elapsed ? now - elapsed : 0
        a.timerDeadline = remaining == UInt64.max ? nil : now &+ min(remaining, 1 << 62)
        let nmi = try u8(), initp = try u8(), hasSIPI = try u8(), sipi = try u8(), run = try u8()
        guard nmi <= 1, initp <= 1, hasSIPI <= 1, run <= 3 else {
            throw MigrationStateError("interrupt state flags out of range (nmi \(nmi), init \(initp), sipi \(hasSIPI), run \(run))")
        }
        if version == 2 {
            let m = try u8(), base = try u64()
            guard let mode = APICMode(rawValue: m) else { throw MigrationStateError("interrupt state: APIC mode \(m) is not 0-2") }
            guard base & ~LocalAPIC.baseAddressMask == 0 else {
                throw MigrationStateError("interrupt state: APIC base 0x\(String(base, radix: 16)) is not a page address")
            }
            a.mode = mode
            a.base = base
        }
        guard o == b.count else { throw MigrationStateError("interrupt state has \(b.count - o) trailing bytes") }
        apic = a
        pendingNMI = nmi == 1
        pendingINIT = initp == 1
        sipiVector = hasSIPI == 1 ? sipi : nil
        state = run == 0 ? .waitingForSIPI : run == 1 ? .running : .halted(interruptsEnabled: run == 3)
    }
}

/// A malformed or unusable migrated interrupt state (from another node's bytes).
public struct MigrationStateError: Error, CustomStringConvertible {
    public var description: String
    public init(_ d: String) { description = d }
}
