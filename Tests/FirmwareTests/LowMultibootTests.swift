// Multiboot images whose segments lie below 1 MiB: the firmware's movable scratch (GDT, stack,
// multiboot information) moves out of their way; fixed firmware memory is a real overlap.
import XCTest
@testable import Firmware

/// An a.out-kludge multiboot image loaded at `load` with `bss` bytes after its code.
func lowImage(load: UInt32, bss: UInt32) -> [UInt8] {
    var b = [UInt8](repeating: 0x90, count: 32)
    let magic: UInt32 = 0x1BAD_B002, flags: UInt32 = 0x0001_0003
    b += le32(magic) + le32(flags) + le32(0 &- magic &- flags)
    b += le32(load + 32) + le32(load) + le32(0) + le32(load + 0x44 + bss) + le32(load + 0x40)
    while b.count < 0x40 { b.append(0) }
    return b + [0xF4, 0xEB, 0xFD, 0x90]
}

final class LowMultibootTests: XCTestCase {
    func testImageOverTheUsualScratchMovesIt() throws {
        // 0x1000 .. 0x40000: covers the stack page (0x8000) and the info (0x30000), not the GDT (0x500)
        let mem = ByteArrayMemory(size: 8 << 20)
        let img = lowImage(load: 0x1000, bss: 0x3F000 - 0x44)
        let plan = try Bootloader.load(BootRequest(file: "low.bin", image: img, cmdline: "x", vcpus: 1), into: mem)
        let e = plan.entry
        XCTAssertEqual(e.rip, 0x1040)
        for (what, a) in [("GDT", e.gdtBase), ("info", e.rbx), ("stack", e.rsp - 1)] {
            XCTAssertFalse((0x1000..<0x40000).contains(a), "\(what) at 0x\(String(a, radix: 16)) is inside the image")
        }
        XCTAssertEqual(e.gdtBase, FirmwareLayout.gdtAddress, "the GDT was not in the way")
        XCTAssertEqual(e.rsp, 0x40000 + 0xFF0, "the stack takes the first free page after the image")
        XCTAssertEqual(e.rbx, 0x41000, "the information block the next one")
        XCTAssertEqual(mem.read(e.gdtBase + 8, 8), le64(BootTables.code32))
        XCTAssertEqual(mem.u32(e.rbx) & 0x4, 0x4, "multiboot info flags at the moved address (cmdline present)")
        XCTAssertEqual(mem.read(0x1040, 2), [0xF4, 0xEB], "the image is where it asked to be")
        XCTAssertTrue(plan.summary.contains("moved out of the image's way"), plan.summary)
    }

    func testImageBesideTheScratchLeavesItAlone() throws {
        let mem = ByteArrayMemory(size: 8 << 20)
        let plan = try Bootloader.load(BootRequest(file: "low.bin", image: lowImage(load: 0x10000, bss: 0x1000), vcpus: 1), into: mem)
        XCTAssertEqual(plan.entry.gdtBase, FirmwareLayout.gdtAddress)
        XCTAssertEqual(plan.entry.rbx, FirmwareLayout.multibootInfo)
        XCTAssertEqual(plan.entry.rsp, FirmwareLayout.stackTop)
    }

    func testFixedFirmwareMemoryIsARealOverlapNamingBothRanges() {
        let img = lowImage(load: 0x9F000, bss: 0x2000)
        XCTAssertThrowsError(try Bootloader.load(BootRequest(file: "ebda.bin", image: img, vcpus: 1), into: ByteArrayMemory(size: 8 << 20))) { e in
            XCTAssertEqual("\(e)", "ebda.bin: kernel at 0x9f000-0xa1044 overlaps the EBDA, the legacy video/BIOS hole and the ACPI/MP tables at 0x9fc00-0x100000")
        }
        XCTAssertThrowsError(try Bootloader.load(BootRequest(file: "bda.bin", image: lowImage(load: 0x0, bss: 0x1000), vcpus: 1),
                                                 into: ByteArrayMemory(size: 8 << 20))) { e in
            XCTAssertTrue("\(e)".contains("overlaps the BIOS data area at 0x400-0x500"), "\(e)")
        }
    }
}
