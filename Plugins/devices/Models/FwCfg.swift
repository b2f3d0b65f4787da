// QEMU's firmware configuration device (fw_cfg), traditional port interface as on x86
// (QEMU docs/specs/fw_cfg.txt): a 16-bit selector register at 0x510 and an 8-bit data register
// at 0x511 (DMA at 0x514 is not offered: FW_CFG_ID reports the traditional interface only).
// Writing the selector picks an item and rewinds its offset; each data read returns the next
// byte, 0 past the end or for an unknown selector; data writes are ignored (as QEMU >= 2.4).
//
// Items: signature "QEMU" (0x00), ID 1 (0x01), UUID (0x02, zeros), RAM size (0x03, u64 LE),
// nographic (0x04, u16 = 1), boot CPUs (0x05, u16 LE), boot menu (0x0e, u16 = 0), max CPUs
// (0x0f, u16 LE), kernel command line size (0x14, u32 LE, length + 1) and data (0x15, with its
// NUL), the file directory (0x19: u32 BE count, then per file u32 BE size, u16 BE select, u16
// reserved, char name[56]), IRQ0 override (0x8002, u32 LE 1) and the files, sorted by name from
// selector 0x20: "etc/boot-fail-wait" (u32 LE) and "etc/e820" (the e820 map, 20 bytes an entry).
//
// Settings (the host fills the first three from the cluster config when they are absent):
//   cpus (vCPU count, 1-255), memory (guest RAM bytes; K/M/G, KiB/MiB/GiB suffixes allowed),
//   cmdline (kernel command line; absent = no 0x14/0x15 items), max_cpus (default cpus),
//   boot_fail_wait (seconds, default -1 = never reboot, as QEMU's -boot reboot-timeout).
// Threading: io() calls into one instance never overlap (the host serialises them) and these
// models start no timers, so their state needs no lock.
import PluginKit

/// The item store and the selector/data logic, free of the ABI (unit-tested directly).
/// Threading: a value type; the device serialises access.
struct FwCfgState: Equatable {
    enum Key {
        static let signature: UInt16 = 0x00, id: UInt16 = 0x01, uuid: UInt16 = 0x02, ramSize: UInt16 = 0x03
        static let nographic: UInt16 = 0x04, nbCPUs: UInt16 = 0x05, bootMenu: UInt16 = 0x0E, maxCPUs: UInt16 = 0x0F
        static let cmdlineSize: UInt16 = 0x14, cmdlineData: UInt16 = 0x15, fileDir: UInt16 = 0x19
        static let fileFirst: UInt16 = 0x20, irq0Override: UInt16 = 0x8002
    }
    static let selectorPort: UInt64 = 0, dataPort: UInt64 = 1

    var items: [UInt16: [UInt8]] = [:]
    var selector: UInt16 = 0
    var offset = 0

    init(cpus: Int, maxCPUs: Int, memoryBytes: UInt64, cmdline: String?, bootFailWait: Int32,
         extraFiles: [(String, [UInt8])] = []) {
        items[Key.signature] = Array("QEMU".utf8)
        items[Key.id] = FwCfgState.le(UInt64(1), 4)
        items[Key.uuid] = [UInt8](repeating: 0, count: 16)
        items[Key.ramSize] = FwCfgState.le(memoryBytes, 8)
        items[Key.nographic] = FwCfgState.le(1, 2)
        items[Key.nbCPUs] = FwCfgState.le(UInt64(cpus), 2)
        items[Key.bootMenu] = FwCfgState.le(0, 2)
        items[Key.maxCPUs] = FwCfgState.le(UInt64(maxCPUs), 2)
        items[Key.irq0Override] = FwCfgState.le(1, 4)
        if let cmdline {
            let data = Array(cmdline.utf8) + [0]
            items[Key.cmdlineSize] = FwCfgState.le(UInt64(data.count), 4)
            items[Key.cmdlineData] = data
        }
        var files = [("etc/boot-fail-wait", FwCfgState.le(UInt64(UInt32(bitPattern: bootFailWait)), 4)),
                     ("etc/e820", FwCfgState.e820(memoryBytes: memoryBytes))] + extraFiles
        files.sort { $0.0 < $1.0 }
        var dir = FwCfgState.be(UInt64(files.count), 4)
        for (i, (name, data)) in files.enumerated() {
            let sel = Key.fileFirst + UInt16(i)
            items[sel] = data
            var n = Array(name.utf8.prefix(55))
            n += [UInt8](repeating: 0, count: 56 - n.count)
            dir += FwCfgState.be(UInt64(data.count), 4) + FwCfgState.be(UInt64(sel), 2) + [0, 0] + n
        }
        items[Key.fileDir] = dir
    }

