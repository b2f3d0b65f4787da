// Crafted (hostile) guest images: every offset and size read from an image is checked before
// arithmetic, so each of these gets a clear error naming the file and the field, never a trap.
// Before the checks, each one crashed the node with "arithmetic overflow" or "Not enough bits to
// represent the passed value". Then the fuzzers' crash reproducers (Fuzz/crashes/firmware) and
// seed corpus (Fuzz/corpus/firmware) are replayed through the same entry the fuzzer uses.
import Foundation
import XCTest
@testable import Firmware

/// Replaces bytes at `o` of `b`.
func patch(_ b: inout [UInt8], _ o: Int, _ v: [UInt8]) { b.replaceSubrange(o..<o + v.count, with: v) }

/// Loads `image` with the auto-detected protocol into 64 MiB and returns the error text.
func loadError(_ image: [UInt8], file: String, protocol p: BootProtocol = .auto, file line: StaticString = #filePath,
               line number: UInt = #line) -> String {
    do {
        let plan = try Bootloader.load(BootRequest(file: file, image: image, vcpus: 1, bootProtocol: p), into: ByteArrayMemory(size: 64 << 20))
        XCTFail("\(file) loaded: \(plan.summary)", file: line, line: number)
        return ""
    } catch {
        return "\(error)"
    }
}

final class CraftedImageTests: XCTestCase {
    // --- vmlinux (ELF64 through the Linux protocol); program header at 64, PT_LOAD

    func testVmlinuxPhoffNearIntMax() {
        var img = vmlinuxImage()
        patch(&img, 32, le64(0x7FFF_FFFF_FFFF_FFF0))
        let e = loadError(img, file: "phoff.vmlinux", protocol: .linux)
        XCTAssertTrue(e.hasPrefix("phoff.vmlinux: truncated: program header table (e_phoff 0x7ffffffffffffff0, e_phnum 1 x e_phentsize 56)"), e)
        XCTAssertFalse(VmlinuxImage.looksLikeLinux(img))
    }

    func testVmlinuxPhoffAbove2To63() {
        var img = vmlinuxImage()
        patch(&img, 32, le64(0x8000_0000_0000_0000))
        let e = loadError(img, file: "phoff63.vmlinux", protocol: .linux)
        XCTAssertTrue(e.contains("e_phoff 0x8000000000000000") && e.contains("past the end of the file (136 bytes)"), e)
        XCTAssertEqual(try Bootloader.detect(img, file: "phoff63.vmlinux"), .giantvm) // not recognisably Linux
    }

    func testVmlinuxPhoffPlusTableOverflows() {
        var img = vmlinuxImage()
        patch(&img, 32, le64(UInt64.max - 10))
        patch(&img, 56, le16(0xFFFF))
        let e = loadError(img, file: "wrap.vmlinux", protocol: .linux)
        XCTAssertTrue(e.contains("program header table (e_phoff 0xfffffffffffffff5, e_phnum 65535 x e_phentsize 56)"), e)
    }

    func testVmlinuxPOffsetNear2To64() {
        var img = vmlinuxImage()
        patch(&img, 72, le64(0xFFFF_FFFF_FFFF_FFF8)) // p_offset; p_filesz 16
        let e = loadError(img, file: "poff.vmlinux")
        XCTAssertEqual(e, "poff.vmlinux: truncated: program header 0 contents (p_offset, p_filesz) at offset 0xfffffffffffffff8 (+16 bytes) is past the end of the file (136 bytes)")
    }

    func testVmlinuxPFileszNear2To64() {
        var img = vmlinuxImage()
        patch(&img, 96, le64(UInt64.max)) // p_filesz
        patch(&img, 104, le64(UInt64.max)) // p_memsz
        let e = loadError(img, file: "fsz.vmlinux")
        XCTAssertTrue(e.hasPrefix("fsz.vmlinux: program header 0: p_paddr 0x1000000 + p_memsz 0xffffffffffffffff overflows 64 bits"), e)
    }

