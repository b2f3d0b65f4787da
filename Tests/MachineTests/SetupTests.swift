// Machine setup pieces without KVM: CPUID filtering, boot structures, ELF checks, the I/O bus.
import XCTest
import KVM
@testable import Machine

final class CPUIDPolicyTests: XCTestCase {
    func testFiltersAndAddsHypervisorLeaves() {
        let supported = [
            CPUIDEntry(function: 1, eax: 0x806C1, ebx: 0x0001_0800, ecx: 0xFFFF_FFFF, edx: 0x0000_0000),
            CPUIDEntry(function: 0x4000_0000, eax: 0x4000_0001, ebx: 0x4B4D_564B, ecx: 0x564B_4D56, edx: 0x4D),
            CPUIDEntry(function: 0x4000_0001, eax: 0xFFFF_FFFF, ebx: 0, ecx: 0, edx: 0),
            CPUIDEntry(function: 0xB, index: 0, flags: 1, eax: 0, ebx: 1, ecx: 0x100, edx: 0),
        ]
        let p = CPUIDPolicy(totalVCPUs: 6, nodes: [(0, 4), (4, 2)], tscKHz: 2_000_000, apicBusKHz: 100_000)
        let e = p.entries(supported: supported, vcpu: 5)
        let leaf1 = e.first { $0.function == 1 }!
        XCTAssertNotEqual(leaf1.ecx & (1 << 21), 0, "x2APIC offered (the user-space APIC's MSR interface)")
        XCTAssertEqual(leaf1.ecx & (1 << 24), 0, "no TSC-deadline")
        XCTAssertEqual(leaf1.ecx & (1 << 27), 0, "no OSXSAVE")
        XCTAssertNotEqual(leaf1.ecx & (1 << 31), 0, "hypervisor present")
        XCTAssertNotEqual(leaf1.edx & (1 << 9), 0, "APIC present")
        XCTAssertEqual(leaf1.ebx >> 24, 5, "initial APIC id = vCPU index")
        XCTAssertEqual(e.first { $0.function == 0xB }!.edx, 5)
        var without = p
        without.offerX2APIC = false   // KVM would not send the x2APIC MSRs to user space
        XCTAssertEqual(without.entries(supported: supported, vcpu: 5).first { $0.function == 1 }!.ecx & (1 << 21), 0)
        // KVM's PV leaves (PV EOI, PV send-IPI, PV unhalt, async PF, steal time, PV TLB flush) are gone.
        XCTAssertFalse(e.contains { $0.function == 0x4000_0001 && $0.eax == 0xFFFF_FFFF })
        let sig = e.first { $0.function == 0x4000_0000 }!
        let bytes = [sig.ebx, sig.ecx, sig.edx].flatMap { w in (0..<4).map { UInt8((w >> (8 * UInt32($0))) & 0xFF) } }
        XCTAssertEqual(String(decoding: bytes, as: UTF8.self), "GiantVMSwift")
        XCTAssertEqual(sig.eax, 0x4000_0010)
        let info = e.first { $0.function == 0x4000_0001 }!
        XCTAssertEqual([info.eax, info.ebx, info.ecx], [6, 2, 1])
        let layout = e.filter { $0.function == 0x4000_0002 }
        XCTAssertEqual(layout.map { [$0.index, $0.eax, $0.ebx] }, [[0, 0, 4], [1, 4, 2]])
        let timing = e.first { $0.function == 0x4000_0010 }!
        XCTAssertEqual([timing.eax, timing.ebx], [2_000_000, 100_000])
    }
}

final class BootLayoutTests: XCTestCase {
    func testGDT() {
        let g = BootLayout.gdt()
        XCTAssertEqual(g.count, 24)
        XCTAssertEqual(Array(g[8..<16]), [0xFF, 0xFF, 0, 0, 0, 0x9B, 0xAF, 0x00], "64-bit code, L=1, DPL0")
        XCTAssertEqual(Array(g[16..<24]), [0xFF, 0xFF, 0, 0, 0, 0x93, 0xCF, 0x00], "flat data")
    }

    func testBootInfo() {
        let b = BootLayout.bootInfo(totalVCPUs: 4, nodeCount: 2, memoryBytes: 64 << 20, cmdlineLength: 5, thisVCPU: 0,
                                    vcpuNode: [0, 0, 1, 1])
        XCTAssertEqual(b.count, 296)
        XCTAssertEqual(Array(b[0..<4]), Array("BMVG".utf8))
        XCTAssertEqual(b[4], 1); XCTAssertEqual(b[8], 4); XCTAssertEqual(b[12], 2)
        XCTAssertEqual(Array(b[16..<24]), [0, 0, 0, 4, 0, 0, 0, 0])
        XCTAssertEqual(Array(b[24..<32]), [0, 0x30, 0, 0, 0, 0, 0, 0])
        XCTAssertEqual(b[32], 5); XCTAssertEqual(b[36], 0)
        XCTAssertEqual(Array(b[40..<44]), [0, 0, 1, 1])
    }

