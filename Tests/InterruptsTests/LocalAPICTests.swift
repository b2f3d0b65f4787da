// Local APIC register behaviour without KVM: registers, priorities, ICR decoding, destination
// resolution, timer arithmetic.
import XCTest
@testable import Interrupts

final class LocalAPICTests: XCTestCase {
    func enabled(id: UInt8 = 0) -> LocalAPIC {
        var a = LocalAPIC(id: id, busHz: 100_000_000)
        _ = a.write(APICRegister.svr, 0x1FF, now: 0)
        return a
    }

    func testPowerOnValues() {
        let a = LocalAPIC(id: 3)
        XCTAssertEqual(a.read(APICRegister.id, now: 0), 3 << 24)
        XCTAssertEqual(a.read(APICRegister.version, now: 0), 0x0006_0014)
        XCTAssertEqual(a.read(APICRegister.dfr, now: 0), 0xFFFF_FFFF)
        XCTAssertEqual(a.read(APICRegister.svr, now: 0), 0xFF)
        XCTAssertFalse(a.softwareEnabled)
        for off in [APICRegister.lvtTimer, APICRegister.lvtLINT0, APICRegister.lvtLINT1, APICRegister.lvtError] {
            XCTAssertEqual(a.read(off, now: 0), 0x1_0000, "LVT 0x\(String(off, radix: 16)) masked at power-on")
        }
    }

    func testIDLDRDFRWritesReportAddressingChange() {
        var a = enabled()
        XCTAssertEqual(a.write(APICRegister.id, 0x0500_0000, now: 0), [.addressingChanged])
        XCTAssertEqual(a.id, 5)
        XCTAssertEqual(a.write(APICRegister.ldr, 0x0812_3456, now: 0), [.addressingChanged])
        XCTAssertEqual(a.read(APICRegister.ldr, now: 0), 0x0800_0000, "only bits 24-31 are writable")
        _ = a.write(APICRegister.dfr, 0x0000_0000, now: 0)
        XCTAssertEqual(a.read(APICRegister.dfr, now: 0), 0x0FFF_FFFF, "cluster model; low bits read 1")
    }

    func testPriorityAndDelivery() {
        var a = enabled()
        a.accept(vector: 0x31, levelTriggered: false)
        a.accept(vector: 0x52, levelTriggered: false)
        XCTAssertEqual(a.deliverableVector, 0x52)
        _ = a.write(APICRegister.tpr, 0x50, now: 0)
        XCTAssertNil(a.deliverableVector, "class 5 is not above TPR class 5")
        XCTAssertEqual(a.read(APICRegister.ppr, now: 0), 0x50)
        _ = a.write(APICRegister.tpr, 0x40, now: 0)
        XCTAssertEqual(a.deliverableVector, 0x52)
        a.acknowledge(0x52)
        XCTAssertEqual(a.read(APICRegister.isrBase + 0x20, now: 0), 1 << 18, "ISR bit 0x52 in register 2")
        XCTAssertEqual(a.ppr, 0x50, "PPR follows the in-service class")
        XCTAssertNil(a.deliverableVector, "0x31 waits behind in-service 0x52")
        XCTAssertEqual(a.write(APICRegister.eoi, 0, now: 0), [])
        XCTAssertEqual(a.deliverableVector, nil, "TPR 0x40 still blocks class 3")
        _ = a.write(APICRegister.tpr, 0, now: 0)
        XCTAssertEqual(a.deliverableVector, 0x31)
        XCTAssertEqual(a.read(APICRegister.irrBase + 0x10, now: 0), 1 << 17, "IRR bit 0x31 in register 1")
    }

    func testSoftwareDisabledHoldsInterrupts() {
        var a = LocalAPIC(id: 0)
        a.accept(vector: 0x40, levelTriggered: false)
        XCTAssertNil(a.deliverableVector)
        _ = a.write(APICRegister.svr, 0x100, now: 0)
        XCTAssertEqual(a.deliverableVector, 0x40)
        _ = a.write(APICRegister.lvtTimer, 0x40, now: 0)
        _ = a.write(APICRegister.svr, 0xFF, now: 0)
        XCTAssertEqual(a.read(APICRegister.lvtTimer, now: 0) & 0x1_0000, 0x1_0000, "disable masks every LVT")
    }

