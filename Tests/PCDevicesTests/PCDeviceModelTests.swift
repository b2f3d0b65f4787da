// Register behaviour of the PC device models (fw-cfg, PIT, CMOS, i8042, PIC, PCI host), without a VM.
import XCTest
@testable import DeviceModels

func be32(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: v >> (8 * UInt32(3 - $0))) } }
func le32(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: v >> (8 * UInt32($0))) } }
func le64(_ v: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: v >> (8 * UInt64($0))) } }

extension FwCfgState {
    mutating func selectPort(_ key: UInt16) {
        var b: [UInt8] = [UInt8(key & 0xFF), UInt8(key >> 8)]
        b.withUnsafeMutableBufferPointer { io(offset: 0, data: $0, isWrite: true) }
    }
    mutating func readBytes(_ n: Int) -> [UInt8] {
        (0..<n).map { _ in
            var b: [UInt8] = [0xEE]
            b.withUnsafeMutableBufferPointer { io(offset: 1, data: $0, isWrite: false) }
            return b[0]
        }
    }
}

final class FwCfgTests: XCTestCase {
    func make() -> FwCfgState {
        FwCfgState(cpus: 2, maxCPUs: 4, memoryBytes: 64 << 20, cmdline: "hello", bootFailWait: -1)
    }

    func testSignatureIDAndNumbers() {
        var f = make()
        f.selectPort(0x0000)
        XCTAssertEqual(f.readBytes(6), Array("QEMU".utf8) + [0, 0], "signature, then 0 past the end")
        f.selectPort(0x0001)
        XCTAssertEqual(f.readBytes(4), [1, 0, 0, 0], "traditional interface, no DMA")
        f.selectPort(0x0005)
        XCTAssertEqual(f.readBytes(2), [2, 0], "FW_CFG_NB_CPUS")
        f.selectPort(0x000F)
        XCTAssertEqual(f.readBytes(2), [4, 0], "FW_CFG_MAX_CPUS")
        f.selectPort(0x0003)
        XCTAssertEqual(f.readBytes(8), le64(64 << 20), "FW_CFG_RAM_SIZE")
        f.selectPort(0x0014)
        XCTAssertEqual(f.readBytes(4), [6, 0, 0, 0], "CMDLINE_SIZE counts the NUL")
        f.selectPort(0x0015)
        XCTAssertEqual(f.readBytes(7), Array("hello".utf8) + [0, 0])
        f.selectPort(0x8002)
        XCTAssertEqual(f.readBytes(4), [1, 0, 0, 0], "IRQ0 override")
        f.selectPort(0x1234)
        XCTAssertEqual(f.readBytes(3), [0, 0, 0], "unknown selector reads 0")
    }

    func testReselectRewindsAndDataWritesAreIgnored() {
        var f = make()
        f.selectPort(0)
        XCTAssertEqual(f.readBytes(2), Array("QE".utf8))
        var w: [UInt8] = [0x41]
        w.withUnsafeMutableBufferPointer { f.io(offset: 1, data: $0, isWrite: true) }
        XCTAssertEqual(f.readBytes(2), Array("MU".utf8), "the write neither changed data nor moved the offset")
        f.selectPort(0)
        XCTAssertEqual(f.readBytes(4), Array("QEMU".utf8))
    }

    func testFileDirectoryAndFiles() {
        var f = make()
        f.selectPort(0x0019)
        var expected = be32(2)
        expected += be32(4) + [0x00, 0x20, 0, 0] + Array("etc/boot-fail-wait".utf8) + [UInt8](repeating: 0, count: 56 - 18)
        expected += be32(80) + [0x00, 0x21, 0, 0] + Array("etc/e820".utf8) + [UInt8](repeating: 0, count: 56 - 8)
        XCTAssertEqual(f.readBytes(4 + 128), expected)
        f.selectPort(0x0020)
        XCTAssertEqual(f.readBytes(4), [0xFF, 0xFF, 0xFF, 0xFF], "boot-fail-wait -1")
        f.selectPort(0x0021)
        let e820 = f.readBytes(80)
        XCTAssertEqual(Array(e820[0..<20]), le64(0) + le64(0x9FC00) + le32(1))
        XCTAssertEqual(Array(e820[60..<80]), le64(0x100000) + le64((64 << 20) - 0x100000) + le32(1))
    }

