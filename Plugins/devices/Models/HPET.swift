// High Precision Event Timer (IA-PC HPET specification 1.0a): one 64-bit main counter at
// 100 MHz (10 ns period, as QEMU's) and `timers` comparators (3 by default, 3-32), in 1 KiB of
// MMIO at 0xFED00000 (the address the firmware's ACPI "HPET" table gives when an `hpet` device
// is configured). Registers (any 4- or 8-byte access; byte/word accesses merge into them):
//   0x000 GCAP_ID  rev 1, NUM_TIM_CAP = timers-1, COUNT_SIZE_CAP (64-bit), LEG_RT_CAP,
//                  vendor 0x8086, COUNTER_CLK_PERIOD 10_000_000 fs
//   0x010 GEN_CONF bit 0 ENABLE_CNF (the counter runs), bit 1 LEG_RT_CNF (legacy replacement:
//                  timer 0 -> IOAPIC pin 2 (ISA IRQ 0), timer 1 -> pin 8 (IRQ 8))
//   0x020 GINTR_STA bit n: timer n's level interrupt is active; writing 1 clears it (deasserts)
//   0x0F0 MAIN_COUNTER (writable; meant to be written while halted)
//   0x100 + 0x20*n  Tn_CONFIG: bit 1 level, bit 2 INT_ENB, bit 3 periodic, bit 4 PER_INT_CAP,
//                  bit 5 SIZE_CAP (64-bit), bit 6 VAL_SET, bit 8 32-bit mode, bits 9-13 the
//                  IOAPIC pin (only pins set in Tn_INT_ROUTE_CAP, bits 32-63, are taken);
//                  no FSB delivery
//   0x108 + 0x20*n  Tn_COMPARATOR: writes set the comparator (one-shot, or periodic with
//                  VAL_SET) and always the period; a periodic timer adds the period at each match.
//                  A write of the low half alone sets the next counter value with those low 32
//                  bits (how 32-bit drivers such as Linux's program a 64-bit HPET; QEMU does so)
// A timer interrupts when the counter reaches its comparator (a comparator already passed
// waits for the counter to wrap, as on hardware). Edge timers pulse their line; level timers
// set GINTR_STA and hold the line until the guest clears the bit.
// Settings: `timers` (3-32), `route_cap` (bitmask of IOAPIC pins timers may use; default
// 0x00F00000 = pins 20-23, decimal or 0x-hex).
// Threading: io() (vCPU or forwarding thread) and the timer callbacks (host timer thread) both
// take `lock`; set_irq is called outside it, in the order the state changed.
import PluginKit
import Synchronization

struct HPETTimer: Equatable {
    static let level: UInt64 = 1 << 1, enable: UInt64 = 1 << 2, periodic: UInt64 = 1 << 3
    static let periodicCap: UInt64 = 1 << 4, sizeCap: UInt64 = 1 << 5, valSet: UInt64 = 1 << 6, mode32: UInt64 = 1 << 8
    static let writable: UInt64 = level | enable | periodic | valSet | mode32 | (0x1F << 9)
    var config: UInt64
    var comparator: UInt64 = ~0
    var period: UInt64 = 0
    var route: UInt32 { UInt32((config >> 9) & 0x1F) }
}

/// An interrupt line change the model must make (outside its lock).
enum HPETLine: Equatable {
    case pulse(UInt32)
    case level(UInt32, Bool)
}

struct HPETState: Equatable {
    static let tickNs: UInt64 = 10
    static let periodFs: UInt64 = 10_000_000
    static let enableCnf: UInt64 = 1, legacyCnf: UInt64 = 2
    var routeCap: UInt32
    var generalConfig: UInt64 = 0
    var interruptStatus: UInt64 = 0
    /// Counter value at `startNs` (when enabled) or the halted value.
    var counterBase: UInt64 = 0
    var startNs: UInt64 = 0
    var timers: [HPETTimer]

    init(timers n: Int, routeCap: UInt32) {
        self.routeCap = routeCap
        timers = (0..<n).map { _ in HPETTimer(config: HPETTimer.periodicCap | HPETTimer.sizeCap | UInt64(routeCap) << 32) }
    }