    func testPageTablesIdentityMapWithUncachedDeviceWindow() {
        let t = BootLayout.pageTables(memoryBytes: 64 << 20)
        XCTAssertEqual(t.count, 6 * 4096, "PML4, PDPT, 4 PDs for the first 4 GiB")
        func entry(_ o: Int) -> UInt64 { (0..<8).reduce(0) { $0 | UInt64(t[o + $1]) << (8 * UInt64($1)) } }
        XCTAssertEqual(entry(0), 0xA023)
        XCTAssertEqual(entry(4096 + 3 * 8), 0xE023, "PDPT[3] -> PD at 0xe000")
        XCTAssertEqual(entry(2 * 4096), 0xE3, "2 MiB page at 0, P|RW|A|D|PS")
        XCTAssertEqual(entry(2 * 4096 + 8), 0x2000E3)
        XCTAssertEqual(entry(5 * 4096 + 503 * 8), 0xFEE0_00FB, "APIC page uncached (PCD|PWT)")
        XCTAssertEqual(entry(5 * 4096 + 501 * 8), 0xFEA0_00E3)
        XCTAssertEqual(BootLayout.pageDirectoryCount(memoryBytes: 5 << 30), 5)
    }
}

final class ELFTests: XCTestCase {
    func testBuildAndParse() throws {
        let img = try ELFImage(bytes: ELFImage.build(code: [0xF4], loadAddress: 0x200000, bssBytes: 100), name: "t.elf")
        XCTAssertEqual(img.entry, 0x200000)
        XCTAssertEqual(img.segments, [ELFSegment(physicalAddress: 0x200000, fileOffset: 120, fileSize: 1, memorySize: 101)])
        let ram = try AnonymousGuestRAM(size: 4 << 20)
        try ram.write([0xAA, 0xAA], at: 0x200001)
        try img.load(into: ram)
        XCTAssertEqual(try ram.read(0x200000, count: 3), [0xF4, 0, 0], "bss zeroed")
    }

    func testErrorsNameFileAndField() {
        XCTAssertThrowsError(try ELFImage(bytes: [1, 2, 3], name: "x.bin")) {
            XCTAssertEqual("\($0)", "x.bin: not an ELF file (bad magic)")
        }
        var b = ELFImage.build(code: [0xF4], loadAddress: 0x200000)
        b[18] = 3 // EM_386
        XCTAssertThrowsError(try ELFImage(bytes: b, name: "g.elf")) {
            XCTAssertEqual("\($0)", "g.elf: e_machine is 3, expected 62 (EM_X86_64)")
        }
        let low = try! ELFImage(bytes: ELFImage.build(code: [0xF4], loadAddress: 0x8000), name: "low.elf")
        XCTAssertThrowsError(try low.load(into: try! AnonymousGuestRAM(size: 4 << 20))) {
            XCTAssertTrue("\($0)".hasPrefix("low.elf: PT_LOAD 0: p_paddr 0x8000 is below 1 MiB"), "\($0)")
        }
        let big = try! ELFImage(bytes: ELFImage.build(code: [0xF4], loadAddress: 0x300000), name: "big.elf")
        XCTAssertThrowsError(try big.load(into: try! AnonymousGuestRAM(size: 2 << 20))) {
            XCTAssertTrue("\($0)".contains("does not fit in 2097152 bytes"), "\($0)")
        }
    }
}

final class IOBusTests: XCTestCase {
    final class D: IODevice {
        let name: String
        init(_ n: String) { name = n }
        func io(space: IOSpaceKind, offset: UInt64, data: UnsafeMutableRawBufferPointer, isWrite: Bool) {}
    }

    func testLookupAndOverlap() throws {
        let bus = IOBus()
        let uart = D("com1"), exit = D("exit")
        try bus.map(.pio, base: 0x3F8, length: 8, device: uart)
        try bus.map(.pio, base: 0xF4, length: 4, device: exit)
        XCTAssertTrue(bus.lookup(.pio, 0x3FF)?.device === uart)
        XCTAssertNil(bus.lookup(.pio, 0x400))
        XCTAssertTrue(bus.lookup(.pio, 0xF7)?.device === exit)
        XCTAssertNil(bus.lookup(.mmio, 0x3F8), "spaces are separate")
        XCTAssertThrowsError(try bus.map(.pio, base: 0x3FC, length: 8, device: D("com2"))) {
            XCTAssertEqual("\($0)", "port I/O range 0x3fc+0x8 of device 'com2' overlaps 0x3f8+0x8 of device 'com1'")
        }
        XCTAssertThrowsError(try bus.map(.mmio, base: 0xFEE0_0800, length: 16, device: D("x"))) {
            XCTAssertTrue("\($0)".contains("local APIC"))
        }
        XCTAssertThrowsError(try bus.map(.pio, base: 0xFFFF, length: 2, device: D("y")))
        bus.seal()
        XCTAssertThrowsError(try bus.map(.pio, base: 0x2F8, length: 8, device: D("late")))
    }
}

/// Which 8259 input a device line (an IOAPIC pin) feeds: the firmware's IRQ0 -> GSI2 override.
final class PICLinkTests: XCTestCase {
    func testDeviceLinesMapToISAIRQsAsTheMADTSays() {
        XCTAssertEqual(PICLink.isaIRQ(forLine: 2), 0, "pin 2 is the PIT's IRQ 0")
        XCTAssertNil(PICLink.isaIRQ(forLine: 0), "pin 0 feeds no 8259 input")
        for line: UInt32 in [1, 3, 4, 8, 15] { XCTAssertEqual(PICLink.isaIRQ(forLine: line), Int(line)) }
        for line: UInt32 in [16, 20, 23, PICLink.intrLine] { XCTAssertNil(PICLink.isaIRQ(forLine: line)) }
    }
}