    func testNoCmdlineMeansNoCmdlineItems() {
        var f = FwCfgState(cpus: 1, maxCPUs: 1, memoryBytes: 16 << 20, cmdline: nil, bootFailWait: 5)
        f.selectPort(0x0014)
        XCTAssertEqual(f.readBytes(4), [0, 0, 0, 0])
        f.selectPort(0x0020)
        XCTAssertEqual(f.readBytes(4), [5, 0, 0, 0])
    }

    func testByteCounts() throws {
        XCTAssertEqual(try parseByteCount("64MiB", key: "memory"), 64 << 20)
        XCTAssertEqual(try parseByteCount("268435456", key: "memory"), 1 << 28)
        XCTAssertEqual(try parseByteCount("1G", key: "memory"), 1 << 30)
        XCTAssertThrowsError(try parseByteCount("lots", key: "memory")) { e in
            XCTAssertEqual("\(e)", "setting 'memory': 'lots' is not a byte count (e.g. 67108864 or 64MiB)")
        }
    }
}

final class PITTests: XCTestCase {
    func testRateGeneratorCountsAndPlan() {
        var p = PITState()
        XCTAssertTrue(p.write(3, 0x34, now: 0))          // ch0, lsb/msb, mode 2
        XCTAssertFalse(p.write(0, 0xA9, now: 0) && false)
        XCTAssertTrue(p.write(0, 0x04, now: 1000))       // 1193 = 0x4A9, loaded at tick 1000
        XCTAssertEqual(p.count(0, 1000 + 100), 1093)
        XCTAssertEqual(p.count(0, 1000 + 1193 + 5), 1188, "reloads every 1193 ticks")
        let plan = p.timerPlan(now: 1000)!
        XCTAssertEqual(plan.periodNs, 999_847)
        XCTAssertEqual(plan.delayNs, 999_847)
        // read without latch: LSB then MSB of the live count
        XCTAssertEqual(p.read(0, now: 1100), UInt8(1093 & 0xFF))
        XCTAssertEqual(p.read(0, now: 1100), UInt8(1093 >> 8))
    }

    func testLatchHoldsTheCount() {
        var p = PITState()
        _ = p.write(3, 0x30, now: 0)  // ch0 mode 0
        _ = p.write(0, 0x00, now: 0)
        _ = p.write(0, 0x10, now: 0)  // 0x1000
        _ = p.write(3, 0x00, now: 0x100) // latch ch0
        XCTAssertEqual(p.read(0, now: 0x800), 0x00)
        XCTAssertEqual(p.read(0, now: 0x900), 0x0F, "latched 0x0F00 despite time passing")
        XCTAssertEqual(p.count(0, 0x1000), 0)
        XCTAssertTrue(p.output(0, 0x1000), "mode 0: OUT high at terminal count")
        XCTAssertFalse(p.output(0, 0xFFF))
        XCTAssertEqual(p.timerPlan(now: 0x800)!.periodNs, 0, "one-shot")
    }

    func testChannel2GateAndOutputOnPort61() {
        var p = PITState()
        p.writePort61(0x01, now: 0)          // gate 2 high, speaker off
        _ = p.write(3, 0xB0, now: 0)         // ch2 lsb/msb mode 0
        _ = p.write(2, 0x10, now: 10)
        _ = p.write(2, 0x00, now: 10)        // 16 ticks
        XCTAssertEqual(p.readPort61(now: 20) & 0x21, 0x01, "OUT2 low while counting")
        XCTAssertEqual(p.readPort61(now: 26) & 0x21, 0x21, "OUT2 high at terminal count")
        p.writePort61(0x00, now: 30)
        XCTAssertEqual(p.count(2, 1000), UInt16(truncatingIfNeeded: 16 - 20), "gate low freezes the count")
    }

    func testReadBackStatus() {
        var p = PITState()
        _ = p.write(3, 0x36, now: 0)  // ch0 lsb/msb mode 3
        _ = p.write(3, 0xE2, now: 0)  // read-back: status only, ch0
        XCTAssertEqual(p.read(0, now: 0), 0x80 | 0x40 | 0x30 | 0x06, "OUT high (mode 3 after the control word), null count, access 3, mode 3")
    }
}

final class CMOSTests: XCTestCase {
    // 1700000000 = Tuesday 2023-11-14 22:13:20 UTC
    let t = 1_700_000_000

    func read(_ c: inout CMOSState, _ r: UInt8) -> UInt8 {
        c.write(0, r, now: t)
        return c.read(1, now: t)
    }