    var enabled: Bool { generalConfig & HPETState.enableCnf != 0 }
    var legacy: Bool { generalConfig & HPETState.legacyCnf != 0 }

    func counter(_ ns: UInt64) -> UInt64 {
        enabled ? counterBase &+ (ns &- startNs) / HPETState.tickNs : counterBase
    }

    var capabilities: UInt64 {
        0x01 | UInt64(timers.count - 1) << 8 | 1 << 13 | 1 << 15 | 0x8086 << 16 | HPETState.periodFs << 32
    }

    /// The IOAPIC pin of timer n now.
    func line(_ n: Int) -> UInt32 {
        if legacy && n == 0 { return 2 }
        if legacy && n == 1 { return 8 }
        return timers[n].route
    }

    func register(_ reg: UInt64, ns: UInt64) -> UInt64 {
        switch reg {
        case 0x000: return capabilities
        case 0x010: return generalConfig
        case 0x020: return interruptStatus
        case 0x0F0: return counter(ns)
        default:
            guard reg >= 0x100, case let n = Int((reg - 0x100) / 0x20), n < timers.count else { return 0 }
            switch (reg - 0x100) % 0x20 {
            case 0x00: return timers[n].config
            case 0x08: return timers[n].mode32 ? timers[n].comparator & 0xFFFF_FFFF : timers[n].comparator
            default: return 0
            }
        }
    }

    /// A read of `size` bytes at `offset`.
    func read(_ offset: UInt64, size: Int, ns: UInt64) -> UInt64 {
        let v = register(offset & ~7, ns: ns) >> ((offset & 7) * 8)
        return size >= 8 ? v : v & ((1 << (UInt64(size) * 8)) - 1)
    }

    /// A write; returns the line changes to make and whether timers must be re-planned.
    mutating func write(_ offset: UInt64, size: Int, value: UInt64, ns: UInt64) -> (lines: [HPETLine], replan: Bool) {
        let reg = offset & ~7, shift = (offset & 7) * 8
        let mask: UInt64 = size >= 8 ? ~0 : ((1 << (UInt64(size) * 8)) - 1) << shift
        func merged(_ old: UInt64) -> UInt64 { (old & ~mask) | ((value << shift) & mask) }
        var lines: [HPETLine] = []
        switch reg {
        case 0x010:
            let oldLines = (0..<timers.count).map(line)
            let c = counter(ns)
            let new = merged(generalConfig) & 3
            if (new ^ generalConfig) & HPETState.enableCnf != 0 { counterBase = c; startNs = ns }
            // a level interrupt moving to another line (legacy replacement toggled) moves with it
            generalConfig = new
            for n in 0..<timers.count where interruptStatus & (1 << n) != 0 && oldLines[n] != line(n) {
                lines.append(.level(oldLines[n], false)); lines.append(.level(line(n), true))
            }
            if !enabled {
                for n in 0..<timers.count where interruptStatus & (1 << n) != 0 { lines.append(.level(line(n), false)) }
                interruptStatus = 0
            }
            return (lines, true)
        case 0x020:
            let clear = merged(0) & interruptStatus
            for n in 0..<timers.count where clear & (1 << n) != 0 { lines.append(.level(line(n), false)) }
            interruptStatus &= ~clear
            return (lines, false)
        case 0x0F0:
            counterBase = merged(counter(ns)); startNs = ns
            return ([], true)
        default:
            guard reg >= 0x100, case let n = Int((reg - 0x100) / 0x20), n < timers.count else { return ([], false) }
            var t = timers[n]
            switch (reg - 0x100) % 0x20 {
            case 0x00:
                let old = t.config
                var c = merged(t.config)
                if !routeAllowed(UInt32((c >> 9) & 0x1F)) { c = (c & ~(0x1F << 9)) | (old & (0x1F << 9)) }
                t.config = (old & ~HPETTimer.writable) | (c & HPETTimer.writable)
                let wasActive = interruptStatus & (1 << n) != 0
                if wasActive && (t.config & HPETTimer.level == 0 || t.config & HPETTimer.enable == 0) {
                    interruptStatus &= ~(1 << n)
                    lines.append(.level(line(n), false))
                } else if wasActive && t.route != timers[n].route && !legacy {
                    lines.append(.level(timers[n].route, false)); lines.append(.level(t.route, true))
                }
            case 0x08:
                var v = merged(t.comparator)
                if size <= 4 && offset & 7 == 0 && !t.mode32 {
                    // the low half alone (what 32-bit drivers such as Linux's write): the next
                    // counter value with those low bits, as QEMU's HPET does
                    let c = counter(ns)
                    v = (c & ~0xFFFF_FFFF) | (value & 0xFFFF_FFFF)
                    if v < c { v &+= 1 << 32 }
                }
                if t.config & HPETTimer.periodic == 0 || t.config & HPETTimer.valSet != 0 { t.comparator = v }
                t.period = merged(t.period)
                t.config &= ~HPETTimer.valSet
            default:
                return ([], false)
            }
            timers[n] = t
            return (lines, true)
        }
    }

