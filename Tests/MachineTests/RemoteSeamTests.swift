// The Machine's remote-interrupt seam, given at init (real KVM VM, no vCPU running): a vCPU of
// another node is reached through it, a device line and a level EOI go to it when the IOAPIC is
// elsewhere (and stay local when it is here), and a machine without it must own every vCPU.
import Foundation
@testable import Interrupts
import XCTest
@testable import Machine

final class RemoteSeamTests: XCTestCase {
    final class Remote: RemoteInterrupts, @unchecked Sendable {
        let lock = NSLock()
        var log: [String] = []
        func add(_ s: String) { lock.lock(); log.append(s); lock.unlock() }
        var all: [String] { lock.lock(); defer { lock.unlock() }; return log }
        func deliver(toRemoteVCPU index: Int, _ m: InterruptMessage) { add("deliver \(index) \(m.mode) 0x\(String(m.vector, radix: 16))") }
        func addressingChanged(vcpu index: Int, _ a: APICAddress) { add("address \(index) ldr 0x\(String(a.ldr, radix: 16))") }
        func forwardIRQLine(_ line: UInt32, level: Bool, device: String) { add("line \(line) \(level) \(device)") }
        func forwardEOI(vector: UInt8) { add("eoi 0x\(String(vector, radix: 16))") }
    }

    /// vCPU 0 here, vCPU 1 on node 1.
    func machine(ioapic: Bool, remote: Remote?) throws -> Machine {
        guard FileManager.default.isWritableFile(atPath: "/dev/kvm") else { throw XCTSkip("/dev/kvm missing") }
        var cfg = MachineConfiguration(memoryBytes: 4 << 20, vcpus: 2)
        cfg.nodes = [(0, 1), (1, 1)]
        cfg.nodeID = 0
        cfg.ioapic = ioapic
        return try Machine(config: cfg, ram: try AnonymousGuestRAM(size: 4 << 20), remote: remote)
    }

    func testOtherNodesAreReachedThroughTheSeam() throws {
        let remote = Remote()
        let m = try machine(ioapic: false, remote: remote)
        m.router.send(InterruptCommand(low: 0x4031, high: 0x0100_0000), from: 0)   // fixed 0x31 to APIC 1
        m.router.updateAddress(of: 0, APICAddress(id: 0, ldr: 0x0100_0000))
        m.router.updateAddress(of: 1, APICAddress(id: 1, ldr: 0x0200_0000))   // node 1's own news: not echoed
        m.setIRQ(line: 4, level: true, from: "com1")
        m.levelEOI(0x55)
        XCTAssertEqual(remote.all, ["deliver 1 fixed 0x31", "address 0 ldr 0x1000000", "line 4 true com1", "eoi 0x55"])
        XCTAssertTrue(m.interruptState(of: 0)!.apicSnapshot.irr.isEmpty)
        XCTAssertNil(m.interruptState(of: 1), "vCPU 1 has no state here")
    }

    func testLinesAndEOIsStayWithALocalIOAPIC() throws {
        let remote = Remote()
        let m = try machine(ioapic: true, remote: remote)
        m.setIRQ(line: 4, level: true, from: "com1")
        m.levelEOI(0x55)
        XCTAssertEqual(remote.all, [], "the IOAPIC is here")
    }

    func testAMachineWithoutTheSeamMustOwnEveryVCPU() throws {
        XCTAssertThrowsError(try machine(ioapic: true, remote: nil)) { e in
            XCTAssertTrue("\(e)".contains("no remote-interrupt route"), "\(e)")
        }
    }
}
