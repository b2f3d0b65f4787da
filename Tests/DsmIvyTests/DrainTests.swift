// Node evacuation (Drain.swift) on the simulated cluster: a node that worked on shared pages
// drains to a successor while the other nodes keep incrementing counters on every page, including
// pages the leaving node manages and pages nobody has written yet. After the drain: every count is
// exact (no lost or duplicated update, checked at every access by the simulation's SWMR and
// linearizability checks), the leaving node holds nothing, every page has exactly one owner, every
// remaining node agrees on the new manager, and the leaving node is recorded as departed.

import XCTest
import PluginAPI
import PluginKit
import CoherenceKit
@testable import IvyCore

final class DrainTests: XCTestCase {
    func ivyNode(_ c: SimCluster, _ i: Int) -> IvyNode {
        (CoherencePluginEntry.plugin(of: c.nodes[i].pluginInstance!) as! IvyPlugin).node
    }

    /// A thread that increments word 0 of each page in `pages`, `rounds` times, with load + cas.
    func incrementer(pages: [UInt64], rounds: Int, after gate: @escaping () -> Bool = { true },
                     done: @escaping () -> Void = {}) -> ClosureProgram {
        var i = 0
        var seen: UInt64?
        let total = pages.count * rounds
        return ClosureProgram { t in
            guard gate() else { return true }
            guard i < total else { done(); return false }
            let g = pages[i % pages.count]
            if let v = seen {
                guard let ok = t.cas(g, 0, expect: v, new: v + 1) else { return true }
                seen = nil
                if ok { i += 1 }
            } else {
                seen = t.load(g, 0)
            }
            if i == total { done(); return false }
            return true
        }
    }

    /// Per scenario, over its seeds: how often each path of the drain ran (the tests require each at least once).
    var seen: [String: UInt64] = [:]

    func drainScenario(nodes: Int, leaving: UInt32, to: UInt32, seed: UInt64, file: StaticString = #filePath, line: UInt = #line) throws {
        let pages = 4 * nodes   // auto manager map: 4 pages per node
        let c = try SimCluster(descriptor: ivy, nodes: nodes, pages: pages, seed: seed, settings: noRequestTimeout)
        let leaverPages = (0..<UInt64(pages)).filter { $0 % 4 != 3 }      // the leaver skips the last page of each range
        let latePages = (0..<UInt64(pages)).filter { $0 % 4 == 3 }        // never written until the drain started
        var leaverDone = false, drainStarted = false
        var report: DrainReport?
        var failure: DrainFailure?
        c.addThread(node: leaving, incrementer(pages: leaverPages, rounds: 3, done: { leaverDone = true }))
        let others = (0..<UInt32(nodes)).filter { $0 != leaving }
        for n in others {
            c.addThread(node: n, incrementer(pages: leaverPages, rounds: 6))
            c.addThread(node: n, incrementer(pages: latePages, rounds: 4, after: { drainStarted }))
        }
        let leaver = ivyNode(c, Int(leaving))
        c.addThread(node: leaving, ClosureProgram { _ in
            guard leaverDone else { return true }
            if !drainStarted {
                drainStarted = true
                if let f = leaver.startDrain(to: to) { failure = f; return false }
                return true
            }
            switch leaver.pollDrain() {
            case nil: return true
            case let .success(r): report = r; return false
            case let .failure(f): failure = f; return false
            }
        })
        let r = c.run(maxSteps: 2_000_000)
        XCTAssertTrue(r.ok, "seed \(seed): \(r)", file: file, line: line)
        XCTAssertNil(failure, "seed \(seed): \(failure?.message ?? "")", file: file, line: line)
        guard let report, r.ok else { return }

        // Counts exact: read back from every remaining node.
        var readBack: [UInt32: [UInt64]] = [:]
        for n in others {
            var vals: [UInt64] = []
            c.addThread(node: n, ClosureProgram { t in
                guard let v = t.load(UInt64(vals.count), 0) else { return true }
                vals.append(v)
                if vals.count == pages { readBack[n] = vals; return false }
                return true
            })
        }
        let r2 = c.run(maxSteps: 200_000)
        XCTAssertTrue(r2.ok, "seed \(seed): read-back: \(r2)", file: file, line: line)
        for n in others {
            for g in 0..<pages {
                let expect = g % 4 == 3 ? UInt64(4 * others.count) : UInt64(3 + 6 * others.count)
                XCTAssertEqual(readBack[n]?[g], expect, "seed \(seed): node \(n) reads gfn \(g)", file: file, line: line)
            }
        }
        // The leaving node holds nothing; each page has one owner; managers agree; departed.
        for g in 0..<UInt64(pages) {
            XCTAssertEqual(c.nodes[Int(leaving)].pageState[Int(g)], GVM_PAGE_INVALID, "seed \(seed): gfn \(g)", file: file, line: line)
            XCTAssertEqual(leaver.cacheState(g), .I, "seed \(seed): gfn \(g)", file: file, line: line)
            let owners = others.filter { ivyNode(c, Int($0)).cacheState(g).isOwner }
            XCTAssertEqual(owners.count, 1, "seed \(seed): gfn \(g) owners \(owners)", file: file, line: line)
            let managers = Set(others.map { ivyNode(c, Int($0)).currentManager(g) })
            XCTAssertEqual(managers.count, 1, "seed \(seed): gfn \(g) managers \(managers)", file: file, line: line)
            XCTAssertFalse(managers.contains(leaving), "seed \(seed): gfn \(g)", file: file, line: line)
            if let m = managers.first, let o = owners.first {
                XCTAssertEqual(ivyNode(c, Int(m)).recordedOwner(g), o, "seed \(seed): gfn \(g): directory", file: file, line: line)
            }
        }
        for n in others { XCTAssertTrue(ivyNode(c, Int(n)).hasDeparted(leaving), file: file, line: line) }
        for k in ["ivy.drain.deferred", "ivy.drain.pulled", "ivy.drain.zero_refaults"] { seen[k, default: 0] += c.total(k) }
        XCTAssertEqual(report.to, to, file: file, line: line)
        XCTAssertEqual(report.managedPagesMoved, 4, file: file, line: line)
        XCTAssertGreaterThan(report.pagesMoved, 0, file: file, line: line)
        XCTAssertGreaterThan(report.bytesSent, 0, file: file, line: line)
        // A lost-peer report for the departed node is not a failure any more.
        for n in others { c.nodes[Int(n)].callPeerLost(leaving) }
        XCTAssertTrue(c.nodes.allSatisfy { $0.fatals.isEmpty }, file: file, line: line)
    }

