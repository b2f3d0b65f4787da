// IA32_APIC_BASE and the x2APIC MSR interface of the local APIC (X2APIC.swift), without KVM:
// modes and transitions, the register map (read-only, write-only, reserved: #GP), the 64-bit ICR,
// SELF IPI, the derived LDR, and destination resolution for x2APIC and disabled APICs.
import XCTest
@testable import Interrupts

final class X2APICTests: XCTestCase {
    let xapic: UInt64 = 0xFEE0_0000 | LocalAPIC.baseEN
    var x2: UInt64 { xapic | LocalAPIC.baseEXTD }

    func x2apic(id: UInt8 = 0) -> LocalAPIC {
        var a = LocalAPIC(id: id)
        _ = a.setBaseMSR(x2)
        _ = a.writeMSR(0x80F, 0x1FF, now: 0)
        return a
    }

    func testModesFromTheBaseMSRAndTheSDMTransitions() {
        XCTAssertEqual(LocalAPIC.mode(ofBase: 0xFEE0_0000), .disabled)
        XCTAssertEqual(LocalAPIC.mode(ofBase: xapic), .xAPIC)
        XCTAssertEqual(LocalAPIC.mode(ofBase: x2), .x2APIC)
        XCTAssertNil(LocalAPIC.mode(ofBase: 0xFEE0_0000 | LocalAPIC.baseEXTD), "EXTD without EN is invalid")
        XCTAssertFalse(LocalAPIC.transitionAllowed(from: .x2APIC, to: .xAPIC))
        XCTAssertFalse(LocalAPIC.transitionAllowed(from: .disabled, to: .x2APIC))
        for (from, to) in [(APICMode.xAPIC, APICMode.x2APIC), (.x2APIC, .disabled), (.disabled, .xAPIC), (.xAPIC, .disabled)] {
            XCTAssertTrue(LocalAPIC.transitionAllowed(from: from, to: to), "\(from) -> \(to)")
        }
    }

    func testDisablingResetsTheAPICButItsIDAndRefusesInterrupts() {
        var a = LocalAPIC(id: 2)
        _ = a.write(APICRegister.svr, 0x1FF, now: 0)
        _ = a.write(APICRegister.id, 0x0700_0000, now: 0)
        _ = a.write(APICRegister.lvtLINT0, 0x700, now: 0)
        a.accept(vector: 0x40, levelTriggered: false)
        XCTAssertEqual(a.setBaseMSR(0xFEE0_0000), [.addressingChanged, .timerChanged])
        XCTAssertEqual(a.mode, .disabled)
        XCTAssertEqual(a.address.mode, .disabled)
        XCTAssertEqual(a.svr, 0xFF)
        XCTAssertTrue(a.irr.isEmpty)
        XCTAssertEqual(a.lvt[LocalAPIC.lvtLINT0Index], 0x1_0000)
        XCTAssertEqual(a.id, 7, "the ID survives")
        XCTAssertFalse(a.accept(vector: 0x41, levelTriggered: false), "a disabled APIC takes nothing")
        XCTAssertTrue(a.irr.isEmpty)
        XCTAssertEqual(a.setBaseMSR(xapic), [.addressingChanged, .timerChanged])
        XCTAssertEqual(a.mode, .xAPIC)
        XCTAssertTrue(a.accept(vector: 0x41, levelTriggered: false))
    }

    func testRelocationKeepsTheRegisters() {
        var a = LocalAPIC(id: 1)
        _ = a.write(APICRegister.tpr, 0x20, now: 0)
        XCTAssertEqual(a.setBaseMSR(0xFEF0_0000 | LocalAPIC.baseEN), [], "same mode: nothing to redo")
        XCTAssertEqual(a.base, 0xFEF0_0000)
        XCTAssertEqual(a.tpr, 0x20)
    }

