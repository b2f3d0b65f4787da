import XCTest
@testable import ABTest
import TestSupport

/// `giantvm ab` end to end: real 2-node VMs of the test guest (KVM, userfaultfd, processes), three
/// configs (A, an identical copy A', and dsm-ivy with hold_time 0). Bounded: 3 runs per config
/// of a small counter, about 20 s on 2 cores.
final class ABProcessTests: XCTestCase {
    func testIdenticalConfigsClaimNoWinnerAndTheReportHasEveryRun() throws {
        try Requirement.testGuestVM()
        let a = vmConfig(port: 20940, cmdline: "hello")
        let text = try String(contentsOfFile: a, encoding: .utf8)
        let dir = (a as NSString).deletingLastPathComponent
        let copy = dir + "/copy.yaml", hold0 = dir + "/hold0.yaml"
        try text.write(toFile: copy, atomically: true, encoding: .utf8)
        try text.replacingOccurrences(of: "coherence: {plugin: dsm-ivy}", with: "coherence: {plugin: dsm-ivy, settings: {hold_time: 0}}")
            .write(toFile: hold0, atomically: true, encoding: .utf8)
        let out = dir + "/ab"
        let r = try giantvm(["ab", a, copy, hold0, "--workload", "counter iters=300", "--runs", "3", "--warmup", "0",
                             "--seed", "5", "--out", out], timeout: 240)
        XCTAssertEqual(r.status, 0, r.output)
        // The progress line names every run.
        XCTAssertTrue(r.stderr.contains("[ab] 9/9: "), r.stderr)
        XCTAssertTrue(r.stdout.contains("what differs, B vs A: nothing (identical fields)"), r.stdout)
        XCTAssertTrue(r.stdout.contains("what differs, C vs A:\n  coherence.settings.hold_time: (absent) -> 0"), r.stdout)
        XCTAssertTrue(r.stdout.contains("verdict: B vs A: no significant difference on any of"), r.stdout)

        let report = try ABReport.read(json: out + "/report.json")
        XCTAssertEqual(report.runs.count, 9)
        for c in 0..<3 { XCTAssertEqual(report.runs.filter { $0.config == c && !$0.warmup }.count, 3) }
        // Interleaved: each round of three runs holds every config once.
        for round in 0..<3 { XCTAssertEqual(Set(report.runs[(3 * round)..<(3 * round + 3)].map(\.config)), [0, 1, 2]) }
        for run in report.runs {
            XCTAssertGreaterThan(run.metrics["ops_per_s"] ?? 0, 0, "the guest's own figure")
            XCTAssertGreaterThan(run.metrics["pages_moved"] ?? 0, 0, "pages crossed nodes")
            XCTAssertGreaterThan(run.metrics["fault_latency.p99"] ?? 0, 0, "merged latency histogram")
            XCTAssertFalse(run.faultLatency.isEmpty)
            XCTAssertTrue(run.result?.contains("\"ok\":true") ?? false)
        }
        let aa = try XCTUnwrap(report.comparisons.first { $0.other == 1 })
        XCTAssertFalse(aa.metrics.isEmpty)
        XCTAssertTrue(aa.metrics.allSatisfy { !$0.significant }, "A/A claims no winner: \(aa.summary)")
        XCTAssertEqual(report.environment.plugins.count, 3)
        XCTAssertTrue(report.environment.plugins[0].contains { $0.name == "dsm-ivy" && $0.sha256?.count == 64 })
        XCTAssertGreaterThan(report.environment.cpus, 0)
        XCTAssertNotNil(report.environment.gitCommit, "the build directory is inside the checkout")
        let html = try String(contentsOfFile: out + "/report.html", encoding: .utf8)
        XCTAssertEqual(html.components(separatedBy: "<svg class=\"chart").count - 1, report.metrics.count + 1)
    }

    func testBadArgumentsFailClearly() throws {
        try Requirement.builtGiantVM()
        let a = vmConfig(port: 20950)
        let one = try giantvm(["ab", a, "--workload", "hello"])
        XCTAssertEqual(one.status, 1)
        XCTAssertTrue(one.stderr.contains("give at least two configs to compare"), one.stderr)
        let noGuest = temporaryFile("""
            cluster: x
            nodes: [{id: 0, address: 127.0.0.1, port: 20960}, {id: 1, address: 127.0.0.1, port: 20961}]
            transport: {plugin: transport-tcp}
            coherence: {plugin: dsm-ivy}
            """)
        let r = try giantvm(["ab", noGuest, noGuest, "--workload", "hello", "--runs", "1", "--warmup", "0",
                             "--out", (noGuest as NSString).deletingLastPathComponent + "/ab"])
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.stderr.contains("the workload is a guest command line but the config has no `guest:`"), r.stderr)
        let reserved = try giantvm(["ab", a, a, "--workload", "dsm:counter --stats-out x"])
        XCTAssertTrue(reserved.stderr.contains("--stats-out is set by giantvm ab"), reserved.stderr)
    }
}

/// The `dsm:` workloads: `giantvm bench dsm` under each config (real processes, userfaultfd).
final class ABBenchDsmProcessTests: XCTestCase {
    func testBenchDsmWorkloadIsMeasuredPerRun() throws {
        try Requirement.builtGiantVM()
        try Requirement.userfaultfd()
        let a = temporaryFile("""
            cluster: abbench
            nodes: [{id: 0, address: 127.0.0.1, port: 20970}, {id: 1, address: 127.0.0.1, port: 20971}]
            memory: 16MiB
            transport: {plugin: transport-tcp}
            coherence: {plugin: dsm-ivy}
            timeouts: {connect: 10s, heartbeat: 200ms, failure: 3s}
            """)
        let dir = (a as NSString).deletingLastPathComponent
        let b = dir + "/b.yaml"
        try String(contentsOfFile: a, encoding: .utf8).replacingOccurrences(of: "coherence: {plugin: dsm-ivy}",
                                                                           with: "coherence: {plugin: dsm-ivy, settings: {hold_time: 1ms}}")
            .write(toFile: b, atomically: true, encoding: .utf8)
        let r = try giantvm(["ab", a, b, "--workload", "dsm:pingpong --iterations 100", "--runs", "2", "--warmup", "0",
                             "--out", dir + "/ab"], timeout: 180)
        XCTAssertEqual(r.status, 0, r.output)
        XCTAssertTrue(r.stdout.contains("coherence.settings.hold_time: (absent) -> 1ms"), r.stdout)
        let report = try ABReport.read(json: dir + "/ab/report.json")
        XCTAssertEqual(report.runs.count, 4)
        for run in report.runs {
            XCTAssertGreaterThan(run.metrics["ops_per_s"] ?? 0, 0, "bench dsm's operations per second")
            // pingpong: two nodes alternately write one page, 100 rounds each way.
            XCTAssertGreaterThanOrEqual(run.metrics["pages_moved"] ?? 0, 100)
            XCTAssertNotNil(run.metrics["fault_latency.p50"], "merged from the nodes' recorded values")
            XCTAssertFalse(run.faultLatency.isEmpty)
        }
    }
}
