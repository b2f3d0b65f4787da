// The interrupt side of live vCPU migration (VCPUMigration.swift), without KVM: the hand-over of
// the APIC and INIT/SIPI/NMI/run state between two copies of one vCPU, the timer carried as time
// remaining, and the router forwarding to the vCPU's node once it is not resident.
@testable import Interrupts
import XCTest

final class VCPUMigrationTests: XCTestCase {
    final class Remote: RemoteInterrupts, @unchecked Sendable {
        var sent: [(Int, InterruptMessage)] = []
        func deliver(toRemoteVCPU index: Int, _ message: InterruptMessage) { sent.append((index, message)) }
        func addressingChanged(vcpu index: Int, _ address: APICAddress) {}
        func forwardIRQLine(_ line: UInt32, level: Bool, device: String) {}
        func forwardEOI(vector: UInt8) {}
    }

    /// Everything a vCPU's interrupt state holds moves: registers, IRR/ISR/TMR, LVTs, the timer
    /// (remaining time re-based on the destination's clock), NMI and the halted run state.
    func testStateMovesWholeWithTheTimerRebased() throws {
        let a = VCPUInterrupts(index: 1, busHz: 100_000_000, state: .running)
        _ = a.writeAPIC(APICRegister.svr, 0x1FF, now: 0)
        _ = a.writeAPIC(APICRegister.ldr, 0x0200_0000, now: 0)
        _ = a.writeAPIC(APICRegister.tpr, 0x20, now: 0)
        _ = a.writeAPIC(APICRegister.lvtTimer, 0x2_0030, now: 0)        // periodic, vector 0x30
        _ = a.writeAPIC(APICRegister.timerDivide, 0xB, now: 0)          // divide by 1
        _ = a.writeAPIC(APICRegister.timerInitialCount, 1_000_000, now: 1_000)   // 10 ms at 100 MHz
        XCTAssertTrue(a.receive(InterruptMessage(mode: .fixed, vector: 0x41)))
        XCTAssertTrue(a.receive(InterruptMessage(mode: .fixed, vector: 0x52, levelTriggered: true)))
        _ = a.receive(InterruptMessage(mode: .nmi, vector: 0))
        a.halt(interruptsEnabled: true)
        XCTAssertTrue(a.requestDeparture(to: 3))
        XCTAssertFalse(a.requestDeparture(to: 2), "one departure at a time")
        XCTAssertEqual(a.nextEntry(canInject: false, stopping: { false }), .depart(node: 3))

        var wire: [UInt8] = []
        a.completeDeparture(now: 4_000_000) { wire = $0 }                // 4 ms into the 10 ms period
        XCTAssertFalse(a.isResident)
        XCTAssertNil(a.apicSnapshot.timerDeadline, "the copy left behind is idle")
        XCTAssertNil(a.receiveIfResident(InterruptMessage(mode: .fixed, vector: 0x60)), "not applied where it no longer runs")

        // The destination's clock is far from the source's: only the remaining 6 ms counts.
        let b = VCPUInterrupts(index: 1, busHz: 100_000_000, state: .waitingForSIPI)
        b.setResident(false)
        try b.installArrival(wire, kvmState: "kvm", now: 500_000_000)
        XCTAssertTrue(b.isResident)
        let s = b.apicSnapshot
        XCTAssertEqual(s.timerDeadline, 506_001_000)
        XCTAssertEqual(s.ldr, 0x0200_0000)
        XCTAssertEqual(s.tpr, 0x20)
        XCTAssertTrue(s.irr[0x41] && s.irr[0x52] && s.tmr[0x52] && !s.tmr[0x41])
        XCTAssertEqual(s.lvt[1], 0x2_0030)
        XCTAssertEqual(b.runState, .halted(interruptsEnabled: true))
        XCTAssertTrue(b.locked { $0.pendingNMI })
        // A departure asked before the arrived state is loaded waits for it.
        XCTAssertTrue(b.requestDeparture(to: 0))
        XCTAssertEqual(b.nextEntry(canInject: false, stopping: { false }), .arrive)
        XCTAssertEqual(b.takeArrival() as? String, "kvm")
        XCTAssertEqual(b.nextEntry(canInject: false, stopping: { false }), .depart(node: 0))
        b.cancelDeparture()
        // Then the normal decision: the NMI wakes the halted vCPU.
        XCTAssertEqual(b.nextEntry(canInject: true, stopping: { false }),
                       .enter(VCPUEntry.Entry(nmi: true, inject: 0x52, cr8: 2)))
    }

    func testMalformedStateIsRefusedAndNothingChanges() {
        let b = VCPUInterrupts(index: 0, busHz: 100_000_000, state: .waitingForSIPI)
        b.setResident(false)
        XCTAssertThrowsError(try b.installArrival([1, 2, 3], kvmState: 0, now: 0)) { XCTAssertTrue("\($0)".contains("truncated"), "\($0)") }
        XCTAssertThrowsError(try b.installArrival([9], kvmState: 0, now: 0)) { XCTAssertTrue("\($0)".contains("version 9"), "\($0)") }
        XCTAssertFalse(b.isResident)
        let a = VCPUInterrupts(index: 0, busHz: 100_000_000, state: .running)
        XCTAssertThrowsError(try a.installArrival([1], kvmState: 0, now: 0)) { XCTAssertTrue("\($0)".contains("already resident"), "\($0)") }
    }

    /// The router applies a message where the vCPU is resident and forwards it once otherwise.
    func testRouterForwardsToTheNodeOfANonResidentVCPU() {
        let remote = Remote()
        let v0 = VCPUInterrupts(index: 0, busHz: 100_000_000, state: .running)
        let v1 = VCPUInterrupts(index: 1, busHz: 100_000_000, state: .running)
        let router = InterruptRouter(local: [v0, v1], remote: remote)
        router.deliver(to: 1, InterruptMessage(mode: .fixed, vector: 0x70))
        XCTAssertTrue(v1.apicSnapshot.irr[0x70])
        XCTAssertTrue(remote.sent.isEmpty)
        XCTAssertTrue(v1.requestDeparture(to: 1))
        v1.completeDeparture(now: 0) { _ in }
        router.deliver(to: 1, InterruptMessage(mode: .fixed, vector: 0x71))
        XCTAssertEqual(remote.sent.count, 1)
        XCTAssertEqual(remote.sent.first?.0, 1)
        XCTAssertEqual(remote.sent.first?.1.vector, 0x71)
        XCTAssertFalse(v1.apicSnapshot.irr[0x71])
    }
}