    func testTimeInBCDAndBinary() {
        var c = CMOSState(memoryBytes: 256 << 20)
        XCTAssertEqual([0x00, 0x02, 0x04, 0x06, 0x07, 0x08, 0x09, 0x32].map { read(&c, $0) },
                       [0x20, 0x13, 0x22, 0x03, 0x14, 0x11, 0x23, 0x20])
        c.write(0, 0x0B, now: t); c.write(1, 0x06, now: t) // binary, 24 h
        XCTAssertEqual([0x00, 0x02, 0x04, 0x09].map { read(&c, $0) }, [20, 13, 22, 23])
        c.write(0, 0x0B, now: t); c.write(1, 0x00, now: t) // BCD, 12 h
        XCTAssertEqual(read(&c, 0x04), 0x80 | 0x10, "10 PM")
    }

    func testStatusAndMemoryBytes() {
        var c = CMOSState(memoryBytes: 256 << 20)
        XCTAssertEqual([0x0A, 0x0B, 0x0C, 0x0D].map { read(&c, $0) }, [0x26, 0x02, 0x00, 0x80])
        XCTAssertEqual([0x15, 0x16].map { read(&c, $0) }, [0x80, 0x02], "640 KiB")
        XCTAssertEqual([0x30, 0x31].map { read(&c, $0) }, [0xFF, 0xFF], "255 MiB above 1 MiB caps at 0xFFFF KiB")
        XCTAssertEqual([0x34, 0x35].map { read(&c, $0) }, [0x00, 0x0F], "240 MiB above 16 MiB = 3840 x 64 KiB")
        var small = CMOSState(memoryBytes: 8 << 20)
        XCTAssertEqual([0x30, 0x31, 0x34, 0x35].map { read(&small, $0) }, [0x00, 0x1C, 0, 0], "7 MiB = 7168 KiB")
        XCTAssertEqual(read(&c, 0x80 | 0x0D), 0x80, "bit 7 of the index is NMI disable, not address")
    }

    func testWritingTheClockMovesTheGuestClockOnly() {
        var c = CMOSState(memoryBytes: 16 << 20)
        c.write(0, 0x09, now: t); c.write(1, 0x30, now: t) // year 2030
        XCTAssertEqual(read(&c, 0x09), 0x30)
        XCTAssertEqual(read(&c, 0x00), 0x20, "seconds unchanged")
        XCTAssertEqual(c.offset, 220_924_800, "7 years (2024 and 2028 leap) ahead: 2557 days")
    }
}

final class I8042Tests: XCTestCase {
    func testSelfTestAndCommandByte() {
        var k = I8042State()
        XCTAssertEqual(k.read(4), 0x10, "no data, keyboard not inhibited")
        k.write(4, 0xAA)
        XCTAssertEqual(k.read(4), 0x1D, "OBF | system flag | last write was a command | unlocked")
        XCTAssertEqual(k.read(0), 0x55)
        k.write(4, 0x20)
        XCTAssertEqual(k.read(0), 0x61)
        k.write(4, 0x60); k.write(0, 0x47)
        k.write(4, 0x20)
        XCTAssertEqual(k.read(0), 0x47)
        k.write(4, 0xAB)
        XCTAssertEqual(k.read(0), 0x00, "keyboard interface test passes")
    }

    func testKeyboardCommands() {
        var k = I8042State()
        k.write(0, 0xFF)
        XCTAssertEqual([k.read(0), k.read(0)], [0xFA, 0xAA])
        k.write(0, 0xF2)
        XCTAssertEqual([k.read(0), k.read(0), k.read(0)], [0xFA, 0xAB, 0x83])
        XCTAssertEqual(k.read(4) & 1, 0)
        XCTAssertTrue({ var s = I8042State(); s.write(0, 0xF4); return s.irqLevel }(), "keyboard data raises IRQ 1")
    }

    func testResetLines() {
        var k = I8042State()
        k.write(4, 0xFE)
        XCTAssertTrue(k.resetRequested)
        var o = I8042State()
        o.write(4, 0xD1); o.write(0, 0x03)
        XCTAssertFalse(o.resetRequested, "output port with the reset line high")
        o.write(4, 0xD1); o.write(0, 0x02)
        XCTAssertTrue(o.resetRequested)
        var n = I8042State()
        n.write(4, 0xFF)
        XCTAssertFalse(n.resetRequested, "0xFF pulses no line")
    }
}

