// mw pages on the simulated cluster: data-race-free programs (lock in an sc page, data in an mw
// page) exact; disjoint concurrent writes in one page never lost; racy writes converge to one
// value on every node; over seeded schedules with random delays and reordering across senders
// and lanes.

import XCTest
import PluginAPI
import CoherenceKit
@testable import TSOCore

final class MultipleWriterTests: XCTestCase {
    /// Lock at gfn 0 (sc), counter at gfn 2 (mw): the lock's handover carries the data.
    func lockedCounter(nodes: Int, threads: Int, increments: Int, seed: UInt64, maxDelay: Int = 0, bias: Int = 50,
                       extra: [(String, String)] = []) throws -> (SimCluster, String?) {
        let c = try cluster(nodes: nodes, relaxed: [2], seed: seed, maxDelay: maxDelay, threadBias: bias, extra: extra)
        let cs = LockedCounterProgram.CriticalSection()
        for n in 0..<nodes {
            for _ in 0..<threads {
                c.addThread(node: UInt32(n), LockedCounterProgram(lockPage: 0, counterPage: 2, increments: increments, section: cs))
            }
        }
        let r = c.run(maxSteps: 600_000)
        guard r.ok else { return (c, "\(r)") }
        if !cs.violations.isEmpty { return (c, cs.violations.joined(separator: "; ")) }
        let expected = UInt64(nodes * threads * increments)
        let (seen, rep) = readEverywhere(c, [(2, 0)])
        guard rep.ok else { return (c, "reading: \(rep)") }
        if seen.contains(where: { $0 != [expected] }) {
            return (c, "nodes read counter \(seen), expected \(expected) (latest store in the simulation: \(c.latest(2, 0)))")
        }
        return (c, nil)
    }

    func testDataRaceFreeCounterExactOnTwoThreeFourNodes() throws {
        for nodes in 2...4 {
            let (c, problem) = try lockedCounter(nodes: nodes, threads: 2, increments: 12, seed: 11)
            XCTAssertNil(problem, "\(nodes) nodes")
            XCTAssertGreaterThan(c.total("dsm.diff.made"), 0, "data must have travelled as diffs")
            XCTAssertGreaterThan(c.total("tso.flush.sc_handover"), 0, "the lock handover must have released the data")
            XCTAssertGreaterThan(c.total("tso.sc_held"), 0)
            XCTAssertEqual(Conformance.statisticsProblems(c), [])
        }
    }

    func testDataRaceFreeCounterManySchedules() throws {
        var totals: [String: UInt64] = [:]
        for seed in UInt64(100)..<UInt64(400) {
            let nodes = 2 + Int(seed % 3)
            let (c, problem) = try lockedCounter(nodes: nodes, threads: 1 + Int(seed % 2), increments: 4, seed: seed,
                                                 maxDelay: Int(seed % 4) * 3, bias: 20 + Int(seed % 7) * 10)
            if let problem { XCTFail("seed \(seed): \(problem)"); return }
            for n in c.nodes { for (k, v) in n.counters { totals[k, default: 0] += v } }
        }
        for name in ["dsm.diff.made", "dsm.diff.applied", "tso.update.sent", "tso.twins", "tso.flush.sc_handover",
                     "tso.msg.MwGet", "tso.msg.DiffDone", "dsm.fault.coalesced"] {
            XCTAssertGreaterThan(totals[name] ?? 0, 0, "\(name) never happened in 300 schedules")
        }
    }

    /// Disjoint concurrent writes: every thread's own slot of one mw page, on every node.
    func falseShare(nodes: Int, threads: Int, count: Int, seed: UInt64, maxDelay: Int = 0, fenceEvery: Int = 0,
                    extra: [(String, String)] = []) throws -> (SimCluster, String?) {
        let c = try cluster(nodes: nodes, relaxed: [1], seed: seed, maxDelay: maxDelay, threadBias: 70, extra: extra)
        var slot = 0
        for n in 0..<nodes {
            for _ in 0..<threads {
                c.addThread(node: UInt32(n), FalseShareProgram(page: 1, slot: slot, count: count, fenceEvery: fenceEvery))
                slot += 1
            }
        }
        let r = c.run(maxSteps: 600_000)
        guard r.ok else { return (c, "\(r)") }
        let words = (0..<slot).map { (UInt64(1), $0 * 8) }
        let (seen, rep) = readEverywhere(c, words)
        guard rep.ok else { return (c, "reading: \(rep)") }
        let expected = [UInt64](repeating: UInt64(count), count: slot)
        for (i, v) in seen.enumerated() where v != expected {
            return (c, "node \(i) reads counters \(v), expected \(expected) (a lost write)")
        }
        return (c, nil)
    }

