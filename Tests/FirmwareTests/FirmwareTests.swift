// Byte-for-byte tests of the firmware loaders and tables (no VM needed).
import XCTest
@testable import Firmware

func le32(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: v >> (8 * UInt32($0))) } }
func le16(_ v: UInt16) -> [UInt8] { [UInt8(v & 0xFF), UInt8(v >> 8)] }
func le64(_ v: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: v >> (8 * UInt64($0))) } }
func sum(_ b: [UInt8]) -> UInt8 { b.reduce(0, &+) }

/// A multiboot image with the a.out kludge: 32 bytes of padding, the header at file offset 32,
/// code after it; loaded at 0x100000, entry at 0x100040, bss up to 0x102000.
func aoutKludgeImage(flags: UInt32 = 0x0001_0003, checksumDelta: UInt32 = 0, code: [UInt8] = [0xF4, 0xEB, 0xFD]) -> [UInt8] {
    var b = [UInt8](repeating: 0x90, count: 32)
    let magic: UInt32 = 0x1BAD_B002
    b += le32(magic) + le32(flags) + le32((0 &- magic &- flags) &+ checksumDelta)
    b += le32(0x100020) + le32(0x100000) + le32(0) + le32(0x102000) + le32(0x100040)
    while b.count < 0x40 { b.append(0) }
    return b + code
}

/// A minimal ELF32 i386 executable with a multiboot header (no kludge) in its one segment.
func elf32MultibootImage() -> [UInt8] {
    var b = [UInt8](repeating: 0, count: 0x54)
    b[0] = 0x7F; b[1] = 0x45; b[2] = 0x4C; b[3] = 0x46; b[4] = 1; b[5] = 1; b[6] = 1
    func put(_ o: Int, _ v: [UInt8]) { b.replaceSubrange(o..<o + v.count, with: v) }
    put(16, le16(2)); put(18, le16(3)); put(20, le32(1)); put(24, le32(0x200010)); put(28, le32(52))
    put(40, le16(52)); put(42, le16(32)); put(44, le16(1))
    // program header at 52: PT_LOAD, offset 0x60, paddr 0x200000, filesz 0x20, memsz 0x1000
    put(52, le32(1)); put(56, le32(0x60)); put(60, le32(0x200000)); put(64, le32(0x200000))
    put(68, le32(0x20)); put(72, le32(0x1000)); put(76, le32(7))
    while b.count < 0x60 { b.append(0) }
    let flags: UInt32 = 0x2
    var seg = le32(0x1BAD_B002) + le32(flags) + le32(0 &- 0x1BAD_B002 &- flags) + [0xF4, 0xEB, 0xFD]
    while seg.count < 0x20 { seg.append(0xCC) }
    return b + seg
}

/// A synthetic bzImage: 1 setup sector after the boot sector, protocol `version`.
func bzImage(version: UInt16 = 0x020F, xloadflags: UInt16 = 0x1, kernel: [UInt8] = Array(repeating: 0xAB, count: 0x400),
             initSize: UInt32 = 0x20_0000) -> [UInt8] {
    var b = [UInt8](repeating: 0, count: 1024)
    func put(_ o: Int, _ v: [UInt8]) { b.replaceSubrange(o..<o + v.count, with: v) }
    b[0x1F1] = 1
    put(0x1FE, le16(0xAA55))
    b[0x200] = 0xEB; b[0x201] = 0x66   // header ends at 0x202 + 0x66 = 0x268
    put(0x202, Array("HdrS".utf8))
    put(0x206, le16(version))
    b[0x211] = 0x01                     // LOADED_HIGH
    put(0x214, le32(0x100000))
    put(0x22C, le32(0x7FFF_FFFF))
    put(0x230, le32(0x20_0000))
    b[0x234] = 1
    put(0x236, le16(xloadflags))
    put(0x238, le32(2048))
    put(0x258, le64(0x100_0000))
    put(0x260, le32(initSize))
    return b + kernel
}

