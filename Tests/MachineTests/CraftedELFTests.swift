// Crafted (hostile) ELF64 images for GiantVM's own loader (ELFImage): each offset and size near
// 2^63 or 2^64 used to trap the node ("arithmetic overflow", "Not enough bits"); now each gets
// an error naming the file and the field. Then the ELF fuzzer's reproducers (Fuzz/crashes/elf)
// and seeds (Fuzz/corpus/elf) are replayed through the fuzzer's own entry (a symlink).
import Foundation
import XCTest
@testable import Machine

final class CraftedELFTests: XCTestCase {
    /// ELFImage.build's layout: program header at 64 (p_offset at 72, p_paddr 88, p_filesz 96,
    /// p_memsz 104), code at 120, loaded at 0x200000.
    func image(_ patches: [(Int, UInt64)] = [], phnum: UInt16? = nil) -> [UInt8] {
        var b = ELFImage.build(code: [0xF4, 0x90], loadAddress: 0x200000, bssBytes: 0x100)
        for (o, v) in patches { for i in 0..<8 { b[o + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(i))) } }
        if let phnum { b[56] = UInt8(phnum & 0xFF); b[57] = UInt8(phnum >> 8) }
        return b
    }

    func parseError(_ b: [UInt8], _ name: String) -> String {
        do { _ = try ELFImage(bytes: b, name: name); return "parsed" } catch { return "\(error)" }
    }

    func testPhoffNearIntMaxAndAbove2To63() {
        XCTAssertEqual(parseError(image([(32, UInt64(Int.max) - 8)]), "a.elf"),
                       "a.elf: e_phoff 0x7ffffffffffffff7 + e_phnum 1 x e_phentsize 56: the program header table runs past the end of the file (122 bytes)")
        XCTAssertEqual(parseError(image([(32, 1 << 63)]), "b.elf"),
                       "b.elf: e_phoff 0x8000000000000000 + e_phnum 1 x e_phentsize 56: the program header table runs past the end of the file (122 bytes)")
        XCTAssertTrue(parseError(image([(32, UInt64.max)], phnum: 0xFFFF), "c.elf").hasPrefix("c.elf: e_phoff 0xffffffffffffffff + e_phnum 65535"))
    }

    func testPOffsetNear2To64() {
        XCTAssertEqual(parseError(image([(72, UInt64.max - 1)]), "o.elf"),
                       "o.elf: program header 0: p_offset 0xfffffffffffffffe + p_filesz 2 runs past the end of the file (122 bytes)")
        XCTAssertEqual(parseError(image([(72, 1 << 63)]), "o.elf"),
                       "o.elf: program header 0: p_offset 0x8000000000000000 + p_filesz 2 runs past the end of the file (122 bytes)")
    }

    func testPFileszAndMemszNear2To64() {
        XCTAssertEqual(parseError(image([(96, UInt64.max), (104, UInt64.max)]), "f.elf"),
                       "f.elf: program header 0: p_offset 0x78 + p_filesz 18446744073709551615 runs past the end of the file (122 bytes)")
        XCTAssertEqual(parseError(image([(104, UInt64.max - 0x1000)]), "m.elf"),
                       "m.elf: program header 0: p_paddr 0x200000 + p_memsz 0xffffffffffffefff overflows 64 bits")
        XCTAssertEqual(parseError(image([(88, UInt64.max - 0x10)]), "p.elf"),
                       "p.elf: program header 0: p_paddr 0xffffffffffffffef + p_memsz 0x102 overflows 64 bits")
    }

    func testHugeButRepresentableSegmentsAreRefusedByPlacement() throws {
        let ram = try AnonymousGuestRAM(size: 4 << 20)
        for (patches, what) in [([(104, UInt64.max - 0x200000)], "p_memsz"), ([(88, UInt64.max - 0x200)], "p_paddr"),
                                ([(88, UInt64(1) << 63)], "p_paddr")] as [([(Int, UInt64)], String)] {
            let img = try ELFImage(bytes: image(patches), name: "big.elf")
            XCTAssertThrowsError(try img.load(into: ram), what) {
                XCTAssertTrue("\($0)".hasPrefix("big.elf: PT_LOAD 0: p_paddr 0x") && "\($0)".contains("does not fit in 4194304 bytes of guest RAM"), "\($0)")
            }
        }
    }

    func testEntryAtTheTopOfAddressSpace() throws {
        let img = try ELFImage(bytes: image([(24, UInt64.max)]), name: "e.elf")
        XCTAssertThrowsError(try img.load(into: try AnonymousGuestRAM(size: 4 << 20))) {
            XCTAssertEqual("\($0)", "e.elf: e_entry 0xffffffffffffffff is not inside any PT_LOAD segment")
        }
    }

    func testTruncatedHeader() {
        XCTAssertEqual(parseError(Array(image()[0..<40]), "t.elf"), "t.elf: truncated: 40 bytes, shorter than the 64-byte ELF64 header")
    }

    func testFuzzReproducersAndSeeds() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        var n = 0
        for dir in ["Fuzz/crashes/elf", "Fuzz/corpus/elf"] {
            let d = root.appendingPathComponent(dir)
            for name in (try? FileManager.default.contentsOfDirectory(atPath: d.path)) ?? [] where !name.hasPrefix(".") {
                ELFFuzz.exercise(Array(try Data(contentsOf: d.appendingPathComponent(name))))
                n += 1
            }
        }
        if n == 0 { throw XCTSkip("no Fuzz/corpus/elf next to the tests (\(root.path))") }
    }
}
