// The IOAPIC (target `Interrupts`) on the MMIO bus at 0xFEC00000.
import Interrupts

/// Bus adapter: guest MMIO accesses to the IOAPIC window.
final class IOAPICDevice: IODevice, @unchecked Sendable {
    let name = "ioapic"
    let ioapic: IOAPIC

    init(_ ioapic: IOAPIC) { self.ioapic = ioapic }

    func io(space: IOSpaceKind, offset: UInt64, data: UnsafeMutableRawBufferPointer, isWrite: Bool) {
        if isWrite {
            var v: UInt64 = 0
            for (i, b) in data.prefix(8).enumerated() { v |= UInt64(b) << (8 * UInt64(i)) }
            ioapic.write(offset: offset, length: data.count, value: v)
        } else {
            let v = ioapic.read(offset: offset, length: data.count)
            for i in 0..<data.count { data[i] = i < 8 ? UInt8(truncatingIfNeeded: v >> (8 * UInt64(i))) : 0 }
        }
    }
}
