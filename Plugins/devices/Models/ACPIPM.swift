// ACPI fixed-hardware power management registers (ACPI 6 chapter 4.8), for guests that ask
// for sleep states. Placing an `acpi-pm` device makes the firmware write a full FADT, a FACS
// and a DSDT defining \_S1 and \_S5 that point here (Sources/Firmware/PlatformTables.swift).
// Ports from `base` (default 0x600, 12 ports):
//   +0 PM1_STS (16 bits): TMR_STS (bit 0: the PM timer's bit 23 toggled), WAK_STS (bit 15);
//      writing 1 clears a bit
//   +2 PM1_EN (16 bits): stored (no SCI is ever raised: no enabled event source is modelled
//      beyond the status bits)
//   +4 PM1_CNT (16 bits): SCI_EN (bit 0) reads 1 (ACPI mode is always on, SMI_CMD is 0);
//      SLP_TYP (bits 10-12) stored; writing SLP_EN (bit 13, reads 0) enters the sleep state
//      SLP_TYP names: 5 (\_S5, soft off) ends the VM as powered off (guest status 1, the
//      isa-debug-exit "passed" status: exit 0); 1 (\_S1, standby) sleeps and wakes at once
//      (nothing here needs waking: WAK_STS is set); other types are not offered and ignored
//   +8 PM_TMR (32 bits, read-only): a 24-bit counter at 3.579545 MHz
// Threading: io() calls into one instance never overlap (the host serialises them) and this
// model starts no timers, so its state needs no lock.
import PluginKit

struct ACPIPMState: Equatable {
    static let timerHz: UInt64 = 3_579_545
    static let sciEnable: UInt16 = 1, sleepEnable: UInt16 = 1 << 13
    static let timerStatus: UInt16 = 1, wakeStatus: UInt16 = 1 << 15
    static let slpTypS1: UInt16 = 1, slpTypS5: UInt16 = 5
    var status: UInt16 = 0
    var enable: UInt16 = 0
    var control: UInt16 = ACPIPMState.sciEnable
    var lastTimer: UInt32 = 0

    enum Action: Equatable { case none, powerOff, standby }

    /// PM timer ticks at monotonic `ns`.
    static func ticks(_ ns: UInt64) -> UInt64 {
        let (hi, lo) = ns.multipliedFullWidth(by: timerHz)
        return UInt64(1_000_000_000).dividingFullWidth((hi, lo)).quotient
    }

    mutating func read(_ offset: UInt64, size: Int, ns: UInt64) -> UInt32 {
        let tmr = UInt32(truncatingIfNeeded: ACPIPMState.ticks(ns)) & 0xFF_FFFF
        if (tmr ^ lastTimer) & 0x80_0000 != 0 { status |= ACPIPMState.timerStatus }
        lastTimer = tmr
        let regs: UInt64 = UInt64(status) | UInt64(enable) << 16 | UInt64(control & ~ACPIPMState.sleepEnable) << 32
        let v: UInt64 = offset >= 8 ? UInt64(tmr) >> ((offset - 8) * 8) : regs >> (offset * 8)
        return UInt32(truncatingIfNeeded: size >= 4 ? v : v & ((1 << (UInt64(size) * 8)) - 1))
    }

    mutating func write(_ offset: UInt64, size: Int, value: UInt32) -> Action {
        // split into bytes so any width at any offset lands in the right register halves
        var action = Action.none
        for i in 0..<min(size, 4) {
            let o = offset + UInt64(i), b = UInt16(truncatingIfNeeded: value >> (8 * UInt32(i)))
            switch o {
            case 0: status &= ~b
            case 1: status &= ~(b << 8)
            case 2: enable = (enable & 0xFF00) | b
            case 3: enable = (enable & 0x00FF) | b << 8
            case 4: control = (control & 0xFF00) | b | ACPIPMState.sciEnable
            case 5:
                control = (control & 0x00FF) | (b << 8 & ~ACPIPMState.sleepEnable)
                if b << 8 & ACPIPMState.sleepEnable != 0 {
                    switch (control >> 10) & 7 {
                    case ACPIPMState.slpTypS5: action = .powerOff
                    case ACPIPMState.slpTypS1: status |= ACPIPMState.wakeStatus; action = .standby
                    default: break
                    }
                }
            default: break
            }
        }
        return action
    }
}

public final class ACPIPM: DeviceModel {
    public static let modelName = "acpi-pm"
    public static let summary = "ACPI PM registers (0x600: PM1 event/control, PM timer) + full FADT/FACS/DSDT with \\_S1, \\_S5 (soft off ends the VM)"
    let services: HostServices
    let host: DeviceHost
    let name: String
    var state = ACPIPMState()
    let sleeps: Counter

    public init(services: HostServices, host: DeviceHost, config: DeviceConfig, settings: Settings) throws {
        try settings.allowOnly([])
        self.services = services
        self.host = host
        name = config.name
        sleeps = services.counter("acpi-pm.\(config.name).sleeps")
        try host.map(.pio, base: config.base ?? 0x600, length: 12)
    }

    public func io(space: IOSpace, offset: UInt64, data: UnsafeMutableBufferPointer<UInt8>, isWrite: Bool) {
        if isWrite {
            var v: UInt32 = 0
            for (i, b) in data.prefix(4).enumerated() { v |= UInt32(b) << (8 * UInt32(i)) }
            switch state.write(offset, size: data.count, value: v) {
            case .powerOff:
                sleeps.add()
                host.requestStop(status: 1, reason: "\(name): guest powered off (ACPI S5 soft off)")
            case .standby: sleeps.add()
            case .none: break
            }
        } else {
            let v = state.read(offset, size: data.count, ns: services.nowNanoseconds())
            for i in 0..<data.count { data[i] = i < 4 ? UInt8(truncatingIfNeeded: v >> (8 * UInt32(i))) : 0 }
        }
    }

    public func reset() { state = ACPIPMState() }
}
