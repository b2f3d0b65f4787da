// bench dsm's report models: what a node reports and what the summary checks, from JSON lines as
// the nodes print them.

import Bench
import DsmWorkloads
import Foundation
import Metrics
import XCTest

final class DsmReportTests: XCTestCase {
    func report(node: Int, ops: [Int], errors: [String] = [], counters: [String: UInt64], checks: [String: UInt64] = [:]) throws -> NodeReport {
        let result: [String: Any] = ["node": node, "workload": "counter", "threads": ops.count, "operations": ops, "errors": errors,
                                     "checks": checks, "litmus": [String: Any](), "latencies": [UInt64](), "seconds": 0.5]
        let json: [String: Any] = ["node": node, "result": result, "counters": counters, "histograms": [String: Any](),
                                   "memory": ["missingEvents": 1, "writeProtectEvents": 2, "staleEvents": 0, "pluginFaults": 3]]
        return try JSONDecoder().decode(NodeReport.self, from: JSONSerialization.data(withJSONObject: json))
    }

    func summary(_ reports: [NodeReport], nodes: Int = 2) -> DsmBenchSummary {
        DsmBenchSummary(workload: "counter", config: "c.yaml", nodes: nodes, threadsPerNode: 2, mode: "poll", cpus: 2, reports: reports)
    }

    func testARunWherePagesCrossedAndEveryNodeWorkedHasNoProblems() throws {
        let s = summary([try report(node: 0, ops: [10, 10], counters: ["dsm.page.sent_data": 4], checks: ["counter": 40]),
                         try report(node: 1, ops: [10, 10], counters: ["dsm.page.sent_data": 3])])
        XCTAssertEqual(s.problems, [])
        let table = s.table()
        XCTAssertTrue(table.contains("check node 0: counter = 40 (exact)"), table)
        XCTAssertTrue(table.contains("bench dsm counter: 2 nodes x 2 threads"), table)
    }

    func testNothingSharedAndIdleNodesAndFailedChecksAreProblems() throws {
        let s = summary([try report(node: 0, ops: [0, 0], errors: ["counter is 39, expected 40"], counters: [:]),
                         try report(node: 1, ops: [5, 5], counters: [:])])
        let p = s.problems
        XCTAssertTrue(p.contains("node 0: counter is 39, expected 40"), "\(p)")
        XCTAssertTrue(p.contains("no page crossed between nodes: the run shared nothing"), "\(p)")
        XCTAssertTrue(p.contains("node 0 did no work"), "\(p)")
    }

    /// A node report as a readmiss / seqread node prints it: latencies timed by the reading
    /// thread, the floor's samples beside them (node 0 only).
    func readerReport(node: Int, workload: String, ops: [Int], latencies: [UInt64], floor: FloorReport?,
                      counters: [String: UInt64] = ["dsm.page.sent_data": 5]) throws -> NodeReport {
        var r = try report(node: node, ops: ops, counters: counters)
        r.result.workload = WorkloadKind(rawValue: workload)!
        r.result.latencies = latencies
        r.floor = floor
        return r
    }

    func testReadMissIsComparedWithTheInterleavedFloorOnly() throws {
        let floor = FloorReport(peer: 1, interleaved: true, samples: [100_000, 100_000, 100_000, 900_000])
        let reports = [try readerReport(node: 0, workload: "readmiss", ops: [4], latencies: [130_000, 130_000, 130_000, 500_000],
                                        floor: floor),
                       try readerReport(node: 1, workload: "readmiss", ops: [0], latencies: [], floor: nil)]
        let s = DsmBenchSummary(workload: "readmiss", config: "c.yaml", nodes: 2, threadsPerNode: 1, mode: "poll", cpus: 2,
                                reports: reports)
        let table = s.table()
        XCTAssertTrue(table.contains("floor (node 0 <-> node 1, interleaved with the workload's reads): userfaultfd read fault "
                                     + "+ 24 B request / 4120 B reply over the transport, timed by the faulting thread: n=4 p50 100.0 us"), table)
        XCTAssertTrue(table.contains("read miss (node 0 reads a page the last node wrote, timed by the reading thread): n=4 p50 130.0 us"), table)
        XCTAssertEqual(s.readMissRatio!, 1.3, accuracy: 0.01)
        XCTAssertTrue(table.contains("p50 ratio to floor 1.30x"), table)
        // Plugin-timed histograms are never divided by the floor.
        XCTAssertFalse(table.contains("plugin read_miss") && table.components(separatedBy: "ratio to floor").count > 2, table)
        let enc = JSONEncoder()
        let obj = try JSONSerialization.jsonObject(with: enc.encode(s.stats)) as! [String: Any]
        let f = obj["floor"] as! [String: Any]
        XCTAssertEqual(f["peer"] as? Int, 1)
        XCTAssertEqual(f["interleaved"] as? Bool, true)
        XCTAssertEqual(f["requestBytes"] as? Int, 24)
        XCTAssertEqual(f["replyBytes"] as? Int, 4120)
        XCTAssertEqual(obj["read_miss_p50_ratio_to_floor"] as! Double, 1.3, accuracy: 0.01)
    }

    func testSequentialReadReportsPagesPerSecond() throws {
        let reports = [try readerReport(node: 0, workload: "seqread", ops: [2048], latencies: [500_000_000, 500_000_000],
                                        floor: FloorReport(peer: 1, interleaved: true, samples: [90_000])),
                       try readerReport(node: 1, workload: "seqread", ops: [0], latencies: [], floor: nil)]
        let s = DsmBenchSummary(workload: "seqread", config: "c.yaml", nodes: 2, threadsPerNode: 1, mode: "poll", cpus: 2,
                                reports: reports)
        let t = try XCTUnwrap(s.sequentialRead)
        XCTAssertEqual(t.pages, 1024)
        XCTAssertEqual(t.passes, 2)
        XCTAssertEqual(t.pagesPerSecond, 2048, accuracy: 0.1)
        XCTAssertTrue(s.table().contains("sequential remote read by one thread (node 0): 1024 pages x 2 passes in 1.000 s = 2048 pages/s, 8.0 MiB/s"),
                      s.table())
        XCTAssertNil(s.readMissRatio)
    }

    func testStatsJSONCarriesPerNodeAndTotals() throws {
        let s = summary([try report(node: 0, ops: [1], counters: ["dsm.page.sent_data": 4, "x": 1]),
                         try report(node: 1, ops: [1], counters: ["dsm.page.sent_data": 3])])
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys]
        let obj = try JSONSerialization.jsonObject(with: enc.encode(s.stats)) as! [String: Any]
        XCTAssertEqual((obj["total"] as! [String: Any])["dsm.page.sent_data"] as? Int, 7)
        XCTAssertNotNil((obj["per_node"] as! [String: Any])["node1"])
        XCTAssertEqual(obj["nodes"] as? Int, 2)
    }
}