    func testNodeOneOfTwoDrainsWhileTheOtherKeepsCounting() throws {
        for seed in UInt64(0)..<25 { try drainScenario(nodes: 2, leaving: 1, to: 0, seed: seed) }

        XCTAssertGreaterThan(seen["ivy.drain.pulled"] ?? 0, 0, "no page was pulled: \(seen)")
        XCTAssertGreaterThan(seen["ivy.drain.deferred"] ?? 0, 0, "no request was deferred: \(seen)")
        print("drain paths over the seeds: \(seen.sorted { $0.key < $1.key })")
    }

    func testNodeTwoOfThreeDrainsToNodeZero() throws {
        for seed in UInt64(0)..<25 { try drainScenario(nodes: 3, leaving: 2, to: 0, seed: seed) }

        XCTAssertGreaterThan(seen["ivy.drain.pulled"] ?? 0, 0, "no page was pulled: \(seen)")
        XCTAssertGreaterThan(seen["ivy.drain.deferred"] ?? 0, 0, "no request was deferred: \(seen)")
        print("drain paths over the seeds: \(seen.sorted { $0.key < $1.key })")
    }

    func testMiddleNodeOfThreeDrainsToTheLastNode() throws {
        for seed in UInt64(0)..<25 { try drainScenario(nodes: 3, leaving: 1, to: 2, seed: seed) }

        XCTAssertGreaterThan(seen["ivy.drain.pulled"] ?? 0, 0, "no page was pulled: \(seen)")
        XCTAssertGreaterThan(seen["ivy.drain.deferred"] ?? 0, 0, "no request was deferred: \(seen)")
        print("drain paths over the seeds: \(seen.sorted { $0.key < $1.key })")
    }