    func testLevelEOIReported() {
        var a = enabled()
        a.accept(vector: 0x60, levelTriggered: true)
        XCTAssertEqual(a.read(APICRegister.tmrBase + 0x30, now: 0), 1, "TMR bit 0x60")
        a.acknowledge(0x60)
        XCTAssertEqual(a.write(APICRegister.eoi, 0, now: 0), [.levelEOI(vector: 0x60)])
    }

    func testCR8SyncsTPR() {
        var a = enabled()
        a.setCR8(0x7)
        XCTAssertEqual(a.tpr, 0x70)
        XCTAssertEqual(a.cr8, 7)
        _ = a.write(APICRegister.tpr, 0x35, now: 0)
        a.setCR8(3)
        XCTAssertEqual(a.tpr, 0x35, "same class: the low nibble is kept")
    }

    func testIllegalVectorsSetESR() {
        var a = enabled()
        _ = a.write(APICRegister.icrHigh, 0, now: 0)
        XCTAssertEqual(a.write(APICRegister.icrLow, 0x0000_4005, now: 0), [], "fixed vector 5 is not sent")
        a.accept(vector: 3, levelTriggered: false)
        XCTAssertEqual(a.read(APICRegister.esr, now: 0), 0, "ESR updates on write")
        _ = a.write(APICRegister.esr, 0, now: 0)
        XCTAssertEqual(a.read(APICRegister.esr, now: 0), 0x60)
        _ = a.write(APICRegister.esr, 0, now: 0)
        XCTAssertEqual(a.read(APICRegister.esr, now: 0), 0)
    }

    func testICRDecoding() {
        let c = InterruptCommand(low: 0x000C_4610, high: 0x0300_0000)
        XCTAssertEqual(c.vector, 0x10)
        XCTAssertEqual(c.mode, .startup)
        XCTAssertFalse(c.logical)
        XCTAssertTrue(c.assert)
        XCTAssertFalse(c.levelTriggered)
        XCTAssertEqual(c.shorthand, .allExcludingSelf)
        XCTAssertEqual(c.destination, 3)
        let i = InterruptCommand(low: 0x0000_8500, high: 0)
        XCTAssertTrue(i.isINITDeassert)
        let l = InterruptCommand(low: 0x0000_0941, high: 0x0F00_0000)
        XCTAssertEqual(l.mode, .lowestPriority)
        XCTAssertTrue(l.logical)
        var a = enabled()
        _ = a.write(APICRegister.icrHigh, 0x0100_0000, now: 0)
        let eff = a.write(APICRegister.icrLow, 0x0000_4041, now: 0)
        XCTAssertEqual(eff, [.sendIPI(InterruptCommand(low: 0x4041, high: 0x0100_0000))])
        XCTAssertEqual(a.read(APICRegister.icrLow, now: 0) & (1 << 12), 0, "delivery status idle")
    }

    func testDestinationResolution() {
        var apics = (0..<4).map { APICAddress(id: UInt8($0)) }
        func cmd(_ low: UInt32, _ dest: UInt8) -> InterruptCommand { InterruptCommand(low: low, high: UInt32(dest) << 24) }
        XCTAssertEqual(DestinationResolver.resolve(cmd(0x40, 2), source: 0, apics: apics), [2])
        XCTAssertEqual(DestinationResolver.resolve(cmd(0x40, 9), source: 0, apics: apics), [])
        XCTAssertEqual(DestinationResolver.resolve(cmd(0x40, 0xFF), source: 0, apics: apics), [0, 1, 2, 3])
        XCTAssertEqual(DestinationResolver.resolve(cmd(0x4_0040, 0), source: 1, apics: apics), [1], "self")
        XCTAssertEqual(DestinationResolver.resolve(cmd(0x8_0040, 0), source: 1, apics: apics), [0, 1, 2, 3], "all incl. self")
        XCTAssertEqual(DestinationResolver.resolve(cmd(0xC_0040, 0), source: 1, apics: apics), [0, 2, 3], "all excl. self")
        // Flat logical: LDR bit per CPU.
        for i in 0..<4 { apics[i].ldr = UInt32(1 << i) << 24 }
        XCTAssertEqual(DestinationResolver.resolve(cmd(0x840, 0b1010), source: 0, apics: apics), [1, 3])
        // Lowest priority picks the lowest TPR class among the matches.
        apics[1].tpr = 0x20
        XCTAssertEqual(DestinationResolver.resolve(cmd(0x940, 0b1010), source: 0, apics: apics), [3])
        // Cluster logical: cluster 1, members 0 and 1.
        for i in 0..<4 { apics[i].dfr = 0x0FFF_FFFF; apics[i].ldr = UInt32(0x10 | (1 << (i % 2))) << 24 }
        apics[3].ldr = 0x21 << 24
        XCTAssertEqual(DestinationResolver.resolve(cmd(0x840, 0x13), source: 0, apics: apics), [0, 1, 2])
        XCTAssertEqual(DestinationResolver.resolve(cmd(0x840, 0xF1), source: 0, apics: apics), [0, 2, 3], "broadcast cluster")
    }