/// A synthetic vmlinux: ELF64 x86-64, one PT_LOAD linked at 0xffffffff81000000, paddr 0x1000000.
func vmlinuxImage() -> [UInt8] {
    var b = [UInt8](repeating: 0, count: 64 + 56)
    func put(_ o: Int, _ v: [UInt8]) { b.replaceSubrange(o..<o + v.count, with: v) }
    b[0] = 0x7F; b[1] = 0x45; b[2] = 0x4C; b[3] = 0x46; b[4] = 2; b[5] = 1; b[6] = 1
    put(16, le16(2)); put(18, le16(62)); put(20, le32(1)); put(24, le64(0x100_0000)); put(32, le64(64))
    put(52, le16(64)); put(54, le16(56)); put(56, le16(1))
    put(64, le32(1)); put(68, le32(7)); put(72, le64(120)); put(80, le64(0xFFFF_FFFF_8100_0000)); put(88, le64(0x100_0000))
    put(96, le64(16)); put(104, le64(0x2000)); put(112, le64(0x20_0000))
    return b + [UInt8](repeating: 0x90, count: 16)
}

final class SMPTableTests: XCTestCase {
    func testMPFloatingPointerBytes() {
        let f = SMPTables.mpFloatingPointer(configAddress: 0xF0100)
        XCTAssertEqual(f, [0x5F, 0x4D, 0x50, 0x5F, 0x00, 0x01, 0x0F, 0x00, 0x01, 0x04, f[10], 0, 0, 0, 0, 0])
        XCTAssertEqual(sum(f), 0)
        XCTAssertEqual(f[10], 0x90) // "_MP_" 0x15B + address bytes 0x10 + 1 + 4 = 0x170 -> 0x100 - 0x70
    }

    func testMPConfigTableTwoCPUs() {
        let t = SMPTables(vcpus: 2).mpConfigTable()
        // header 44 + 2 processors * 20 + bus 8 + ioapic 8 + 15 ISA interrupts * 8 + 2 local * 8
        XCTAssertEqual(t.count, 44 + 40 + 8 + 8 + 120 + 16)
        XCTAssertEqual(Array(t[0..<4]), Array("PCMP".utf8))
        XCTAssertEqual(Array(t[4..<6]), le16(UInt16(t.count)))
        XCTAssertEqual(t[6], 4)
        XCTAssertEqual(sum(t), 0)
        XCTAssertEqual(Array(t[34..<36]), le16(2 + 1 + 1 + 15 + 2), "entry count")
        XCTAssertEqual(Array(t[36..<40]), le32(0xFEE0_0000))
        XCTAssertEqual(Array(t[44..<64]), [0, 0, 0x14, 0x03] + le32(0x60FB1) + le32(0x201) + [UInt8](repeating: 0, count: 8), "BSP")
        XCTAssertEqual(Array(t[64..<68]), [0, 1, 0x14, 0x01], "AP enabled, not BSP")
        XCTAssertEqual(Array(t[84..<92]), [1, 0] + Array("ISA   ".utf8))
        XCTAssertEqual(Array(t[92..<100]), [2, 2, 0x20, 1] + le32(0xFEC0_0000), "IOAPIC id 2 (after the CPUs)")
        XCTAssertEqual(Array(t[100..<108]), [3, 0, 0, 0, 0, 0, 2, 2], "ISA IRQ 0 -> IOAPIC pin 2")
        XCTAssertEqual(Array(t[108..<116]), [3, 0, 0, 0, 0, 1, 2, 1], "ISA IRQ 1 -> pin 1")
        XCTAssertEqual(Array(t[116..<124]), [3, 0, 0, 0, 0, 3, 2, 3], "IRQ 2 skipped")
        XCTAssertEqual(Array(t[t.count - 16..<t.count]), [4, 3, 0, 0, 0, 0, 0xFF, 0, 4, 1, 0, 0, 0, 0, 0xFF, 1])
    }

    func testRSDPBytesAndChecksums() {
        let r = SMPTables.rsdp(rsdt: 0xE0200, xsdt: 0xE0240)
        XCTAssertEqual(r.count, 36)
        XCTAssertEqual(Array(r[0..<8]), Array("RSD PTR ".utf8))
        XCTAssertEqual(Array(r[9..<15]), Array("GVMSWF".utf8))
        XCTAssertEqual(r[15], 2)
        XCTAssertEqual(Array(r[16..<20]), le32(0xE0200))
        XCTAssertEqual(Array(r[20..<24]), le32(36))
        XCTAssertEqual(Array(r[24..<32]), le64(0xE0240))
        XCTAssertEqual(sum(Array(r[0..<20])), 0, "ACPI 1.0 checksum")
        XCTAssertEqual(sum(r), 0, "extended checksum")
    }

