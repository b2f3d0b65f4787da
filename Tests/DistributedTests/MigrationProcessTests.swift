// Live vCPU migration (docs/migration.md) over real `giantvm` node processes: real KVM, dsm-ivy
// over userfaultfd, TCP on loopback, the test guest. While a workload runs, `giantvm migrate`
// moves one vCPU back and forth (2 nodes) or round the ring (3 nodes) through the nodes' control
// endpoints; the guest's results must be exact, the moved vCPU's timer must keep ticking, and a
// node lost during the moves must stop every node with a named error. Every wait is bounded.

import Foundation
import TestSupport
import XCTest

final class MigrationProcessTests: XCTestCase {
    override func setUpWithError() throws {
        try Requirement.testGuestVM()
    }

    struct Run {
        var output: String
        var status: Int32
        var result: String
        /// `giantvm migrate` answers ("ok vcpu=..." lines) in order.
        var answers: [String]
    }

    /// A config of `vcpus` nodes with a metrics (and control) listener at `metricsPort + id`.
    func config(port: Int, metricsPort: Int, vcpus: [Int], cmdline: String) throws -> String {
        let cfg = vmConfig(port: port, vcpus: vcpus, cmdline: cmdline)
        let text = try String(contentsOfFile: cfg, encoding: .utf8) + "\nmetrics: {address: 127.0.0.1, port: \(metricsPort)}\n"
        try text.write(toFile: cfg, atomically: true, encoding: .utf8)
        return cfg
    }