    func testEnteringX2APICKeepsStateAndDerivesIDAndLDR() {
        var a = LocalAPIC(id: 0x13)
        _ = a.write(APICRegister.svr, 0x1FF, now: 0)
        _ = a.write(APICRegister.id, 0x0500_0000, now: 0)   // xAPIC ID changed by software
        _ = a.write(APICRegister.tpr, 0x30, now: 0)
        a.accept(vector: 0x50, levelTriggered: false)
        XCTAssertEqual(a.setBaseMSR(x2), [.addressingChanged, .timerChanged])
        XCTAssertEqual(a.readMSR(0x802, now: 0), 0x13, "x2APIC ID = the initial APIC ID")
        XCTAssertEqual(a.readMSR(0x80D, now: 0), 0x0001_0008, "cluster 1, bit 3")
        XCTAssertEqual(a.readMSR(0x808, now: 0), 0x30, "TPR kept")
        XCTAssertEqual(a.readMSR(0x822, now: 0).map { $0 & 1 << 16 }, 1 << 16, "IRR kept (0x50: IRR MSR 0x822, bit 16)")
        XCTAssertEqual(a.address, APICAddress(id: 0x13, ldr: 0x0001_0008, dfr: 0xFFFF_FFFF, tpr: 0x30, mode: .x2APIC))
        XCTAssertEqual(LocalAPIC.x2apicLDR(id: 0), 1)
        XCTAssertEqual(LocalAPIC.x2apicLDR(id: 0x21), 0x0002_0002)
    }

    func testX2APICMSRsFaultOutsideX2APICMode() {
        var a = LocalAPIC(id: 0)
        XCTAssertNil(a.readMSR(0x802, now: 0))
        XCTAssertNil(a.writeMSR(0x808, 0, now: 0))
        _ = a.setBaseMSR(0xFEE0_0000)
        XCTAssertNil(a.readMSR(0x803, now: 0))
    }

    func testRegisterMapReadOnlyWriteOnlyAndReserved() {
        var a = x2apic(id: 4)
        XCTAssertEqual(a.readMSR(0x803, now: 0), UInt64(LocalAPIC.versionValue))
        XCTAssertEqual(a.readMSR(0x80F, now: 0), 0x1FF)
        for ro: UInt32 in [0x802, 0x803, 0x80A, 0x80D, 0x810, 0x818, 0x820, 0x839] {
            XCTAssertNil(a.writeMSR(ro, 0, now: 0), "MSR 0x\(String(ro, radix: 16)) is read-only")
        }
        for wo: UInt32 in [0x80B, 0x83F] { XCTAssertNil(a.readMSR(wo, now: 0), "MSR 0x\(String(wo, radix: 16)) is write-only") }
        for undefined: UInt32 in [0x800, 0x809, 0x80C, 0x80E, 0x831, 0x83A, 0x840, 0x8FF] {
            XCTAssertNil(a.readMSR(undefined, now: 0), "MSR 0x\(String(undefined, radix: 16)) is not an x2APIC register")
            XCTAssertNil(a.writeMSR(undefined, 0, now: 0))
        }
        XCTAssertNil(a.writeMSR(0x80B, 1, now: 0), "EOI takes only 0")
        XCTAssertNil(a.writeMSR(0x828, 1, now: 0), "ESR takes only 0")
        XCTAssertNil(a.writeMSR(0x808, 0x100, now: 0), "TPR bits 8-31 are reserved")
        XCTAssertNil(a.writeMSR(0x835, 1 << 32, now: 0), "bits 32-63 are reserved outside the ICR")
        XCTAssertNil(a.writeMSR(0x83F, 0x100, now: 0), "SELF IPI takes a vector only")
        XCTAssertEqual(a.writeMSR(0x835, 0x700, now: 0), [], "LVT LINT0")
        XCTAssertEqual(a.readMSR(0x835, now: 0), 0x700)
        XCTAssertEqual(a.writeMSR(0x838, 1000, now: 5), [.timerChanged])
        XCTAssertEqual(a.timerDeadline, 5 + 1000 * 2 * 10)
    }

    func testICRIsOneSixtyFourBitWriteAndSelfIPIGoesToSelf() {
        var a = x2apic(id: 1)
        let effects = a.writeMSR(0x830, 0x0000_0102_0000_4845, now: 0)
        var cmd = InterruptCommand(x2apicICR: 0x0000_0102_0000_4845)
        cmd.assert = true
        XCTAssertEqual(effects, [.sendIPI(cmd)])
        XCTAssertEqual(cmd.destination, 0x102)
        XCTAssertTrue(cmd.x2apicFormat && cmd.logical)
        XCTAssertEqual(a.readMSR(0x830, now: 0), 0x0000_0102_0000_4845)
        guard case let .sendIPI(selfIPI)? = a.writeMSR(0x83F, 0x66, now: 0)?.first else { return XCTFail("no IPI") }
        XCTAssertEqual(selfIPI.shorthand, .selfOnly)
        XCTAssertEqual(selfIPI.vector, 0x66)
        XCTAssertEqual(selfIPI.mode, .fixed)
        XCTAssertEqual(a.writeMSR(0x83F, 0x05, now: 0), [], "an illegal vector is not sent")
        _ = a.writeMSR(0x828, 0, now: 0)
        XCTAssertEqual(a.readMSR(0x828, now: 0), UInt64(LocalAPIC.esrSendIllegalVector))
    }

