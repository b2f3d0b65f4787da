// The local APIC, emulated in user space: xAPIC (MMIO page at IA32_APIC_BASE, 0xFEE00000 after
// reset) and x2APIC (MSRs 0x800-0x8FF, X2APIC.swift), or hardware-disabled (IA32_APIC_BASE[11]
// clear: no page, no interrupts accepted). This file is pure state and
// arithmetic: no KVM, no threads, time passed in as nanoseconds. `VCPUInterrupts` wraps it with
// a lock and the vCPU wake-up logic; `InterruptRouter` resolves destinations across vCPUs (and
// nodes); the IOAPIC's messages reach it through the router too.
//
// Threading: a value type; the owner (VCPUInterrupts) serialises every access under its lock.

/// The fixed guest-physical base of every local APIC (IA32_APIC_BASE default).
public let localAPICBase: UInt64 = 0xFEE0_0000
public let localAPICSize: UInt64 = 0x1000

/// Register offsets from the APIC base (Intel SDM vol. 3, table 10-1).
public enum APICRegister {
    public static let id: UInt32 = 0x20
    public static let version: UInt32 = 0x30
    public static let tpr: UInt32 = 0x80
    public static let apr: UInt32 = 0x90
    public static let ppr: UInt32 = 0xA0
    public static let eoi: UInt32 = 0xB0
    public static let rrd: UInt32 = 0xC0
    public static let ldr: UInt32 = 0xD0
    public static let dfr: UInt32 = 0xE0
    public static let svr: UInt32 = 0xF0
    public static let isrBase: UInt32 = 0x100
    public static let tmrBase: UInt32 = 0x180
    public static let irrBase: UInt32 = 0x200
    public static let esr: UInt32 = 0x280
    public static let lvtCMCI: UInt32 = 0x2F0
    public static let icrLow: UInt32 = 0x300
    public static let icrHigh: UInt32 = 0x310
    public static let lvtTimer: UInt32 = 0x320
    public static let lvtThermal: UInt32 = 0x330
    public static let lvtPerf: UInt32 = 0x340
    public static let lvtLINT0: UInt32 = 0x350
    public static let lvtLINT1: UInt32 = 0x360
    public static let lvtError: UInt32 = 0x370
    public static let timerInitialCount: UInt32 = 0x380
    public static let timerCurrentCount: UInt32 = 0x390
    public static let timerDivide: UInt32 = 0x3E0
}

/// The APIC's mode, from IA32_APIC_BASE bits 11 (EN) and 10 (EXTD) (SDM 10.12.5).
public enum APICMode: UInt8, Equatable, Sendable {
    /// EN = 0: no register interface, accepts no interrupts (LINT0 passes the 8259's INTR through).
    case disabled = 0
    /// EN = 1, EXTD = 0: the MMIO page at the base address.
    case xAPIC = 1
    /// EN = 1, EXTD = 1: the MSR interface; 32-bit IDs, LDR derived from the ID.
    case x2APIC = 2
}

/// ICR / LVT delivery modes.
public enum DeliveryMode: UInt8, Sendable {
    case fixed = 0, lowestPriority = 1, smi = 2, reserved3 = 3, nmi = 4, initialize = 5, startup = 6, extINT = 7
}

/// ICR destination shorthand (bits 18-19).
public enum DestinationShorthand: UInt8, Sendable {
    case none = 0, selfOnly = 1, allIncludingSelf = 2, allExcludingSelf = 3
}

/// A decoded interrupt command (ICR low + high).
public struct InterruptCommand: Equatable, Sendable {
    public var vector: UInt8
    public var mode: DeliveryMode
    public var logical: Bool
    /// Level bit (14): assert (1) / de-assert (0); only meaningful for INIT.
    public var assert: Bool
    /// Trigger mode bit (15): level-triggered when true.
    public var levelTriggered: Bool
    public var shorthand: DestinationShorthand
    /// xAPIC format: ICR high bits 24-31 (0xFF = broadcast). x2APIC format: the whole 32-bit
    /// destination field (0xFFFFFFFF = broadcast).
    public var destination: UInt32
    /// The command came from an x2APIC ICR (32-bit destination) rather than an xAPIC one, the
    /// IOAPIC or an MSI (8-bit destination).
    public var x2apicFormat = false

