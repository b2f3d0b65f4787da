// Without relaxed ranges dsm-tso is dsm-ivy: the same runs (step for step, message for
// message) on the conformance suite's scenarios; with relaxed ranges, sc pages still pass every
// SC check.

import XCTest
import PluginAPI
import CoherenceKit
import IvyCore
@testable import TSOCore

final class IvyEquivalenceTests: XCTestCase {
    let ivy = IvyPlugin.entry.pointer

    func testSameRunsAsIvyWithoutRelaxedRanges() throws {
        for seed in UInt64(1)...UInt64(60) {
            let nodes = 2 + Int(seed % 3)
            let opts = ConformanceOptions(maxDelay: Int(seed % 4) * 2, threadBias: 20 + Int(seed % 5) * 15)
            // dsm-tso neither reads nor zero-fills ahead by default (Config.swift): it equals
            // dsm-ivy with both off.
            var ivyOpts = opts
            ivyOpts.settings = [("read_ahead", "0"), ("zero_ahead", "1")]
            let a = try Conformance.lockedCounter(ivy, nodes: nodes, threadsPerNode: 2, increments: 5, seed: seed, options: ivyOpts)
            let b = try Conformance.lockedCounter(tso, nodes: nodes, threadsPerNode: 2, increments: 5, seed: seed, options: opts)
            XCTAssertTrue(b.ok, "seed \(seed): \(b)")
            XCTAssertEqual(b.statistics, [], "seed \(seed)")
            XCTAssertEqual(a.report.steps, b.report.steps, "seed \(seed): a different run")
            XCTAssertEqual(a.messages, b.messages, "seed \(seed)")
            for (k, v) in a.totals where k.hasPrefix("dsm.") { XCTAssertEqual(b.totals[k], v, "seed \(seed): \(k)") }
            let r1 = try Conformance.random(ivy, nodes: nodes, threadsPerNode: 2, pages: 3, ops: 12, seed: seed, options: ivyOpts)
            let r2 = try Conformance.random(tso, nodes: nodes, threadsPerNode: 2, pages: 3, ops: 12, seed: seed, options: opts)
            XCTAssertTrue(r2.ok, "seed \(seed): \(r2)")
            XCTAssertEqual(r1.report.steps, r2.report.steps, "seed \(seed)")
            XCTAssertEqual(r1.messages, r2.messages, "seed \(seed)")
        }
    }

    func testIvyScenariosPass() throws {
        for seed in UInt64(10)..<UInt64(40) {
            let p = try Conformance.pingPong(tso, rounds: 10, seed: seed, options: .init(maxDelay: Int(seed % 3) * 2))
            XCTAssertTrue(p.ok, "ping-pong seed \(seed): \(p)")
            let pin = try Conformance.pinHoldsOffWrites(tso, seed: seed)
            XCTAssertTrue(pin.ok, "pin seed \(seed): \(pin)")
        }
    }

    /// sc pages beside a relaxed one: every SC check on pages 0, 1 and 2 while page 3 is mw
    /// and written by every node at once.
    func testScPagesStaySequentiallyConsistentBesideRelaxedOnes() throws {
        for seed in UInt64(500)..<UInt64(700) {
            let nodes = 2 + Int(seed % 3)
            let c = try cluster(nodes: nodes, relaxed: [3], seed: seed, maxDelay: Int(seed % 5) * 2)
            var programs: [RandomProgram] = []
            for n in 0..<nodes {
                let p = RandomProgram(pages: [0, 1, 2], slots: 3, ops: 14, writePercent: 40, seed: seed &* 31 &+ UInt64(n))
                programs.append(p)
                c.addThread(node: UInt32(n), p)
                c.addThread(node: UInt32(n), RacyProgram(page: 3, count: 5))
            }
            let r = c.run()
            XCTAssertTrue(r.ok, "seed \(seed): \(r)")
            for g in UInt64(0)..<3 {
                let expected = programs.reduce(0) { $0 + ($1.increments[g] ?? 0) }
                XCTAssertEqual(c.latest(g, 0), expected, "seed \(seed): gfn \(g) increments")
            }
            let v = c.verifyFromEveryNode()
            XCTAssertTrue(v.ok, "seed \(seed): verification: \(v)")
            XCTAssertEqual(Conformance.statisticsProblems(c), [], "seed \(seed)")
        }
    }
}
