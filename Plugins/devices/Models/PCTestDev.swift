// QEMU's `pc-testdev` (the ISA test device kvm-unit-tests and other QEMU test kernels use), at
// the ports and address QEMU gives it, so such guests run unchanged:
//   base+0 .. base+3  (0xE0)  a 32-bit scratch register: any access width at any of the four
//                             ports reads/writes the bytes it covers
//   base+4            (0xE4)  "flush page": a 4-byte write of a guest-physical address; QEMU
//                             drops its host mapping of that page — here guest RAM is already
//                             coherent through the DSM, so the write is accepted and counted
//   base+8 .. base+11 (0xE8)  the same scratch register, byte-wise access
//   irq_base + n      (0x2000 + n, n < 24)  a byte write sets interrupt line n (the IOAPIC pin,
//                             as QEMU's ISA IRQ n on a PC) to the written value's truth:
//                             non-zero asserts, zero deasserts; reads return 0
//   mmio .. mmio+0xFFFF (0xFF000000)  64 KiB of scratch memory (reads return what was written)
// The test guest's results port is 0xE0 too: a config with both moves one of them (`base:`),
// otherwise the host refuses the overlap naming both devices.
// Settings: `irq_base` (port of line 0; 0 leaves the lines out), `mmio` (address; 0 leaves the
// scratch memory out), `lines` (number of lines, 1-24; default 24). Decimal or 0x-hex.
// Threading: io() calls into one instance never overlap (the host serialises them) and this
// model starts no timers, so its state needs no lock.
import PluginKit

struct PCTestDevState: Equatable {
    static let iomemLength = 0x10000
    var scratch: UInt32 = 0
    var iomem = [UInt8](repeating: 0, count: PCTestDevState.iomemLength)
    var flushes = 0

    /// A read of the scratch register at byte `at` (0-3) of `size` bytes.
    func readScratch(at: Int, size: Int) -> UInt32 {
        let v = scratch >> (UInt32(at & 3) * 8)
        return size >= 4 ? v : v & ((1 << (UInt32(size) * 8)) - 1)
    }

    mutating func writeScratch(at: Int, size: Int, value: UInt32) {
        let shift = UInt32(at & 3) * 8
        let mask: UInt32 = (size >= 4 ? ~0 : ((1 << (UInt32(size) * 8)) - 1)) << shift
        scratch = (scratch & ~mask) | ((value << shift) & mask)
    }
}

public final class PCTestDev: DeviceModel {
    public static let modelName = "pc-testdev"
    public static let summary = "QEMU's pc-testdev: scratch ports 0xE0/0xE8, flush port 0xE4, IRQ-line ports 0x2000-0x2017, scratch MMIO 0xFF000000"
    public static let settingInfo = [
        SettingInfo("irq_base", default: "0x2000", "first IRQ-line port (one port per ISA/IOAPIC line; 0 = no IRQ-line ports)"),
        SettingInfo("mmio", default: "0xFF000000", "scratch MMIO address (0 = none)"),
        SettingInfo("lines", default: "24", "number of IRQ-line ports (1-24)"),
    ]
    let host: DeviceHost
    let base: UInt64
    let irqBase: UInt64?
    let lines: Int
    var state = PCTestDevState()
    let lineWrites: Counter

    public init(services: HostServices, host: DeviceHost, config: DeviceConfig, settings: Settings) throws {
        try settings.allowOnly(declared: Self.settingInfo)
        self.host = host
        base = config.base ?? 0xE0
        let ib = try parseInteger(settings.values["irq_base"] ?? "0x2000", key: "irq_base", max: 0xFFFF)
        let mmio = try parseInteger(settings.values["mmio"] ?? "0xFF000000", key: "mmio", max: 0xFFFF_FFFF_FFFF)
        lines = try settings.int("lines", default: 24, range: 1...24)
        irqBase = ib == 0 ? nil : ib
        lineWrites = services.counter("pc-testdev.\(config.name).irq_writes")
        try host.map(.pio, base: base, length: 12)
        if let irqBase {
            guard irqBase >= base + 12 || irqBase + UInt64(lines) <= base else {
                throw PluginError("setting 'irq_base': 0x\(String(irqBase, radix: 16)) overlaps the scratch ports at 0x\(String(base, radix: 16))")
            }
            guard irqBase > base else { throw PluginError("setting 'irq_base': must lie above the device's base port 0x\(String(base, radix: 16))") }
            try host.map(.pio, base: irqBase, length: UInt64(lines))
        }
        if mmio != 0 { try host.map(.mmio, base: mmio, length: UInt64(PCTestDevState.iomemLength)) }
    }

    public func io(space: IOSpace, offset: UInt64, data: UnsafeMutableBufferPointer<UInt8>, isWrite: Bool) {
        var v: UInt64 = 0
        if isWrite { for (i, b) in data.prefix(8).enumerated() { v |= UInt64(b) << (8 * UInt64(i)) } }
        if space == .mmio {
            let o = Int(offset)
            guard o + data.count <= PCTestDevState.iomemLength else { return }
            for i in 0..<data.count {
                if isWrite { state.iomem[o + i] = data[i] } else { data[i] = state.iomem[o + i] }
            }
            return
        }
        var out: UInt64 = 0
        if let irqBase, offset >= irqBase - base {
            let line = offset - (irqBase - base)
            if isWrite && line < UInt64(lines) {
                lineWrites.add()
                host.setIRQ(UInt32(line), level: v & 0xFF != 0)
            }
        } else if offset < 4 || (offset >= 8 && offset < 12) {
            let at = Int(offset & 3)
            if isWrite { state.writeScratch(at: at, size: data.count, value: UInt32(truncatingIfNeeded: v)) }
            else { out = UInt64(state.readScratch(at: at, size: data.count)) }
        } else if offset >= 4 && offset < 8 && isWrite {
            state.flushes += 1
        }
        if !isWrite { for i in 0..<data.count { data[i] = i < 8 ? UInt8(truncatingIfNeeded: out >> (8 * UInt64(i))) : 0 } }
    }

    public func reset() { state = PCTestDevState() }
}
