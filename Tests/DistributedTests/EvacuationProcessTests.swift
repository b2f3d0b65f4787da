// Node evacuation (docs/migration.md, "Evacuating a node") over real `giantvm` node processes:
// real KVM, dsm-ivy over userfaultfd, TCP on loopback, the test guest. While a workload runs,
// `giantvm evacuate` moves every vCPU off a node, then the node's pages and manager role go to
// another node and the node leaves: the guest's results must be exact, the evacuated node must
// exit 0 while the others finish the guest, and the bytes sent must stay well below the guest's
// memory size. Devices homed on the node move with it when their model can transfer its state
// (the UART and port 0x92: the guest's console carries on from the successor). Refusals (a device
// without that transfer homed on the node, a protocol without the drain hook) leave the VM
// running; a node killed during a device move or a drain stops every node with a named error.
// Every wait is bounded.

import Foundation
import TestSupport
import XCTest

final class EvacuationProcessTests: XCTestCase {
    override func setUpWithError() throws {
        try Requirement.testGuestVM()
    }

    /// A config of `vcpus` nodes with a metrics (and control) listener at `metricsPort + id`.
    /// `extraDevice`: one more device line (YAML flow map) after the config's.
    func config(port: Int, metricsPort: Int, vcpus: [Int], cmdline: String, uartNode: Int = 0,
                coherence: String = "dsm-ivy", extraDevice: String? = nil) throws -> String {
        let cfg = vmConfig(port: port, vcpus: vcpus, cmdline: cmdline, uartNode: uartNode)
        var text = try String(contentsOfFile: cfg, encoding: .utf8) + "\nmetrics: {address: 127.0.0.1, port: \(metricsPort)}\n"
        text = text.replacingOccurrences(of: "coherence: {plugin: dsm-ivy}", with: "coherence: {plugin: \(coherence)}")
        if let extraDevice {
            let results = "  - {name: results, model: results, node: 0, base: 0xe0}\n"
            XCTAssertTrue(text.contains(results))
            text = text.replacingOccurrences(of: results, with: results + "  - \(extraDevice)\n")
        }
        try text.write(toFile: cfg, atomically: true, encoding: .utf8)
        return cfg
    }

    struct Evacuated {
        var evacuate: ProcessResult
        var vm: ProcessResult
        var result: String
    }

    /// Runs the VM with `giantvm up`, evacuates `node` once the workload runs, waits for the VM.
    /// `resultNode`: the node whose console prints the guest's RESULT line (the UART's home at
    /// the end: `uartNode` unless the UART moved).
    func evacuateMidRun(port: Int, metricsPort: Int, vcpus: [Int], cmdline: String, node: Int, timeout: Int = 90,
                        uartNode: Int = 0, resultNode: Int? = nil, coherence: String = "dsm-ivy",
                        extraDevice: String? = nil) throws -> Evacuated {
        let cfg = try config(port: port, metricsPort: metricsPort, vcpus: vcpus, cmdline: cmdline, uartNode: uartNode,
                             coherence: coherence, extraDevice: extraDevice)
        let up = try Child(Built.giantvm, ["up", cfg, "--timeout", "\(timeout)"])
        defer { up.signal(SIGKILL) }
        XCTAssertTrue(up.waitForOutput(timeout: 30) { $0.contains("guest: workload=") }, up.stdoutSoFar + up.stderrSoFar)
        usleep(300_000)   // the workload is under way on every vCPU
        let e = try giantvm(["evacuate", cfg, "--node", "\(node)"], timeout: 90)
        let r = up.wait(timeout: Double(timeout + 20))
        XCTAssertFalse(r.timedOut, r.output)
        return Evacuated(evacuate: e, vm: r, result: lines(r.stdout, "[node \(resultNode ?? uartNode)] RESULT ").first ?? "")   // the console's node
    }