    /// An x2APIC ICR write (MSR 0x830): low half as in xAPIC, destination in bits 32-63.
    public init(x2apicICR v: UInt64) {
        self.init(low: UInt32(truncatingIfNeeded: v), high: 0)
        destination = UInt32(truncatingIfNeeded: v >> 32)
        x2apicFormat = true
    }

    public init(low: UInt32, high: UInt32) {
        vector = UInt8(low & 0xFF)
        mode = DeliveryMode(rawValue: UInt8((low >> 8) & 7))!
        logical = low & (1 << 11) != 0
        assert = low & (1 << 14) != 0
        levelTriggered = low & (1 << 15) != 0
        shorthand = DestinationShorthand(rawValue: UInt8((low >> 18) & 3))!
        destination = high >> 24
    }

    /// An INIT with level de-assert and level trigger: the legacy "INIT level de-assert"
    /// synchronisation message, which modern CPUs ignore.
    public var isINITDeassert: Bool { mode == .initialize && !assert && levelTriggered }
}

/// What one vCPU receives (after destination resolution).
public struct InterruptMessage: Equatable, Sendable {
    public var mode: DeliveryMode
    public var vector: UInt8
    public var levelTriggered: Bool
    public init(mode: DeliveryMode, vector: UInt8, levelTriggered: Bool = false) {
        self.mode = mode
        self.vector = vector
        self.levelTriggered = levelTriggered
    }
}

/// The part of each APIC that destination resolution needs (kept for every vCPU of the VM,
/// local or remote).
public struct APICAddress: Equatable, Sendable {
    public var id: UInt8
    public var ldr: UInt32
    public var dfr: UInt32
    /// Task priority, for lowest-priority arbitration.
    public var tpr: UInt8
    /// Disabled APICs are never a destination; x2APIC ones match 32-bit destinations and their
    /// derived LDR (cluster in bits 31-16, one bit of 16 in bits 15-0).
    public var mode: APICMode
    public init(id: UInt8, ldr: UInt32 = 0, dfr: UInt32 = 0xFFFF_FFFF, tpr: UInt8 = 0, mode: APICMode = .xAPIC) {
        self.id = id; self.ldr = ldr; self.dfr = dfr; self.tpr = tpr; self.mode = mode
    }

    /// Physical destination match. Broadcast is 0xFF in xAPIC format and 0xFFFFFFFF in x2APIC
    /// format; otherwise the (x2)APIC id must equal the destination.
    public func matchesPhysical(_ dest: UInt32, x2apicFormat: Bool) -> Bool {
        if dest == (x2apicFormat ? 0xFFFF_FFFF : 0xFF) { return true }
        return UInt32(id) == dest
    }

    /// Logical destination match for either format: an x2APIC target compares cluster and bit
    /// mask (an 8-bit xAPIC-format destination is cluster 0, except broadcast 0xFF); an xAPIC
    /// target uses its LDR/DFR with the destination's low 8 bits.
    public func matchesLogical(_ dest: UInt32, x2apicFormat: Bool) -> Bool {
        if dest == (x2apicFormat ? 0xFFFF_FFFF : 0xFF) { return true }
        if mode == .x2APIC { return ldr >> 16 == dest >> 16 && ldr & dest & 0xFFFF != 0 }
        return matchesLogical(UInt8(truncatingIfNeeded: dest))
    }

    /// xAPIC logical destination match (flat model: DFR[31:28] = 0xF; cluster model: 0x0).
    public func matchesLogical(_ dest: UInt8) -> Bool {
        let logicalID = UInt8(ldr >> 24)
        if dfr >> 28 == 0xF { return logicalID & dest != 0 }
        // Cluster model: high nibble is the cluster (0xF = broadcast to all clusters).
        let cluster = dest >> 4
        return (cluster == 0xF || cluster == logicalID >> 4) && (logicalID & dest & 0x0F) != 0
    }
}

