// MC146818-style CMOS RTC and NVRAM at ports 0x70 (index; bit 7 = NMI disable) and 0x71 (data).
// Time registers (seconds 0x00, minutes 0x02, hours 0x04, weekday 0x06, day 0x07, month 0x08,
// year 0x09, century 0x32) follow the host's UTC clock, in BCD unless status B's DM bit (0x04)
// selects binary, 24-hour unless status B bit 1 is clear (12-hour, bit 7 = PM). Writing a time
// register moves the guest's clock by an offset (the host clock is never changed).
// Status A = 0x26 (32.768 kHz base, 1024 Hz rate; UIP always 0), B = 0x02 at power on (24 h,
// BCD), D = 0x80 (valid RAM and time).
// Interrupts (status B bits 6-4 enable them, status C reports them; reading C clears it):
//   PF (C bit 6) at the periodic rate of status A bits 3-0 (rate r: 65536 >> r Hz, 1 and 2 are
//   256 and 128 Hz, 0 = off) while the divider bits 6-4 of A are 010 (oscillator running);
//   UF (bit 4) at each second of the guest clock (unless B's SET bit 7 holds updates);
//   AF (bit 5) when the guest clock's seconds/minutes/hours match the alarm registers 0x01,
//   0x03 and 0x05 (a value with bits 7-6 set matches anything).
// The flags are set whether enabled or not; IRQF (bit 7) is set when a flag is set whose
// enable bit in B is set, and that 0 -> 1 transition pulses the device's `irq:` line (8 on a
// PC; an edge on the IOAPIC, like QEMU's RTC): a guest gets the next interrupt only after it
// has read C. A host timer runs only while an interrupt is enabled.
// Memory size bytes, from the `memory` setting (the host fills it from the cluster config):
//   0x15/0x16 base memory KiB (640), 0x17/0x18 and 0x30/0x31 KiB above 1 MiB (max 0xFFFF),
//   0x34/0x35 64 KiB blocks above 16 MiB (max 0xFFFF), 0x5B-0x5D 64 KiB blocks above 4 GiB;
//   0x2E/0x2F is the checksum of 0x10-0x2D. Other bytes are plain NVRAM (128 bytes).
// Threading: io() (vCPU or forwarding thread) and the interrupt timer (host timer thread) both
// take `lock`; set_irq is called outside it.
import Glibc
import PluginKit
import Synchronization

struct CMOSState: Equatable {
    static let index: UInt64 = 0, data: UInt64 = 1
    var ram = [UInt8](repeating: 0, count: 128)
    var selected: UInt8 = 0
    /// Guest time minus host time, seconds.
    var offset = 0
    /// Status C flags accumulated since C was last read (PF, AF, UF; IRQF computed).
    var flags: UInt8 = 0
    /// Monotonic time (ns) and guest second up to which the flags are accounted.
    var checkedNs: UInt64 = 0
    var checkedSecond: Int? = nil

    static let pf: UInt8 = 0x40, af: UInt8 = 0x20, uf: UInt8 = 0x10, irqf: UInt8 = 0x80

    init(memoryBytes: UInt64) {
        ram[0x0A] = 0x26
        ram[0x0B] = 0x02
        ram[0x0D] = 0x80
        let baseKiB: UInt64 = 640
        ram[0x15] = UInt8(baseKiB & 0xFF); ram[0x16] = UInt8(baseKiB >> 8)
        let ext = min(memoryBytes > 1 << 20 ? (memoryBytes - (1 << 20)) >> 10 : 0, 0xFFFF)
        ram[0x17] = UInt8(ext & 0xFF); ram[0x18] = UInt8(ext >> 8)
        ram[0x30] = UInt8(ext & 0xFF); ram[0x31] = UInt8(ext >> 8)
        let below4G = min(memoryBytes, 0xC000_0000)
        let above16 = min(below4G > 16 << 20 ? (below4G - (16 << 20)) >> 16 : 0, 0xFFFF)
        ram[0x34] = UInt8(above16 & 0xFF); ram[0x35] = UInt8(above16 >> 8)
        let above4G = memoryBytes > 1 << 32 ? (memoryBytes - (1 << 32)) >> 16 : 0
        ram[0x5B] = UInt8(above4G & 0xFF); ram[0x5C] = UInt8((above4G >> 8) & 0xFF); ram[0x5D] = UInt8((above4G >> 16) & 0xFF)
        updateChecksum()
    }