    /// The evacuation succeeded: vCPUs moved, the node left and exited 0, bytes < guest RAM / 4.
    func assertLeft(_ e: Evacuated, node: Int, vcpus: Int, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(e.evacuate.status, 0, e.evacuate.output, file: file, line: line)
        XCTAssertTrue(e.evacuate.stdout.contains("left node=\(node) to="), e.evacuate.output, file: file, line: line)
        guard let summary = e.evacuate.stdout.split(separator: "\n").first(where: { $0.hasPrefix("evacuate: node \(node) left: ") }) else {
            return XCTFail("no summary: \(e.evacuate.output)", file: file, line: line)
        }
        XCTAssertTrue(summary.contains("vcpus_moved=\(vcpus) "), String(summary), file: file, line: line)
        func field(_ k: String) -> UInt64? {
            summary.split(separator: " ").first { $0.hasPrefix(k + "=") }.flatMap { UInt64($0.dropFirst(k.count + 1)) }
        }
        let sent = field("bytes_sent") ?? .max, memory = field("guest_memory") ?? 0
        XCTAssertEqual(memory, 32 << 20, String(summary), file: file, line: line)
        XCTAssertGreaterThan(sent, 0, String(summary), file: file, line: line)
        // The counter's working set is a few pages: far below what a full migration would send.
        XCTAssertLessThan(sent, memory / 4, String(summary), file: file, line: line)
        XCTAssertGreaterThan(field("managed_pages_moved") ?? 0, 0, String(summary), file: file, line: line)
        // The VM finished on the other nodes; the evacuated node said it left and exited 0.
        XCTAssertEqual(e.vm.status, 0, e.vm.output, file: file, line: line)
        XCTAssertTrue(e.vm.output.contains("node \(node) left the cluster (evacuated)"), e.vm.output, file: file, line: line)
        XCTAssertFalse(e.vm.output.contains("lost node \(node)"), e.vm.output, file: file, line: line)
    }