    func routeAllowed(_ pin: UInt32) -> Bool { pin < 32 && routeCap & (1 << pin) != 0 }

    /// Ticks from counter value `c` to timer n's next match, or nil when it will not interrupt
    /// (counter halted, interrupt disabled, or a comparator at or behind the counter in 64-bit mode).
    func ticksToMatch(_ n: Int, ns: UInt64) -> UInt64? {
        let t = timers[n]
        guard enabled, t.config & HPETTimer.enable != 0 else { return nil }
        let c = counter(ns)
        if t.mode32 {
            let d = (UInt32(truncatingIfNeeded: t.comparator) &- UInt32(truncatingIfNeeded: c))
            return UInt64(d == 0 ? 1 << 32 : d)
        }
        return t.comparator > c ? t.comparator - c : nil
    }

    /// Timer n's comparator matched at `ns` (the caller's host timer fired): the line change,
    /// and for a periodic timer the comparator moves past the counter by whole periods.
    mutating func fire(_ n: Int, ns: UInt64) -> [HPETLine] {
        var t = timers[n]
        guard enabled, t.config & HPETTimer.enable != 0 else { return [] }
        if t.config & HPETTimer.periodic != 0 && t.period != 0 {
            let c = counter(ns)
            let width: UInt64 = t.mode32 ? 0xFFFF_FFFF : ~0
            if t.mode32 {
                repeat { t.comparator = (t.comparator &+ t.period) & width }
                while UInt32(truncatingIfNeeded: t.comparator) &- UInt32(truncatingIfNeeded: c) > UInt32(truncatingIfNeeded: t.period)
            } else if t.comparator <= c {
                t.comparator &+= ((c - t.comparator) / t.period + 1) * t.period
            }
            timers[n] = t
        }
        if t.config & HPETTimer.level != 0 {
            guard interruptStatus & (1 << n) == 0 else { return [] }
            interruptStatus |= 1 << n
            return [.level(line(n), true)]
        }
        return [.pulse(line(n))]
    }
}

extension HPETTimer {
    var mode32: Bool { config & HPETTimer.mode32 != 0 }
}

public final class HPET: DeviceModel {
    public static let modelName = "hpet"
    public static let summary = "HPET (MMIO 0xFED00000, 1 KiB): 64-bit 100 MHz counter, 3-32 timers routed to IOAPIC pins, legacy replacement"
    public static let settingInfo = [
        SettingInfo("timers", default: "3", "number of comparators (3-32)"),
        SettingInfo("route_cap", default: "0x00F00000", "mask of IOAPIC pins (0-23) a timer may be routed to"),
    ]
    let services: HostServices
    let host: DeviceHost
    let state: Mutex<HPETState>
    let timerIDs: Mutex<[UInt64]>
    let interrupts: Counter