/// Destination resolution: which vCPU indices an interrupt command reaches. Pure function;
/// indices are global vCPU indices (a vCPU of another node is reached through RemoteInterrupts).
public enum DestinationResolver {
    /// Hardware-disabled APICs are never targets.
    public static func resolve(_ cmd: InterruptCommand, source: Int, apics: [APICAddress]) -> [Int] {
        let live = apics.indices.filter { apics[$0].mode != .disabled }
        switch cmd.shorthand {
        case .selfOnly: return [source]
        case .allIncludingSelf: return live
        case .allExcludingSelf: return live.filter { $0 != source }
        case .none:
            var targets: [Int]
            if cmd.logical {
                targets = live.filter { apics[$0].matchesLogical(cmd.destination, x2apicFormat: cmd.x2apicFormat) }
            } else {
                targets = live.filter { apics[$0].matchesPhysical(cmd.destination, x2apicFormat: cmd.x2apicFormat) }
            }
            if cmd.mode == .lowestPriority, let best = lowestPriority(targets, apics) { targets = [best] }
            return targets
        }
    }

    /// Lowest task priority wins; ties go to the lowest index (deterministic).
    static func lowestPriority(_ targets: [Int], _ apics: [APICAddress]) -> Int? {
        targets.min { a, b in
            let pa = apics[a].tpr >> 4, pb = apics[b].tpr >> 4
            return pa != pb ? pa < pb : a < b
        }
    }
}

/// 256 bits, one per vector (IRR, ISR, TMR).
public struct VectorSet: Equatable, Sendable {
    var words: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
    public init() {}

    public static func == (a: VectorSet, b: VectorSet) -> Bool { a.words == b.words }

    public subscript(_ v: UInt8) -> Bool {
        get { word(Int(v) >> 6) & (1 << UInt64(v & 63)) != 0 }
        set {
            let i = Int(v) >> 6
            var w = word(i)
            if newValue { w |= 1 << UInt64(v & 63) } else { w &= ~(1 << UInt64(v & 63)) }
            setWord(i, w)
        }
    }

    func word(_ i: Int) -> UInt64 {
        switch i { case 0: return words.0; case 1: return words.1; case 2: return words.2; default: return words.3 }
    }

    mutating func setWord(_ i: Int, _ w: UInt64) {
        switch i { case 0: words.0 = w; case 1: words.1 = w; case 2: words.2 = w; default: words.3 = w }
    }

    /// The highest vector set, if any.
    public var highest: UInt8? {
        for i in stride(from: 3, through: 0, by: -1) {
            let w = word(i)
            if w != 0 { return UInt8(i * 64 + 63 - w.leadingZeroBitCount) }
        }
        return nil
    }

    /// The 32-bit register at index 0...7 (as seen at base + 0x10 * index).
    public func register(_ index: Int) -> UInt32 {
        let w = word(index / 2)
        return UInt32(truncatingIfNeeded: index % 2 == 0 ? w : w >> 32)
    }

    public var isEmpty: Bool { words == (0, 0, 0, 0) }
}

/// Side effects of an APIC register write that the owner must carry out.
public enum APICEffect: Equatable, Sendable {
    /// ICR low was written: send this IPI (resolve destinations, deliver).
    case sendIPI(InterruptCommand)
    /// EOI of a level-triggered vector: tell the IOAPIC (here, or on its node).
    case levelEOI(vector: UInt8)
    /// The timer's deadline changed: the timer thread must re-evaluate.
    case timerChanged
    /// ID, LDR or DFR changed: destination tables must be updated (and broadcast).
    case addressingChanged
}

/// The local APIC register file and its logic.
public struct LocalAPIC: Equatable, Sendable {
    /// Version register: version 0x14 (integrated xAPIC), max LVT entry 6 (7 LVTs incl. CMCI).
    public static let versionValue: UInt32 = 0x0006_0014
    /// ESR bits.
    public static let esrSendIllegalVector: UInt32 = 1 << 5
    public static let esrReceiveIllegalVector: UInt32 = 1 << 6
    public static let esrIllegalRegister: UInt32 = 1 << 7

