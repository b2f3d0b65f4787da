// The host side of the 8259 pair (Plugins/devices/Models/PIC8259.swift), by the wiring convention
// that model documents: ISA lines 0-15 reach its inputs through a 2-byte host write [line, level]
// at offset 0x10000, its INT output comes back as interrupt line 0xFFFF0000 (LINT0 of vCPU 0),
// and the interrupt acknowledge of an ExtINT is a 1-byte host read at offset 0x10001.
//
// Threading: any thread; the device's own lock serialises the accesses (`PluginDevice.io`). Never
// called with a vCPU's interrupt lock held (the INT output re-enters the Machine's setIRQ).
import Synchronization

final class PICLink: @unchecked Sendable {
    /// The device model this link drives.
    static let modelName = "i8259"
    /// The interrupt line the 8259's INT output uses (PIC8259.lint0Line).
    static let intrLine: UInt32 = 0xFFFF_0000
    static let inputOffset: UInt64 = 0x1_0000
    static let acknowledgeOffset: UInt64 = 0x1_0001

    let device = Mutex<PluginDevice?>(nil)

    /// ISA line `line` (0-15) changed level.
    func setInput(_ line: Int, level: Bool) {
        guard let d = device.withLock({ $0 }) else { return }
        var bytes: [UInt8] = [UInt8(line), level ? 1 : 0]
        bytes.withUnsafeMutableBytes { d.hostAccess(space: .pio, offset: PICLink.inputOffset, data: $0, isWrite: true) }
    }

    /// INTA: the vector the 8259 gives (IRQ 7 of the chip when nothing is pending: spurious), or
    /// nil when there is no 8259 here.
    func acknowledge() -> UInt8? {
        guard let d = device.withLock({ $0 }) else { return nil }
        var v: [UInt8] = [0]
        v.withUnsafeMutableBytes { d.hostAccess(space: .pio, offset: PICLink.acknowledgeOffset, data: $0, isWrite: false) }
        return v[0]
    }
}