    /// The successor faults on a never-written page of the leaving node while the hand-over is
    /// held back: its request is deferred, then re-run as a local fault on the page it now owns
    /// (zeros, no message). The counts stay exact.
    func testDeferredRequestForANeverWrittenPageBecomesALocalFault() throws {
        var refaults: UInt64 = 0
        for seed in UInt64(0)..<30 {
            // Zero-fill ahead off: page 7 must stay never-written (OZ) on node 1 until node 0 asks.
            let c = try SimCluster(descriptor: ivy, nodes: 2, pages: 8, seed: seed, settings: noRequestTimeout + [("zero_ahead", "1")])
            var leaverDone = false, drainStarted = false, finished = false
            var polls = 0
            c.hold = { m in
                guard ivyType(m) == .managerState, c.nodes[0].counter("ivy.drain.deferred") == 0 else { return false }
                polls += 1
                return polls < 20_000   // give up holding: this seed's request was not deferred
            }
            c.addThread(node: 1, incrementer(pages: [4, 0], rounds: 2, done: { leaverDone = true }))
            c.addThread(node: 0, incrementer(pages: [7, 4], rounds: 3, after: { drainStarted }))
            let leaver = ivyNode(c, 1)
            c.addThread(node: 1, ClosureProgram { _ in
                guard leaverDone else { return true }
                if !drainStarted {
                    drainStarted = true
                    XCTAssertNil(leaver.startDrain(to: 0))
                    return true
                }
                guard let r = leaver.pollDrain() else { return true }
                if case let .failure(f) = r { XCTFail("seed \(seed): \(f)") }
                finished = true
                return false
            })
            let r = c.run(maxSteps: 2_000_000)
            XCTAssertTrue(r.ok && finished, "seed \(seed): \(r)")
            XCTAssertEqual(c.latest(7, 0), 3, "seed \(seed)")
            XCTAssertEqual(c.latest(4, 0), 5, "seed \(seed)")
            XCTAssertEqual(c.latest(0, 0), 2, "seed \(seed)")
            XCTAssertEqual(ivyNode(c, 0).cacheState(7), .OM, "seed \(seed)")
            XCTAssertEqual(ivyNode(c, 0).recordedOwner(7), 0, "seed \(seed)")
            refaults += c.total("ivy.drain.zero_refaults")
        }
        XCTAssertGreaterThan(refaults, 0, "no seed deferred a request for a never-written page")
    }

    func testDrainRefusesABadSuccessor() throws {
        let c = try SimCluster(descriptor: ivy, nodes: 2, pages: 4, seed: 1)
        XCTAssertEqual(ivyNode(c, 1).startDrain(to: 1)?.status, .invalid)
        XCTAssertEqual(ivyNode(c, 1).startDrain(to: 7)?.status, .invalid)
    }

    /// Through the C table: a refused drain returns its status and fills the error text.
    func testDrainHookThroughTheCABIReportsARefusal() throws {
        let c = try SimCluster(descriptor: ivy, nodes: 2, pages: 4, seed: 1)
        let drain = try XCTUnwrap(IvyPlugin.entry.ops.pointee.drain)
        var report = gvm_drain_report()
        report.size = UInt32(MemoryLayout<gvm_drain_report>.size)
        var err = gvm_error()
        let rc = drain(c.nodes[1].pluginInstance, 1, 1_000_000, &report, &err)
        XCTAssertEqual(rc, GVM_ERR_INVALID.rawValue)
        let msg = withUnsafeBytes(of: &err.message) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        XCTAssertTrue(msg.contains("node 1 cannot take node 1's pages"), msg)
        XCTAssertEqual(report.pages_moved, 0)
    }

    func testDrainHookIsInTheABITable() {
        XCTAssertNotNil(IvyPlugin.entry.ops.pointee.drain)
        XCTAssertTrue(IvyPlugin.pluginDescription?.contains("Leaving node transitions") ?? false)
        // Exhaustive table: every pair has an entry that names a next state or an error.
        for s in DrainState.allCases {
            for e in DrainEvent.allCases {
                if case let .go(_, actions) = IvyTable.drain(s, e) { XCTAssertFalse(actions.isEmpty, "\(s) \(e)") }
            }
        }
    }

    func testMalformedDrainMessagesAreRefused() {
        func decode(_ b: [UInt8], src: UInt32 = 1) -> Error? {
            b.withUnsafeBytes { p in
                do {
                    _ = try IvyWire.decode(p, src: src, selfID: 0, nodeCount: 2, pageCount: 8,
                                           managerOf: { $0 < 4 ? 0 : 1 })
                    return nil
                } catch { return error }
            }
        }
        XCTAssertNil(decode(IvyWire.encodePull(node: 1, gfns: [1, 2])))
        var dup = IvyWire.encodePull(node: 1, gfns: [1, 2])
        dup[32] = 1   // the second gfn becomes 1 again
        XCTAssertNotNil(decode(dup))
        XCTAssertNil(decode(IvyWire.encodeManagerState(node: 1, first: 4, owners: [0, 1, 1, 0])))
        XCTAssertNotNil(decode(IvyWire.encodeManagerState(node: 1, first: 2, owners: [0, 1])), "pages node 1 does not manage")
        XCTAssertNotNil(decode(IvyWire.encodeManagerState(node: 1, first: 4, owners: [5])), "owner out of range")
        XCTAssertNotNil(decode(IvyWire.header(Message(type: .leavePrepare, node: 1, gfn: 0, txn: 1))), "successor = sender")
        XCTAssertNotNil(decode(IvyWire.header(Message(type: .managerStateEnd, node: 1, gfn: 0, txn: 4))), "no next-txn field")
        XCTAssertNotNil(decode(IvyWire.header(Message(type: .pullDone, node: 0, gfn: 0))), "claims another sender")
    }
}