    mutating func updateChecksum() {
        let sum = ram[0x10...0x2D].reduce(UInt16(0)) { $0 &+ UInt16($1) }
        ram[0x2E] = UInt8(sum >> 8); ram[0x2F] = UInt8(sum & 0xFF)
    }

    var binary: Bool { ram[0x0B] & 0x04 != 0 }
    var hour24: Bool { ram[0x0B] & 0x02 != 0 }

    func encode(_ v: Int) -> UInt8 { binary ? UInt8(v) : UInt8((v / 10) << 4 | (v % 10)) }
    func decode(_ b: UInt8) -> Int { binary ? Int(b) : Int(b >> 4) * 10 + Int(b & 0x0F) }

    static func brokenDown(_ t: Int) -> tm {
        var tt = time_t(t)
        var out = tm()
        gmtime_r(&tt, &out)
        return out
    }

    /// The value of register r at host time `now` (Unix seconds).
    func value(_ r: UInt8, now: Int) -> UInt8 {
        let t = CMOSState.brokenDown(now + offset)
        switch r {
        case 0x00: return encode(Int(t.tm_sec))
        case 0x02: return encode(Int(t.tm_min))
        case 0x04:
            if hour24 { return encode(Int(t.tm_hour)) }
            let h = Int(t.tm_hour) % 12 == 0 ? 12 : Int(t.tm_hour) % 12
            return encode(h) | (t.tm_hour >= 12 ? 0x80 : 0)
        case 0x06: return encode(Int(t.tm_wday) + 1)
        case 0x07: return encode(Int(t.tm_mday))
        case 0x08: return encode(Int(t.tm_mon) + 1)
        case 0x09: return encode(Int(t.tm_year + 1900) % 100)
        case 0x32: return encode(Int(t.tm_year + 1900) / 100)
        default: return ram[Int(r)]
        }
    }

    /// The periodic interrupt period in nanoseconds, or nil when PF never sets.
    var periodNs: UInt64? {
        let rate = ram[0x0A] & 0x0F
        guard rate != 0, (ram[0x0A] >> 4) & 7 == 2 else { return nil }
        let hz: UInt64 = rate == 1 ? 256 : rate == 2 ? 128 : 65536 >> UInt64(rate)
        return 1_000_000_000 / hz
    }

    /// Interrupt sources enabled in status B (the PF/AF/UF bits that raise IRQF).
    var enabled: UInt8 { ram[0x0B] & 0x70 }

    /// Whether alarm registers match guest time `t` (Unix seconds).
    func alarmMatches(_ t: Int) -> Bool {
        let b = CMOSState.brokenDown(t)
        func match(_ reg: Int, _ v: Int32) -> Bool { ram[reg] & 0xC0 == 0xC0 || ram[reg] == encode(Int(v)) }
        let hourReg: UInt8
        if hour24 { hourReg = encode(Int(b.tm_hour)) } else {
            let h = Int(b.tm_hour) % 12 == 0 ? 12 : Int(b.tm_hour) % 12
            hourReg = encode(h) | (b.tm_hour >= 12 ? 0x80 : 0)
        }
        return match(0x01, b.tm_sec) && match(0x03, b.tm_min) && (ram[0x05] & 0xC0 == 0xC0 || ram[0x05] == hourReg)
    }

    var irqf: Bool { flags & enabled != 0 }

