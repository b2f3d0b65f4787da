// The vCPU entry decision (pure, exhaustive over its inputs), its application under the vCPU's
// lock (VCPUInterrupts.nextEntry, with real threads parking and waking), and the remote seam of
// the router. No KVM.
import Foundation
import XCTest
@testable import Interrupts

final class VCPUEntryDecisionTests: XCTestCase {
    typealias S = VCPUEntry.State

    func testStopWinsOverEverything() {
        for s in Self.allStates() where s.stopping {
            XCTAssertEqual(VCPUEntry.decide(s), .stop, "\(s)")
        }
    }

    func testPendingINITResetsInEveryRunState() {
        for s in Self.allStates() where !s.stopping && s.pendingINIT {
            XCTAssertEqual(VCPUEntry.decide(s), .reset, "\(s)")
        }
    }

    func testWaitingForSIPIStartsAtItsVectorOrParks() {
        for s in Self.allStates() where !s.stopping && !s.pendingINIT && s.runState == .waitingForSIPI {
            // Interrupts, NMIs and the injection window never start a CPU waiting for SIPI.
            XCTAssertEqual(VCPUEntry.decide(s), s.sipiVector.map { .start(sipiVector: $0) } ?? .park, "\(s)")
        }
    }

    func testHaltedWakesOnlyForNMIOrATakeableInterrupt() {
        for s in Self.allStates() where !s.stopping && !s.pendingINIT {
            guard case let .halted(ifOn) = s.runState else { continue }
            let action = VCPUEntry.decide(s)
            let wakes = s.pendingNMI || (ifOn && s.deliverableVector != nil)
            if wakes {
                guard case .enter = action else { return XCTFail("woken vCPU must enter: \(s) -> \(action)") }
            } else {
                XCTAssertEqual(action, .park, "\(s)")
            }
        }
    }

    func testEntryCarriesNMIInjectionOrWindow() {
        for s in Self.allStates() where !s.stopping && !s.pendingINIT {
            guard case let .enter(e) = VCPUEntry.decide(s) else { continue }
            XCTAssertEqual(e.nmi, s.pendingNMI, "\(s)")
            XCTAssertEqual(e.cr8, s.cr8, "\(s)")
            if let v = s.deliverableVector, s.canInject {
                XCTAssertEqual(e.inject, v, "\(s)")
                XCTAssertFalse(e.requestWindow, "an injection never needs a window too: \(s)")
            } else {
                XCTAssertNil(e.inject, "\(s)")
                XCTAssertEqual(e.requestWindow, s.deliverableVector != nil, "window only while an interrupt waits: \(s)")
            }
        }
    }

    func testEveryStateDecidedAndSIPIIgnoredOnceRunning() {
        var seen = 0
        for s in Self.allStates() {
            seen += 1
            if !s.stopping && !s.pendingINIT && s.runState == .running {
                guard case .enter = VCPUEntry.decide(s) else { return XCTFail("a running vCPU enters: \(s)") }
            }
        }
        XCTAssertEqual(seen, 2 * 4 * 2 * 2 * 2 * 2 * 2 * 2)
    }

    func testNamedCases() {
        XCTAssertEqual(VCPUEntry.decide(S()), .enter(VCPUEntry.Entry()))
        XCTAssertEqual(VCPUEntry.decide(S(deliverableVector: 0x41, canInject: true, cr8: 3)),
                       .enter(VCPUEntry.Entry(inject: 0x41, cr8: 3)))
        XCTAssertEqual(VCPUEntry.decide(S(deliverableVector: 0x41, canInject: false)),
                       .enter(VCPUEntry.Entry(requestWindow: true)))
        XCTAssertEqual(VCPUEntry.decide(S(runState: .halted(interruptsEnabled: false), deliverableVector: 0x41, canInject: true)),
                       .park, "HLT with IF=0 sleeps through interrupts")
        XCTAssertEqual(VCPUEntry.decide(S(runState: .halted(interruptsEnabled: false), pendingNMI: true)),
                       .enter(VCPUEntry.Entry(nmi: true)))
        XCTAssertEqual(VCPUEntry.decide(S(runState: .waitingForSIPI, sipiVector: 0x10, pendingNMI: true)), .start(sipiVector: 0x10))
        XCTAssertEqual(VCPUEntry.decide(S(runState: .halted(interruptsEnabled: true), pendingINIT: true)), .reset)
    }

