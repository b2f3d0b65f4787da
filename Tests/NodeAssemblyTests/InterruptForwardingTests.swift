// Two nodes of one VM in this process (real KVM, userfaultfd + dsm-ivy, transport-tcp on
// loopback), started but with no vCPU running: the IOAPIC of node 0 is programmed directly and
// device lines, interrupt messages and level EOIs are driven by hand, so every hop of the
// IOAPIC path across nodes is observed.

import Cluster
import Config
import Foundation
import Logging
@testable import Distributed
@testable import NodeAssembly
@testable import Machine
@testable import Interrupts
import PluginHost
import TestSupport
import XCTest

final class InterruptForwardingTests: XCTestCase {
    var vms: [VMNode] = []

    override func setUpWithError() throws {
        try Requirement.testGuestVM()
        let path = vmConfig(port: 20400)
        let cfg = try ConfigLoader.load(path: path)
        var logger = Logger(label: "dist-test")
        logger.logLevel = .error
        vms = try (0..<2).map { id in
            try VMNode(config: cfg, id: UInt32(id), loader: PluginLoader(searchPath: [Built.productsDirectory]),
                       logger: logger, options: VMOptions(), say: { _ in })
        }
        let failure = LockedValue<String>()
        let done = DispatchSemaphore(value: 0)
        let t = Thread { [vms] in
            do { try vms[1].startUp() } catch { failure.set("\(error)") }
            done.signal()
        }
        t.start()
        try vms[0].startUp()
        XCTAssertEqual(done.wait(timeout: .now() + 20), .success)
        if let f = failure.get() { XCTFail(f) }
    }

    override func tearDown() {
        guard vms.count == 2 else { return }
        vms[0].node.stop(reason: "test finished")
        let done = DispatchSemaphore(value: 0)
        let t = Thread { [vms] in _ = vms[1].node.waitUntilStopped(); done.signal() }
        t.start()
        _ = vms[0].node.waitUntilStopped()
        _ = done.wait(timeout: .now() + 10)
        for vm in vms { vm.shutdown() }
        vms = []
    }

    /// Programs redirection entry `pin` of node 0's IOAPIC.
    func program(pin: Int, vector: UInt8, level: Bool, logical: Bool, destination: UInt8) {
        let io = vms[0].machine.ioapic!
        let low = UInt64(vector) | (level ? 1 << 15 : 0) | (logical ? 1 << 11 : 0)
        io.write(offset: 0x00, length: 4, value: UInt64(0x10 + 2 * pin))
        io.write(offset: 0x10, length: 4, value: low)
        io.write(offset: 0x00, length: 4, value: UInt64(0x10 + 2 * pin + 1))
        io.write(offset: 0x10, length: 4, value: UInt64(destination) << 24)
    }

    func entryLow(pin: Int) -> UInt64 {
        let io = vms[0].machine.ioapic!
        io.write(offset: 0x00, length: 4, value: UInt64(0x10 + 2 * pin))
        return io.read(offset: 0x10, length: 4)
    }

    func pending(_ vm: VMNode, vcpu: Int, _ vector: UInt8) -> Bool {
        vm.machine.interruptState(of: vcpu)?.apicSnapshot.irr[vector] ?? false
    }

    func clear(_ vm: VMNode, vcpu: Int, _ vector: UInt8) {
        vm.machine.interruptState(of: vcpu)!.locked { $0.apic.irr[vector] = false }
    }

    func waitUntil(_ what: String, timeout: Double = 5, _ cond: () -> Bool) {
        let deadline = Date(timeIntervalSinceNow: timeout)
        while !cond() && Date() < deadline { usleep(2000) }
        XCTAssertTrue(cond(), "timed out waiting for \(what)")
    }

    func counter(_ vm: VMNode, _ name: String) -> UInt64 { vm.metrics.snapshot().counters[name] ?? 0 }