    /// Accounts the periodic, update and alarm events up to monotonic `ns` and Unix second `now`;
    /// returns true when IRQF goes from 0 to 1 (the caller pulses the interrupt line).
    mutating func advance(ns: UInt64, now: Int) -> Bool {
        let before = irqf
        if let p = periodNs, ns / p > checkedNs / p { flags |= CMOSState.pf }
        checkedNs = max(checkedNs, ns)
        let sec = now + offset
        if let last = checkedSecond, sec > last {
            if ram[0x0B] & 0x80 == 0 { flags |= CMOSState.uf }
            // at most one day of seconds is searched for the alarm (a daily alarm recurs within it)
            var t = max(last + 1, sec - 86_399)
            while t <= sec { if alarmMatches(t) { flags |= CMOSState.af; break }; t += 1 }
        }
        checkedSecond = sec
        return !before && irqf
    }

    /// The next time (monotonic ns from `ns`) at which an enabled source may set a flag, or nil.
    func nextEventDelay(ns: UInt64) -> UInt64? {
        var d: UInt64? = nil
        if enabled & CMOSState.pf != 0, let p = periodNs { d = p - ns % p }
        if enabled & (CMOSState.uf | CMOSState.af) != 0 {
            let toSecond: UInt64 = 1_000_000_000 - ns % 1_000_000_000
            d = min(d ?? toSecond, toSecond)
        }
        return d
    }

    mutating func read(_ port: UInt64, now: Int, ns: UInt64 = 0) -> UInt8 {
        guard port == CMOSState.data else { return 0xFF }
        let r = selected & 0x7F
        if r == 0x0C {
            _ = advance(ns: ns, now: now)
            let v = flags | (irqf ? CMOSState.irqf : 0)
            flags = 0
            return v
        }
        return value(r, now: now)
    }

    /// A guest write with its interrupt effects: whether the interrupt timer must be re-planned
    /// (status A or B changed) and whether IRQF went 0 -> 1 (enabling a source whose flag is
    /// already set raises IRQF at once, as on the chip).
    mutating func guestWrite(_ port: UInt64, _ v: UInt8, now: Int, ns: UInt64) -> (replan: Bool, fire: Bool) {
        let reg = selected & 0x7F
        let before = irqf
        write(port, v, now: now, ns: ns)
        _ = advance(ns: ns, now: now)
        return (port == CMOSState.data && (reg == 0x0A || reg == 0x0B), !before && irqf)
    }

    mutating func write(_ port: UInt64, _ v: UInt8, now: Int, ns: UInt64 = 0) {
        if port == CMOSState.index { selected = v; return }
        let r = selected & 0x7F
        switch r {
        case 0x00, 0x02, 0x04, 0x07, 0x08, 0x09, 0x32:
            var t = CMOSState.brokenDown(now + offset)
            var n = decode(v & (r == 0x04 && !hour24 ? 0x7F : 0xFF))
            switch r {
            case 0x00: t.tm_sec = Int32(n)
            case 0x02: t.tm_min = Int32(n)
            case 0x04:
                if !hour24 { n = n % 12 + (v & 0x80 != 0 ? 12 : 0) }
                t.tm_hour = Int32(n)
            case 0x07: t.tm_mday = Int32(n)
            case 0x08: t.tm_mon = Int32(n - 1)
            case 0x09: t.tm_year = Int32((Int(t.tm_year + 1900) / 100) * 100 + n - 1900)
            default: t.tm_year = Int32(n * 100 + Int(t.tm_year + 1900) % 100 - 1900)
            }
            offset = Int(timegm(&t)) - now
        case 0x0A:
            _ = advance(ns: ns, now: now)      // events so far count at the old rate
            ram[0x0A] = v & 0x7F               // UIP is read-only
        case 0x0B:
            _ = advance(ns: ns, now: now)
            ram[0x0B] = v
        case 0x0C, 0x0D: break                 // read-only
        default:
            ram[Int(r)] = v
            if (0x10...0x2D).contains(r) { updateChecksum() }
        }
    }
}

