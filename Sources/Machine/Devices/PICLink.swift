// The host side of the 8259 pair (Plugins/devices/Models/PIC8259.swift), by the wiring convention
// that model documents: ISA IRQs reach its inputs through a 2-byte host write [irq, level]
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

    /// The 8259 input a device line feeds. Device lines are IOAPIC pins (GSIs), and the firmware's
    /// MADT and MP table say ISA IRQ 0 (the PIT) is GSI 2: so pin 2 is IRQ 0, pin 0 feeds nothing
    /// (the 8259's own INTR in a PC's wiring), pins 1 and 3-15 are the IRQ of the same number.
    static func isaIRQ(forLine line: UInt32) -> Int? {
        switch line {
        case 2: return 0
        case 1, 3..<16: return Int(line)
        default: return nil
        }
    }

    /// Device line `line` changed level: the 8259's input for it, if any.
    func setInput(line: UInt32, level: Bool) {
        guard let irq = PICLink.isaIRQ(forLine: line), let d = device.withLock({ $0 }) else { return }
        var bytes: [UInt8] = [UInt8(irq), level ? 1 : 0]
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