    func testMADTEntries() {
        let m = SMPTables(vcpus: 3).madt()
        XCTAssertEqual(Array(m[0..<4]), Array("APIC".utf8))
        XCTAssertEqual(Array(m[4..<8]), le32(UInt32(m.count)))
        XCTAssertEqual(m.count, 36 + 8 + 3 * 8 + 12 + 10 + 6)
        XCTAssertEqual(m[8], 3)
        XCTAssertEqual(sum(m), 0)
        XCTAssertEqual(Array(m[36..<44]), le32(0xFEE0_0000) + le32(1))
        for i in 0..<3 {
            XCTAssertEqual(Array(m[44 + 8 * i..<52 + 8 * i]), [0, 8, UInt8(i), UInt8(i), 1, 0, 0, 0], "LAPIC \(i)")
        }
        XCTAssertEqual(Array(m[68..<80]), [1, 12, 3, 0] + le32(0xFEC0_0000) + le32(0))
        XCTAssertEqual(Array(m[80..<90]), [2, 10, 0, 0, 2, 0, 0, 0, 0, 0], "IRQ0 -> GSI2")
        XCTAssertEqual(Array(m[90..<96]), [4, 6, 0xFF, 0, 0, 1], "LINT1 NMI")
    }

    func testInstalledTablesDefaultToMADTOnly() throws {
        let mem = ByteArrayMemory(size: 2 << 20)
        let p = try SMPTables(vcpus: 4).install(into: mem)
        XCTAssertEqual(p.fadt, 0)
        XCTAssertEqual(p.madt, 0xE0000)
        XCTAssertEqual(mem.u32(p.rsdt + 4), 36 + 4)
        XCTAssertEqual(UInt64(mem.u32(p.rsdt + 36)), p.madt)
        XCTAssertEqual(mem.u32(p.xsdt + 4), 36 + 8)
        XCTAssertEqual(mem.u64(p.xsdt + 36), p.madt)
        for a in [p.rsdt, p.xsdt, p.madt] { XCTAssertEqual(sum(mem.read(a, Int(mem.u32(a + 4)))), 0) }
        XCTAssertEqual(sum(mem.read(p.rsdp, 36)), 0)
    }

    func testInstalledTablesChainAndChecksum() throws {
        let mem = ByteArrayMemory(size: 2 << 20)
        var t = SMPTables(vcpus: 4)
        t.hardwareReducedFADT = true
        let p = try t.install(into: mem)
        let rsdp = mem.read(p.rsdp, 36)
        XCTAssertEqual(sum(rsdp), 0)
        XCTAssertEqual(UInt64(mem.u32(p.rsdp + 16)), p.rsdt)
        XCTAssertEqual(mem.u64(p.rsdp + 24), p.xsdt)
        for (addr, sig) in [(p.rsdt, "RSDT"), (p.xsdt, "XSDT"), (p.madt, "APIC"), (p.fadt, "FACP"), (p.dsdt, "DSDT")] {
            let len = Int(mem.u32(addr + 4))
            XCTAssertEqual(mem.read(addr, 4), Array(sig.utf8))
            XCTAssertEqual(sum(mem.read(addr, len)), 0, "\(sig) checksum")
        }
        XCTAssertEqual(mem.u32(p.rsdt + 4), 36 + 8)
        XCTAssertEqual(UInt64(mem.u32(p.rsdt + 36)), p.fadt)
        XCTAssertEqual(UInt64(mem.u32(p.rsdt + 40)), p.madt)
        XCTAssertEqual(mem.u64(p.xsdt + 36), p.fadt)
        XCTAssertEqual(mem.u64(p.xsdt + 44), p.madt)
        XCTAssertEqual(mem.u32(p.fadt + 4), 276)
        XCTAssertEqual(UInt64(mem.u32(p.fadt + 40)), p.dsdt)
        XCTAssertEqual(mem.u64(p.fadt + 140), p.dsdt)
        XCTAssertEqual(mem.u16(p.fadt + 109), 3, "IAPC_BOOT_ARCH: legacy devices + 8042")
        XCTAssertEqual(mem.u32(p.fadt + 112), 1 << 20, "HW_REDUCED_ACPI")
        XCTAssertEqual(mem.read(p.mpFloating, 4), Array("_MP_".utf8))
        XCTAssertEqual(UInt64(mem.u32(p.mpFloating + 4)), p.mpConfig)
        XCTAssertEqual(sum(mem.read(p.mpFloating, 16)), 0)
        XCTAssertEqual(sum(mem.read(p.mpConfig, Int(mem.u16(p.mpConfig + 4)))), 0)
        XCTAssertEqual(p.rsdp % 16, 0)
        XCTAssertEqual(mem.u16(0x40E), 0x9FC0, "EBDA segment in the BDA")
        XCTAssertEqual(mem.u16(0x413), 639, "base memory KiB in the BDA")
    }
}