final class PICTests: XCTestCase {
    /// Linux's init_8259A: master vectors 0x30, slave 0x38, cascade on IRQ 2, normal EOI.
    func linuxInit() -> PICPair {
        var p = PICPair()
        p.write(0x01, 0xFF); p.write(0x81, 0xFF)
        p.write(0x00, 0x11); p.write(0x01, 0x30); p.write(0x01, 0x04); p.write(0x01, 0x01)
        p.write(0x80, 0x11); p.write(0x81, 0x38); p.write(0x81, 0x02); p.write(0x81, 0x01)
        p.write(0x01, 0xFB); p.write(0x81, 0xFF)
        return p
    }

    func testIMRReadsBackAndMaskedInputsDoNotSignal() {
        var p = linuxInit()
        XCTAssertEqual(p.read(0x01), 0xFB)
        XCTAssertEqual(p.read(0x81), 0xFF)
        p.setInput(3, true)
        XCTAssertFalse(p.output, "IRQ 3 masked")
        p.write(0x00, 0x0A) // OCW3: read IRR
        XCTAssertEqual(p.read(0x00), 0x08, "but latched in IRR")
    }

    func testAcknowledgeEOIAndPriority() {
        var p = linuxInit()
        p.write(0x01, 0x00)
        p.setInput(1, true)
        p.setInput(0, true)
        XCTAssertTrue(p.output)
        XCTAssertEqual(p.acknowledge(), 0x30, "IRQ 0 first")
        XCTAssertFalse(p.output, "IRQ 1 waits behind IRQ 0 in service")
        p.write(0x00, 0x0B) // read ISR
        XCTAssertEqual(p.read(0x00), 0x01)
        p.write(0x00, 0x20) // non-specific EOI
        XCTAssertTrue(p.output)
        XCTAssertEqual(p.acknowledge(), 0x31)
        p.write(0x00, 0x61) // specific EOI for IRQ 1
        XCTAssertEqual(p.read(0x00), 0x00)
        XCTAssertFalse(p.output)
    }

    func testCascadeFromSlave() {
        var p = linuxInit()
        p.write(0x81, 0x00)
        p.setInput(12, true)
        XCTAssertTrue(p.output)
        XCTAssertEqual(p.acknowledge(), 0x3C)
        p.write(0x80, 0x20); p.write(0x00, 0x20)
        XCTAssertFalse(p.output)
        XCTAssertEqual(p.acknowledge(), 0x37, "nothing pending: spurious IRQ 7")
    }

    func testEdgeTriggeredAndPoll() {
        var p = linuxInit()
        p.write(0x01, 0x00)
        p.setInput(4, true)
        p.setInput(4, true) // still high: no new edge
        p.write(0x00, 0x0C) // poll
        XCTAssertEqual(p.read(0x00), 0x84)
        p.write(0x00, 0x20)
        p.write(0x00, 0x0C)
        XCTAssertEqual(p.read(0x00), 0x00, "one edge, one interrupt")
    }
}

final class PCIHostTests: XCTestCase {
    func testConfigMechanism1() {
        var s = PCIConfigState()
        XCTAssertFalse(s.write(0, 4, 0x8000_0000))
        XCTAssertEqual(s.read(0, 4), 0x8000_0000, "type 1 probe reads the address back")
        XCTAssertEqual(s.read(4, 4), 0x1237_8086, "00:00.0 vendor/device")
        XCTAssertEqual(s.read(6, 2), 0x1237)
        _ = s.write(0, 4, 0x8000_0008)
        XCTAssertEqual(s.read(7, 1), 0x06, "class: bridge")
        _ = s.write(0, 4, 0x8000_0800) // device 1
        XCTAssertEqual(s.read(4, 4), 0xFFFF_FFFF, "no device")
        XCTAssertEqual(s.read(4, 2), 0xFFFF_FFFF & 0xFFFF_FFFF)
        _ = s.write(0, 4, 0x0000_0000)
        XCTAssertEqual(s.read(4, 4), 0xFFFF_FFFF, "enable bit clear")
        var none = PCIConfigState(); none.hostBridge = false
        _ = none.write(0, 4, 0x8000_0000)
        XCTAssertEqual(none.read(4, 4), 0xFFFF_FFFF)
    }

    func testResetControl() {
        var s = PCIConfigState()
        XCTAssertFalse(s.write(1, 1, 0x02))
        XCTAssertTrue(s.write(1, 1, 0x06))
    }
}