    public init(services: HostServices, host: DeviceHost, config: DeviceConfig, settings: Settings) throws {
        try settings.allowOnly(declared: Self.settingInfo)
        self.services = services
        self.host = host
        let n = try settings.int("timers", default: 3, range: 3...32)
        let cap = try parseInteger(settings.values["route_cap"] ?? "0x00F00000", key: "route_cap", max: 0xFFFF_FFFF)
        guard cap & 0xFF00_0000 == 0 else {
            throw PluginError("setting 'route_cap': 0x\(String(cap, radix: 16)) names pins above 23 (the IOAPIC has 24)")
        }
        state = Mutex(HPETState(timers: n, routeCap: UInt32(cap)))
        timerIDs = Mutex([UInt64](repeating: 0, count: n))
        interrupts = services.counter("hpet.\(config.name).irqs")
        if config.irq != nil {
            throw PluginError("hpet takes no 'irq:' (each timer's IOAPIC pin is chosen by the guest, within route_cap)")
        }
        try host.map(.mmio, base: config.base ?? 0xFED0_0000, length: 0x400)
    }

    public func io(space: IOSpace, offset: UInt64, data: UnsafeMutableBufferPointer<UInt8>, isWrite: Bool) {
        let ns = services.nowNanoseconds()
        if isWrite {
            var v: UInt64 = 0
            for (i, b) in data.prefix(8).enumerated() { v |= UInt64(b) << (8 * UInt64(i)) }
            let (lines, replan) = state.withLock { $0.write(offset, size: data.count, value: v, ns: ns) }
            apply(lines)
            if replan { planAll() }
        } else {
            let v = state.withLock { $0.read(offset, size: data.count, ns: ns) }
            for i in 0..<data.count { data[i] = i < 8 ? UInt8(truncatingIfNeeded: v >> (8 * UInt64(i))) : 0 }
        }
    }

    func apply(_ lines: [HPETLine]) {
        for l in lines {
            switch l {
            case let .pulse(pin):
                interrupts.add()
                host.setIRQ(pin, level: true)
                host.setIRQ(pin, level: false)
            case let .level(pin, on):
                if on { interrupts.add() }
                host.setIRQ(pin, level: on)
            }
        }
    }

    /// One host timer per HPET timer that will interrupt: one-shot at the match, or periodic at
    /// the timer's period (at least 10 µs) for a periodic timer.
    func planAll() {
        let old = timerIDs.withLock { ids -> [UInt64] in let o = ids; ids = ids.map { _ in 0 }; return o }
        for id in old where id != 0 { services.cancelTimer(id) }
        let ns = services.nowNanoseconds()
        let plans = state.withLock { s -> [(Int, UInt64, UInt64)] in
            (0..<s.timers.count).compactMap { n in
                guard let ticks = s.ticksToMatch(n, ns: ns) else { return nil }
                let t = s.timers[n]
                let period = t.config & HPETTimer.periodic != 0 && t.period != 0 ? max(t.period * HPETState.tickNs, 10_000) : 0
                let (delay, overflow) = ticks.multipliedReportingOverflow(by: HPETState.tickNs)
                return overflow ? nil : (n, delay, period)
            }
        }
        for (n, delay, period) in plans {
            let id = services.startTimer(afterNanoseconds: max(delay, 1000), periodNanoseconds: period) { [weak self] in
                self?.expired(n)
            }
            timerIDs.withLock { $0[n] = id }
        }
    }

    func expired(_ n: Int) {
        let ns = services.nowNanoseconds()
        apply(state.withLock { $0.fire(n, ns: ns) })
    }

    public func reset() {
        state.withLock { s in s = HPETState(timers: s.timers.count, routeCap: s.routeCap) }
        planAll()
    }

    public func shutdown() {
        let old = timerIDs.withLock { ids -> [UInt64] in let o = ids; ids = ids.map { _ in 0 }; return o }
        for id in old where id != 0 { services.cancelTimer(id) }
    }
}

/// A decimal or 0x-hexadecimal integer setting no larger than `max`.
func parseInteger(_ text: String, key: String, max: UInt64) throws -> UInt64 {
    let t = text.lowercased()
    let v = t.hasPrefix("0x") ? UInt64(t.dropFirst(2), radix: 16) : UInt64(t)
    guard let v else { throw PluginError("setting '\(key)': '\(text)' is not an integer (decimal or 0x-hex)") }
    guard v <= max else { throw PluginError("setting '\(key)': \(text) is larger than 0x\(String(max, radix: 16))") }
    return v
}
