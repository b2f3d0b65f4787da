// QEMU's `pci-testdev` (vendor 0x1B36 Red Hat, device 0x0005, class 0xFF "other"), as one
// function on the `pci-host` bus (model `pci-testdev`, or `pci-host` with `testdev: true`):
//   BAR0  4 KiB of memory space, BAR1 256 ports. The BARs are assigned by the VMM (settings
//         `testdev_mmio`, default 0xFEB00000, and `testdev_io`, default 0xC000) and fixed: sizing
//         (writing all ones) reads back the size mask, any other write is ignored, so the BAR
//         always reads its assigned address (a guest that reassigns BARs is not supported).
//   Each BAR holds the same six tests (three in memory space, three in I/O space):
//     test i (0-2 in BAR0, 3-5 in BAR1; names "mmio-no-eventfd", "mmio-wildcard-eventfd",
//     "mmio-datamatch-eventfd", "portio-...") has a header
//       +0 u8 test, +1 u8 width (1), +4 u32 offset, +8 u8 data, +12 u32 count, +16 name NUL
//     with offset = 2048 + i (memory) or 128 + i (ports) and data 0xFA for the matching tests
//     (0xCE for wildcard). A byte written at offset 0 of a BAR selects test (value) of that BAR
//     and zeroes its count; then each byte write at the test's offset counts (the data-match
//     tests only count the byte 0xFA). Reads return the selected test's header bytes (0 past
//     its end, or with no test selected). Wider accesses act as that many byte accesses, as in
//     QEMU (whose eventfd variants are what the tests measure there; here all count the same).

struct PCITestDevState: Equatable {
    static let vendorDevice: UInt32 = 0x0005_1B36
    static let memSize: UInt64 = 4096, ioSize: UInt64 = 256
    static let names = ["no-eventfd", "wildcard-eventfd", "datamatch-eventfd"]
    static let dataMatch: UInt8 = 0xFA, noMatch: UInt8 = 0xCE
    var mmioBase: UInt64
    var ioBase: UInt64
    var command: UInt16 = 0
    var sizing: [Bool] = [false, false]
    var current: Int? = nil
    var counts = [UInt32](repeating: 0, count: 6)

    init(mmioBase: UInt64, ioBase: UInt64) { self.mmioBase = mmioBase; self.ioBase = ioBase }

    static func isMemory(_ t: Int) -> Bool { t < 3 }
    static func offset(_ t: Int) -> UInt32 { UInt32(isMemory(t) ? 2048 : 128) + UInt32(t) }
    static func matches(_ t: Int) -> Bool { t % 3 != 1 }
    static func name(_ t: Int) -> String { (isMemory(t) ? "mmio-" : "portio-") + names[t % 3] }

    /// The header of test t as bytes.
    func header(_ t: Int) -> [UInt8] {
        var h = [UInt8](repeating: 0, count: 16)
        h[0] = UInt8(t); h[1] = 1
        let o = PCITestDevState.offset(t)
        for i in 0..<4 { h[4 + i] = UInt8(truncatingIfNeeded: o >> (8 * UInt32(i))) }
        h[8] = PCITestDevState.matches(t) ? PCITestDevState.dataMatch : PCITestDevState.noMatch
        for i in 0..<4 { h[12 + i] = UInt8(truncatingIfNeeded: counts[t] >> (8 * UInt32(i))) }
        return h + Array(PCITestDevState.name(t).utf8) + [0]
    }

    /// A byte write at `offset` of the BAR of `memory` space.
    mutating func writeByte(memory: Bool, offset: UInt64, _ v: UInt8) {
        if offset == 0 {
            current = nil
            guard v < 3 else { return }
            let t = (memory ? 0 : 3) + Int(v)
            counts[t] = 0
            current = t
            return
        }
        guard let t = current, PCITestDevState.isMemory(t) == memory, offset == UInt64(PCITestDevState.offset(t)) else { return }
        if PCITestDevState.matches(t) && v != PCITestDevState.dataMatch { return }
        counts[t] &+= 1
    }

    func readByte(offset: UInt64) -> UInt8 {
        guard let t = current else { return 0 }
        let h = header(t)
        return offset + 1 < UInt64(h.count) ? h[Int(offset)] : 0
    }

    /// Configuration space dword `reg`.
    func configDword(_ reg: UInt32) -> UInt32 {
        switch reg {
        case 0x00: return PCITestDevState.vendorDevice
        case 0x04: return UInt32(command)
        case 0x08: return 0xFF00_0000            // class 0xFF, revision 0
        case 0x10: return sizing[0] ? UInt32(truncatingIfNeeded: ~(PCITestDevState.memSize - 1)) : UInt32(truncatingIfNeeded: mmioBase)
        case 0x14: return sizing[1] ? UInt32(truncatingIfNeeded: ~(PCITestDevState.ioSize - 1)) | 1 : UInt32(truncatingIfNeeded: ioBase) | 1
        case 0x2C: return 0x1100_1AF4
        default: return 0
        }
    }

    mutating func configWrite(_ reg: UInt32, _ value: UInt32, size: Int) {
        switch reg {
        case 0x04: command = UInt16(truncatingIfNeeded: value) & 0x0007
        case 0x10, 0x14: if size == 4 { sizing[reg == 0x10 ? 0 : 1] = value == 0xFFFF_FFFF }
        default: break
        }
    }
}
