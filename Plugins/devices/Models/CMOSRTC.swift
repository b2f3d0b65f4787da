// MC146818-style CMOS RTC and NVRAM at ports 0x70 (index; bit 7 = NMI disable) and 0x71 (data).
// Time registers (seconds 0x00, minutes 0x02, hours 0x04, weekday 0x06, day 0x07, month 0x08,
// year 0x09, century 0x32) follow the host's UTC clock, in BCD unless status B's DM bit (0x04)
// selects binary, 24-hour unless status B bit 1 is clear (12-hour, bit 7 = PM). Writing a time
// register moves the guest's clock by an offset (the host clock is never changed).
// Status A = 0x26 (32.768 kHz base, 1024 Hz rate; UIP always 0), B = 0x02 at power on (24 h,
// BCD), C = 0 (no interrupt sources are modelled: periodic/alarm/update interrupts on IRQ 8 are
// not offered), D = 0x80 (valid RAM and time).
// Memory size bytes, from the `memory` setting (the host fills it from the cluster config):
//   0x15/0x16 base memory KiB (640), 0x17/0x18 and 0x30/0x31 KiB above 1 MiB (max 0xFFFF),
//   0x34/0x35 64 KiB blocks above 16 MiB (max 0xFFFF), 0x5B-0x5D 64 KiB blocks above 4 GiB;
//   0x2E/0x2F is the checksum of 0x10-0x2D. Other bytes are plain NVRAM (128 bytes).
// Threading: io() calls into one instance never overlap (the host serialises them) and these
// models start no timers, so their state needs no lock.
import Glibc
import PluginKit

struct CMOSState: Equatable {
    static let index: UInt64 = 0, data: UInt64 = 1
    var ram = [UInt8](repeating: 0, count: 128)
    var selected: UInt8 = 0
    /// Guest time minus host time, seconds.
    var offset = 0

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

    mutating func read(_ port: UInt64, now: Int) -> UInt8 {
        guard port == CMOSState.data else { return 0xFF }
        let r = selected & 0x7F
        let v = value(r, now: now)
        if r == 0x0C { ram[0x0C] = 0 }
        return v
    }

    mutating func write(_ port: UInt64, _ v: UInt8, now: Int) {
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
        case 0x0A: ram[0x0A] = v & 0x7F        // UIP is read-only
        case 0x0C, 0x0D: break                 // read-only
        default:
            ram[Int(r)] = v
            if (0x10...0x2D).contains(r) { updateChecksum() }
        }
    }
}

public final class CMOSRTC: DeviceModel {
    public static let modelName = "cmos-rtc"
    public static let summary = "CMOS RTC/NVRAM (ports 0x70-0x71): UTC time in BCD, status A-D, memory size bytes"
    public static let settingInfo = [
        SettingInfo("memory", default: nil, "guest RAM in bytes for the NVRAM memory-size bytes (required; the host fills it from the config)"),
    ]
    var state: CMOSState

    public init(services: HostServices, host: DeviceHost, config: DeviceConfig, settings: Settings) throws {
        try settings.allowOnly(declared: Self.settingInfo)
        guard let mem = settings.values["memory"] else {
            throw PluginError("cmos-rtc needs the setting 'memory' (the host fills it from the cluster config)")
        }
        state = CMOSState(memoryBytes: try parseByteCount(mem, key: "memory"))
        try host.map(.pio, base: config.base ?? 0x70, length: 2)
    }

    public func io(space: IOSpace, offset: UInt64, data: UnsafeMutableBufferPointer<UInt8>, isWrite: Bool) {
        let now = Int(time(nil))
        if isWrite { state.write(offset, data[0], now: now) } else {
            data[0] = state.read(offset, now: now)
            for i in 1..<data.count { data[i] = 0 }
        }
    }
}