    public internal(set) var id: UInt8
    /// The ID the APIC had at power-on (the vCPU index): the x2APIC ID, and the ID a disabled
    /// APIC comes back with.
    public let initialID: UInt8
    /// IA32_APIC_BASE: the mode (EN, EXTD) and the xAPIC page's address (bits 12-51).
    public internal(set) var mode: APICMode = .xAPIC
    public internal(set) var base: UInt64 = localAPICBase
    public internal(set) var tpr: UInt8 = 0
    public internal(set) var ldr: UInt32 = 0
    public internal(set) var dfr: UInt32 = 0xFFFF_FFFF
    public internal(set) var svr: UInt32 = 0xFF
    public internal(set) var irr = VectorSet()
    public internal(set) var isr = VectorSet()
    public internal(set) var tmr = VectorSet()
    public internal(set) var esr: UInt32 = 0
    var esrPending: UInt32 = 0
    public internal(set) var icrLow: UInt32 = 0
    public internal(set) var icrHigh: UInt32 = 0
    /// LVT entries, indexed as in `lvtOffsets`.
    public internal(set) var lvt: [UInt32] = Array(repeating: 0x1_0000, count: 7)
    static let lvtOffsets: [UInt32] = [APICRegister.lvtCMCI, APICRegister.lvtTimer, APICRegister.lvtThermal,
                                       APICRegister.lvtPerf, APICRegister.lvtLINT0, APICRegister.lvtLINT1,
                                       APICRegister.lvtError]
    static let lvtTimerIndex = 1, lvtLINT0Index = 4, lvtLINT1Index = 5, lvtErrorIndex = 6

    // ---- timer -------------------------------------------------------------------------------
    /// Nanoseconds per APIC bus tick (the timer counts bus ticks divided by the divide value).
    public let busTickNanoseconds: UInt64
    public internal(set) var timerInitialCount: UInt32 = 0
    public internal(set) var timerDivideConfig: UInt32 = 0
    /// When the current count was last (re)loaded.
    var timerStart: UInt64 = 0
    /// Next expiry, or nil when the timer is not counting.
    public internal(set) var timerDeadline: UInt64?

    /// A power-on APIC with the given id. `busHz` is the advertised APIC bus frequency.
    public init(id: UInt8, busHz: UInt64 = 100_000_000) {
        self.id = id
        self.initialID = id
        self.busTickNanoseconds = max(1, 1_000_000_000 / busHz)
    }

    /// INIT: everything but the ID returns to its power-on value (SDM 10.4.7.3).
    /// IA32_APIC_BASE returns to its power-on value (xAPIC at 0xFEE00000), as the runner sets it.
    public mutating func reset() {
        var fresh = LocalAPIC(id: initialID, busHz: 1_000_000_000 / busTickNanoseconds)
        fresh.id = id
        self = fresh
    }

    public var softwareEnabled: Bool { svr & 0x100 != 0 }

    public var address: APICAddress { APICAddress(id: id, ldr: ldr, dfr: dfr, tpr: tpr, mode: mode) }

    // ---- priorities ------------------------------------------------------------------------

    /// Processor priority (SDM 10.8.3.1).
    public var ppr: UInt8 {
        let isrv = isr.highest ?? 0
        return (tpr >> 4) >= (isrv >> 4) ? tpr : isrv & 0xF0
    }

    /// The highest pending vector the APIC would present to the CPU now, if any.
    public var deliverableVector: UInt8? {
        guard softwareEnabled, let v = irr.highest else { return nil }
        return (v >> 4) > (ppr >> 4) ? v : nil
    }

    /// The CPU takes `vector` (it was injected): IRR -> ISR.
    public mutating func acknowledge(_ vector: UInt8) {
        irr[vector] = false
        isr[vector] = true
    }

    /// A fixed (or lowest-priority) interrupt arrives. Vectors 0-15 are illegal (ESR bit 6).
    /// Returns false when it was refused.
    @discardableResult
    public mutating func accept(vector: UInt8, levelTriggered: Bool) -> Bool {
        if mode == .disabled { return false }
        if vector < 16 {
            raiseError(LocalAPIC.esrReceiveIllegalVector)
            return false
        }
        irr[vector] = true
        tmr[vector] = levelTriggered
        return true
    }