final class MultibootTests: XCTestCase {
    func testAoutKludgeLoadInfoAndEntry() throws {
        let mem = ByteArrayMemory(size: 16 << 20)
        let img = aoutKludgeImage()
        let plan = try Bootloader.load(BootRequest(file: "k.bin", image: img, cmdline: "counter iters=5",
                                                   modules: [BootModule(name: "m0", bytes: [1, 2, 3], cmdline: "mod0 arg")],
                                                   vcpus: 2), into: mem)
        XCTAssertEqual(plan.format, .multiboot)
        // image: file offset 0 (header at 32, header_addr 0x100020) to the end, at 0x100000; bss zeroed to 0x102000
        XCTAssertEqual(mem.read(0x100000, img.count), img)
        XCTAssertEqual(mem.read(0x100000 + UInt64(img.count), 0x2000 - img.count), [UInt8](repeating: 0, count: 0x2000 - img.count))
        // entry state
        let e = plan.entry
        XCTAssertEqual(e.mode, .protected32)
        XCTAssertEqual(e.rip, 0x100040)
        XCTAssertEqual(e.rax, 0x2BAD_B002)
        XCTAssertEqual(e.rbx, 0x30000)
        XCTAssertEqual(e.codeSelector, 0x08)
        XCTAssertEqual(e.dataSelector, 0x10)
        XCTAssertEqual(e.cr0 & 0x8000_0001, 1, "PE on, paging off")
        XCTAssertEqual(e.rflags, 2, "interrupts off")
        XCTAssertEqual(mem.read(0x500, 24), le64(0) + le64(0x00CF_9B00_0000_FFFF) + le64(0x00CF_9300_0000_FFFF))
        // module: page-aligned after bss_end
        XCTAssertEqual(mem.read(0x102000, 3), [1, 2, 3])
        // info block
        let mbi: UInt64 = 0x30000
        XCTAssertEqual(mem.u32(mbi), 0x1 | 0x4 | 0x8 | 0x40 | 0x200)
        XCTAssertEqual(mem.u32(mbi + 4), 639)
        XCTAssertEqual(mem.u32(mbi + 8), (16 << 10) - 1024)
        let cmd = UInt64(mem.u32(mbi + 16))
        XCTAssertEqual(mem.read(cmd, 31), Array("k.bin counter iters=5".utf8) + [0] + Array(mem.read(cmd + 22, 9)))
        XCTAssertEqual(mem.u32(mbi + 20), 1)
        let mods = UInt64(mem.u32(mbi + 24))
        XCTAssertEqual(mem.u32(mods), 0x102000)
        XCTAssertEqual(mem.u32(mods + 4), 0x102003)
        XCTAssertEqual(mem.read(UInt64(mem.u32(mods + 8)), 9), Array("mod0 arg".utf8) + [0])
        XCTAssertEqual(mem.u32(mbi + 44), 4 * 24)
        let mmap = UInt64(mem.u32(mbi + 48))
        XCTAssertEqual(mem.read(mmap, 96),
                       le32(20) + le64(0) + le64(0x9FC00) + le32(1)
                       + le32(20) + le64(0x9FC00) + le64(0x400) + le32(2)
                       + le32(20) + le64(0xE0000) + le64(0x20000) + le32(2)
                       + le32(20) + le64(0x100000) + le64((16 << 20) - 0x100000) + le32(1))
        XCTAssertEqual(mem.read(UInt64(mem.u32(mbi + 64)), 8), Array("GiantVM".utf8) + [0])
    }

    func testELF32Multiboot() throws {
        let mem = ByteArrayMemory(size: 4 << 20)
        let img = elf32MultibootImage()
        XCTAssertEqual(try Bootloader.detect(img, file: "e32"), .multiboot)
        let plan = try Bootloader.load(BootRequest(file: "e32", image: img, vcpus: 1), into: mem)
        XCTAssertEqual(plan.entry.rip, 0x200010)
        XCTAssertEqual(mem.read(0x200000, 0x20), Array(img[0x60..<0x80]))
        XCTAssertEqual(mem.read(0x200020, 16), [UInt8](repeating: 0, count: 16))
        XCTAssertEqual(mem.read(UInt64(mem.u32(0x30000 + 16)), 4), Array("e32".utf8) + [0], "no cmdline: just the file")
    }

