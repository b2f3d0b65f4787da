// dsm-tso under a real VM: `giantvm up` with real node processes, KVM, userfaultfd and TCP, the
// test guest's relaxed-memory workloads (Guests/src/u_tso.c), which declare their range through
// the coherence-hint device and check their own results exactly. Ports 22100-22199.

import Foundation
import TestSupport
import XCTest

/// A VM config for dsm-tso (or another protocol) with the coherence-hint device on node 0.
func tsoVMConfig(port: Int, vcpus: [Int], coherence: String = "{plugin: dsm-tso}", cmdline: String) -> String {
    let image = Built.packageRoot + "/Guests/build/testguest.elf"
    var nodes = ""
    for (i, n) in vcpus.enumerated() { nodes += "  - {id: \(i), address: 127.0.0.1, port: \(port + i), vcpus: \(n)}\n" }
    return temporaryFile("""
        cluster: tsotest
        nodes:
        \(nodes)
        memory: 32MiB
        transport: {plugin: transport-tcp}
        coherence: \(coherence)
        devices:
          - {name: com1, model: uart16550, node: 0, base: 0x3f8, irq: 4}
          - {name: exit, model: isa-debug-exit, node: 0, base: 0xf4}
          - {name: results, model: results, node: 0, base: 0xe0}
          - {name: hints, model: coherence-hint, node: 0, base: 0x580}
        ioapic_node: 0
        timeouts: {connect: 10s, heartbeat: 100ms, failure: 2s}
        guest:
          image: \(image)
          cmdline: "\(cmdline)"
        """)
}

/// The guest's RESULT line (node 0 holds the UART).
func resultLine(_ r: ProcessResult) -> String {
    r.stdout.split(separator: "\n").map(String.init).first { $0.hasPrefix("[node 0] RESULT ") }.map { String($0.dropFirst(16)) } ?? ""
}

final class TSOVMTests: XCTestCase {
    override func setUpWithError() throws { try Requirement.testGuestVM() }

    func up(_ config: String, timeout: Double = 60) throws -> ProcessResult {
        try giantvm(["up", config, "--timeout", "\(Int(timeout - 10))", "--stats"], timeout: timeout)
    }