    /// Line of a device on node 1 -> IOAPIC on node 0 -> level message to vCPU 2 on node 1 ->
    /// its EOI back to node 0 (remote IRR cleared; still asserted: fires again; deasserted: not).
    func testLevelTriggeredLineFromNode1ThroughIOAPICOnNode0() {
        program(pin: 5, vector: 0x55, level: true, logical: false, destination: 2)
        vms[1].machine.setIRQ(line: 5, level: true, from: "test-device")
        waitUntil("vector 0x55 pending on vCPU 2 (node 1)") { pending(vms[1], vcpu: 2, 0x55) }
        XCTAssertEqual(counter(vms[1], "cpu.irq_lines_forwarded"), 1)
        XCTAssertEqual(counter(vms[0], "cpu.irq_lines_received"), 1)
        XCTAssertEqual(counter(vms[0], "cpu.ipi_forwarded"), 1)
        XCTAssertEqual(counter(vms[1], "cpu.ipi_received"), 1)
        XCTAssertNotEqual(entryLow(pin: 5) & (1 << 14), 0, "remote IRR set while the EOI is outstanding")
        XCTAssertTrue(vms[1].machine.interruptState(of: 2)!.apicSnapshot.tmr[0x55], "delivered level-triggered")

        // EOI while the line is still asserted: the IOAPIC fires again.
        clear(vms[1], vcpu: 2, 0x55)
        vms[1].machine.levelEOI(0x55)
        waitUntil("the re-fired 0x55 on vCPU 2") { pending(vms[1], vcpu: 2, 0x55) }
        XCTAssertEqual(counter(vms[1], "cpu.eoi_forwarded"), 1)
        XCTAssertEqual(counter(vms[0], "cpu.eoi_received"), 1)
        XCTAssertEqual(counter(vms[1], "cpu.ipi_received"), 2)

        // Deassert, then EOI: remote IRR clears and nothing more is sent.
        clear(vms[1], vcpu: 2, 0x55)
        vms[1].machine.setIRQ(line: 5, level: false, from: "test-device")
        vms[1].machine.levelEOI(0x55)
        waitUntil("remote IRR cleared") { counter(vms[0], "cpu.eoi_received") == 2 && entryLow(pin: 5) & (1 << 14) == 0 }
        usleep(100_000)
        XCTAssertFalse(pending(vms[1], vcpu: 2, 0x55))
        XCTAssertEqual(counter(vms[1], "cpu.ipi_received"), 2)
    }

    /// A logical destination set on node 1 (LDR broadcast) resolves on node 0: an edge-triggered
    /// line of node 0 reaches vCPU 3 on node 1, once per rising edge.
    func testLogicalDestinationBroadcastAndEdgeLine() {
        vms[1].machine.router.updateAddress(of: 3, APICAddress(id: 3, ldr: 0x0800_0000, dfr: 0xFFFF_FFFF))
        waitUntil("LDR of vCPU 3 known on node 0") { vms[0].machine.router.addresses.withLock { $0[3].ldr } == 0x0800_0000 }
        program(pin: 6, vector: 0x66, level: false, logical: true, destination: 0x08)
        vms[0].machine.setIRQ(line: 6, level: true, from: "test-device")
        waitUntil("vector 0x66 pending on vCPU 3 (node 1)") { pending(vms[1], vcpu: 3, 0x66) }
        XCTAssertFalse(pending(vms[1], vcpu: 2, 0x66))
        XCTAssertFalse(pending(vms[0], vcpu: 0, 0x66))
        XCTAssertFalse(pending(vms[0], vcpu: 1, 0x66))
        vms[0].machine.setIRQ(line: 6, level: true, from: "test-device")   // no edge: nothing
        vms[0].machine.setIRQ(line: 6, level: false, from: "test-device")
        usleep(100_000)
        XCTAssertEqual(counter(vms[1], "cpu.ipi_received"), 1)
    }

