// Register behaviour of the PC platform models added for QEMU-style guests: HPET, port 0x92,
// the RTC's interrupt flags, pc-testdev and pci-testdev — without a VM.
import XCTest
@testable import DeviceModels

final class HPETTests: XCTestCase {
    let cap: UInt32 = 0x00F0_0000

    func testCapabilitiesAndCounter() {
        var s = HPETState(timers: 3, routeCap: cap)
        let id = s.read(0, size: 8, ns: 0)
        XCTAssertEqual(id & 0xFF, 1, "revision 1")
        XCTAssertEqual((id >> 8) & 0x1F, 2, "three timers")
        XCTAssertNotEqual(id & (1 << 13), 0, "64-bit counter")
        XCTAssertNotEqual(id & (1 << 15), 0, "legacy replacement capable")
        XCTAssertEqual((id >> 16) & 0xFFFF, 0x8086)
        XCTAssertEqual(s.read(4, size: 4, ns: 0), 10_000_000, "period 10 ns in fs (upper dword)")
        XCTAssertEqual(s.read(0xF0, size: 8, ns: 1_000_000), 0, "halted")
        _ = s.write(0x10, size: 4, value: 1, ns: 1_000_000)
        XCTAssertEqual(s.read(0xF0, size: 8, ns: 2_000_000), 100_000, "1 ms at 100 MHz")
        _ = s.write(0x10, size: 4, value: 0, ns: 3_000_000)
        XCTAssertEqual(s.read(0xF0, size: 4, ns: 9_000_000), 200_000, "halted again: holds")
        XCTAssertEqual(s.read(0x100, size: 8, ns: 0) >> 32, UInt64(cap), "route capability in Tn_CONFIG")
    }

    func testOneShotEdgeOnRoutedPin() {
        var s = HPETState(timers: 3, routeCap: cap)
        _ = s.write(0x120, size: 4, value: 0x4 | (21 << 9), ns: 0)       // timer 1: enabled, edge, pin 21
        XCTAssertEqual(s.timers[1].route, 21)
        _ = s.write(0x128, size: 4, value: 500, ns: 0)
        XCTAssertNil(s.ticksToMatch(1, ns: 0), "counter halted")
        _ = s.write(0x10, size: 4, value: 1, ns: 0)
        XCTAssertEqual(s.ticksToMatch(1, ns: 0), 500)
        XCTAssertEqual(s.fire(1, ns: 5000), [.pulse(21)])
        XCTAssertNil(s.ticksToMatch(1, ns: 6000), "one-shot: the comparator is behind the counter")
        _ = s.write(0x120, size: 4, value: 0x4 | (3 << 9), ns: 0)       // pin 3 is not in route_cap
        XCTAssertEqual(s.timers[1].route, 21, "a pin outside Tn_INT_ROUTE_CAP is not taken")
    }

    func testLevelStatusAndLegacyReplacement() {
        var s = HPETState(timers: 3, routeCap: cap)
        _ = s.write(0x10, size: 4, value: 3, ns: 0)                        // enable + legacy
        _ = s.write(0x100, size: 4, value: 0x6, ns: 0)                     // timer 0 level + enabled
        _ = s.write(0x108, size: 8, value: 100, ns: 0)
        XCTAssertEqual(s.fire(0, ns: 1000), [.level(2, true)], "legacy: timer 0 is ISA IRQ 0 = IOAPIC pin 2")
        XCTAssertEqual(s.read(0x20, size: 4, ns: 1000), 1)
        XCTAssertEqual(s.fire(0, ns: 1000), [], "already active")
        let (lines, _) = s.write(0x20, size: 4, value: 1, ns: 1000)
        XCTAssertEqual(lines, [.level(2, false)])
        XCTAssertEqual(s.read(0x20, size: 4, ns: 1000), 0, "write 1 clears")
        XCTAssertEqual(s.line(1), 8, "legacy: timer 1 is IRQ 8")
    }

    func testPeriodicComparatorAdvances() {
        var s = HPETState(timers: 3, routeCap: cap)
        _ = s.write(0x10, size: 4, value: 1, ns: 0)
        _ = s.write(0x140, size: 4, value: 0x4 | 0x8 | 0x40 | (20 << 9), ns: 0) // timer 2 periodic, VAL_SET
        _ = s.write(0x148, size: 4, value: 1000, ns: 0)                    // first match at 1000
        _ = s.write(0x148, size: 4, value: 1000, ns: 0)                    // period 1000 (VAL_SET cleared)
        XCTAssertEqual(s.timers[2].comparator, 1000)
        XCTAssertEqual(s.timers[2].period, 1000)
        XCTAssertEqual(s.fire(2, ns: 10_000), [.pulse(20)])               // counter 1000
        XCTAssertEqual(s.timers[2].comparator, 2000)
        XCTAssertEqual(s.fire(2, ns: 55_000), [.pulse(20)])               // counter 5500: late, catches up
        XCTAssertEqual(s.timers[2].comparator, 6000)
    }
}