    func testCounterExactWhileNodeOneOfTwoIsEvacuated() throws {
        let e = try evacuateMidRun(port: 24100, metricsPort: 24190, vcpus: [2, 2], cmdline: "counter iters=150000000 timeout=80", node: 1)
        assertLeft(e, node: 1, vcpus: 2)
        XCTAssertTrue(e.result.hasPrefix(#"{"workload":"counter","vcpus":4,"expected":600000000,"total":600000000,"#), e.result)
    }

    func testCounterExactWhileNodeTwoOfThreeIsEvacuated() throws {
        let e = try evacuateMidRun(port: 24110, metricsPort: 24180, vcpus: [2, 1, 1], cmdline: "counter iters=150000000 timeout=80", node: 2)
        assertLeft(e, node: 2, vcpus: 1)
        XCTAssertTrue(e.result.hasPrefix(#"{"workload":"counter","vcpus":4,"expected":600000000,"total":600000000,"#), e.result)
    }

    func testLitmusWhileNodeTwoOfThreeIsEvacuated() throws {
        let e = try evacuateMidRun(port: 24120, metricsPort: 24170, vcpus: [2, 1, 1], cmdline: "litmus trials=150 timeout=80", node: 2)
        assertLeft(e, node: 2, vcpus: 1)
        XCTAssertTrue(e.result.contains(#""forbidden":0"#) && !e.result.contains(#""forbidden":1"#), e.result)
        XCTAssertTrue(e.result.hasSuffix(#""ok":true}"#), e.result)
    }

    /// The UART (the guest's console) and port 0x92 homed on the node: their homes move to node
    /// 0 with their state (ABI 4 save_state/load_state), every node reroutes their ports, the
    /// node leaves and the guest's output carries on from node 0: its RESULT line is exact.
    func testUARTHomedOnTheNodeMovesWithItAndTheConsoleCarriesOn() throws {
        let e = try evacuateMidRun(port: 24300, metricsPort: 24390, vcpus: [2, 2], cmdline: "counter iters=150000000 timeout=80",
                                   node: 1, uartNode: 1, resultNode: 0, extraDevice: "{name: a20, model: port92, node: 1}")
        assertLeft(e, node: 1, vcpus: 2)
        XCTAssertTrue(e.evacuate.stdout.contains("device_homes_moved=2 "), e.evacuate.output)
        XCTAssertTrue(e.vm.output.contains("node 1: device home(s) com1, a20 moved to node 0 (14 state bytes"), e.vm.output)
        // The guest's first lines came from node 1's UART, its result from node 0's.
        XCTAssertFalse(lines(e.vm.stdout, "[node 1] guest: workload=counter").isEmpty, e.vm.output)
        XCTAssertTrue(e.result.hasPrefix(#"{"workload":"counter","vcpus":4,"expected":600000000,"total":600000000,"#), e.vm.output)
        XCTAssertTrue(lines(e.vm.stdout, "[node 1] RESULT ").isEmpty, e.vm.output)
    }

    /// A device without a state transfer homed on the node (irq-lines, beside the movable UART):
    /// its vCPUs move, the node stays (refusal naming that device only, nothing moved), the guest
    /// finishes exact on the UART's unchanged home.
    func testDeviceWithoutStateTransferRefusesTheLeaveNamingIt() throws {
        let e = try evacuateMidRun(port: 24130, metricsPort: 24160, vcpus: [2, 2], cmdline: "counter iters=100000000 timeout=80",
                                   node: 1, uartNode: 1, extraDevice: "{name: lines, model: irq-lines, node: 1}")
        XCTAssertEqual(e.evacuate.status, 1, e.evacuate.output)
        XCTAssertTrue(e.evacuate.stdout.contains("ok vcpu=2 ") && e.evacuate.stdout.contains("ok vcpu=3 "), e.evacuate.output)
        XCTAssertTrue(e.evacuate.stdout.contains("the node cannot leave: failed: device(s) 'lines' (irq-lines) homed on node 1 cannot move: "
                                                 + "their model offers no state transfer"), e.evacuate.output)
        XCTAssertFalse(e.evacuate.stdout.contains("'com1'"), e.evacuate.output)
        XCTAssertEqual(e.vm.status, 0, e.vm.output)
        XCTAssertTrue(e.result.hasPrefix(#"{"workload":"counter","vcpus":4,"expected":400000000,"total":400000000,"#), e.result)
    }

    /// A coherence plugin without the drain hook (dsm-tso): the vCPUs move, the node stays.
    func testProtocolWithoutDrainHookRefusesTheLeave() throws {
        let e = try evacuateMidRun(port: 24140, metricsPort: 24150, vcpus: [2, 2], cmdline: "counter iters=100000000 timeout=80",
                                   node: 1, coherence: "dsm-tso")
        XCTAssertEqual(e.evacuate.status, 1, e.evacuate.output)
        XCTAssertTrue(e.evacuate.stdout.contains("ok vcpu=2 ") && e.evacuate.stdout.contains("ok vcpu=3 "), e.evacuate.output)
        XCTAssertTrue(e.evacuate.stdout.contains("coherence plugin 'dsm-tso' has no drain hook"), e.evacuate.output)
        XCTAssertEqual(e.vm.status, 0, e.vm.output)
        XCTAssertTrue(e.result.hasPrefix(#"{"workload":"counter","vcpus":4,"expected":400000000,"total":400000000,"#), e.result)
    }

    /// Node 1 killed while node 2 moves its UART's home to node 0 (node 1's DEVICE_ROUTE_ACK to
    /// node 2 is delayed 3 s by the transport's fault injection, so the routing switch is surely
    /// under way): every node still running stops with a named error, none says it left.
    func testNodeKilledDuringDeviceMoveStopsEveryNode() throws {
        let cfg = try config(port: 24310, metricsPort: 24380, vcpus: [2, 1, 1], cmdline: "counter iters=1000000000 timeout=60", uartNode: 2)
        let slowAck = "transport: {plugin: transport-tcp, faults: {rules: [{channel: io, type: 11, from: 1, to: 2, action: delay, delay: 3s}]}}"
        let text = try String(contentsOfFile: cfg, encoding: .utf8).replacingOccurrences(of: "transport: {plugin: transport-tcp}", with: slowAck)
        try text.write(toFile: cfg, atomically: true, encoding: .utf8)
        let nodes = try (0..<3).map { try Child(Built.giantvm, ["node", "--config", cfg, "--id", "\($0)", "--timeout", "60"]) }
        defer { for n in nodes { n.signal(SIGKILL) } }
        XCTAssertTrue(nodes[2].waitForOutput(timeout: 30) { $0.contains("guest: workload=counter") }, nodes[2].stdoutSoFar + nodes[2].stderrSoFar)
        let evacuate = try Child(Built.giantvm, ["evacuate", cfg, "--node", "2"])
        defer { evacuate.signal(SIGKILL) }
        XCTAssertTrue(evacuate.waitForOutput(timeout: 30) { $0.contains("ok vcpu=3 ") }, evacuate.stdoutSoFar + evacuate.stderrSoFar)
        usleep(500_000)
        nodes[1].signal(SIGKILL)
        for i in [0, 2] {
            let r = nodes[i].wait(timeout: 25)
            XCTAssertFalse(r.timedOut, "node \(i) did not stop after node 1 died: \(r.output)")
            XCTAssertNotEqual(r.status, 0, r.output)
            XCTAssertTrue(r.stderr.contains("lost node 1"), r.output)
            XCTAssertFalse(r.output.contains("left the cluster"), r.output)
        }
        let e = evacuate.wait(timeout: 100)
        XCTAssertFalse(e.timedOut, "giantvm evacuate hung: \(e.output)")
        XCTAssertNotEqual(e.status, 0, e.output)
        XCTAssertTrue(e.output.contains("cannot leave: moving the home of device(s) 'com1' to node 0 failed"), e.output)
        _ = nodes[1].wait(timeout: 5)
    }

    /// Node 1 killed while node 2 drains (node 1's PrepareAck to node 2 is delayed 3 s by the
    /// transport's fault injection, so the drain is surely under way): every node still running
    /// stops with a named error ("lost node 1"), and `giantvm evacuate` fails instead of hanging.
    func testNodeKilledDuringEvacuationStopsEveryNode() throws {
        let cfg = try config(port: 24200, metricsPort: 24290, vcpus: [2, 1, 1], cmdline: "counter iters=1000000000 timeout=60")
        let slowAck = "transport: {plugin: transport-tcp, faults: {rules: [{channel: coherence, type: 19, from: 1, to: 2, action: delay, delay: 3s}]}}"
        let text = try String(contentsOfFile: cfg, encoding: .utf8).replacingOccurrences(of: "transport: {plugin: transport-tcp}", with: slowAck)
        try text.write(toFile: cfg, atomically: true, encoding: .utf8)
        let nodes = try (0..<3).map { try Child(Built.giantvm, ["node", "--config", cfg, "--id", "\($0)", "--timeout", "60"]) }
        defer { for n in nodes { n.signal(SIGKILL) } }
        XCTAssertTrue(nodes[0].waitForOutput(timeout: 30) { $0.contains("guest: workload=counter") }, nodes[0].stdoutSoFar + nodes[0].stderrSoFar)
        let evacuate = try Child(Built.giantvm, ["evacuate", cfg, "--node", "2"])
        defer { evacuate.signal(SIGKILL) }
        // Once node 2's vCPU moved, its drain starts and waits for node 1's delayed ack: kill node 1 then.
        XCTAssertTrue(evacuate.waitForOutput(timeout: 30) { $0.contains("ok vcpu=3 ") }, evacuate.stdoutSoFar + evacuate.stderrSoFar)
        usleep(500_000)
        nodes[1].signal(SIGKILL)
        let started = Date()
        let r0 = nodes[0].wait(timeout: 25)
        XCTAssertFalse(r0.timedOut, "node 0 did not stop after node 1 died: \(r0.output)")
        XCTAssertNotEqual(r0.status, 0, r0.output)
        XCTAssertTrue(r0.stderr.contains("lost node 1"), r0.output)
        let r2 = nodes[2].wait(timeout: 25)
        XCTAssertFalse(r2.timedOut, "node 2 did not stop: \(r2.output)")
        XCTAssertNotEqual(r2.status, 0, r2.output)
        XCTAssertTrue(r2.stderr.contains("lost node 1"), r2.output)
        XCTAssertFalse(r2.output.contains("left the cluster"), r2.output)
        XCTAssertLessThan(Date().timeIntervalSince(started), 40)
        let e = evacuate.wait(timeout: 100)
        XCTAssertFalse(e.timedOut, "giantvm evacuate hung: \(e.output)")
        XCTAssertNotEqual(e.status, 0, e.output)
        XCTAssertTrue(e.output.contains("cannot leave"), e.output)
        _ = nodes[1].wait(timeout: 5)
    }
}