    func testVmlinuxPMemszNear2To64() {
        var img = vmlinuxImage()
        patch(&img, 104, le64(0xFFFF_FFFF_FFFF_F000)) // p_memsz
        let e = loadError(img, file: "msz.vmlinux")
        XCTAssertEqual(e, "msz.vmlinux: program header 0: p_paddr 0x1000000 + p_memsz 0xfffffffffffff000 overflows 64 bits")
        // Just below the overflow: parses, and the placement check refuses it without adding.
        patch(&img, 104, le64(UInt64.max - 0x100_0000))
        XCTAssertEqual(loadError(img, file: "msz.vmlinux"),
                       "msz.vmlinux: kernel segment 0 at 0x1000000+0xfffffffffeffffff is outside guest RAM (67108864 bytes)")
    }

    func testVmlinuxPaddrNear2To64() {
        var img = vmlinuxImage()
        patch(&img, 88, le64(0xFFFF_FFFF_FFFF_F000)) // p_paddr; memsz 0x2000
        XCTAssertEqual(loadError(img, file: "pa.vmlinux", protocol: .linux),
                       "pa.vmlinux: program header 0: p_paddr 0xfffffffffffff000 + p_memsz 0x2000 overflows 64 bits")
        patch(&img, 104, le64(0x800)) // fits in 64 bits, not in RAM
        XCTAssertEqual(loadError(img, file: "pa.vmlinux", protocol: .linux),
                       "pa.vmlinux: kernel segment 0 at 0xfffffffffffff000+0x800 is outside guest RAM (67108864 bytes)")
    }

    func testEntryAtTheEndOfAddressSpace() {
        var img = vmlinuxImage()
        patch(&img, 24, le64(UInt64.max)) // e_entry
        XCTAssertTrue(loadError(img, file: "e.vmlinux").contains("e_entry 0xffffffffffffffff is not inside any PT_LOAD segment"))
    }

    /// A second program header: PT_NOTE at 120 (the table grows to two entries; data follows).
    func vmlinuxWithNote(offset: UInt64, size: UInt64, notes: [UInt8] = []) -> [UInt8] {
        var img = Array(vmlinuxImage()[0..<120])
        patch(&img, 56, le16(2))
        patch(&img, 80, le64(0x100_0000)) // p_vaddr == p_paddr: only a note can say "Linux"
        var ph = [UInt8](repeating: 0, count: 56)
        patch(&ph, 0, le32(4)); patch(&ph, 8, le64(offset)); patch(&ph, 32, le64(size))
        img += ph                                                // 120..<176
        patch(&img, 72, le64(176))                               // PT_LOAD contents now at 176
        return img + [UInt8](repeating: 0x90, count: 16) + notes // notes at 192
    }

    func testNoteOffsetNearIntMax() {
        for (off, size) in [(UInt64(Int.max) - 4, UInt64(64)), (UInt64(Int.max), UInt64.max), (UInt64.max - 3, UInt64(100)),
                            (UInt64(192), UInt64.max), (UInt64(1) << 63, UInt64(1) << 63)] {
            let img = vmlinuxWithNote(offset: off, size: size)
            XCTAssertFalse(VmlinuxImage.looksLikeLinux(img), "PT_NOTE 0x\(String(off, radix: 16))+0x\(String(size, radix: 16))")
            XCTAssertEqual(try Bootloader.detect(img, file: "n"), .giantvm)
        }
    }

    func testNoteSizesNear2To32() {
        // A real "Linux" note is found; notes whose namesz/descsz run past the segment end the walk.
        let linux = le32(6) + le32(0) + le32(1) + Array("Linux\0".utf8) + [0, 0]
        XCTAssertTrue(VmlinuxImage.looksLikeLinux(vmlinuxWithNote(offset: 192, size: UInt64(linux.count), notes: linux)))
        XCTAssertTrue(VmlinuxImage.looksLikeLinux(vmlinuxWithNote(offset: 192, size: UInt64.max, notes: linux)))
        for (namesz, descsz) in [(UInt32.max, UInt32(0)), (UInt32(0), UInt32.max), (UInt32.max, UInt32.max), (UInt32.max - 2, UInt32(4))] {
            let bad = le32(namesz) + le32(descsz) + le32(1) + Array("Linux\0\0\0".utf8) + linux
            XCTAssertFalse(VmlinuxImage.looksLikeLinux(vmlinuxWithNote(offset: 192, size: UInt64(bad.count), notes: bad)),
                           "namesz \(namesz) descsz \(descsz)")
        }
    }

