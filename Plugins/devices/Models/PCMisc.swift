// Small PC ports: the POST / delay ports (0x80, 0xED) and a PCI host bridge on the type-1
// configuration mechanism (0xCF8 address, 0xCFC-0xCFF data, 0xCF9 reset control), optionally
// with QEMU's pci-testdev at 00:01.0 (PCITestDev.swift).
// Threading: io() calls into one instance never overlap (the host serialises them) and these
// models start no timers, so their state needs no lock.
import PluginKit

/// Port 0x80 (POST codes) and 0xED (the I/O delay port Linux may use): writes are accepted
/// and counted, reads return 0xFF — so that these frequent accesses are cheap and silent.
public final class PostPorts: DeviceModel {
    public static let modelName = "post-ports"
    public static let summary = "POST code port 0x80 and delay port 0xED: writes ignored (counted), reads 0xFF"
    let writes: Counter
    var lastCode: UInt8 = 0

    public init(services: HostServices, host: DeviceHost, config: DeviceConfig, settings: Settings) throws {
        try settings.allowOnly([])
        writes = services.counter("post.\(config.name).writes")
        let base = config.base ?? 0x80
        try host.map(.pio, base: base, length: 1)
        try host.map(.pio, base: 0xED, length: 1)
    }

    public func io(space: IOSpace, offset: UInt64, data: UnsafeMutableBufferPointer<UInt8>, isWrite: Bool) {
        if isWrite {
            if offset == 0 { lastCode = data[0] }
            writes.add()
        } else {
            for i in 0..<data.count { data[i] = 0xFF }
        }
    }
}

/// PCI configuration mechanism #1 with one device: an Intel 440FX-like host bridge at 00:00.0
/// (vendor 0x8086, device 0x1237, class 06/00/00, header type 0) unless `host_bridge: false`.
/// With `testdev`, QEMU's pci-testdev answers at 00:01.0 (PCITestDevState).
/// Every other function reads all ones (no device). Other config writes are ignored. CONFIG_ADDRESS
/// is latched by 32-bit writes to 0xCF8 only. A byte write to 0xCF9 with bit 2 set (the PIIX
/// reset control register) resets the machine: request_stop with I8042State.resetStatus.
struct PCIConfigState: Equatable {
    var address: UInt32 = 0
    var hostBridge = true
    var resetControl: UInt8 = 0
    var testDev: PCITestDevState? = nil
    static let testDevSlot: UInt32 = 1

    /// Host-bridge config space dword at register `reg` (dword aligned).
    func hostBridgeDword(_ reg: UInt32) -> UInt32 {
        switch reg {
        case 0x00: return 0x1237_8086           // device, vendor
        case 0x04: return 0x0000_0006           // status 0, command: memory + bus master
        case 0x08: return 0x0600_0002           // class 06 (bridge) 00 (host) 00, revision 2
        case 0x0C: return 0x0000_0000           // header type 0, single function
        case 0x2C: return 0x1100_1AF4           // subsystem: QEMU-like ids
        default: return 0
        }
    }

    /// A read at offset (0-7 from 0xCF8) of `size` bytes.
    func read(_ offset: UInt64, _ size: Int) -> UInt32 {
        if offset == 0 && size == 4 { return address }
        if offset == 1 && size == 1 { return UInt32(resetControl) }
        guard offset >= 4 else { return 0xFFFF_FFFF }
        guard address & 0x8000_0000 != 0 else { return 0xFFFF_FFFF }
        let bus = (address >> 16) & 0xFF, dev = (address >> 11) & 0x1F, fn = (address >> 8) & 7
        let reg = address & 0xFC
        let dword: UInt32
        if let t = testDev, bus == 0, dev == PCIConfigState.testDevSlot, fn == 0 {
            dword = t.configDword(reg)
        } else {
            guard hostBridge, bus == 0, dev == 0, fn == 0 else { return 0xFFFF_FFFF }
            dword = hostBridgeDword(reg)
        }
        let shift = UInt32(offset - 4) * 8
        let v = dword >> shift
        return size == 4 ? v : v & ((1 << (UInt32(size) * 8)) - 1)
    }

    /// A write; returns true when it asks for a machine reset.
    mutating func write(_ offset: UInt64, _ size: Int, _ value: UInt32) -> Bool {
        if offset == 0 && size == 4 { address = value & 0x80FF_FFFC; return false }
        if offset == 1 && size == 1 {
            resetControl = UInt8(value & 0x0E)
            return value & 0x04 != 0
        }
        let dev = (address >> 11) & 0x1F, bus = (address >> 16) & 0xFF, fn = (address >> 8) & 7
        if offset >= 4, address & 0x8000_0000 != 0, bus == 0, dev == PCIConfigState.testDevSlot, fn == 0, testDev != nil {
            testDev!.configWrite(address & 0xFC, value << (UInt32(offset - 4) * 8), size: size)
        }
        return false
    }
}