    /// An IPI to a vCPU of the other node (physical and all-excluding-self), delivered once each.
    func testIPIShorthandResolvedOnSender() {
        // vCPU 0 sends fixed vector 0x70 to all excluding self: 1 local, 2 remote.
        let cmd = InterruptCommand(low: 0x70 | (1 << 14) | (3 << 18), high: 0)
        vms[0].machine.router.send(cmd, from: 0)
        waitUntil("0x70 on vCPUs 2 and 3") { pending(vms[1], vcpu: 2, 0x70) && pending(vms[1], vcpu: 3, 0x70) }
        XCTAssertTrue(pending(vms[0], vcpu: 1, 0x70))
        XCTAssertFalse(pending(vms[0], vcpu: 0, 0x70))
        XCTAssertEqual(counter(vms[0], "cpu.ipi_forwarded"), 2)
        XCTAssertEqual(counter(vms[1], "cpu.ipi_received"), 2)
        // SIPI to APIC id 3 (physical): the AP on node 1 gets the start vector.
        vms[0].machine.router.send(InterruptCommand(low: 0x10 | (6 << 8) | (1 << 14), high: 3 << 24), from: 0)
        waitUntil("SIPI recorded for vCPU 3") { vms[1].machine.interruptState(of: 3)!.locked { $0.sipiVector } == 0x10 }
        XCTAssertNil(vms[1].machine.interruptState(of: 2)!.locked { $0.sipiVector })
        // NMI to APIC id 2 and INIT to APIC id 3, physical: each lands on its vCPU only.
        vms[0].machine.router.send(InterruptCommand(low: (4 << 8) | (1 << 14), high: 2 << 24), from: 0)
        vms[0].machine.router.send(InterruptCommand(low: (5 << 8) | (1 << 14), high: 3 << 24), from: 0)
        waitUntil("NMI on vCPU 2, INIT on vCPU 3") {
            vms[1].machine.interruptState(of: 2)!.locked { $0.pendingNMI } && vms[1].machine.interruptState(of: 3)!.locked { $0.pendingINIT }
        }
        XCTAssertFalse(vms[1].machine.interruptState(of: 3)!.locked { $0.pendingNMI })
        XCTAssertFalse(vms[1].machine.interruptState(of: 2)!.locked { $0.pendingINIT })
        XCTAssertEqual(counter(vms[1], "cpu.ipi_received"), 5)
    }

    /// A string (rep outsb / insb) access to a device of node 0 crosses as one message and
    /// completes with the reply; the maps were exchanged at start; an address the home node
    /// has no device for reads all-ones.
    func testStringIOForwardedWholeAndNoDeviceReadsAllOnes() throws {
        let bus = vms[1].machine.bus
        guard let r = bus.lookup(.pio, 0x3FF), let dev = r.device as? RemoteDevice else {
            return XCTFail("node 1 has no forwarding stub for the UART of node 0")
        }
        XCTAssertEqual(dev.home, 0)
        XCTAssertEqual(dev.name, "com1")
        XCTAssertNotNil(bus.lookup(.mmio, 0xFEC0_0000)?.device as? RemoteDevice, "the IOAPIC page of node 0 is forwarded")
        XCTAssertNil(vms[0].machine.bus.lookup(.pio, 0x3F8)?.device as? RemoteDevice, "node 0 serves its UART itself")
        // rep outsb of 4 bytes to the scratch register: one message, the last byte stays.
        var out: [UInt8] = [0x11, 0x22, 0x33, 0x44]
        out.withUnsafeMutableBytes { dev.ioString(space: .pio, offset: 0x3FF - r.base, itemSize: 1, data: $0, isWrite: true) }
        XCTAssertEqual(counter(vms[1], "io.forwarded"), 1)
        XCTAssertEqual(counter(vms[0], "io.served_for_peers"), 1)
        // rep insb of 3 bytes from it, then a single read of the line status (THR empty).
        var back = [UInt8](repeating: 0, count: 3)
        back.withUnsafeMutableBytes { dev.ioString(space: .pio, offset: 0x3FF - r.base, itemSize: 1, data: $0, isWrite: false) }
        XCTAssertEqual(back, [0x44, 0x44, 0x44])
        var lsr: [UInt8] = [0]
        lsr.withUnsafeMutableBytes { dev.io(space: .pio, offset: 0x3FD - r.base, data: $0, isWrite: false) }
        XCTAssertNotEqual(lsr[0] & 0x20, 0, "THRE")
        XCTAssertEqual(counter(vms[1], "io.forwarded"), 3)
        // A port node 0 has no device at (the maps disagree): all-ones, no failure.
        var word: [UInt8] = [0, 0, 0, 0]
        try word.withUnsafeMutableBytes {
            try vms[1].io!.call(home: 0, space: .pio, address: 0x510, itemSize: 4, data: $0, isWrite: false)
        }
        XCTAssertEqual(word, [0xFF, 0xFF, 0xFF, 0xFF])
        XCTAssertFalse(vms[1].machine.isStopping)
    }
}