    func testFalseSharingNeverLosesAWrite() throws {
        let (c, problem) = try falseShare(nodes: 3, threads: 2, count: 200, seed: 5)
        XCTAssertNil(problem)
        // Writes stay local between releases: far fewer fetches than increments.
        XCTAssertLessThan(c.total("tso.msg.MwGet"), 20)
        XCTAssertGreaterThan(c.total("tso.flush.interval"), 0)
        XCTAssertEqual(Conformance.statisticsProblems(c), [])
    }

    func testFalseSharingManySchedulesWithDelaysAndFences() throws {
        for seed in UInt64(2000)..<UInt64(2200) {
            let (_, problem) = try falseShare(nodes: 2 + Int(seed % 3), threads: 1 + Int(seed % 2), count: 30, seed: seed,
                                              maxDelay: Int(seed % 5) * 4, fenceEvery: Int(seed % 4) * 3)
            if let problem { XCTFail("seed \(seed): \(problem)"); return }
        }
    }

    func testRacyWritesConvergeToOneValueEverywhere() throws {
        var skipped: UInt64 = 0
        for seed in UInt64(3000)..<UInt64(3150) {
            let nodes = 2 + Int(seed % 3)
            let c = try cluster(nodes: nodes, relaxed: [3], seed: seed, maxDelay: Int(seed % 6) * 3, threadBias: 60)
            var written: Set<UInt64> = []
            for n in 0..<nodes {
                for _ in 0..<2 {
                    let t = c.addThread(node: UInt32(n), RacyProgram(page: 3, count: 8))
                    for k in 1...8 { written.insert(UInt64(t.id + 1) << 32 | UInt64(k)) }
                }
            }
            let r = c.run(maxSteps: 400_000)
            guard r.ok else { XCTFail("seed \(seed): \(r)"); return }
            let (seen, rep) = readEverywhere(c, [(3, 16)])
            guard rep.ok else { XCTFail("seed \(seed): reading: \(rep)"); return }
            let values = Set(seen.map { $0[0] })
            XCTAssertEqual(values.count, 1, "seed \(seed): nodes disagree: \(seen)")
            XCTAssertTrue(written.contains(seen[0][0]), "seed \(seed): \(seen[0][0]) was never written")
            skipped += c.total("tso.update.skipped_bytes")
        }
        XCTAssertGreaterThan(skipped, 0, "no schedule made a node keep its own later write")
    }

    /// A page pinned for writing (host DMA) defers its release until unpinned; nothing is lost.
    func testPinnedDirtyPageDefersItsFlush() throws {
        let c = try cluster(nodes: 2, relaxed: [1], seed: 9)
        var phase = 0
        var held = 0
        c.addThread(node: 1, ClosureProgram { t in
            switch phase {
            case 0:
                guard t.store(1, 0, 41) else { return true }
                phase = 1
            case 1:
                guard t.pin(1, write: true) else { return true }
                t.dmaStore(1, 8, 42)
                _ = engine(t.cluster, 1).startRelease(.fence)
                phase = 2
            case 2:
                held += 1
                if held < 50 { return true }
                t.unpin(1, write: true)
                return false
            default: return false
            }
            return true
        })
        let r = c.run()
        XCTAssertTrue(r.ok, "\(r)")
        XCTAssertGreaterThan(c.total("dsm.pin.deferred"), 0)
        let (seen, rep) = readEverywhere(c, [(1, 0), (1, 8)])
        XCTAssertTrue(rep.ok, "\(rep)")
        XCTAssertEqual(seen, [[41, 42], [41, 42]])
    }

    /// A release with nothing written completes at once; with writes, only after the home and
    /// every holder applied them.
    func testReleaseTicketCompletesOnlyAfterEveryHolderApplied() throws {
        let c = try cluster(nodes: 3, relaxed: [2], seed: 4, extra: [("flush_interval", "50ms")])
        XCTAssertNil(engine(c, 0).startRelease(.fence))
        // gfn 2's home is its Ivy manager, node 1 (4 pages over 3 nodes: chunks of 2 pages).
        // Nodes 0 and 2 read the page (holders), then node 2 writes it and releases.
        var ticket: UInt64?
        var phase = 0
        c.addThread(node: 0, ClosureProgram { t in t.load(2, 0) == nil })
        c.addThread(node: 2, ClosureProgram { t in t.load(2, 0) == nil })
        c.run()
        c.addThread(node: 2, ClosureProgram { t in
            switch phase {
            case 0:
                guard t.store(2, 0, 7) else { return true }
                ticket = engine(t.cluster, 2).startRelease(.fence)
                phase = 1
                return true
            default:
                return !engine(t.cluster, 2).isReleased(ticket!)
            }
        })
        let r = c.run()
        XCTAssertTrue(r.ok, "\(r)")
        XCTAssertNotNil(ticket)
        XCTAssertEqual(c.total("tso.update.sent"), 1, "the home forwards the diff to the one other holder")
        XCTAssertEqual(c.total("tso.flush.fence"), 1)
        let (seen, _) = readEverywhere(c, [(2, 0)])
        XCTAssertEqual(seen, [[7], [7], [7]])
    }