public class PCIHostBridge: DeviceModel {
    public class var modelName: String { "pci-host" }
    public class var summary: String { "PCI config mechanism #1 (0xCF8/0xCFC): host bridge at 00:00.0 (pci-testdev at 00:01.0 with testdev: true); 0xCF9 reset" }
    class var testDevDefault: Bool { false }
    public class var settingInfo: [SettingInfo] {
        [SettingInfo("host_bridge", default: "true", "answer config reads at 00:00.0 with a host bridge (true/false)"),
         SettingInfo("testdev", default: testDevDefault ? "true" : "false", "put QEMU's pci-testdev (1b36:0005) at 00:01.0 (true/false)"),
         SettingInfo("testdev_mmio", default: "0xFEB00000", "pci-testdev BAR0 (4 KiB of memory space) address"),
         SettingInfo("testdev_io", default: "0xC000", "pci-testdev BAR1 (256 ports) base")]
    }
    let host: DeviceHost
    let name: String
    var state = PCIConfigState()
    /// The lowest mapped port (offsets of port accesses are from it) and the config ports' base.
    let pioLow: UInt64, configBase: UInt64

    public required init(services: HostServices, host: DeviceHost, config: DeviceConfig, settings: Settings) throws {
        try settings.allowOnly(declared: Self.settingInfo)
        self.host = host
        name = config.name
        state.hostBridge = try settings.bool("host_bridge", default: true)
        configBase = config.base ?? 0xCF8
        var low = configBase
        if try settings.bool("testdev", default: Self.testDevDefault) {
            let mmio = try parseInteger(settings.values["testdev_mmio"] ?? "0xFEB00000", key: "testdev_mmio", max: 0xFFFF_F000)
            let io = try parseInteger(settings.values["testdev_io"] ?? "0xC000", key: "testdev_io", max: 0xFF00)
            guard mmio % PCITestDevState.memSize == 0, mmio != 0 else {
                throw PluginError("setting 'testdev_mmio': 0x\(String(mmio, radix: 16)) is not a non-zero multiple of the BAR size 0x1000")
            }
            guard io % PCITestDevState.ioSize == 0, io != 0 else {
                throw PluginError("setting 'testdev_io': 0x\(String(io, radix: 16)) is not a non-zero multiple of the BAR size 0x100")
            }
            state.testDev = PCITestDevState(mmioBase: mmio, ioBase: io)
            try host.map(.mmio, base: mmio, length: PCITestDevState.memSize)
            try host.map(.pio, base: io, length: PCITestDevState.ioSize)
            low = min(low, io)
        }
        pioLow = low
        try host.map(.pio, base: configBase, length: 8)
    }

    public func io(space: IOSpace, offset: UInt64, data: UnsafeMutableBufferPointer<UInt8>, isWrite: Bool) {
        if let t = state.testDev {
            let bar: UInt64? = space == .mmio ? offset : (pioLow + offset >= t.ioBase && pioLow + offset < t.ioBase + PCITestDevState.ioSize ? pioLow + offset - t.ioBase : nil)
            if let bar {
                for i in 0..<data.count {
                    if isWrite { state.testDev!.writeByte(memory: space == .mmio, offset: bar + UInt64(i), data[i]) }
                    else { data[i] = state.testDev!.readByte(offset: bar + UInt64(i)) }
                }
                return
            }
        }
        let offset = pioLow + offset - configBase
        if isWrite {
            var v: UInt32 = 0
            for (i, b) in data.prefix(4).enumerated() { v |= UInt32(b) << (8 * UInt32(i)) }
            if state.write(offset, data.count, v) {
                host.requestStop(status: I8042State.resetStatus, reason: "\(name): guest requested a reset (write to 0xCF9)")
            }
        } else {
            let v = state.read(offset, data.count)
            for i in 0..<data.count { data[i] = i < 4 ? UInt8(truncatingIfNeeded: v >> (8 * UInt32(i))) : 0 }
        }
    }
}

/// `pci-host` with QEMU's pci-testdev at 00:01.0 (settings as pci-host's; `testdev` defaults on).
public final class PCITestDevHost: PCIHostBridge {
    public override class var modelName: String { "pci-testdev" }
    public override class var summary: String { "pci-host with QEMU's pci-testdev at 00:01.0 (1b36:0005; BAR0 4 KiB at 0xFEB00000, BAR1 ports 0xC000)" }
    override class var testDevDefault: Bool { true }
}

/// The PC device models of this file set, for the plugin's model list (Plugin.swift).
public let pcDeviceModels: [any DeviceModel.Type] = [FwCfgDevice.self, PIT8254.self, CMOSRTC.self, I8042.self,
                                               PIC8259.self, PostPorts.self, PCIHostBridge.self, PCITestDevHost.self,
                                               Port92.self, HPET.self, PCTestDev.self, ACPIPM.self]