    // --- bzImage

    func testBzImagePrefAddressNear2To64() {
        var img = bzImage()
        patch(&img, 0x258, le64(0xFFFF_FFFF_FFFF_F000))
        XCTAssertEqual(loadError(img, file: "pref.bz"),
                       "pref.bz: pref_address 0xfffffffffffff000 + init_size 0x200000 overflows 64 bits")
        patch(&img, 0x258, le64(0xFFFF_FFFF_FFDF_FFFF)) // no overflow: refused by the RAM check
        XCTAssertTrue(loadError(img, file: "pref.bz").contains("the kernel needs RAM up to 0xffffffffffffffff"))
    }

    func testBzImageMaximalHeaderFields() {
        var img = bzImage()
        img[0x1F1] = 0xFF   // setup_sects 255: kernel would start past the end
        XCTAssertTrue(loadError(img, file: "s.bz").hasPrefix("s.bz: truncated: setup_sects 255"))
        img = bzImage()
        img[0x201] = 0xFF   // header length past 0x280: clamped
        patch(&img, 0x22C, le32(UInt32.max)); patch(&img, 0x238, le32(UInt32.max)); patch(&img, 0x260, le32(UInt32.max))
        XCTAssertTrue(loadError(img, file: "h.bz").contains("init_size 0xffffffff"))
    }

    // --- multiboot ELF32 (fields are 32-bit: sums are done in 64 bits)

    func testMultibootELF32FieldsAtTheirMaximum() {
        var img = elf32MultibootImage()
        patch(&img, 28, le32(UInt32.max)) // e_phoff
        XCTAssertTrue(loadError(img, file: "mb.elf").hasPrefix("mb.elf: truncated: program header table (e_phoff 0xffffffff"))
        img = elf32MultibootImage()
        patch(&img, 56, le32(UInt32.max)) // p_offset
        XCTAssertTrue(loadError(img, file: "mb.elf").hasPrefix("mb.elf: truncated: program header 0 contents (p_offset, p_filesz) at offset 0xffffffff"))
        img = elf32MultibootImage()
        patch(&img, 64, le32(UInt32.max)); patch(&img, 72, le32(UInt32.max)) // p_paddr, p_memsz
        XCTAssertEqual(loadError(img, file: "mb.elf"), "mb.elf: kernel at 0xffffffff+0xffffffff is outside guest RAM (67108864 bytes)")
        img = elf32MultibootImage()
        patch(&img, 44, le16(0xFFFF)); patch(&img, 42, le16(0xFFFF)) // e_phnum x e_phentsize = 4 GiB
        XCTAssertTrue(loadError(img, file: "mb.elf").contains("e_phnum 65535 x e_phentsize 65535"))
    }

    func testMultibootAoutFieldsAtTheirMaximum() {
        // header_addr, load_addr, load_end_addr, bss_end_addr, entry_addr at 44..<64
        for (o, v) in [(44, UInt32.max), (48, UInt32.max), (52, UInt32.max), (56, UInt32.max), (60, UInt32.max), (48, 0)] {
            var img = aoutKludgeImage()
            patch(&img, o, le32(v))
            XCTAssertTrue(loadError(img, file: "k.bin").hasPrefix("k.bin: "), "field at \(o)")
        }
    }

    // --- every reproducer the fuzzers found, and their seeds, through the fuzzer's entry

    func testFuzzReproducersAndSeeds() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        var n = 0
        for dir in ["Fuzz/crashes/firmware", "Fuzz/corpus/firmware"] {
            let d = root.appendingPathComponent(dir)
            for name in (try? FileManager.default.contentsOfDirectory(atPath: d.path)) ?? [] where !name.hasPrefix(".") {
                FirmwareFuzz.exercise(Array(try Data(contentsOf: d.appendingPathComponent(name))))
                n += 1
            }
        }
        if n == 0 { throw XCTSkip("no Fuzz/corpus/firmware next to the tests (\(root.path))") }
    }
}
