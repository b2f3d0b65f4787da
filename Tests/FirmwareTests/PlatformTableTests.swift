// ACPI tables for the platform devices: HPET, and the full FADT + FACS + DSDT of an ACPI PM device.
import XCTest
@testable import Firmware

final class PlatformTableTests: XCTestCase {
    func testHPETTableIsListedWithItsBase() throws {
        let mem = ByteArrayMemory(size: 2 << 20)
        var t = SMPTables(vcpus: 2)
        t.platform = PlatformDevices(hpetBase: 0xFED0_0000, hpetTimers: 3)
        let p = try t.install(into: mem)
        XCTAssertNotEqual(p.hpet, 0)
        XCTAssertEqual(mem.read(p.hpet, 4), Array("HPET".utf8))
        XCTAssertEqual(mem.u32(p.hpet + 4), 56)
        XCTAssertEqual(sum(mem.read(p.hpet, 56)), 0)
        XCTAssertEqual(mem.u32(p.hpet + 36), 0x8086_A201, "event timer block id: GCAP_ID low half of a 3-timer HPET")
        XCTAssertEqual(mem.read(p.hpet + 40, 4), [0, 64, 0, 0], "GAS: system memory, 64 bits")
        XCTAssertEqual(mem.u64(p.hpet + 44), 0xFED0_0000)
        XCTAssertEqual(mem.u32(p.rsdt + 4), 36 + 8, "MADT and HPET listed")
        XCTAssertEqual(UInt64(mem.u32(p.rsdt + 40)), p.hpet)
        XCTAssertEqual(mem.u64(p.xsdt + 44), p.hpet)
        XCTAssertEqual(p.fadt, 0, "no ACPI PM device: no FADT")
    }

    func testACPIPMGivesFullFADTWithFACSAndSleepDSDT() throws {
        let mem = ByteArrayMemory(size: 2 << 20)
        var t = SMPTables(vcpus: 1)
        t.platform = PlatformDevices(pmBase: 0x600)
        let p = try t.install(into: mem)
        for (a, sig) in [(p.fadt, "FACP"), (p.dsdt, "DSDT")] {
            XCTAssertEqual(mem.read(a, 4), Array(sig.utf8))
            XCTAssertEqual(sum(mem.read(a, Int(mem.u32(a + 4)))), 0, sig)
        }
        XCTAssertEqual(p.facs % 64, 0, "FACS is 64-byte aligned")
        XCTAssertEqual(mem.read(p.facs, 4), Array("FACS".utf8))
        XCTAssertEqual(UInt64(mem.u32(p.fadt + 36)), p.facs, "FIRMWARE_CTRL")
        XCTAssertEqual(mem.u32(p.fadt + 112) & (1 << 20), 0, "not hardware-reduced")
        XCTAssertEqual(mem.u16(p.fadt + 46), 9, "SCI on IRQ 9")
        XCTAssertEqual(mem.u32(p.fadt + 56), 0x600, "PM1a_EVT_BLK")
        XCTAssertEqual(mem.u32(p.fadt + 64), 0x604, "PM1a_CNT_BLK")
        XCTAssertEqual(mem.u32(p.fadt + 76), 0x608, "PM_TMR_BLK")
        XCTAssertEqual(mem.read(p.fadt + 88, 4), [4, 2, 0, 4])
        XCTAssertEqual(mem.u64(p.fadt + 172 + 4), 0x604, "X_PM1a_CNT_BLK address")
        let dsdt = mem.read(p.dsdt, Int(mem.u32(p.dsdt + 4)))
        let aml = Array(dsdt[36...])
        XCTAssertEqual(aml, [0x08] + Array("_S1_".utf8) + [0x12, 0x08, 0x04, 0x0A, 1, 0x0A, 1, 0, 0]
                          + [0x08] + Array("_S5_".utf8) + [0x12, 0x08, 0x04, 0x0A, 5, 0x0A, 5, 0, 0])
        let madt = mem.read(p.madt, Int(mem.u32(p.madt + 4)))
        XCTAssertTrue(madt.indices.contains { i in i + 10 <= madt.count && Array(madt[i..<i + 10]) == [2, 10, 0, 9, 9, 0, 0, 0, 0x0D, 0] },
                      "MADT: ISA IRQ 9 -> GSI 9, level, active high")
    }
}
