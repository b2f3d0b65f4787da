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