    func testBadChecksumIsNamed() {
        XCTAssertThrowsError(try Bootloader.detect(aoutKludgeImage(checksumDelta: 1), file: "bad.bin")) { e in
            let s = "\(e)"
            XCTAssertTrue(s.hasPrefix("bad.bin: multiboot header at offset 0x20: bad checksum"), s)
        }
    }

    func testUnsupportedFlags() {
        XCTAssertThrowsError(try Bootloader.detect(aoutKludgeImage(flags: 0x0001_0010), file: "f.bin")) { e in
            XCTAssertTrue("\(e)".contains("unsupported required feature flags 0x10"), "\(e)")
        }
    }

    func testTruncatedLoadRange() {
        var img = aoutKludgeImage()
        // load_end_addr beyond the file
        img.replaceSubrange(52..<56, with: le32(0x101000))
        XCTAssertThrowsError(try Bootloader.load(BootRequest(file: "t.bin", image: img, vcpus: 1), into: ByteArrayMemory(size: 4 << 20))) { e in
            XCTAssertTrue("\(e)".hasPrefix("t.bin: truncated: multiboot load range"), "\(e)")
        }
    }

    func testSegmentOutsideRAM() {
        XCTAssertThrowsError(try Bootloader.load(BootRequest(file: "big.bin", image: aoutKludgeImage(), vcpus: 1),
                                                 into: ByteArrayMemory(size: (1 << 20) + 0x1000))) { e in
            XCTAssertEqual("\(e)", "big.bin: guest RAM of 1052672 bytes is too small to boot (2 MiB at least)")
        }
        var img = aoutKludgeImage()
        img.replaceSubrange(56..<60, with: le32(0x300000)) // bss to 3 MiB in 2 MiB of RAM
        XCTAssertThrowsError(try Bootloader.load(BootRequest(file: "bss.bin", image: img, vcpus: 1), into: ByteArrayMemory(size: 2 << 20))) { e in
            XCTAssertEqual("\(e)", "bss.bin: kernel at 0x100000+0x200000 is outside guest RAM (2097152 bytes)")
        }
    }

    func testELF64WithoutKludgeRefused() {
        var img = elf32MultibootImage()
        img[4] = 2
        XCTAssertThrowsError(try Bootloader.load(BootRequest(file: "x.elf", image: img, vcpus: 1, bootProtocol: .multiboot),
                                                 into: ByteArrayMemory(size: 4 << 20))) { e in
            XCTAssertTrue("\(e)".contains("only ELF32 can be loaded"), "\(e)")
        }
    }
}

