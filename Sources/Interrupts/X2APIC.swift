// IA32_APIC_BASE (MSR 0x1B) and the x2APIC MSR interface (MSRs 0x800-0x8FF) of the local APIC,
// as the SDM (vol. 3, 10.4.3 and 10.12) defines them. Pure state and arithmetic like
// LocalAPIC.swift: the runner tells the APIC the MSR value KVM accepted (KVM checks the reserved
// bits and the transitions, raising #GP itself) and hands it the x2APIC MSR accesses KVM sends to
// user space (KVM_EXIT_X86_RDMSR/WRMSR: without an in-kernel APIC KVM refuses them).
//
// Transitions (SDM figure 10-27): xAPIC -> x2APIC keeps every register but the ID (now the
// 32-bit initial APIC ID) and the LDR (derived from it); any mode -> disabled resets the APIC to
// its power-on state except the ID, and a disabled APIC accepts no interrupt; disabled -> xAPIC
// comes back in that reset state. x2APIC -> xAPIC and disabled -> x2APIC are invalid (#GP).

extension LocalAPIC {
    /// First and last x2APIC MSR (register offset >> 4, plus 0x800).
    public static let x2apicMSRs: ClosedRange<UInt32> = 0x800...0x8FF
    /// IA32_APIC_BASE bits: BSP (8), EXTD (10), EN (11), base address (12-51, this VMM's
    /// MAXPHYADDR is at most 52).
    public static let baseBSP: UInt64 = 1 << 8
    public static let baseEXTD: UInt64 = 1 << 10
    public static let baseEN: UInt64 = 1 << 11
    public static let baseAddressMask: UInt64 = 0x000F_FFFF_FFFF_F000

    /// The mode an IA32_APIC_BASE value selects; nil for EXTD without EN (invalid).
    public static func mode(ofBase v: UInt64) -> APICMode? {
        switch (v & baseEN != 0, v & baseEXTD != 0) {
        case (false, false): return .disabled
        case (true, false): return .xAPIC
        case (true, true): return .x2APIC
        case (false, true): return nil
        }
    }

    /// Whether the guest may move from `old` to `new` with WRMSR (SDM 10.12.5: x2APIC -> xAPIC
    /// and disabled -> x2APIC raise #GP; staying put or any other move is allowed).
    public static func transitionAllowed(from old: APICMode, to new: APICMode) -> Bool {
        !(old == .x2APIC && new == .xAPIC) && !(old == .disabled && new == .x2APIC)
    }

    /// The x2APIC logical ID (SDM 10.12.10.2): cluster (ID bits 31-4) in bits 31-16, one bit for
    /// ID bits 3-0 in bits 15-0.
    public static func x2apicLDR(id: UInt32) -> UInt32 { (id >> 4) << 16 | 1 << (id & 0xF) }

    /// IA32_APIC_BASE now holds `value` (KVM accepted the guest's WRMSR, or the VMM set it).
    /// Returns the effects the owner must carry out (destination tables, the timer).
    public mutating func setBaseMSR(_ value: UInt64) -> [APICEffect] {
        base = value & LocalAPIC.baseAddressMask
        guard let new = LocalAPIC.mode(ofBase: value), new != mode else { return [] }
        if new == .disabled || !LocalAPIC.transitionAllowed(from: mode, to: new) {
            // Power-on state but the ID; an invalid move (KVM raises #GP first) lands here too.
            let keep = base
            reset()
            base = keep
        }
        mode = new
        if new == .x2APIC {
            id = initialID
            ldr = LocalAPIC.x2apicLDR(id: UInt32(initialID))
            dfr = 0xFFFF_FFFF
        }
        return [.addressingChanged, .timerChanged]
    }

    /// RDMSR of x2APIC MSR `msr`: the value, or nil for #GP (not in x2APIC mode, a write-only or
    /// undefined register).
    public func readMSR(_ msr: UInt32, now: UInt64) -> UInt64? {
        guard mode == .x2APIC, LocalAPIC.x2apicMSRs.contains(msr) else { return nil }
        let reg = (msr - 0x800) << 4
        switch reg {
        case APICRegister.id: return UInt64(initialID)
        case APICRegister.icrLow: return UInt64(icrHigh) << 32 | UInt64(icrLow)
        case APICRegister.version, APICRegister.tpr, APICRegister.ppr, APICRegister.ldr, APICRegister.svr,
             APICRegister.esr, APICRegister.timerInitialCount, APICRegister.timerCurrentCount, APICRegister.timerDivide:
            return UInt64(read(reg, now: now))
        case APICRegister.isrBase..<(APICRegister.irrBase + 0x80):
            return UInt64(read(reg, now: now))
        default:
            if LocalAPIC.lvtOffsets.contains(reg) { return UInt64(read(reg, now: now)) }
            return nil   // EOI, SELF IPI (write-only), APR, RRD, DFR, ICR high, reserved
        }
    }

    /// WRMSR of x2APIC MSR `msr`: the effects, or nil for #GP (not in x2APIC mode, a read-only or
    /// undefined register, reserved bits set, a non-zero write to EOI or ESR).
    public mutating func writeMSR(_ msr: UInt32, _ value: UInt64, now: UInt64) -> [APICEffect]? {
        guard mode == .x2APIC, LocalAPIC.x2apicMSRs.contains(msr) else { return nil }
        let reg = (msr - 0x800) << 4
        if reg == APICRegister.icrLow {
            icrLow = UInt32(truncatingIfNeeded: value) & 0x000C_CFFF
            icrHigh = UInt32(truncatingIfNeeded: value >> 32)
            var cmd = InterruptCommand(x2apicICR: value)
            cmd.assert = true   // the level bit is ignored in x2APIC mode (INIT de-assert does not exist)
            return sendChecked(cmd)
        }
        guard value >> 32 == 0 else { return nil }
        let v = UInt32(value)
        switch reg {
        case 0x3F0:   // SELF IPI: vector only; fixed, edge, to this APIC
            guard v >> 8 == 0 else { return nil }
            var cmd = InterruptCommand(low: v | 1 << 14 | UInt32(DestinationShorthand.selfOnly.rawValue) << 18, high: 0)
            cmd.x2apicFormat = true
            return sendChecked(cmd)
        case APICRegister.eoi, APICRegister.esr:
            guard v == 0 else { return nil }
            return write(reg, 0, now: now)
        case APICRegister.tpr:
            guard v >> 8 == 0 else { return nil }
            return write(reg, v, now: now)
        case APICRegister.svr, APICRegister.timerInitialCount, APICRegister.timerDivide:
            return write(reg, v, now: now)
        default:
            if LocalAPIC.lvtOffsets.contains(reg) { return write(reg, v, now: now) }
            return nil   // ID, version, PPR, LDR, ISR/TMR/IRR, current count (read-only), reserved
        }
    }

    /// An IPI leaving this APIC: a fixed or lowest-priority one with vector 0-15 is refused
    /// (ESR "send illegal vector").
    mutating func sendChecked(_ cmd: InterruptCommand) -> [APICEffect] {
        if (cmd.mode == .fixed || cmd.mode == .lowestPriority) && cmd.vector < 16 {
            raiseError(LocalAPIC.esrSendIllegalVector)
            return []
        }
        return [.sendIPI(cmd)]
    }
}
