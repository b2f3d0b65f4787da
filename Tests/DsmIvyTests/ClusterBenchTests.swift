// dsm-ivy across real node processes: `giantvm bench dsm` on 2, 3 and 4 nodes over loopback
// (real userfaultfd, transport-tcp, the built libdsm-ivy.so), each workload checked exactly by
// the nodes themselves, with pages crossing nodes; and a node killed mid-workload stops the rest
// with a clear error instead of hanging. Ports 18200-18399 (this area's range).

import XCTest
import Foundation
import TestSupport

final class ClusterBenchTests: XCTestCase {
    static var nextPort = 18200

    func config(nodes: Int, memory: String = "16MiB", settings: String = "{}", faults: String? = nil) -> String {
        let base = Self.nextPort
        Self.nextPort += 10
        var y = "cluster: ivytest\nnodes:\n"
        for i in 0..<nodes { y += "  - {id: \(i), address: 127.0.0.1, port: \(base + i), vcpus: 1}\n" }
        y += "memory: \(memory)\n"
        if let faults { y += "transport:\n  plugin: transport-tcp\n  faults:\n" + faults }
        else { y += "transport: {plugin: transport-tcp}\n" }
        y += "coherence: {plugin: dsm-ivy, settings: \(settings)}\n"
        y += "timeouts: {connect: 10s, heartbeat: 200ms, failure: 3s}\n"
        return temporaryFile(y)
    }

    override func setUpWithError() throws {
        try Requirement.userfaultfd()
        try Requirement.builtGiantVM()
        for lib in ["dsm-ivy", "transport-tcp", "dsm-local"] where !FileManager.default.fileExists(atPath: Built.plugin(lib)) {
            throw XCTSkip("\(Built.plugin(lib)) is not built: run `swift build` first")
        }
    }