    /// Why an injection never asks for a window: once the highest deliverable vector is
    /// acknowledged, nothing else is deliverable until an EOI (random IRR/ISR/TPR states).
    func testNothingDeliverableRightAfterAnAcknowledge() {
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<2000 {
            var a = LocalAPIC(id: 0)
            _ = a.write(APICRegister.svr, 0x1FF, now: 0)
            _ = a.write(APICRegister.tpr, UInt32(UInt8.random(in: 0...0xFF, using: &rng)), now: 0)
            for _ in 0..<Int.random(in: 1...6, using: &rng) {
                a.accept(vector: UInt8.random(in: 16...255, using: &rng), levelTriggered: false)
            }
            for _ in 0..<Int.random(in: 0...2, using: &rng) {
                if let v = a.deliverableVector { a.acknowledge(v) }
            }
            guard let v = a.deliverableVector else { continue }
            a.acknowledge(v)
            XCTAssertNil(a.deliverableVector, "after acknowledging 0x\(String(v, radix: 16))")
        }
    }

    /// Every combination of the decision's inputs (two values per optional input).
    static func allStates() -> [S] {
        var out: [S] = []
        let runStates: [VCPURunState] = [.waitingForSIPI, .running, .halted(interruptsEnabled: true), .halted(interruptsEnabled: false)]
        for stopping in [false, true] {
            for run in runStates {
                for initPending in [false, true] {
                    for sipi in [nil, UInt8(0x10)] {
                        for nmi in [false, true] {
                            for vector in [nil, UInt8(0x41)] {
                                for canInject in [false, true] {
                                    for cr8 in [UInt64(0), 5] {
                                        out.append(S(stopping: stopping, runState: run, pendingINIT: initPending, sipiVector: sipi,
                                                     pendingNMI: nmi, deliverableVector: vector, canInject: canInject, cr8: cr8))
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        return out
    }
}

/// VCPUInterrupts.nextEntry: the decision applied under the lock, with threads parking and waking.
final class VCPUNextEntryTests: XCTestCase {
    func enabled(_ i: Int, _ state: VCPURunState) -> VCPUInterrupts {
        let v = VCPUInterrupts(index: i, busHz: 100_000_000, state: state)
        v.locked { _ = $0.apic.write(APICRegister.svr, 0x1FF, now: 0) }
        return v
    }

    func testEnterAcknowledgesInjectedVectorAndTakesNMI() {
        let v = enabled(0, .running)
        _ = v.receive(InterruptMessage(mode: .fixed, vector: 0x50))
        _ = v.receive(InterruptMessage(mode: .nmi, vector: 0))
        XCTAssertEqual(v.nextEntry(canInject: true, stopping: { false }), .enter(VCPUEntry.Entry(nmi: true, inject: 0x50)))
        XCTAssertTrue(v.apicSnapshot.isr[0x50])
        XCTAssertFalse(v.apicSnapshot.irr[0x50])
        XCTAssertFalse(v.locked { $0.pendingNMI })
        XCTAssertEqual(v.nextEntry(canInject: true, stopping: { false }), .enter(VCPUEntry.Entry()), "nothing twice")
    }

    func testGuestNotReadyKeepsVectorPendingAndAsksForWindow() {
        let v = enabled(0, .running)
        _ = v.receive(InterruptMessage(mode: .fixed, vector: 0x50))
        XCTAssertEqual(v.nextEntry(canInject: false, stopping: { false }), .enter(VCPUEntry.Entry(requestWindow: true)))
        XCTAssertTrue(v.apicSnapshot.irr[0x50])
        XCTAssertEqual(v.nextEntry(canInject: true, stopping: { false }), .enter(VCPUEntry.Entry(inject: 0x50)))
    }

    func testINITResetsAPICAndWaitsForSIPI() {
        let v = enabled(1, .running)
        _ = v.receive(InterruptMessage(mode: .fixed, vector: 0x50))
        _ = v.receive(InterruptMessage(mode: .nmi, vector: 0))
        _ = v.receive(InterruptMessage(mode: .initialize, vector: 0))
        XCTAssertEqual(v.nextEntry(canInject: true, stopping: { false }), .reset)
        XCTAssertEqual(v.runState, .waitingForSIPI)
        XCTAssertFalse(v.apicSnapshot.softwareEnabled, "APIC back to power-on")
        XCTAssertTrue(v.apicSnapshot.irr.isEmpty)
        XCTAssertFalse(v.locked { $0.pendingNMI || $0.pendingINIT })
        _ = v.receive(InterruptMessage(mode: .startup, vector: 0x12))
        XCTAssertEqual(v.nextEntry(canInject: true, stopping: { false }), .start(sipiVector: 0x12))
        XCTAssertEqual(v.runState, .running)
        XCTAssertNil(v.locked { $0.sipiVector })
    }

    func testHaltedVCPUParksUntilAnInterruptArrivesFromAnotherThread() {
        let v = enabled(0, .halted(interruptsEnabled: true))
        let got = Got()
        let t = Thread { got.set(v.nextEntry(canInject: true, stopping: { false })) }
        t.start()
        Thread.sleep(forTimeInterval: 0.05)
        XCTAssertNil(got.value, "parked while nothing is pending")
        let router = InterruptRouter(local: [v])
        router.deliver(to: 0, InterruptMessage(mode: .fixed, vector: 0x61))
        XCTAssertTrue(got.wait(), "woken by the delivery")
        XCTAssertEqual(got.value, .enter(VCPUEntry.Entry(inject: 0x61)))
        XCTAssertEqual(v.runState, .running)
    }

    func testParkedVCPUSeesAStop() {
        let v = enabled(1, .waitingForSIPI)
        let stop = StopBox()
        let got = Got()
        let t = Thread { got.set(v.nextEntry(canInject: true, stopping: { stop.value })) }
        t.start()
        Thread.sleep(forTimeInterval: 0.05)
        XCTAssertNil(got.value)
        stop.value = true
        v.wake()
        XCTAssertTrue(got.wait())
        XCTAssertEqual(got.value, .stop)
    }

    final class Got: @unchecked Sendable {
        let sem = DispatchSemaphore(value: 0)
        let lock = NSLock()
        var stored: VCPUEntry.Action?
        var value: VCPUEntry.Action? { lock.lock(); defer { lock.unlock() }; return stored }
        func set(_ a: VCPUEntry.Action) { lock.lock(); stored = a; lock.unlock(); sem.signal() }
        func wait() -> Bool { sem.wait(timeout: .now() + 5) == .success }
    }

    final class StopBox: @unchecked Sendable {
        let lock = NSLock()
        var stored = false
        var value: Bool {
            get { lock.lock(); defer { lock.unlock() }; return stored }
            set { lock.lock(); stored = newValue; lock.unlock() }
        }
    }
}

/// The remote seam: what leaves the node, and what does not.
final class RemoteInterruptsTests: XCTestCase {
    func testAddressChangesOfLocalVCPUsGoToOtherNodesOnly() {
        let remote = RecordingRemote()
        let r = InterruptRouter(local: [VCPUInterrupts(index: 0, busHz: 100_000_000, state: .running), nil], remote: remote)
        r.updateAddress(of: 0, APICAddress(id: 0, ldr: 0x0100_0000))
        r.updateAddress(of: 1, APICAddress(id: 1, ldr: 0x0200_0000)) // broadcast by vCPU 1's node: not sent back
        XCTAssertEqual(remote.addresses.map(\.0), [0])
        XCTAssertEqual(remote.addresses.first?.1.ldr, 0x0100_0000)
        XCTAssertEqual(r.addresses.withLock { $0[1].ldr }, 0x0200_0000)
    }

    func testIOAPICMessageResolvedAcrossNodes() {
        let remote = RecordingRemote()
        let a = VCPUInterrupts(index: 0, busHz: 100_000_000, state: .running)
        let r = InterruptRouter(local: [a, nil], remote: remote)
        let io = IOAPIC(deliver: { r.deliver($0) })
        // Pin 3: vector 0x33, fixed, physical destination 1 (on the other node), edge.
        io.write(offset: IOAPIC.Offset.ioregsel, length: 4, value: 0x10 + 2 * 3 + 1)
        io.write(offset: IOAPIC.Offset.iowin, length: 4, value: 1 << 24)
        io.write(offset: IOAPIC.Offset.ioregsel, length: 4, value: 0x10 + 2 * 3)
        io.write(offset: IOAPIC.Offset.iowin, length: 4, value: 0x33)
        io.setLine(3, asserted: true)
        XCTAssertEqual(remote.delivered.map(\.0), [1])
        XCTAssertEqual(remote.delivered.first?.1, InterruptMessage(mode: .fixed, vector: 0x33))
        XCTAssertTrue(a.apicSnapshot.irr.isEmpty)
    }

    func testReservedRedirectionModesActAsFixed() {
        XCTAssertEqual(IOAPIC.redirectionMode(0x0300), .fixed)
        XCTAssertEqual(IOAPIC.redirectionMode(0x0600), .fixed)
        XCTAssertEqual(IOAPIC.redirectionMode(0x0400), .nmi)
        XCTAssertEqual(IOAPIC.redirectionMode(0x0100), .lowestPriority)
    }
}

/// Records what the router and machine hand to other nodes.
final class RecordingRemote: RemoteInterrupts, @unchecked Sendable {
    let lock = NSLock()
    private var _delivered: [(Int, InterruptMessage)] = []
    private var _addresses: [(Int, APICAddress)] = []
    private var _lines: [(UInt32, Bool, String)] = []
    private var _eois: [UInt8] = []
    var delivered: [(Int, InterruptMessage)] { lock.lock(); defer { lock.unlock() }; return _delivered }
    var addresses: [(Int, APICAddress)] { lock.lock(); defer { lock.unlock() }; return _addresses }
    var lines: [(UInt32, Bool, String)] { lock.lock(); defer { lock.unlock() }; return _lines }
    var eois: [UInt8] { lock.lock(); defer { lock.unlock() }; return _eois }

    func deliver(toRemoteVCPU index: Int, _ message: InterruptMessage) {
        lock.lock(); _delivered.append((index, message)); lock.unlock()
    }
    func addressingChanged(vcpu index: Int, _ address: APICAddress) {
        lock.lock(); _addresses.append((index, address)); lock.unlock()
    }
    func forwardIRQLine(_ line: UInt32, level: Bool, device: String) {
        lock.lock(); _lines.append((line, level, device)); lock.unlock()
    }
    func forwardEOI(vector: UInt8) {
        lock.lock(); _eois.append(vector); lock.unlock()
    }
}

/// The 8259's INTR through LINT0 (ExtINT): decisions and the LINT0 pin of a vCPU.
final class ExtINTTests: XCTestCase {
    func testExtINTIsInjectedBeforeAPICVectorsOrWaitsForAWindow() {
        XCTAssertEqual(VCPUEntry.decide(.init(canInject: true, extINT: true)), .enter(.init(injectExtINT: true)))
        XCTAssertEqual(VCPUEntry.decide(.init(canInject: false, extINT: true)), .enter(.init(requestWindow: true)))
        XCTAssertEqual(VCPUEntry.decide(.init(deliverableVector: 0x40, canInject: true, extINT: true)),
                       .enter(.init(requestWindow: true, injectExtINT: true)), "the APIC vector waits for the next window")
        XCTAssertEqual(VCPUEntry.decide(.init(runState: .halted(interruptsEnabled: true), extINT: true)),
                       .enter(.init(requestWindow: true)), "INTR wakes a halted CPU with IF set")
        XCTAssertEqual(VCPUEntry.decide(.init(runState: .halted(interruptsEnabled: false), extINT: true)), .park)
    }

    func testLINT0RoutesINTROnlyInExtINTModeOrWithTheAPICDisabled() {
        let irq = VCPUInterrupts(index: 0, busHz: 100_000_000, state: .running)
        _ = irq.writeAPIC(APICRegister.svr, 0x1FF, now: 0)
        func entry() -> VCPUEntry.Action { irq.nextEntry(canInject: true, stopping: { false }) }
        irq.setLINT0(true)
        XCTAssertEqual(entry(), .enter(.init()), "LINT0 masked: INTR ignored")
        _ = irq.writeAPIC(APICRegister.lvtLINT0, 0x700, now: 0)
        XCTAssertEqual(entry(), .enter(.init(injectExtINT: true)), "ExtINT follows the level")
        irq.setLINT0(false)
        XCTAssertEqual(entry(), .enter(.init()))
        XCTAssertTrue(irq.apicSnapshot.isr.isEmpty, "ExtINT bypasses the APIC's IRR/ISR")
        // Hardware-disabled APIC: LINT0 passes INTR through whatever the (reset) LVT says.
        _ = irq.setAPICBase(0xFEE0_0000)
        irq.setLINT0(true)
        XCTAssertEqual(entry(), .enter(.init(injectExtINT: true)))
        irq.setLINT0(false)
        // Fixed mode fires on the rising edge through the APIC.
        _ = irq.setAPICBase(0xFEE0_0000 | LocalAPIC.baseEN)
        _ = irq.writeAPIC(APICRegister.svr, 0x1FF, now: 0)
        _ = irq.writeAPIC(APICRegister.lvtLINT0, 0x45, now: 0)
        irq.setLINT0(true)
        XCTAssertEqual(entry(), .enter(.init(inject: 0x45)))
    }
}