    mutating func raiseError(_ bit: UInt32) {
        esrPending |= bit
        let entry = lvt[LocalAPIC.lvtErrorIndex]
        if entry & 0x1_0000 == 0 { _ = accept(vector: UInt8(entry & 0xFF), levelTriggered: false) }
    }

    /// CR8 changed in the guest (CR8 = TPR[7:4]).
    public mutating func setCR8(_ cr8: UInt64) {
        if UInt64(tpr >> 4) != cr8 & 0xF { tpr = UInt8(cr8 & 0xF) << 4 }
    }

    public var cr8: UInt64 { UInt64(tpr >> 4) }

    // ---- LINT pins ---------------------------------------------------------------------------

    /// What a LINT0/LINT1 edge turns into, per its LVT entry (nil when masked).
    public func lintMessage(pin: Int) -> InterruptMessage? {
        let entry = lvt[pin == 0 ? LocalAPIC.lvtLINT0Index : LocalAPIC.lvtLINT1Index]
        if entry & 0x1_0000 != 0 { return nil }
        let mode = DeliveryMode(rawValue: UInt8((entry >> 8) & 7)) ?? .fixed
        return InterruptMessage(mode: mode, vector: UInt8(entry & 0xFF), levelTriggered: entry & (1 << 15) != 0)
    }

    // ---- timer arithmetic ---------------------------------------------------------------------

    /// Divide value from the divide configuration register (bits 0, 1, 3).
    public static func divisor(config: UInt32) -> UInt64 {
        let v = (config & 3) | ((config >> 1) & 4)
        return v == 7 ? 1 : UInt64(2) << UInt64(v)
    }

    public var timerDivisor: UInt64 { LocalAPIC.divisor(config: timerDivideConfig) }
    var timerMode: UInt32 { (lvt[LocalAPIC.lvtTimerIndex] >> 17) & 3 }
    public var timerPeriodic: Bool { timerMode == 1 }
    /// Nanoseconds for one full count of the initial value.
    public var timerPeriodNanoseconds: UInt64 { UInt64(timerInitialCount) * timerDivisor * busTickNanoseconds }

    /// Current count register at `now`.
    public func timerCurrentCount(now: UInt64) -> UInt32 {
        guard let deadline = timerDeadline, timerInitialCount != 0 else { return 0 }
        if now >= deadline { return 0 }
        let tick = timerDivisor * busTickNanoseconds
        return UInt32(min(UInt64(timerInitialCount), (deadline - now + tick - 1) / tick))
    }

    mutating func startTimer(now: UInt64) {
        timerStart = now
        timerDeadline = timerInitialCount == 0 ? nil : now + timerPeriodNanoseconds
    }

    /// The timer thread calls this at or after `timerDeadline`. Returns true when an interrupt
    /// was raised (LVT timer not masked). Periodic timers re-arm from the previous deadline (no
    /// drift); if the thread fell behind by whole periods, the missed ones are dropped.
    @discardableResult
    public mutating func timerExpired(now: UInt64) -> Bool {
        guard let deadline = timerDeadline, now >= deadline else { return false }
        if timerPeriodic && timerInitialCount != 0 {
            let period = max(timerPeriodNanoseconds, 1)
            let missed = (now - deadline) / period
            timerStart = deadline + missed * period
            timerDeadline = timerStart + period
        } else {
            timerDeadline = nil
        }
        let entry = lvt[LocalAPIC.lvtTimerIndex]
        if entry & 0x1_0000 != 0 { return false }
        return accept(vector: UInt8(entry & 0xFF), levelTriggered: false)
    }

    // ---- register access -----------------------------------------------------------------------