final class Port92Tests: XCTestCase {
    func testA20AndReset() {
        var p = Port92State()
        XCTAssertEqual(p.read(), 0x02, "A20 on at power-on")
        XCTAssertFalse(p.write(0x00))
        XCTAssertFalse(p.a20)
        XCTAssertFalse(p.write(0x02))
        XCTAssertEqual(p.read(), 0x02)
        XCTAssertTrue(p.write(0x03), "bit 0 resets")
        XCTAssertEqual(p.read(), 0x02, "bit 0 reads 0")
    }
}

final class RTCInterruptTests: XCTestCase {
    func select(_ c: inout CMOSState, _ r: UInt8) { c.write(CMOSState.index, r, now: 0) }

    func testPeriodicFlagSetsWithoutEnableAndCReadClears() {
        var c = CMOSState(memoryBytes: 16 << 20)
        XCTAssertEqual(c.periodNs, 976_562, "rate 6 = 1024 Hz")
        _ = c.advance(ns: 0, now: 1000)
        XCTAssertFalse(c.advance(ns: 2_000_000, now: 1000), "PF without PIE does not raise IRQF")
        select(&c, 0x0C)
        XCTAssertEqual(c.read(CMOSState.data, now: 1000, ns: 2_000_000), 0x40, "PF")
        XCTAssertEqual(c.read(CMOSState.data, now: 1000, ns: 2_100_000), 0, "read clears")
    }

    func testEnabledPeriodicRaisesIRQFOnceUntilRead() {
        var c = CMOSState(memoryBytes: 16 << 20)
        _ = c.advance(ns: 0, now: 1000)
        select(&c, 0x0B); c.write(CMOSState.data, 0x42, now: 1000)        // PIE, 24 h
        XCTAssertTrue(c.advance(ns: 1_000_000, now: 1000), "IRQF 0 -> 1: pulse")
        XCTAssertFalse(c.advance(ns: 3_000_000, now: 1000), "not again before C is read")
        select(&c, 0x0C)
        XCTAssertEqual(c.read(CMOSState.data, now: 1000, ns: 3_000_000), 0xC0, "IRQF | PF")
        XCTAssertTrue(c.advance(ns: 4_000_000, now: 1000))
        XCTAssertEqual(c.nextEventDelay(ns: 4_000_000).map { $0 <= 976_562 }, true)
    }

    func testEnablingAPendingSourceRaisesIRQFAtOnce() {
        var c = CMOSState(memoryBytes: 16 << 20)
        _ = c.advance(ns: 0, now: 1000)
        _ = c.advance(ns: 2_000_000, now: 1000)                         // PF pending, PIE off
        XCTAssertEqual(c.guestWrite(CMOSState.index, 0x0B, now: 1000, ns: 2_000_000).fire, false)
        let r = c.guestWrite(CMOSState.data, 0x42, now: 1000, ns: 2_000_000)
        XCTAssertTrue(r.replan, "status B changed: re-plan the timer")
        XCTAssertTrue(r.fire, "PF already set: enabling PIE pulses IRQ 8")
    }

    func testUpdateAndAlarm() {
        var c = CMOSState(memoryBytes: 16 << 20)
        select(&c, 0x0A); c.write(CMOSState.data, 0x20, now: 0)          // no periodic rate
        select(&c, 0x0B); c.write(CMOSState.data, 0x36, now: 0)          // AIE | UIE, binary, 24 h
        select(&c, 0x01); c.write(CMOSState.data, 5, now: 0)             // alarm at hh:mm:05
        select(&c, 0x03); c.write(CMOSState.data, 0xC0, now: 0)          // any minute
        select(&c, 0x05); c.write(CMOSState.data, 0xFF, now: 0)          // any hour
        c.checkedSecond = nil                                            // accounting starts at day 1, 00:00:02
        c.flags = 0
        _ = c.advance(ns: 0, now: 86_400 + 2)
        XCTAssertTrue(c.advance(ns: 0, now: 86_400 + 3), "a new second: UF")
        XCTAssertEqual(c.flags, 0x10)
        _ = c.advance(ns: 0, now: 86_400 + 5)
        XCTAssertEqual(c.flags, 0x30, "seconds 05 matched the alarm")
    }
}