    func testTimerDivideValues() {
        let expected: [UInt32: UInt64] = [0x0: 2, 0x1: 4, 0x2: 8, 0x3: 16, 0x8: 32, 0x9: 64, 0xA: 128, 0xB: 1]
        for (cfg, div) in expected { XCTAssertEqual(LocalAPIC.divisor(config: cfg), div, "config 0x\(String(cfg, radix: 16))") }
    }

    func testOneShotTimerArithmetic() {
        var a = enabled() // 100 MHz bus: 10 ns per tick
        _ = a.write(APICRegister.timerDivide, 0x3, now: 0) // divide by 16: 160 ns per count
        _ = a.write(APICRegister.lvtTimer, 0x30, now: 0)   // one-shot, vector 0x30
        XCTAssertEqual(a.write(APICRegister.timerInitialCount, 1000, now: 1_000), [.timerChanged])
        XCTAssertEqual(a.timerDeadline, 1_000 + 160_000)
        XCTAssertEqual(a.read(APICRegister.timerCurrentCount, now: 1_000), 1000)
        XCTAssertEqual(a.read(APICRegister.timerCurrentCount, now: 1_000 + 80_000), 500)
        XCTAssertEqual(a.read(APICRegister.timerCurrentCount, now: 1_000 + 80_001), 500, "rounds up partial counts")
        XCTAssertFalse(a.timerExpired(now: 160_000), "not yet")
        XCTAssertTrue(a.timerExpired(now: 161_000))
        XCTAssertNil(a.timerDeadline, "one-shot stops")
        XCTAssertEqual(a.read(APICRegister.timerCurrentCount, now: 200_000), 0)
        XCTAssertEqual(a.deliverableVector, 0x30)
    }

    func testPeriodicTimerRearmsWithoutDrift() {
        var a = enabled()
        _ = a.write(APICRegister.timerDivide, 0xB, now: 0)     // divide by 1: 10 ns per count
        _ = a.write(APICRegister.lvtTimer, 0x2_0040, now: 0)   // periodic, vector 0x40
        _ = a.write(APICRegister.timerInitialCount, 100, now: 0) // 1 µs period
        XCTAssertTrue(a.timerPeriodic)
        XCTAssertTrue(a.timerExpired(now: 1_300))               // late by 300 ns
        XCTAssertEqual(a.timerDeadline, 2_000, "next period counted from the previous deadline")
        XCTAssertEqual(a.read(APICRegister.timerCurrentCount, now: 1_500), 50)
        XCTAssertTrue(a.timerExpired(now: 5_500))               // three periods late
        XCTAssertEqual(a.timerDeadline, 6_000, "missed periods are dropped, phase kept")
        // Masked: counts and re-arms, raises nothing.
        a.acknowledge(0x40); _ = a.write(APICRegister.eoi, 0, now: 0)
        _ = a.write(APICRegister.lvtTimer, 0x3_0040, now: 6_000)
        XCTAssertFalse(a.timerExpired(now: 6_000))
        XCTAssertEqual(a.timerDeadline, 7_000)
        XCTAssertNil(a.deliverableVector)
        // Writing 0 stops it.
        _ = a.write(APICRegister.timerInitialCount, 0, now: 6_100)
        XCTAssertNil(a.timerDeadline)
    }

    func testDivideChangeKeepsCurrentCount() {
        var a = enabled()
        _ = a.write(APICRegister.timerDivide, 0xB, now: 0)
        _ = a.write(APICRegister.timerInitialCount, 1000, now: 0) // 10 µs at 10 ns/count
        _ = a.write(APICRegister.timerDivide, 0x0, now: 5_000)    // 500 counts left, now 20 ns/count
        XCTAssertEqual(a.timerDeadline, 5_000 + 500 * 20)
    }