final class LinuxBootTests: XCTestCase {
    func testBzImage64BitEntryAndZeroPage() throws {
        let mem = ByteArrayMemory(size: 64 << 20)
        let img = bzImage()
        let initrd = BootModule(name: "initrd.img", bytes: [UInt8](repeating: 0x5A, count: 5000), cmdline: "")
        let plan = try Bootloader.load(BootRequest(file: "bzImage", image: img, cmdline: "console=ttyS0 earlyprintk=serial",
                                                   initrd: initrd, vcpus: 2), into: mem)
        XCTAssertEqual(plan.format, .bzImage)
        XCTAssertEqual(mem.read(0x100000, 0x400), Array(img[1024...]), "protected-mode kernel at 1 MiB")
        let e = plan.entry
        XCTAssertEqual(e.mode, .long64)
        XCTAssertEqual(e.rip, 0x100200, "startup_64")
        XCTAssertEqual(e.rsi, 0x7000)
        XCTAssertEqual(e.codeSelector, 0x10)
        XCTAssertEqual(e.dataSelector, 0x18)
        XCTAssertEqual(e.cr3, 0x9000)
        XCTAssertEqual(e.cr0 & 0x8000_0001, 0x8000_0001)
        XCTAssertEqual(e.efer & 0x500, 0x500)
        XCTAssertEqual(mem.read(0x500, 32), le64(0) + le64(0) + le64(0x00AF_9B00_0000_FFFF) + le64(0x00CF_9300_0000_FFFF))
        // zero page
        let zp: UInt64 = 0x7000
        XCTAssertEqual(mem.read(zp + 0x1F1, 0x11), Array(img[0x1F1..<0x202]), "setup header copied")
        XCTAssertEqual(mem.read(zp + 0x212, 0x268 - 0x212).dropFirst(0x214 - 0x212).prefix(4), ArraySlice(img[0x214..<0x218]), "code32_start copied")
        XCTAssertEqual(mem.read(zp + 0x202, 4), Array("HdrS".utf8))
        XCTAssertEqual(mem.u16(zp + 0x206), 0x020F)
        XCTAssertEqual(mem.u8(zp + 0x210), 0xFF, "type_of_loader")
        XCTAssertEqual(mem.u8(zp + 0x211), 0x81, "LOADED_HIGH | CAN_USE_HEAP")
        XCTAssertEqual(mem.u32(zp + 0x228), 0x20000)
        XCTAssertEqual(mem.read(0x20000, 34), Array("console=ttyS0 earlyprintk=serial".utf8) + [0, 0])
        let rdAddr = UInt64(mem.u32(zp + 0x218))
        XCTAssertEqual(rdAddr, ((64 << 20) - 5000) & ~0xFFF, "initrd at the top of RAM, page aligned")
        XCTAssertEqual(mem.u32(zp + 0x21C), 5000)
        XCTAssertEqual(mem.read(rdAddr, 5000), initrd.bytes)
        XCTAssertEqual(mem.u64(zp + 0x70), 0xF0000, "acpi_rsdp_addr")
        XCTAssertEqual(mem.u8(zp + 0x1E8), 4)
        XCTAssertEqual(mem.read(zp + 0x2D0, 80),
                       le64(0) + le64(0x9FC00) + le32(1) + le64(0x9FC00) + le64(0x400) + le32(2)
                       + le64(0xE0000) + le64(0x20000) + le32(2) + le64(0x100000) + le64((64 << 20) - 0x100000) + le32(1))
        // page tables: PML4[0] -> PDPT, PDPT[3] -> PD3, PD0[1] = 2 MiB, PD3[502] = 0xFEC00000 uncached
        XCTAssertEqual(mem.u64(0x9000), 0xA000 | 0x23)
        XCTAssertEqual(mem.u64(0xA000 + 24), 0xE000 | 0x23)
        XCTAssertEqual(mem.u64(0xB000 + 8), 0x20_0000 | 0xE3)
        XCTAssertEqual(mem.u64(0xE000 + 502 * 8), 0xFEC0_0000 | 0xE3 | 0x18)
    }

    func testBzImage32BitEntryWithoutXLF() throws {
        let mem = ByteArrayMemory(size: 64 << 20)
        let plan = try Bootloader.load(BootRequest(file: "old", image: bzImage(version: 0x0206, xloadflags: 0), vcpus: 1), into: mem)
        XCTAssertEqual(plan.entry.mode, .protected32)
        XCTAssertEqual(plan.entry.rip, 0x100000)
        XCTAssertEqual(plan.entry.rsi, 0x7000)
        XCTAssertEqual(plan.entry.codeSelector, 0x10)
        XCTAssertEqual(mem.u64(0x500 + 16), 0x00CF_9B00_0000_FFFF, "__BOOT_CS is 32-bit code")
    }

    func testOldProtocolRefused() {
        XCTAssertThrowsError(try BzImage(bytes: bzImage(version: 0x0204), file: "old.bz")) { e in
            XCTAssertEqual("\(e)", "old.bz: unsupported Linux boot protocol version 2.04 (2.06 or later is required)")
        }
    }

    func testTooLittleRAMForInitSize() {
        XCTAssertThrowsError(try Bootloader.load(BootRequest(file: "bz", image: bzImage(initSize: 0x300_0000), vcpus: 1),
                                                 into: ByteArrayMemory(size: 32 << 20))) { e in
            XCTAssertEqual("\(e)", "bz: the kernel needs RAM up to 0x4000000 (init_size 0x3000000 at 0x1000000); guest RAM is 33554432 bytes")
        }
    }

    func testCommandLineTooLong() {
        XCTAssertThrowsError(try Bootloader.load(BootRequest(file: "bz", image: bzImage(), cmdline: String(repeating: "x", count: 2048), vcpus: 1),
                                                 into: ByteArrayMemory(size: 64 << 20))) { e in
            XCTAssertEqual("\(e)", "bz: command line is 2048 bytes; this kernel accepts at most 2047 (cmdline_size)")
        }
    }