    func testLevelEOIThroughTheMSR() {
        var a = x2apic()
        a.accept(vector: 0x70, levelTriggered: true)
        a.acknowledge(0x70)
        XCTAssertEqual(a.writeMSR(0x80B, 0, now: 0), [.levelEOI(vector: 0x70)])
    }

    func testDestinationResolutionForX2APICAndDisabledTargets() {
        let apics = (0..<20).map { i in
            APICAddress(id: UInt8(i), ldr: LocalAPIC.x2apicLDR(id: UInt32(i)), mode: .x2APIC)
        }
        func targets(_ v: UInt64) -> [Int] {
            DestinationResolver.resolve(InterruptCommand(x2apicICR: v), source: 0, apics: apics)
        }
        XCTAssertEqual(targets(0x0000_0011_0000_0030), [17], "physical 32-bit destination")
        XCTAssertEqual(targets(0xFFFF_FFFF_0000_0030), Array(0..<20), "physical broadcast")
        XCTAssertEqual(targets(0x0001_000A_0000_0830), [17, 19], "logical: cluster 1, bits 1 and 3")
        XCTAssertEqual(targets(0x0000_0003_0000_0830), [0, 1], "logical: cluster 0, bits 0 and 1")
        // An 8-bit (IOAPIC, MSI) destination reaches x2APIC targets: physical by id, 0xFF broadcast.
        XCTAssertEqual(DestinationResolver.resolve(InterruptCommand(low: 0x30, high: 5 << 24), source: -1, apics: apics), [5])
        XCTAssertEqual(DestinationResolver.resolve(InterruptCommand(low: 0x30, high: 0xFF << 24), source: -1, apics: apics).count, 20)
        // A hardware-disabled APIC is never a target, whatever the addressing.
        var mixed = [APICAddress(id: 0), APICAddress(id: 1, mode: .disabled), APICAddress(id: 2)]
        mixed[0].ldr = 0x0100_0000; mixed[1].ldr = 0x0200_0000; mixed[2].ldr = 0x0400_0000
        XCTAssertEqual(DestinationResolver.resolve(InterruptCommand(low: 0x30, high: 1 << 24), source: 0, apics: mixed), [])
        XCTAssertEqual(DestinationResolver.resolve(InterruptCommand(low: 0x0808_0030, high: 0), source: 0, apics: mixed), [0, 2])
        XCTAssertEqual(DestinationResolver.resolve(InterruptCommand(low: 0x0C_0030, high: 0), source: 0, apics: mixed), [2])
        XCTAssertEqual(DestinationResolver.resolve(InterruptCommand(low: 0x0830, high: 0x0700_0000), source: 0, apics: mixed), [0, 2])
    }

    func testRouterUsesTheNewModeOfAVCPU() {
        let irqs = (0..<2).map { VCPUInterrupts(index: $0, busHz: 100_000_000, state: .running) }
        let router = InterruptRouter(local: irqs)
        for i in irqs { _ = i.writeAPIC(APICRegister.svr, 0x1FF, now: 0) }
        let (effects, address) = irqs[1].setAPICBase(0xFEE0_0000)
        XCTAssertEqual(effects, [.addressingChanged, .timerChanged])
        router.updateAddress(of: 1, address)
        router.send(InterruptCommand(low: 0x4031, high: 1 << 24), from: 0)
        XCTAssertNil(irqs[1].apicSnapshot.irr.highest, "the disabled APIC got nothing")
        let back = irqs[1].setAPICBase(0xFEE0_0000 | LocalAPIC.baseEN)
        router.updateAddress(of: 1, back.address)
        router.send(InterruptCommand(low: 0x4031, high: 1 << 24), from: 0)
        XCTAssertEqual(irqs[1].apicSnapshot.irr.highest, 0x31)
    }
}