    func testFalseShareExactOnOneAndTwoNodes() throws {
        for (i, shape) in [[2], [1, 1], [2, 2]].enumerated() {
            let n = shape.reduce(0, +)
            let r = try up(tsoVMConfig(port: 22100 + 4 * i, vcpus: shape, cmdline: "falseshare iters=200000"))
            XCTAssertEqual(r.status, 0, "\(shape): \(r.output)")
            let res = resultLine(r)
            XCTAssertTrue(res.hasPrefix(#"{"workload":"falseshare","vcpus":\#(n),"relaxed":true,"expected":\#(200000 * n),"total":\#(200000 * n),"#), "\(shape): \(res)\n\(r.output)")
            XCTAssertTrue(res.hasSuffix(#""ok":true}"#), res)
            if shape.count > 1 {
                XCTAssertTrue(r.stdout.contains("diffs_made="), "diffs must have travelled: \(r.output)")
            }
        }
    }

    func testRelaxedMutexExactOnTwoNodes() throws {
        let r = try up(tsoVMConfig(port: 22120, vcpus: [2, 2], cmdline: "rmutex ops=3000"))
        XCTAssertEqual(r.status, 0, r.output)
        let res = resultLine(r)
        XCTAssertTrue(res.hasPrefix(#"{"workload":"rmutex","vcpus":4,"relaxed":true,"expected":12000,"total":12000,"torn":0,"#), "\(res)\n\(r.output)")
        XCTAssertTrue(res.hasSuffix(#""ok":true}"#), res)
    }

    /// The guest's litmus RESULT as JSON, its tests checked: every test ran groups x trials
    /// trials; returns the tests by name.
    func litmusTests(_ r: ProcessResult, trials: Int, file: StaticString = #filePath, line: UInt = #line) throws -> [String: [String: Any]] {
        let res = resultLine(r)
        let j = try XCTUnwrap(try? JSONSerialization.jsonObject(with: Data(res.utf8)) as? [String: Any], "no result: \(r.output)", file: file, line: line)
        let tests = try XCTUnwrap(j["tests"] as? [String: [String: Any]], res, file: file, line: line)
        XCTAssertEqual(Set(tests.keys), ["MP", "SB", "LB", "2+2W", "IRIW"], res, file: file, line: line)
        for (name, t) in tests {
            let outcomes = t["outcomes"] as? [String: Int] ?? [:]
            XCTAssertEqual(outcomes.values.reduce(0, +), (t["groups"] as? Int ?? -1) * trials, "\(name): \(res)", file: file, line: line)
        }
        return tests
    }

    /// All memory sc, trials on the shared clock (gap=200: no page moves to start a trial): no
    /// TSO-forbidden outcome under dsm-tso nor dsm-ivy. (scripts/litmus-trials.py runs >= 10,000.)
    func testLitmusAllScHasNoForbiddenOutcomeOnTSOAndIvy() throws {
        for (i, proto) in ["dsm-tso", "dsm-ivy"].enumerated() {
            let r = try up(tsoVMConfig(port: 22160 + 2 * i, vcpus: [2, 2], coherence: "{plugin: \(proto)}", cmdline: "litmus trials=1500 gap=200"), timeout: 90)
            XCTAssertEqual(r.status, 0, r.output)
            let tests = try litmusTests(r, trials: 1500)
            for (name, t) in tests { XCTAssertEqual(t["forbidden"] as? Int, 0, "\(proto) \(name): \(t)") }
            XCTAssertTrue(resultLine(r).hasSuffix(#""forbidden":0,"ok":true}"#), resultLine(r))
            XCTAssertTrue(r.stdout.contains("litmus: IRIW done: 1500 trials, 0 forbidden"), "progress lines: \(r.stdout)")
            print("litmus on 2x2 \(proto):", resultLine(r))
        }
    }

    func testRelaxedLitmusWithFencesHasNoForbiddenOutcome() throws {
        let r = try up(tsoVMConfig(port: 22124, vcpus: [2, 2], cmdline: "rlitmus-fence trials=300 gap=3000"), timeout: 90)
        XCTAssertEqual(r.status, 0, r.output)
        let res = resultLine(r)
        XCTAssertTrue(res.contains(#""relaxed":true"#) && res.contains(#""forbidden":0,"iriw_forbidden":"#), "\(res)\n\(r.output)")
        XCTAssertTrue(res.hasSuffix(#""ok":true}"#), res)
        let tests = try litmusTests(r, trials: 300)
        XCTAssertNil((tests["SB"]?["outcomes"] as? [String: Int])?["00"], "a fence between SB's store and load forbids 00: \(res)")
        print("rlitmus-fence on 2x2 dsm-tso:", res)
    }

    /// Without fences, with nothing but the test's own accesses between trials (gap=200), relaxed
    /// memory shows what it buffers: SB's 00 (x86-TSO's store buffer; forbidden under SC) appears.
    /// TSO-forbidden outcomes are counted and reported, not failed.
    func testRelaxedLitmusWithoutFencesIsReported() throws {
        let r = try up(tsoVMConfig(port: 22128, vcpus: [2, 2], cmdline: "rlitmus trials=1500 gap=200"), timeout: 90)
        XCTAssertEqual(r.status, 0, r.output)
        let res = resultLine(r)
        XCTAssertTrue(res.contains(#""relaxed":true"#) && res.contains(#""forbidden":"#), "\(res)\n\(r.output)")
        let tests = try litmusTests(r, trials: 1500)
        XCTAssertGreaterThan((tests["SB"]?["outcomes"] as? [String: Int])?["00"] ?? 0, 0, "relaxed stores were never buffered: \(res)")
        print("rlitmus (no fences) on 2x2 dsm-tso:", res)
    }

    /// relaxed_start: sc — the counters' page starts under Ivy and switches to mw once both nodes
    /// write it; the counts stay exact.
    func testFalseSharePageSwitchesFromScToMw() throws {
        let r = try up(tsoVMConfig(port: 22136, vcpus: [1, 1], coherence: "{plugin: dsm-tso, settings: {relaxed_start: sc, switch_after: 2}}",
                                   cmdline: "falseshare iters=100000000"))
        XCTAssertEqual(r.status, 0, r.output)
        let res = resultLine(r)
        XCTAssertTrue(res.hasPrefix(#"{"workload":"falseshare","vcpus":2,"relaxed":true,"expected":200000000,"total":200000000,"#), "\(res)\n\(r.output)")
        let switched = r.output.split(separator: "\n").filter { $0.contains("tso.class_switch.to_mw") && !$0.hasSuffix(" 0") }
        XCTAssertEqual(switched.count, 2, "both nodes must have switched the page: \(r.output)")
    }

    /// switch_back_after: 2 — pages go back and forth between sc and mw while locks hand the data
    /// over and counters are shared; every result stays exact.
    func testPagesSwitchBackAndForthAndStayExact() throws {
        let c = "{plugin: dsm-tso, settings: {relaxed_start: sc, switch_after: 2, switch_back_after: 2}}"
        var back = 0
        for (i, w) in ["rmutex ops=4000", "falseshare iters=50000000"].enumerated() {
            let r = try up(tsoVMConfig(port: 22144 + 2 * i, vcpus: [2, 2], coherence: c, cmdline: w))
            XCTAssertEqual(r.status, 0, r.output)
            let res = resultLine(r)
            XCTAssertTrue(res.contains(#""relaxed":true"#) && res.hasSuffix(#""ok":true}"#), "\(w): \(res)\n\(r.output)")
            back += r.output.split(separator: "\n").filter { $0.contains("tso.class_switch.to_sc") && !$0.hasSuffix(" 0") }.count
        }
        XCTAssertGreaterThan(back, 0, "no page went back to sc")
    }

    /// dsm-ivy takes no hints: the same workload runs on sequentially consistent memory.
    func testIvyIgnoresTheHintAndStaysExact() throws {
        let r = try up(tsoVMConfig(port: 22132, vcpus: [1, 1], coherence: "{plugin: dsm-ivy}", cmdline: "falseshare iters=20000"))
        XCTAssertEqual(r.status, 0, r.output)
        let res = resultLine(r)
        XCTAssertTrue(res.hasPrefix(#"{"workload":"falseshare","vcpus":2,"relaxed":false,"expected":40000,"total":40000,"#), "\(res)\n\(r.output)")
    }

    /// falseshare ms=N: both vCPUs increment during the same interval; the counters in relaxed
    /// memory equal the counts each vCPU kept, and both nodes made progress.
    func testTimedFalseShareCountsEveryIncrementOnBothNodes() throws {
        let r = try up(tsoVMConfig(port: 22176, vcpus: [1, 1], cmdline: "falseshare ms=300"))
        XCTAssertEqual(r.status, 0, r.output)
        let res = resultLine(r)
        guard let data = res.data(using: .utf8), let j = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              let expected = j["expected"] as? Int, let total = j["total"] as? Int, let share = j["min_share"] as? Int,
              let longest = j["longest_us"] as? Int else { return XCTFail("no timed falseshare result: \(res)\n\(r.output)") }
        XCTAssertEqual(j["relaxed"] as? Bool, true, res)
        XCTAssertEqual(j["ok"] as? Bool, true, res)
        XCTAssertEqual(total, expected, res)
        XCTAssertGreaterThan(total, 1_000_000, res)
        XCTAssertGreaterThan(share, 0, "a vCPU made no progress: \(res)")
        XCTAssertGreaterThanOrEqual(longest, 300_000, res)
    }
}

final class TSOKillTests: XCTestCase {
    override func setUpWithError() throws { try Requirement.testGuestVM() }

    /// The pid of the `node --id N` process started from this config, if running.
    func nodePID(config: String, node: Int) -> Int32? {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return nil }
        for e in entries {
            guard let pid = Int32(e), let data = FileManager.default.contents(atPath: "/proc/\(e)/cmdline") else { continue }
            let args = data.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            if args.contains(where: { $0.hasSuffix(config) }), let i = args.firstIndex(of: "--id"), i + 1 < args.count, args[i + 1] == "\(node)" {
                if let stat = try? String(contentsOfFile: "/proc/\(e)/stat", encoding: .utf8), stat.contains(") Z ") { continue }
                return pid
            }
        }
        return nil
    }

    /// A node killed while the other flushes diffs to it (falseshare: both write one mw page,
    /// releases every 50us) stops every node with a named error; nothing hangs.
    func testANodeKilledMidFlushStopsEveryNode() throws {
        let cfg = tsoVMConfig(port: 22140, vcpus: [1, 1], coherence: "{plugin: dsm-tso, settings: {flush_interval: 50us}}",
                              cmdline: "falseshare iters=100000000000")
        let up = try Child(Built.giantvm, ["up", cfg, "--timeout", "60", "--stats"])
        defer { up.signal(SIGKILL) }
        XCTAssertTrue(up.waitForOutput(timeout: 30) { $0.contains("guest: workload=falseshare") }, up.stdoutSoFar + up.stderrSoFar)
        usleep(500_000)
        guard let victim = nodePID(config: cfg, node: 1) else { return XCTFail("node 1 not found:\n\(up.stdoutSoFar)") }
        kill(victim, SIGKILL)
        let t0 = Date()
        let r = up.wait(timeout: 40)
        XCTAssertFalse(r.timedOut, "a node hung after its peer died:\n\(r.output)")
        XCTAssertLessThan(Date().timeIntervalSince(t0), 30)
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.output.contains("lost node 1"), r.output)
        XCTAssertNil(nodePID(config: cfg, node: 0), "node 0 still running")
        print("killed mid-flush:", r.output.split(separator: "\n").filter { $0.contains("error") || $0.contains("lost") }.prefix(6).joined(separator: "\n"))
    }
}

final class TSOExampleTests: XCTestCase {
    override func setUpWithError() throws { try Requirement.testGuestVM() }

    /// examples/vm-2node-tso.yaml does what its comment says (the default workload).
    func testExampleConfig() throws {
        let r = try giantvm(["up", Built.packageRoot + "/examples/vm-2node-tso.yaml", "--timeout", "40"], timeout: 50)
        XCTAssertEqual(r.status, 0, r.output)
        let res = resultLine(r)
        XCTAssertTrue(res.hasPrefix(#"{"workload":"falseshare","vcpus":4,"relaxed":true,"expected":80000000,"total":80000000,"#), "\(res)\n\(r.output)")
    }
}

/// `giantvm bench dsm --workload falseshare`: host threads on every node increment their own
/// word of one page (page 14), with dsm-ivy and with dsm-tso keeping that page relaxed.
final class TSOBenchTests: XCTestCase {
    override func setUpWithError() throws {
        try Requirement.userfaultfd()
        try Requirement.builtGiantVM()
    }

    func bench(_ coherence: String, port: Int) throws -> ProcessResult {
        var y = "cluster: benchtso\nnodes:\n"
        for i in 0..<2 { y += "  - {id: \(i), address: 127.0.0.1, port: \(port + i), vcpus: 1}\n" }
        y += "memory: 16MiB\ntransport: {plugin: transport-tcp}\ncoherence: \(coherence)\n"
        y += "timeouts: {connect: 10s, heartbeat: 200ms, failure: 3s}\n"
        return try giantvm(["bench", "dsm", "--config", temporaryFile(y), "--workload", "falseshare", "--threads", "2",
                            "--iterations", "200000", "--timeout", "50"], timeout: 58)
    }

    func testFalseShareExactWithIvyAndWithTSO() throws {
        for (i, c) in ["{plugin: dsm-ivy}", #"{plugin: dsm-tso, settings: {relaxed: "0xE000:4KiB"}}"#].enumerated() {
            let r = try bench(c, port: 22150 + 4 * i)
            XCTAssertEqual(r.status, 0, r.output)
            XCTAssertTrue(r.stdout.contains("check node 0: falseshare = 800000 (exact)"), r.output)
            XCTAssertTrue(r.stdout.contains("check node 1: falseshare = 800000 (exact)"), r.output)
            XCTAssertTrue(r.stdout.contains("bench dsm falseshare: PASS"), r.output)
            if i == 1 { XCTAssertTrue(r.stdout.contains("dsm-tso release_latency"), "releases must have happened: \(r.output)") }
        }
    }
}