public final class CMOSRTC: DeviceModel {
    public static let modelName = "cmos-rtc"
    public static let summary = "CMOS RTC/NVRAM (ports 0x70-0x71): UTC time in BCD, status A-D, memory size bytes, IRQ 8 (periodic/alarm/update)"
    public static let settingInfo = [
        SettingInfo("memory", default: nil, "guest RAM in bytes for the NVRAM memory-size bytes (required; the host fills it from the config)"),
    ]
    let services: HostServices
    let host: DeviceHost
    let irq: UInt32?
    let state: Mutex<CMOSState>
    let timerID = Mutex<UInt64>(0)
    let interrupts: Counter

    public init(services: HostServices, host: DeviceHost, config: DeviceConfig, settings: Settings) throws {
        try settings.allowOnly(declared: Self.settingInfo)
        guard let mem = settings.values["memory"] else {
            throw PluginError("cmos-rtc needs the setting 'memory' (the host fills it from the cluster config)")
        }
        self.services = services
        self.host = host
        irq = config.irq
        var s = CMOSState(memoryBytes: try parseByteCount(mem, key: "memory"))
        s.checkedNs = services.nowNanoseconds()
        s.checkedSecond = Int(time(nil))
        state = Mutex(s)
        interrupts = services.counter("rtc.\(config.name).irqs")
        try host.map(.pio, base: config.base ?? 0x70, length: 2)
    }

    public func io(space: IOSpace, offset: UInt64, data: UnsafeMutableBufferPointer<UInt8>, isWrite: Bool) {
        let now = Int(time(nil)), ns = services.nowNanoseconds()
        if isWrite {
            let (replan, fire) = state.withLock { $0.guestWrite(offset, data[0], now: now, ns: ns) }
            if fire { pulse() }
            if replan { planTimer() }
        } else {
            data[0] = state.withLock { $0.read(offset, now: now, ns: ns) }
            for i in 1..<data.count { data[i] = 0 }
        }
    }

    func pulse() {
        guard let irq else { return }
        interrupts.add()
        host.setIRQ(irq, level: true)
        host.setIRQ(irq, level: false)
    }

    /// (Re)starts the host timer when an interrupt source is enabled: a periodic timer at the
    /// shorter of the periodic rate and one second, so flags and IRQF are accounted on time.
    func planTimer() {
        let old = timerID.withLock { id -> UInt64 in let o = id; id = 0; return o }
        if old != 0 { services.cancelTimer(old) }
        guard irq != nil else { return }
        let ns = services.nowNanoseconds()
        guard let (delay, period) = state.withLock({ s -> (UInt64, UInt64)? in
            guard let d = s.nextEventDelay(ns: ns) else { return nil }
            let p = s.enabled & CMOSState.pf != 0 ? min(s.periodNs ?? 1_000_000_000, 1_000_000_000) : 1_000_000_000
            return (d, p)
        }) else { return }
        let id = services.startTimer(afterNanoseconds: max(delay, 1000), periodNanoseconds: period) { [weak self] in
            self?.tick()
        }
        timerID.withLock { $0 = id }
    }

    func tick() {
        let now = Int(time(nil)), ns = services.nowNanoseconds()
        if state.withLock({ $0.advance(ns: ns, now: now) }) { pulse() }
    }

    public func reset() {
        state.withLock { s in
            let mem = s.ram
            s = CMOSState(memoryBytes: 0)
            s.ram = mem
            s.ram[0x0A] = 0x26; s.ram[0x0B] = 0x02; s.ram[0x0C] = 0; s.ram[0x0D] = 0x80
            s.checkedNs = services.nowNanoseconds(); s.checkedSecond = Int(time(nil))
        }
        planTimer()
    }

    public func shutdown() {
        let old = timerID.withLock { id -> UInt64 in let o = id; id = 0; return o }
        if old != 0 { services.cancelTimer(old) }
    }
}