    /// relaxed_start: sc — pages of the relaxed range start under Ivy and their home switches
    /// them to mw once several nodes write them; results stay exact through the switch.
    func testPagesStartScAndSwitchToMwWhenSeveralNodesWriteThem() throws {
        let auto: [(String, String)] = [("relaxed_start", "sc"), ("switch_after", "2"), ("switch_window", "100ms"),
                                        ("switch_back_after", "3")]
        var switched: UInt64 = 0
        var back: UInt64 = 0
        for seed in UInt64(4000)..<UInt64(4150) {
            let nodes = 2 + Int(seed % 3)
            let (c1, p1) = try falseShare(nodes: nodes, threads: 1 + Int(seed % 2), count: 30, seed: seed,
                                          maxDelay: Int(seed % 4) * 3, extra: auto)
            if let p1 { XCTFail("false sharing, seed \(seed): \(p1)"); return }
            XCTAssertEqual(Conformance.statisticsProblems(c1), [], "seed \(seed)")
            let (c2, p2) = try lockedCounter(nodes: nodes, threads: 1 + Int(seed % 2), increments: 5, seed: seed,
                                             maxDelay: Int(seed % 4) * 3, extra: auto)
            if let p2 { XCTFail("locked counter, seed \(seed): \(p2)"); return }
            switched += c1.total("tso.class_switch.to_mw") + c2.total("tso.class_switch.to_mw")
            back += c1.total("tso.class_switch.to_sc") + c2.total("tso.class_switch.to_sc")
            if seed == 4000 {
                // Every node agrees the page is mw after a switch.
                let classes = (0..<nodes).map { engine(c1, $0).pageClass(1) }
                XCTAssertTrue(classes.allSatisfy { $0 == classes[0] }, "\(classes)")
            }
        }
        XCTAssertGreaterThan(switched, 100, "pages written by several nodes must have switched to mw")
        XCTAssertGreaterThan(back, 0, "no page went back to sc after diffs from one writer in a row")
    }

    /// A page written by one node only stays sc (dsm-ivy) under relaxed_start: sc.
    func testAPageWrittenByOneNodeStaysSc() throws {
        let c = try cluster(nodes: 3, relaxed: [1], seed: 3, extra: [("relaxed_start", "sc"), ("switch_after", "2")])
        c.addThread(node: 2, FalseShareProgram(page: 1, slot: 0, count: 50))
        c.addThread(node: 0, ClosureProgram { t in t.load(1, 8) == nil })
        XCTAssertTrue(c.run().ok)
        XCTAssertEqual(c.total("tso.class_switch.to_mw"), 0)
        XCTAssertEqual(c.total("dsm.diff.made"), 0)
        XCTAssertEqual(engine(c, 0).pageClass(1), 3)
    }

    /// A transport whose send queues are full (GVM_ERR_NOMEM) delays dsm-tso's messages in
    /// order; nothing is lost and the results stay exact.
    func testFullSendQueuesDelayButLoseNothing() throws {
        var refused = 0
        for seed in UInt64(5000)..<UInt64(5060) {
            let c = try cluster(nodes: 3, relaxed: [1], seed: seed, maxDelay: 4, threadBias: 60)
            c.queueCapacity = 1
            for n in 0..<3 { c.addThread(node: UInt32(n), FalseShareProgram(page: 1, slot: n, count: 25, fenceEvery: 4)) }
            let r = c.run(maxSteps: 600_000)
            XCTAssertTrue(r.ok, "seed \(seed): \(r)")
            let (seen, rep) = readEverywhere(c, [(1, 0), (1, 8), (1, 16)])
            XCTAssertTrue(rep.ok, "seed \(seed): \(rep)")
            XCTAssertEqual(seen, [[UInt64]](repeating: [25, 25, 25], count: 3), "seed \(seed)")
            refused += c.sendsRefused
        }
        XCTAssertGreaterThan(refused, 0, "no send was ever refused")
    }
}