    /// Runs the VM with `giantvm up` and moves `vcpu` to `targets[i % count]`, `moves` times,
    /// asking node `i % nodes` each time; returns once the VM stopped.
    func run(port: Int, metricsPort: Int, vcpus: [Int], cmdline: String, vcpu: Int, targets: [Int], moves: Int,
             timeout: Int = 60) throws -> Run {
        let cfg = try config(port: port, metricsPort: metricsPort, vcpus: vcpus, cmdline: cmdline)
        let up = try Child(Built.giantvm, ["up", cfg, "--timeout", "\(timeout)"])
        defer { up.signal(SIGKILL) }
        XCTAssertTrue(up.waitForOutput(timeout: 30) { $0.contains("guest: workload=") }, up.stdoutSoFar + up.stderrSoFar)
        var answers: [String] = []
        for i in 0..<moves where up.process.isRunning {
            let to = targets[i % targets.count]
            let r = try giantvm(["migrate", cfg, "--vcpu", "\(vcpu)", "--to", "\(to)", "--via", "\(i % vcpus.count)"], timeout: 30)
            if !up.process.isRunning || up.stdoutSoFar.contains("SUMMARY") { break }   // the guest finished first
            XCTAssertEqual(r.status, 0, r.output)
            XCTAssertTrue(r.stdout.hasPrefix("ok vcpu=\(vcpu) to=\(to) "), r.output)
            answers.append(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines))
        }
        let r = up.wait(timeout: Double(timeout + 20))
        XCTAssertFalse(r.timedOut, r.output)
        let result = lines(r.stdout, "[node 0] RESULT ").first ?? ""
        return Run(output: r.output, status: r.status, result: result, answers: answers)
    }

    /// Each answer moved the vCPU (to a different node than before), with a pause and the state's size.
    func assertMoved(_ run: Run, atLeast n: Int, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertGreaterThanOrEqual(run.answers.count, n, "too few moves before the guest finished: \(run.answers)", file: file, line: line)
        for a in run.answers {
            XCTAssertTrue(a.contains(" moved from node "), a, file: file, line: line)
            let bytes = a.split(separator: " ").first { $0.hasPrefix("state_bytes=") }.flatMap { Int($0.dropFirst(12).dropLast()) } ?? 0
            XCTAssertGreaterThan(bytes, 4096, "registers + XSAVE area + APIC: \(a)", file: file, line: line)
            let pause = a.split(separator: " ").first { $0.hasPrefix("pause_ns=") }.flatMap { UInt64($0.dropFirst(9)) } ?? 0
            XCTAssertGreaterThan(pause, 0, a, file: file, line: line)
            XCTAssertLessThan(pause, 5_000_000_000, a, file: file, line: line)
        }
        XCTAssertTrue(run.output.contains("migration: departed="), run.output, file: file, line: line)
    }

    func assertOK(_ run: Run, prefix: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(run.status, 0, run.output, file: file, line: line)
        XCTAssertTrue(run.result.hasPrefix(prefix), run.result, file: file, line: line)
        XCTAssertTrue(run.result.hasSuffix(#""ok":true}"#), run.result, file: file, line: line)
    }

    // ---- counter, ipi, litmus with a vCPU moving, on 2 and 3 nodes ------------------------------

    func testCounterExactWithVCPUMovedBackAndForthOnTwoNodes() throws {
        let r = try run(port: 23700, metricsPort: 23790, vcpus: [2, 2], cmdline: "counter iters=100000000 timeout=60",
                        vcpu: 1, targets: [1, 0], moves: 12)
        assertOK(r, prefix: #"{"workload":"counter","vcpus":4,"expected":400000000,"total":400000000,"#)
        assertMoved(r, atLeast: 6)
    }

    func testCounterExactWithVCPUMovedRoundThreeNodes() throws {
        let r = try run(port: 23710, metricsPort: 23780, vcpus: [2, 1, 1], cmdline: "counter iters=100000000 timeout=60",
                        vcpu: 1, targets: [1, 2, 0], moves: 12)
        assertOK(r, prefix: #"{"workload":"counter","vcpus":4,"expected":400000000,"total":400000000,"#)
        assertMoved(r, atLeast: 6)
    }

    /// Every IPI counted once per sender by the guest: none lost, none twice, while the vCPU
    /// that sends and receives them moves. Its departures often come at an exit KVM completes
    /// only at the next KVM_RUN (the APIC's ICR read, an EOI write): the run loop must let KVM
    /// finish it before capturing, else the state is an unfinished instruction's and the copy
    /// left behind completes the old read over the vCPU when it comes back (a lost IPI, or a #PF
    /// at the kernel RIP after that read under a user CS). VCPUUnfinishedExitTests pin it down.
    func testIPIExactWithVCPUMovedOnTwoNodes() throws {
        let r = try run(port: 23720, metricsPort: 23770, vcpus: [2, 2], cmdline: "ipi ipis=400 timeout=60",
                        vcpu: 1, targets: [1, 0], moves: 12)
        assertOK(r, prefix: #"{"workload":"ipi","vcpus":4,"per_pair":400,"expected":4800,"total":4800,"#)
        assertMoved(r, atLeast: 6)
    }

    func testIPIExactWithVCPUMovedRoundThreeNodes() throws {
        let r = try run(port: 23730, metricsPort: 23760, vcpus: [2, 1, 1], cmdline: "ipi ipis=300 timeout=60",
                        vcpu: 1, targets: [1, 2, 0], moves: 12)
        assertOK(r, prefix: #"{"workload":"ipi","vcpus":4,"per_pair":300,"expected":3600,"total":3600,"#)
        assertMoved(r, atLeast: 6)
    }

    func testLitmusWithVCPUMovedOnTwoAndThreeNodes() throws {
        for (i, vcpus) in [[2, 2], [2, 1, 1]].enumerated() {
            let r = try run(port: 23740 + 10 * i, metricsPort: 23750 - 10 * i, vcpus: vcpus, cmdline: "litmus trials=120 timeout=60",
                            vcpu: 1, targets: Array(1..<vcpus.count) + [0], moves: 10)
            XCTAssertEqual(r.status, 0, r.output)
            XCTAssertTrue(r.result.contains(#""forbidden":0"#) && !r.result.contains(#""forbidden":1"#), r.result)
            XCTAssertTrue(r.result.hasSuffix(#""ok":true}"#), r.result)
            assertMoved(r, atLeast: 4)
        }
    }

    /// examples/pingpong-colocate.yaml as docs/migration.md runs it (its A/B against
    /// pingpong-static.yaml): co-locate gathers the pingpong pair on node 0 with one move of
    /// vCPU 1, and every hand-off is counted exactly once.
    func testCoLocateExampleGathersThePingpongPairOnOneNode() throws {
        let r = try giantvm(["up", Built.packageRoot + "/examples/pingpong-colocate.yaml", "--cmdline", "pingpong iters=300 timeout=60",
                             "--timeout", "60"], timeout: 80)
        XCTAssertEqual(r.status, 0, r.output)
        let result = lines(r.stdout, "[node 0] RESULT ").first ?? ""
        XCTAssertTrue(result.hasPrefix(#"{"workload":"pingpong","vcpus":2,"pairs":1,"expected":600,"total":600,"#), result)
        XCTAssertTrue(result.hasSuffix(#""ok":true}"#), result)
        XCTAssertTrue(r.stdout.contains("node 1: migration: departed=1 arrived=0 "), r.output)
        XCTAssertTrue(r.stdout.contains("node 0: migration: departed=0 arrived=1 state_bytes=0; resident now: 0,1"), r.output)
    }

    /// The moved vCPU's APIC timer keeps ticking: its tick count over the spin is of the order of
    /// the vCPUs that stayed (a timer lost in a move would stop at once).
    func testTimerTicksContinueOnTheMovedVCPU() throws {
        let r = try run(port: 23800, metricsPort: 23890, vcpus: [2, 2], cmdline: "ticks seconds=4",
                        vcpu: 1, targets: [1, 0], moves: 10)
        assertOK(r, prefix: #"{"workload":"ticks","vcpus":4,"seconds":4,"#)
        assertMoved(r, atLeast: 5)
        guard let open = r.result.range(of: #""per_vcpu":["#), let close = r.result[open.upperBound...].firstIndex(of: "]") else {
            return XCTFail(r.result)
        }
        let ticks = r.result[open.upperBound..<close].split(separator: ",").compactMap { Int($0) }
        XCTAssertEqual(ticks.count, 4, r.result)
        guard ticks.count == 4 else { return }
        let others = [ticks[0], ticks[2], ticks[3]].sorted()
        XCTAssertGreaterThanOrEqual(Double(ticks[1]), 0.4 * Double(others[1]), "moved vCPU 1 vs the others: \(ticks)")
    }

    /// `giantvm evacuate --vcpus-only` moves every vCPU off a node, the BSP's included, while the guest runs:
    /// node 0 (BSP, devices) first, then node 1, which ends with none; the result stays exact.
    func testEvacuateMovesEveryVCPUOffANode() throws {
        let cfg = try config(port: 23850, metricsPort: 23900, vcpus: [2, 1, 1], cmdline: "counter iters=150000000 timeout=90")
        let up = try Child(Built.giantvm, ["up", cfg, "--timeout", "90"])
        defer { up.signal(SIGKILL) }
        XCTAssertTrue(up.waitForOutput(timeout: 30) { $0.contains("guest: workload=counter") }, up.stdoutSoFar + up.stderrSoFar)
        let e0 = try giantvm(["evacuate", cfg, "--node", "0", "--vcpus-only"], timeout: 60)
        XCTAssertEqual(e0.status, 0, e0.output)
        XCTAssertTrue(e0.stdout.contains("ok vcpu=0 to=1 ") && e0.stdout.contains("ok vcpu=1 to=2 "), e0.output)
        XCTAssertTrue(e0.stdout.contains("evacuate: node 0: 2 vCPU(s) asked to move, all moved"), e0.output)
        let e1 = try giantvm(["evacuate", cfg, "--node", "1", "--vcpus-only"], timeout: 60)
        XCTAssertEqual(e1.status, 0, e1.output)
        XCTAssertTrue(e1.stdout.contains("evacuate: node 1: 2 vCPU(s) asked to move, all moved"), e1.output)
        let r = up.wait(timeout: 100)
        XCTAssertFalse(r.timedOut, r.output)
        XCTAssertEqual(r.status, 0, r.output)
        let result = lines(r.stdout, "[node 0] RESULT ").first ?? ""
        XCTAssertTrue(result.hasPrefix(#"{"workload":"counter","vcpus":4,"expected":600000000,"total":600000000,"#), result)
        XCTAssertTrue(r.stdout.contains("node 1: migration: departed=2 arrived=1 state_bytes=") && r.stdout.contains("resident now: \n"), r.stdout)
    }

    // ---- failures ---------------------------------------------------------------------------

    /// A node killed while a vCPU moves between it and the others: every other node stops with a
    /// named error, and `giantvm migrate` answers (fails) instead of hanging.
    func testNodeLostDuringMigrationsStopsEveryNode() throws {
        let cfg = try config(port: 23810, metricsPort: 23880, vcpus: [2, 1, 1], cmdline: "counter iters=1000000000 timeout=60")
        let nodes = try (0..<3).map { try Child(Built.giantvm, ["node", "--config", cfg, "--id", "\($0)", "--timeout", "60"]) }
        defer { for n in nodes { n.signal(SIGKILL) } }
        XCTAssertTrue(nodes[0].waitForOutput(timeout: 30) { $0.contains("guest: workload=counter") }, nodes[0].stdoutSoFar + nodes[0].stderrSoFar)
        for to in [1, 0, 1] {
            let r = try giantvm(["migrate", cfg, "--vcpu", "1", "--to", "\(to)"], timeout: 30)
            XCTAssertEqual(r.status, 0, r.output)
        }
        // vCPU 1 now runs on node 1; kill node 1 while the next move is on its way.
        let mover = try Child(Built.giantvm, ["migrate", cfg, "--vcpu", "1", "--to", "2", "--via", "0"])
        nodes[1].signal(SIGKILL)
        let started = Date()
        for id in [0, 2] {
            let r = nodes[id].wait(timeout: 25)
            XCTAssertFalse(r.timedOut, "node \(id) did not stop after node 1 died: \(r.output)")
            XCTAssertNotEqual(r.status, 0, r.output)
            // Its own detection, or node 2's reaching it first ("node 2 failed: lost node 1").
            XCTAssertTrue(r.stderr.contains("giantvm: error: node \(id): ") && r.stderr.contains("lost node 1"), r.output)
        }
        XCTAssertLessThan(Date().timeIntervalSince(started), 25)
        let m = mover.wait(timeout: 25)
        XCTAssertFalse(m.timedOut, "giantvm migrate hung: \(m.output)")
        _ = nodes[1].wait(timeout: 5)
    }

    /// With a cluster key, the control endpoint takes only requests signed with it: an unsigned or
    /// wrongly signed POST is refused (403) and the vCPU stays; `giantvm migrate` signs and moves it.
    func testKeyedClusterTakesOnlySignedRequests() throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/curl") else { throw XCTSkip("curl is not installed: run scripts/deps/tmux.sh") }
        let key = temporaryFile("0123456789abcdef0123456789abcdef\n", name: "cluster.key")
        chmod(key, 0o600)
        let cfg = try config(port: 23840, metricsPort: 23860, vcpus: [2, 2], cmdline: "counter iters=1000000000 timeout=60")
        try (try String(contentsOfFile: cfg, encoding: .utf8) + "key_file: \(key)\n").write(toFile: cfg, atomically: true, encoding: .utf8)
        let up = try Child(Built.giantvm, ["up", cfg, "--timeout", "40"])
        defer { up.signal(SIGKILL) }
        XCTAssertTrue(up.waitForOutput(timeout: 30) { $0.contains("guest: workload=counter") }, up.stdoutSoFar + up.stderrSoFar)
        func post(_ path: String) throws -> String {
            try TestSupport.run("/usr/bin/curl", ["-sS", "--max-time", "10", "-X", "POST", "-w", " %{http_code}", "http://127.0.0.1:23860\(path)"],
                                timeout: 15).stdout
        }
        let unsigned = try post("/migrate?vcpu=1&to=1")
        XCTAssertTrue(unsigned.hasSuffix(" 403") && unsigned.contains("needs t= and mac="), unsigned)
        let t = Int(Date().timeIntervalSince1970)
        let forged = try post("/migrate?vcpu=1&to=1&t=\(t)&mac=\(String(repeating: "ab", count: 32))")
        XCTAssertTrue(forged.hasSuffix(" 403") && forged.contains("wrong MAC"), forged)
        let r = try giantvm(["migrate", cfg, "--vcpu", "1", "--to", "1"], timeout: 30)
        XCTAssertEqual(r.status, 0, r.output)
        XCTAssertTrue(r.stdout.hasPrefix("ok vcpu=1 to=1 ") && r.stdout.contains("moved from node 0 to node 1"), r.output)
        up.signal(SIGINT)
        _ = up.wait(timeout: 20)
    }

    /// Requests the VM cannot take are refused with the reason, before any node is asked.
    func testMigrateRejectsBadRequests() throws {
        let cfg = try config(port: 23820, metricsPort: 23870, vcpus: [2, 2], cmdline: "hello")
        let r1 = try giantvm(["migrate", cfg, "--vcpu", "9", "--to", "1"])
        XCTAssertEqual(r1.status, 1, r1.output)
        XCTAssertTrue(r1.stderr.contains("--vcpu 9: the VM has vCPUs 0-3"), r1.stderr)
        let r2 = try giantvm(["migrate", cfg, "--vcpu", "1", "--to", "5"])
        XCTAssertEqual(r2.status, 1, r2.output)
        XCTAssertTrue(r2.stderr.contains("--to 5: the VM has nodes 0-1"), r2.stderr)
        let r3 = try giantvm(["migrate", cfg, "--vcpu", "1", "--to", "1"])   // no VM running
        XCTAssertEqual(r3.status, 1, r3.output)
        XCTAssertTrue(r3.stderr.contains("node 0 (127.0.0.1:23870): control endpoint unreachable"), r3.stderr)
        let plain = vmConfig(port: 23830)
        let r4 = try giantvm(["migrate", plain, "--vcpu", "1", "--to", "1"])
        XCTAssertEqual(r4.status, 1, r4.output)
        XCTAssertTrue(r4.stderr.contains("no `metrics:` section"), r4.stderr)
    }
}