final class PCTestDevTests: XCTestCase {
    func testScratchRegisterByteLanes() {
        var s = PCTestDevState()
        s.writeScratch(at: 0, size: 4, value: 0x1122_3344)
        XCTAssertEqual(s.readScratch(at: 0, size: 4), 0x1122_3344)
        XCTAssertEqual(s.readScratch(at: 2, size: 1), 0x22)
        s.writeScratch(at: 1, size: 2, value: 0xAABB)
        XCTAssertEqual(s.readScratch(at: 0, size: 4), 0x11AA_BB44)
    }
}

final class PCITestDevTests: XCTestCase {
    func testConfigSpaceAndBARs() {
        var s = PCIConfigState()
        s.testDev = PCITestDevState(mmioBase: 0xFEB0_0000, ioBase: 0xC000)
        _ = s.write(0, 4, 0x8000_0800)                                   // 00:01.0 reg 0
        XCTAssertEqual(s.read(4, 4), 0x0005_1B36)
        _ = s.write(0, 4, 0x8000_0808)
        XCTAssertEqual(s.read(7, 1), 0xFF, "class: other")
        _ = s.write(0, 4, 0x8000_0810)
        XCTAssertEqual(s.read(4, 4), 0xFEB0_0000, "BAR0: memory at the assigned address")
        _ = s.write(4, 4, 0xFFFF_FFFF)
        XCTAssertEqual(s.read(4, 4), 0xFFFF_F000, "BAR0 sizing: 4 KiB")
        _ = s.write(4, 4, 0x1234_0000)
        XCTAssertEqual(s.read(4, 4), 0xFEB0_0000, "fixed BAR")
        _ = s.write(0, 4, 0x8000_0814)
        XCTAssertEqual(s.read(4, 4), 0xC001, "BAR1: ports")
        _ = s.write(0, 4, 0x8000_1000)                                   // 00:02.0: nothing
        XCTAssertEqual(s.read(4, 4), 0xFFFF_FFFF)
    }

    func testTestsCountMatchingWrites() {
        var t = PCITestDevState(mmioBase: 0xFEB0_0000, ioBase: 0xC000)
        XCTAssertEqual(t.readByte(offset: 0), 0, "no test selected")
        t.writeByte(memory: true, offset: 0, 2)                          // mmio-datamatch-eventfd
        let name = (16..<38).map { t.readByte(offset: UInt64($0)) }.prefix { $0 != 0 }
        XCTAssertEqual(String(decoding: name, as: UTF8.self), "mmio-datamatch-eventfd")
        XCTAssertEqual(t.readByte(offset: 4), 0x02, "offset 2048 + 2 = 0x802 (low byte)")
        XCTAssertEqual(t.readByte(offset: 5), 0x08)
        XCTAssertEqual(t.readByte(offset: 8), 0xFA)
        t.writeByte(memory: true, offset: 0x802, 0xFA)
        t.writeByte(memory: true, offset: 0x802, 0x11)                   // wrong data: not counted
        t.writeByte(memory: false, offset: 0x802, 0xFA)                  // other BAR: not counted
        XCTAssertEqual(t.readByte(offset: 12), 1)
        t.writeByte(memory: false, offset: 0, 1)                         // portio-wildcard-eventfd
        t.writeByte(memory: false, offset: 132, 0x33)
        t.writeByte(memory: false, offset: 132, 0x44)
        XCTAssertEqual(t.readByte(offset: 12), 2)
        t.writeByte(memory: false, offset: 0, 7)
        XCTAssertNil(t.current, "test 7 does not exist: none selected")
    }
}

final class ACPIPMTests: XCTestCase {
    func testSleepTypesAndTimer() {
        var s = ACPIPMState()
        XCTAssertEqual(s.read(4, size: 2, ns: 0) & 1, 1, "SCI_EN: ACPI mode is on")
        XCTAssertEqual(s.write(4, size: 2, value: 1 << 10 | 1 << 13), .standby, "S1")
        XCTAssertEqual(s.read(0, size: 2, ns: 0) & 0x8000, 0x8000, "WAK_STS after S1")
        XCTAssertEqual(s.read(4, size: 2, ns: 0) & (1 << 13), 0, "SLP_EN reads 0")
        _ = s.write(0, size: 2, value: 0x8000)
        XCTAssertEqual(s.read(0, size: 2, ns: 0) & 0x8000, 0, "write 1 clears")
        XCTAssertEqual(s.write(4, size: 2, value: 5 << 10), .none, "SLP_TYP without SLP_EN")
        XCTAssertEqual(s.write(5, size: 1, value: (5 << 2) | 0x20), .powerOff, "S5 via a byte write to the high half")
        XCTAssertEqual(s.read(8, size: 4, ns: 1_000_000_000), 3_579_545 & 0xFF_FFFF, "PM timer: 3.579545 MHz, 24 bits")
    }
}
