// `irq-lines`: interrupt lines a guest raises and lowers itself, to test interrupt controllers
// (IOAPIC edge/level semantics, the 8259 through LINT0) from inside the guest. One byte port per
// line: a write of a non-zero byte to `base + n` drives line n high, a zero byte drives it low;
// a read returns its level (1 or 0). `lines` (1-24, default 24) lines from `base` (default
// 0x2100, clear of QEMU pc-testdev's 0x2000). Lines go to the host as device lines 0...lines-1
// (the IOAPIC's pins; lines 0-15 also reach the 8259's inputs).
// Threading: io() calls into one instance never overlap (the host serialises them); no timers.
import PluginKit

public final class IRQLines: DeviceModel {
    public static let modelName = "irq-lines"
    public static let summary = "test device: guest-driven interrupt lines, one byte port per line (write 1/0 = raise/lower)"
    public static let defaultBase: UInt64 = 0x2100
    public static let settingInfo = [SettingInfo("lines", default: "24", "number of lines (1-24): port base+n drives IOAPIC pin n")]
    let host: DeviceHost
    var levels: [Bool]
    let changes: Counter

    public init(services: HostServices, host: DeviceHost, config: DeviceConfig, settings: Settings) throws {
        try settings.allowOnly(declared: Self.settingInfo)
        self.host = host
        let count = try settings.int("lines", default: 24, range: 1...24)   // the IOAPIC's 24 pins
        levels = Array(repeating: false, count: count)
        changes = services.counter("irq_lines.\(config.name).changes")
        try host.map(.pio, base: config.base ?? Self.defaultBase, length: UInt64(count))
    }

    public func io(space: IOSpace, offset: UInt64, data: UnsafeMutableBufferPointer<UInt8>, isWrite: Bool) {
        guard offset < UInt64(levels.count) else {
            if !isWrite { for i in 0..<data.count { data[i] = 0xFF } }
            return
        }
        let line = Int(offset)
        if isWrite {
            let level = data[0] != 0
            guard level != levels[line] else { return }
            levels[line] = level
            changes.add()
            host.setIRQ(UInt32(line), level: level)
        } else {
            for i in 0..<data.count { data[i] = 0 }
            data[0] = levels[line] ? 1 : 0
        }
    }

    public func reset() {
        for line in levels.indices where levels[line] {
            levels[line] = false
            host.setIRQ(UInt32(line), level: false)
        }
    }
}