    func bench(_ nodes: Int, _ workload: String, _ extra: [String] = [], settings: String = "{}", faults: String? = nil,
               file: StaticString = #filePath, line: UInt = #line) throws -> (String, [String: Any]) {
        let cfg = config(nodes: nodes, settings: settings, faults: faults)
        let stats = cfg + ".stats.json"
        let r = try giantvm(["bench", "dsm", "--config", cfg, "--workload", workload, "--timeout", "50",
                             "--stats-out", stats] + extra, timeout: 58)
        XCTAssertFalse(r.timedOut, "bench dsm \(workload) on \(nodes) nodes hung", file: file, line: line)
        XCTAssertEqual(r.status, 0, "bench dsm \(workload) on \(nodes) nodes:\n\(r.output)", file: file, line: line)
        XCTAssertTrue(r.stdout.contains("bench dsm \(workload): PASS"), r.output, file: file, line: line)
        let json = (try? JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: stats)))) as? [String: Any] ?? [:]
        let crossed = json["pages_crossed"] as? Int ?? 0
        XCTAssertGreaterThan(crossed, 0, "no page crossed nodes:\n\(r.output)", file: file, line: line)
        let perNode = json["per_node"] as? [String: Any] ?? [:]
        XCTAssertEqual(perNode.count, nodes, file: file, line: line)
        return (r.stdout, json)
    }

    func testCounterIsExactOnTwoThreeAndFourNodes() throws {
        for n in 2...4 {
            let (out, json) = try bench(n, "counter", ["--threads", "2", "--iterations", "40"])
            XCTAssertTrue(out.contains("check node 0: counter = \(n * 2 * 40) (exact)"), out)
            XCTAssertTrue(out.contains("check node \(n - 1): counter = \(n * 2 * 40) (exact)"), out)
            let total = json["total"] as? [String: Int] ?? [:]
            XCTAssertGreaterThan(total["ivy.msg.Data"] ?? 0, 0)
        }
    }

    func testLitmusNeverShowsAForbiddenOutcome() throws {
        for n in [2, 4] {
            let (out, json) = try bench(n, "litmus", ["--threads", n == 2 ? "2" : "1", "--iterations", "25"])
            XCTAssertTrue(out.contains("litmus.trials = 125 (exact)"), out)
            let litmus = json["litmus"] as? [String: [String: Int]] ?? [:]
            XCTAssertEqual(Set(litmus.keys), ["MP", "SB", "LB", "2+2W", "IRIW"], out)
            for (name, outcomes) in litmus { XCTAssertEqual(outcomes.values.reduce(0, +), 25, "\(name): \(out)") }
        }
    }

    func testRandomFindsNoLostUpdateOrStaleRead() throws {
        for n in 2...4 {
            let (out, _) = try bench(n, "random", ["--threads", "2", "--iterations", "400", "--seed", "\(n)"],
                                     settings: n == 3 ? "{manager_chunk: 4KiB}" : "{}")
            XCTAssertTrue(out.contains("check node 0: random.adds ="), out)
        }
    }

    func testPingPongAndReadMissReportLatencyBesideTheFloor() throws {
        let (pp, ppJSON) = try bench(2, "pingpong", ["--iterations", "100"])
        XCTAssertTrue(pp.contains("check node 0: pingpong = 200 (exact)"), pp)
        XCTAssertTrue(pp.contains("floor (node 0 <-> node 1, right after the workload): userfaultfd read fault + 24 B request / 4120 B reply"), pp)
        XCTAssertFalse(pp.contains("ratio to floor"), "only read misses are compared with the floor:\n\(pp)")
        XCTAssertEqual((ppJSON["floor"] as? [String: Any])?["interleaved"] as? Bool, false)
        // Read misses one page at a time (read_ahead 0), the floor sampled between them, against
        // the node the pages come from (the last one).
        let (rm, json) = try bench(3, "readmiss", ["--iterations", "4", "--pages", "16", "--threads", "1"], settings: "{read_ahead: 0}")
        XCTAssertTrue(rm.contains("check node 0: readmiss.pages = 64 (exact)"), rm)
        XCTAssertTrue(rm.contains("floor (node 0 <-> node 2, interleaved with the workload's reads)"), rm)
        XCTAssertTrue(rm.contains("read miss (node 0 reads a page the last node wrote, timed by the reading thread): n=64"), rm)
        XCTAssertTrue(rm.contains("p50 ratio to floor"), rm)
        let floor = json["floor"] as? [String: Any] ?? [:]
        XCTAssertEqual(floor["peer"] as? Int, 2)
        XCTAssertEqual(floor["interleaved"] as? Bool, true)
        XCTAssertEqual((floor["latency"] as? [String: Any])?["count"] as? Int, 64, "one floor sample after each read miss")
        XCTAssertGreaterThan(json["read_miss_p50_ratio_to_floor"] as? Double ?? 0, 0)
    }

    /// One thread reads 2048 pages the other node wrote, in order: with read-ahead most arrive
    /// prefetched (few read misses, batched replies), every word still exact; without it,
    /// every page is a read miss.
    func testSequentialRemoteReadGetsPagesPrefetchedAndStaysExact() throws {
        let args = ["--threads", "1", "--iterations", "2", "--pages", "2048"]
        let (on, onJSON) = try bench(2, "seqread", args, settings: "{read_ahead: 16}")
        XCTAssertTrue(on.contains("check node 0: seqread.pages = 4096 (exact)"), on)
        XCTAssertTrue(on.contains("sequential remote read by one thread (node 0): 2048 pages x 2 passes"), on)
        let n0 = ((onJSON["per_node"] as? [String: Any])?["node0"] as? [String: Any])?["counters"] as? [String: Int] ?? [:]
        XCTAssertGreaterThan(n0["ivy.readahead.prefetched"] ?? 0, 3000, on)
        XCTAssertGreaterThan(n0["ivy.readahead.used"] ?? 0, 3000, on)
        // Node 0 manages these pages itself (its batches go through its local queue); node 1,
        // the owner, answers with DataBatch messages.
        let n1 = ((onJSON["per_node"] as? [String: Any])?["node1"] as? [String: Any])?["counters"] as? [String: Int] ?? [:]
        XCTAssertGreaterThan(n1["ivy.msg.DataBatch"] ?? 0, 100, on)
        XCTAssertLessThan(n0["dsm.fault.read_miss"] ?? .max, 1000, on)
        let (off, offJSON) = try bench(2, "seqread", args, settings: "{read_ahead: 0}")
        XCTAssertTrue(off.contains("check node 0: seqread.pages = 4096 (exact)"), off)
        let o0 = ((offJSON["per_node"] as? [String: Any])?["node0"] as? [String: Any])?["counters"] as? [String: Int] ?? [:]
        XCTAssertEqual(o0["ivy.readahead.prefetched"] ?? 0, 0)
        XCTAssertGreaterThanOrEqual(o0["dsm.fault.read_miss"] ?? 0, 4096)
    }

    /// Kill one node in the middle of a long workload: the others must stop with an error naming
    /// the lost node, well within the timeout, never hang on a page.
    func testANodeKilledMidWorkloadStopsTheOthers() throws {
        let cfg = config(nodes: 3)
        // pingpong rounds take a page move each way: 100000 of them outlast the test by far.
        let parent = try Child(Built.giantvm, ["bench", "dsm", "--config", cfg, "--workload", "pingpong",
                                               "--iterations", "100000", "--timeout", "50"])
        defer { parent.signal(SIGKILL) }
        // Wait until the node processes run, then kill node 1.
        var victim: Int32?
        let deadline = Date().addingTimeInterval(20)
        while victim == nil && Date() < deadline {
            usleep(200_000)
            victim = childPID(config: cfg, node: 1)
        }
        guard let victim else { return XCTFail("node 1 never started:\n\(parent.stderrSoFar)") }
        sleep(2)   // well into the workload
        kill(victim, SIGKILL)
        let t0 = Date()
        let r = parent.wait(timeout: 30)
        XCTAssertFalse(r.timedOut, "the cluster hung after node 1 was killed")
        XCTAssertLessThan(Date().timeIntervalSince(t0), 20)
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("node 1") && r.stderr.contains("lost node 1"), r.output)
        for n in [0, 2] { XCTAssertNil(childPID(config: cfg, node: n), "node \(n) still running") }
    }

    /// Killing `bench dsm` itself (SIGKILL: no chance to clean up) stops every node process it
    /// started: each asked the kernel for SIGTERM when its launcher dies.
    func testKillingTheBenchStopsEveryNode() throws {
        let cfg = config(nodes: 3)
        let parent = try Child(Built.giantvm, ["bench", "dsm", "--config", cfg, "--workload", "pingpong",
                                               "--iterations", "100000", "--timeout", "50"])
        defer { parent.signal(SIGKILL) }
        let deadline = Date().addingTimeInterval(20)
        while (0..<3).contains(where: { childPID(config: cfg, node: $0) == nil }) && Date() < deadline { usleep(200_000) }
        XCTAssertTrue((0..<3).allSatisfy { childPID(config: cfg, node: $0) != nil }, "nodes never started:\n\(parent.stderrSoFar)")
        sleep(1)
        parent.signal(SIGKILL)
        _ = parent.wait(timeout: 10)
        let gone = Date().addingTimeInterval(15)
        while (0..<3).contains(where: { childPID(config: cfg, node: $0) != nil }) && Date() < gone { usleep(200_000) }
        for n in 0..<3 { XCTAssertNil(childPID(config: cfg, node: n), "node \(n) still running after its bench was killed") }
    }

    /// A node that hangs (SIGSTOP) while the others stopped is killed by the launcher after the
    /// failure grace, not waited for until --timeout.
    func testAHungNodeIsKilledAfterTheGraceNotAtTheTimeout() throws {
        let cfg = config(nodes: 3)
        let parent = try Child(Built.giantvm, ["bench", "dsm", "--config", cfg, "--workload", "pingpong",
                                               "--iterations", "100000", "--timeout", "120"])
        defer { parent.signal(SIGKILL) }
        var victim: Int32?
        let deadline = Date().addingTimeInterval(20)
        while victim == nil && Date() < deadline { usleep(200_000); victim = childPID(config: cfg, node: 2) }
        guard let victim else { return XCTFail("node 2 never started:\n\(parent.stderrSoFar)") }
        sleep(1)
        kill(victim, SIGSTOP)
        let t0 = Date()
        let r = parent.wait(timeout: 60)
        kill(victim, SIGKILL)
        XCTAssertFalse(r.timedOut, "bench dsm waited for the hung node")
        XCTAssertLessThan(Date().timeIntervalSince(t0), 40, "the grace is timeouts.failure + 5 s, far below --timeout 120")
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("lost node 2"), r.output)
    }

    /// The pid of the `bench dsm --node N` process for this config, if running.
    func childPID(config: String, node: Int) -> Int32? {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return nil }
        for e in entries {
            guard let pid = Int32(e), let data = FileManager.default.contents(atPath: "/proc/\(e)/cmdline") else { continue }
            let args = data.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            if args.contains(config), let i = args.firstIndex(of: "--node"), i + 1 < args.count, args[i + 1] == "\(node)" {
                if let stat = try? String(contentsOfFile: "/proc/\(e)/stat", encoding: .utf8), stat.contains(") Z ") { continue }
                return pid
            }
        }
        return nil
    }

    /// The races of the protocol provoked with the fault-injecting transport: invalidation acks
    /// and confirms arrive late (so requests cross ownership moves and queue at the manager),
    /// grants and requests are delayed (replies and requests reorder across senders). Only frames
    /// whose reordering the protocol allows are touched; the injector keeps each lane's FIFO order.
    func testRacesProvokedByTheFaultInjectingTransport() throws {
        let faults = [
            "seed: 7", "rules:",
            "  - {channel: coherence, type: 6, action: delay, delay: 2ms, jitter: 3ms}",
            "  - {channel: coherence, type: 9, action: delay, delay: 2ms, jitter: 3ms}",
            "  - {channel: coherence, type: 8, action: delay, delay: 1ms, jitter: 2ms}",
            "  - {channel: coherence, type: 1, action: delay, delay: 0ms, jitter: 2ms, probability: 0.5}",
            "  - {channel: coherence, type: 2, action: delay, delay: 0ms, jitter: 2ms, probability: 0.5}",
        ].map { "    " + $0 + "\n" }.joined()
        // Whether a counter run shares a page read-only before a write (an invalidation) depends
        // on how the nodes' threads interleave, which a loaded machine can serialise: the
        // invalidations are counted over all three runs.
        var invalidations = 0
        var outputs = ""
        for n in [2, 3] {
            let (out, json) = try bench(n, "counter", ["--threads", "2", "--iterations", "60"], faults: faults)
            XCTAssertTrue(out.contains("counter = \(n * 2 * 60) (exact)"), out)
            let total = json["total"] as? [String: Int] ?? [:]
            invalidations += total["dsm.inv.sent"] ?? 0
            outputs += out
            XCTAssertGreaterThan(total["faults.delayed"] ?? 0, 10, "the injector delayed nothing:\n\(out)")
        }
        let (out, json) = try bench(3, "random", ["--threads", "2", "--iterations", "300"], faults: faults)
        XCTAssertTrue(out.contains("random.adds"), out)
        let total = json["total"] as? [String: Int] ?? [:]
        invalidations += total["dsm.inv.sent"] ?? 0
        XCTAssertGreaterThan(invalidations, 0, outputs + out)
        XCTAssertGreaterThan(total["ivy.manager_queued"] ?? 0, 0, "no request crossed a transaction:\n\(out)")
    }
}