    /// A 32-bit read at `offset` (aligned to 16 bytes; other offsets read 0).
    public func read(_ offset: UInt32, now: UInt64) -> UInt32 {
        switch offset {
        case APICRegister.id: return UInt32(id) << 24
        case APICRegister.version: return LocalAPIC.versionValue
        case APICRegister.tpr: return UInt32(tpr)
        case APICRegister.apr: return UInt32(ppr)
        case APICRegister.ppr: return UInt32(ppr)
        case APICRegister.eoi, APICRegister.rrd: return 0
        case APICRegister.ldr: return ldr
        case APICRegister.dfr: return dfr
        case APICRegister.svr: return svr
        case APICRegister.isrBase..<(APICRegister.isrBase + 0x80): return isr.register(Int(offset - APICRegister.isrBase) / 16)
        case APICRegister.tmrBase..<(APICRegister.tmrBase + 0x80): return tmr.register(Int(offset - APICRegister.tmrBase) / 16)
        case APICRegister.irrBase..<(APICRegister.irrBase + 0x80): return irr.register(Int(offset - APICRegister.irrBase) / 16)
        case APICRegister.esr: return esr
        case APICRegister.icrLow: return icrLow & ~(1 << 12) // delivery status: always idle
        case APICRegister.icrHigh: return icrHigh
        case APICRegister.timerInitialCount: return timerInitialCount
        case APICRegister.timerCurrentCount: return timerCurrentCount(now: now)
        case APICRegister.timerDivide: return timerDivideConfig
        default:
            if let i = LocalAPIC.lvtOffsets.firstIndex(of: offset) { return lvt[i] }
            return 0
        }
    }

    /// A 32-bit write at `offset`; returns the effects the caller must carry out.
    public mutating func write(_ offset: UInt32, _ value: UInt32, now: UInt64) -> [APICEffect] {
        switch offset {
        case APICRegister.id:
            id = UInt8(value >> 24)
            return [.addressingChanged]
        case APICRegister.tpr:
            tpr = UInt8(value & 0xFF)
        case APICRegister.eoi:
            guard let v = isr.highest else { return [] }
            isr[v] = false
            if tmr[v] { return [.levelEOI(vector: v)] }
        case APICRegister.ldr:
            ldr = value & 0xFF00_0000
            return [.addressingChanged]
        case APICRegister.dfr:
            dfr = value | 0x0FFF_FFFF
            return [.addressingChanged]
        case APICRegister.svr:
            svr = value & 0x13FF
            if !softwareEnabled {
                // Software disable masks every LVT entry (SDM 10.4.7.2).
                for i in lvt.indices { lvt[i] |= 0x1_0000 }
            }
        case APICRegister.esr:
            // Write-before-read: a write latches the errors seen since the last write.
            esr = esrPending
            esrPending = 0
        case APICRegister.icrHigh:
            icrHigh = value & 0xFF00_0000
        case APICRegister.icrLow:
            icrLow = value & 0x000C_CFFF
            let cmd = InterruptCommand(low: icrLow, high: icrHigh)
            if (cmd.mode == .fixed || cmd.mode == .lowestPriority) && cmd.vector < 16 {
                raiseError(LocalAPIC.esrSendIllegalVector)
                return []
            }
            return [.sendIPI(cmd)]
        case APICRegister.timerInitialCount:
            timerInitialCount = value
            startTimer(now: now)
            return [.timerChanged]
        case APICRegister.timerDivide:
            let remaining = timerCurrentCount(now: now)
            timerDivideConfig = value & 0xB
            if timerDeadline != nil {
                // Keep counting from the current count at the new rate.
                timerDeadline = now + UInt64(remaining) * timerDivisor * busTickNanoseconds
            }
            return [.timerChanged]
        default:
            if let i = LocalAPIC.lvtOffsets.firstIndex(of: offset) {
                var v = value & (i == LocalAPIC.lvtTimerIndex ? 0x7_00FF : 0x1_A7FF)
                if !softwareEnabled { v |= 0x1_0000 }
                let wasPeriodic = timerPeriodic
                lvt[i] = v
                if i == LocalAPIC.lvtTimerIndex && wasPeriodic != timerPeriodic { return [.timerChanged] }
                return []
            }
            // Read-only or reserved register: ignored (real APICs may set ESR bit 7).
            if ![APICRegister.version, APICRegister.apr, APICRegister.ppr, APICRegister.rrd,
                 APICRegister.timerCurrentCount].contains(offset) && offset < 0x400 && !(0x100..<0x280).contains(offset) {
                raiseError(LocalAPIC.esrIllegalRegister)
            }
        }
        return []
    }
}