    func testTruncatedSetup() {
        let img = Array(bzImage().prefix(0x300))
        XCTAssertThrowsError(try BzImage(bytes: img, file: "cut")) { e in
            XCTAssertTrue("\(e)".hasPrefix("cut: truncated: setup_sects 1 puts the protected-mode kernel at 0x400"), "\(e)")
        }
    }

    func testVmlinux() throws {
        let mem = ByteArrayMemory(size: 64 << 20)
        let img = vmlinuxImage()
        XCTAssertEqual(try Bootloader.detect(img, file: "vmlinux"), .vmlinux)
        let plan = try Bootloader.load(BootRequest(file: "vmlinux", image: img, cmdline: "quiet", vcpus: 1), into: mem)
        XCTAssertEqual(plan.entry.mode, .long64)
        XCTAssertEqual(plan.entry.rip, 0x100_0000)
        XCTAssertEqual(plan.entry.rsi, 0x7000)
        XCTAssertEqual(mem.read(0x100_0000, 16), [UInt8](repeating: 0x90, count: 16))
        XCTAssertEqual(mem.u16(0x7000 + 0x1FE), 0xAA55)
        XCTAssertEqual(mem.read(0x7000 + 0x202, 4), Array("HdrS".utf8))
        XCTAssertEqual(mem.u16(0x7000 + 0x206), 0x020F)
        XCTAssertEqual(mem.u8(0x7000 + 0x210), 0xFF)
        XCTAssertEqual(mem.u32(0x7000 + 0x228), 0x20000)
        XCTAssertEqual(mem.read(0x20000, 6), Array("quiet".utf8) + [0])
    }

    func testDebianKernelHeaderIfInstalled() throws {
        let dir = "/boot"
        guard let name = (try? FileManager.default.contentsOfDirectory(atPath: dir))?.first(where: { $0.hasPrefix("vmlinuz-") }) else {
            throw XCTSkip("no /boot/vmlinuz-* (apt-get install linux-image-cloud-amd64)")
        }
        let bytes = Array(try Data(contentsOf: URL(fileURLWithPath: dir + "/" + name)))
        XCTAssertEqual(try Bootloader.detect(bytes, file: name), .bzImage)
        let bz = try BzImage(bytes: bytes, file: name)
        XCTAssertGreaterThanOrEqual(bz.version, 0x020C)
        XCTAssertTrue(bz.supports64BitEntry)
        XCTAssertTrue(bz.relocatable)
    }
}

final class DetectionTests: XCTestCase {
    func testFormats() throws {
        XCTAssertEqual(try Bootloader.detect(bzImage(), file: "a"), .bzImage)
        XCTAssertEqual(try Bootloader.detect(aoutKludgeImage() + [UInt8](repeating: 0, count: 64), file: "b"), .multiboot)
        XCTAssertEqual(try Bootloader.detect(vmlinuxImage(), file: "c"), .vmlinux)
        var plain = vmlinuxImage()
        plain.replaceSubrange(80..<88, with: le64(0x100_0000)) // vaddr == paddr: not a Linux kernel
        XCTAssertEqual(try Bootloader.detect(plain, file: "d"), .giantvm)
        XCTAssertEqual(try Bootloader.detect(plain, file: "d", bootProtocol: .linux), .vmlinux)
    }

    func testUnrecognised() {
        XCTAssertThrowsError(try Bootloader.detect([UInt8](repeating: 0x41, count: 100), file: "junk")) { e in
            XCTAssertEqual("\(e)", "junk: unrecognised image: not a bzImage (no \"HdrS\" at 0x202), not ELF, and no multiboot header in the first 8 KiB")
        }
        XCTAssertThrowsError(try Bootloader.detect([1, 2, 3], file: "tiny")) { e in
            XCTAssertEqual("\(e)", "tiny: truncated: 3 bytes is too short to be a kernel image")
        }
        XCTAssertThrowsError(try Bootloader.detect([UInt8](repeating: 0x41, count: 100), file: "j", bootProtocol: .multiboot)) { e in
            XCTAssertEqual("\(e)", "j: guest.protocol multiboot: no multiboot header (magic 0x1BADB002) in the first 8 KiB")
        }
    }
}