    func testLINTMessages() {
        var a = enabled()
        XCTAssertNil(a.lintMessage(pin: 0), "masked")
        _ = a.write(APICRegister.lvtLINT0, 0x700, now: 0)  // ExtINT
        _ = a.write(APICRegister.lvtLINT1, 0x400, now: 0)  // NMI
        XCTAssertEqual(a.lintMessage(pin: 0)?.mode, .extINT)
        XCTAssertEqual(a.lintMessage(pin: 1)?.mode, .nmi)
    }

    func testResetKeepsID() {
        var a = enabled(id: 7)
        a.accept(vector: 0x50, levelTriggered: false)
        _ = a.write(APICRegister.tpr, 0x20, now: 0)
        a.reset()
        XCTAssertEqual(a.id, 7)
        XCTAssertEqual(a.tpr, 0)
        XCTAssertTrue(a.irr.isEmpty)
        XCTAssertFalse(a.softwareEnabled)
    }

    func testVectorSetHighest() {
        var s = VectorSet()
        XCTAssertNil(s.highest)
        s[0x10] = true; s[0xFF] = true; s[0x80] = true
        XCTAssertEqual(s.highest, 0xFF)
        s[0xFF] = false
        XCTAssertEqual(s.highest, 0x80)
        XCTAssertEqual(s.register(4), 1)
    }
}

/// Delivery between VCPUInterrupts (no KVM): INIT/SIPI rules and the remote hook.
final class InterruptRouterTests: XCTestCase {
    func testINITThenSIPIRecordsVectorAndRunningCPUIgnoresSIPI() {
        let a = VCPUInterrupts(index: 0, busHz: 100_000_000, state: .running)
        let b = VCPUInterrupts(index: 1, busHz: 100_000_000, state: .waitingForSIPI)
        let r = InterruptRouter(local: [a, b])
        r.send(InterruptCommand(low: 0x4500, high: 0x0100_0000), from: 0)
        XCTAssertTrue(b.locked { $0.pendingINIT })
        r.send(InterruptCommand(low: 0x4610, high: 0x0100_0000), from: 0)
        XCTAssertEqual(b.locked { $0.sipiVector }, 0x10)
        r.send(InterruptCommand(low: 0x4620, high: 0x0100_0000), from: 0)
        XCTAssertEqual(b.locked { $0.sipiVector }, 0x10, "second SIPI does not replace the first")
        r.send(InterruptCommand(low: 0x4610, high: 0), from: 1)
        XCTAssertNil(a.locked { $0.sipiVector }, "SIPI to a running CPU is ignored")
    }

    func testLowestPriorityUsesLiveTPR() {
        let a = VCPUInterrupts(index: 0, busHz: 100_000_000, state: .running)
        let b = VCPUInterrupts(index: 1, busHz: 100_000_000, state: .running)
        for v in [a, b] { v.locked { _ = $0.apic.write(APICRegister.svr, 0x1FF, now: 0) } }
        a.locked { _ = $0.apic.write(APICRegister.tpr, 0x30, now: 0) }
        b.locked { _ = $0.apic.write(APICRegister.tpr, 0x10, now: 0) }
        let r = InterruptRouter(local: [a, b])
        r.send(InterruptCommand(low: 0x0150, high: 0xFF00_0000), from: 0) // lowest priority, vector 0x50, broadcast
        XCTAssertNil(a.apicSnapshot.irr.highest)
        XCTAssertEqual(b.apicSnapshot.irr.highest, 0x50)
        a.locked { _ = $0.apic.write(APICRegister.tpr, 0x00, now: 0) }
        r.send(InterruptCommand(low: 0x0151, high: 0xFF00_0000), from: 1)
        XCTAssertEqual(a.apicSnapshot.irr.highest, 0x51)
    }

    func testRemoteDeliveryHookGetsGlobalIndex() {
        let a = VCPUInterrupts(index: 0, busHz: 100_000_000, state: .running)
        let remote = RecordingRemote()
        let r = InterruptRouter(local: [a, nil, nil], remote: remote)
        r.send(InterruptCommand(low: 0xC_0045, high: 0), from: 0) // all excluding self
        let got = remote.delivered
        XCTAssertEqual(got.map(\.0), [1, 2])
        XCTAssertEqual(got.first?.1, InterruptMessage(mode: .fixed, vector: 0x45))
    }
}