    /// The e820 map the firmware loader writes (Sources/Firmware MemoryRange.map): low RAM to
    /// the EBDA, EBDA, BIOS area, RAM from 1 MiB. Each entry: u64 address, u64 length, u32 type.
    static func e820(memoryBytes: UInt64) -> [UInt8] {
        let map: [(UInt64, UInt64, UInt64)] = [(0, 0x9FC00, 1), (0x9FC00, 0x400, 2), (0xE0000, 0x20000, 2),
                                               (0x100000, memoryBytes > 0x100000 ? memoryBytes - 0x100000 : 0, 1)]
        return map.flatMap { le($0.0, 8) + le($0.1, 8) + le($0.2, 4) }
    }

    static func le(_ v: UInt64, _ n: Int) -> [UInt8] { (0..<n).map { UInt8(truncatingIfNeeded: v >> (8 * UInt64($0))) } }
    static func be(_ v: UInt64, _ n: Int) -> [UInt8] { (0..<n).map { UInt8(truncatingIfNeeded: v >> (8 * UInt64(n - 1 - $0))) } }

    mutating func select(_ key: UInt16) {
        selector = key
        offset = 0
    }

    mutating func readData() -> UInt8 {
        guard let item = items[selector & ~0x4000], offset < item.count else { return 0 }
        let b = item[offset]
        offset += 1
        return b
    }

    mutating func io(offset port: UInt64, data: UnsafeMutableBufferPointer<UInt8>, isWrite: Bool) {
        switch (port, isWrite) {
        case (FwCfgState.selectorPort, true):
            var v: UInt16 = UInt16(data[0])
            if data.count > 1 { v |= UInt16(data[1]) << 8 }
            select(v)
        case (FwCfgState.dataPort, false):
            for i in 0..<data.count { data[i] = readData() }
        case (_, false):
            for i in 0..<data.count { data[i] = 0 }
        default:
            break // data writes are ignored
        }
    }
}

/// Parses a byte count: plain digits, or with K/M/G (or KiB/MiB/GiB) suffix.
func parseByteCount(_ text: String, key: String) throws -> UInt64 {
    let t = text.trimmingCharacters(in: " ")
    let units: [(String, UInt64)] = [("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30), ("K", 1 << 10), ("M", 1 << 20), ("G", 1 << 30)]
    for (suffix, mult) in units where t.hasSuffix(suffix) {
        if let v = UInt64(t.dropLast(suffix.count)) { return v * mult }
    }
    if let v = UInt64(t) { return v }
    throw PluginError("setting '\(key)': '\(text)' is not a byte count (e.g. 67108864 or 64MiB)")
}

private extension String {
    func trimmingCharacters(in c: Character) -> String {
        var s = Substring(self)
        while s.first == c { s.removeFirst() }
        while s.last == c { s.removeLast() }
        return String(s)
    }
}

public final class FwCfgDevice: DeviceModel {
    public static let modelName = "fw-cfg"
    public static let summary = "QEMU fw_cfg (selector 0x510, data 0x511): signature, CPU count, RAM size, cmdline, files"
    static var settingKeys: [String] { settingInfo.map(\.key) }
    public static let settingInfo = [
        SettingInfo("cpus", default: nil, "vCPU count reported to the firmware (1 to 255; required, the host fills it)"),
        SettingInfo("max_cpus", default: "cpus", "maximum vCPU count reported (cpus to 255)"),
        SettingInfo("memory", default: nil, "guest RAM in bytes reported as the RAM size (required, the host fills it)"),
        SettingInfo("cmdline", default: nil, "kernel command line offered as the fw_cfg cmdline item (none when absent)"),
        SettingInfo("boot_fail_wait", default: "-1", "the etc/boot-fail-wait file's value in seconds (-1 = not offered, up to 65535)"),
    ]
    var state: FwCfgState

    public init(services: HostServices, host: DeviceHost, config: DeviceConfig, settings: Settings) throws {
        try settings.allowOnly(FwCfgDevice.settingKeys)
        guard settings.values["cpus"] != nil, let mem = settings.values["memory"] else {
            throw PluginError("fw-cfg needs settings 'cpus' and 'memory' (the host fills them from the cluster config)")
        }
        let cpus = try settings.int("cpus", default: 1, range: 1...255)
        let maxCPUs = try settings.int("max_cpus", default: cpus, range: cpus...255)
        let wait = try settings.int("boot_fail_wait", default: -1, range: -1...65535)
        state = FwCfgState(cpus: cpus, maxCPUs: maxCPUs, memoryBytes: try parseByteCount(mem, key: "memory"),
                           cmdline: settings.values["cmdline"], bootFailWait: Int32(wait))
        try host.map(.pio, base: config.base ?? 0x510, length: 2)
    }

    public func io(space: IOSpace, offset: UInt64, data: UnsafeMutableBufferPointer<UInt8>, isWrite: Bool) {
        state.io(offset: offset, data: data, isWrite: isWrite)
    }

    public func reset() { state.select(0) }
}
