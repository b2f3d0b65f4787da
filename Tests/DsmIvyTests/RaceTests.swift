// Each race the Ivy protocol must handle, provoked on purpose in the simulation: messages are
// held at the head of their queue (keeping per-pair FIFO) until the test releases them, or
// redirected, so the dangerous interleaving happens every time, not by luck.

import XCTest
import PluginAPI
import CoherenceKit
@testable import IvyCore

func ivyType(_ m: SimMessage) -> MessageType? { m.bytes.isEmpty ? nil : MessageType(rawValue: m.bytes[0]) }

func ivyGfn(_ m: SimMessage) -> UInt64 {
    var v: UInt64 = 0
    for i in 0..<8 { v |= UInt64(m.bytes[8 + i]) << (8 * UInt64(i)) }
    return v
}

/// A thread doing a fixed list of steps: each closure returns false to be retried (it faulted).
func script(_ steps: [(SimThread) -> Bool]) -> ClosureProgram {
    var i = 0
    return ClosureProgram { t in
        guard i < steps.count else { return false }
        if steps[i](t) { i += 1 }
        return i < steps.count
    }
}

func waitFor(_ cond: @escaping () -> Bool) -> (SimThread) -> Bool { { _ in cond() } }

/// Races hold messages until a run is stuck on purpose, then release them: no request timeout
/// (it would end the stuck run with a fatal after request_timeout of simulated time; the
/// timeout itself is tested in LivenessTests).
let noRequestTimeout = [("request_timeout", "0")]

final class RaceTests: XCTestCase {
    func counter(_ c: SimCluster, _ node: Int, _ name: String) -> UInt64 { c.nodes[node].counter(name) }

    func assertClean(_ r: RunReport, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertTrue(r.fatals.isEmpty && r.violations.isEmpty, "\(r)", file: file, line: line)
    }

    /// Node 0 writes gfn 0, nodes 1 and 2 read it, node 2 writes it: node 1's invalidation ack
    /// is held. The write must not be granted until the ack arrives.
    func testDelayedInvalidationAckHoldsTheWrite() throws {
        for seed in UInt64(0)..<40 {
            let c = try SimCluster(descriptor: ivy, nodes: 3, pages: 2, seed: seed, settings: noRequestTimeout)
            var holdAcks = true
            c.hold = { m in holdAcks && ivyType(m) == .invAck }
            var wrote = false, read1 = false
            var seen: [UInt64] = []
            c.addThread(node: 0, script([{ t in t.store(0, 0, 5) }, { _ in wrote = true; return true }]))
            c.addThread(node: 1, script([waitFor { wrote }, { t in
                guard let v = t.load(0, 0) else { return false }
                seen.append(v); read1 = true; return true
            }]))
            var writerDone = false
            c.addThread(node: 2, script([waitFor { read1 }, { t in
                guard let v = t.load(0, 0) else { return false }
                seen.append(v); return true
            }, { t in t.store(0, 0, 7) }, { _ in writerDone = true; return true }]))
            let r1 = c.run()
            assertClean(r1)
            XCTAssertNotNil(r1.stuck, "seed \(seed): the held ack must leave the writer waiting")
            XCTAssertFalse(writerDone, "seed \(seed): write granted before the invalidation ack arrived")
            XCTAssertFalse(c.nodes.contains { $0.pageState[0] == GVM_PAGE_MODIFIED }, "seed \(seed): a MODIFIED copy while an ack is outstanding")
            XCTAssertEqual(c.nodes[1].pageState[0], GVM_PAGE_INVALID, "seed \(seed): node 1 must have dropped its copy")
            holdAcks = false
            let r2 = c.run()
            assertClean(r2)
            XCTAssertNil(r2.stuck, "seed \(seed)")
            XCTAssertTrue(writerDone)
            XCTAssertEqual(seen, [5, 5])
            XCTAssertEqual(c.latest(0, 0), 7)
            XCTAssertGreaterThanOrEqual(counter(c, 0, "dsm.inv.sent"), 1)
            let v = c.verifyFromEveryNode()
            XCTAssertTrue(v.ok, "\(v)")
        }
    }

    /// Node 1 takes gfn 0 for writing; its Confirm to the manager is held, so the ownership move
    /// is not yet recorded. Node 2's read and node 0's read cross it: the manager must queue them
    /// (never forward to the former owner, node 0) and then forward them to node 1.
    func testRequestCrossingAnOwnershipMove() throws {
        for seed in UInt64(0)..<40 {
            let c = try SimCluster(descriptor: ivy, nodes: 3, pages: 2, seed: seed, settings: noRequestTimeout)
            var holdConfirm = true
            c.hold = { m in holdConfirm && ivyType(m) == .confirm && m.src == 1 }
            var forwardsTo: [UInt32] = []
            c.onDeliver = { m in if ivyType(m) == .fwdGetS { forwardsTo.append(m.dst) } }
            var wrote = false
            var seen: [UInt64] = []
            c.addThread(node: 1, script([{ t in t.store(0, 0, 11) }, { _ in wrote = true; return true }]))
            for n in [UInt32(0), 2] {
                c.addThread(node: n, script([waitFor { wrote }, { t in
                    guard let v = t.load(0, 0) else { return false }
                    seen.append(v); return true
                }]))
            }
            let r1 = c.run()
            assertClean(r1)
            XCTAssertNotNil(r1.stuck)
            XCTAssertTrue(wrote)
            XCTAssertEqual(seen, [], "seed \(seed): a read completed before the ownership move was confirmed")
            XCTAssertGreaterThanOrEqual(counter(c, 0, "ivy.manager_queued"), 1, "seed \(seed)")
            holdConfirm = false
            let r2 = c.run()
            assertClean(r2)
            XCTAssertNil(r2.stuck)
            XCTAssertEqual(seen, [11, 11], "seed \(seed)")
            XCTAssertEqual(forwardsTo, [1, 1], "seed \(seed): both queued reads must be forwarded to the new owner, never the former one")
        }
    }

    /// The owner serves a read copy (Data on the bulk lane, held), then upgrades its own copy,
    /// invalidating the reader. The invalidation must never overtake the data it invalidates.
    func testInvalidationNeverOvertakesTheCopyItInvalidates() throws {
        for seed in UInt64(0)..<40 {
            let c = try SimCluster(descriptor: ivy, nodes: 2, pages: 2, seed: seed, settings: noRequestTimeout)
            var holdData = false
            c.hold = { m in holdData && ivyType(m) == .data && m.src == 0 }
            var phase = 0
            var seen: UInt64?
            var dataSent = false
            c.onSend = { m in
                if ivyType(m) == .data && m.src == 0 { dataSent = true }
                return m
            }
            // Node 0's second store starts only once the read copy is on its way (and held).
            c.addThread(node: 0, script([{ t in t.store(0, 0, 1) }, { _ in phase = 1; holdData = true; return true },
                                         waitFor { dataSent }, { t in t.store(0, 0, 2) }]))
            c.addThread(node: 1, script([waitFor { phase == 1 }, { t in
                guard let v = t.load(0, 0) else { return false }
                seen = v; return true
            }]))
            let r1 = c.run()
            assertClean(r1)
            XCTAssertEqual(c.nodes[0].counter("ivy.msg.Inv"), 1, "seed \(seed): the owner's upgrade must invalidate the reader")
            holdData = false
            let r2 = c.run()
            assertClean(r2)
            XCTAssertNil(r2.stuck, "seed \(seed)")
            XCTAssertTrue(seen == 1 || seen == 2, "seed \(seed): read \(String(describing: seen))")
            XCTAssertEqual(c.latest(0, 0), 2)
            XCTAssertTrue(c.verifyFromEveryNode().ok)
        }
    }

    /// Replies from two owners reach one node in reverse order of the requests.
    func testReorderedRepliesFromDifferentOwners() throws {
        for seed in UInt64(0)..<20 {
            let c = try SimCluster(descriptor: ivy, nodes: 3, pages: 3, seed: seed, settings: [("manager_chunk", "4KiB")] + noRequestTimeout)
            // gfn 0 is managed (and first owned) by node 0, gfn 1 by node 1.
            var ready = 0
            var delivered1 = false
            c.hold = { m in ivyType(m) == .data && m.src == 0 && m.dst == 2 && !delivered1 }
            c.onDeliver = { m in if ivyType(m) == .data && m.src == 1 && m.dst == 2 { delivered1 = true } }
            c.addThread(node: 0, script([{ t in t.store(0, 0, 100) }, { _ in ready += 1; return true }]))
            c.addThread(node: 1, script([{ t in t.store(1, 0, 200) }, { _ in ready += 1; return true }]))
            var got: [UInt64: UInt64] = [:]
            for g in [UInt64(0), 1] {
                c.addThread(node: 2, script([waitFor { ready == 2 }, { t in
                    guard let v = t.load(g, 0) else { return false }
                    got[g] = v; return true
                }]))
            }
            let r = c.run()
            assertClean(r)
            XCTAssertNil(r.stuck, "seed \(seed)")
            XCTAssertEqual(got, [0: 100, 1: 200])
        }
    }

    /// Nodes 1 and 2 share gfn 0 and both write it. Node 1's upgrade request reaches the manager
    /// only after node 2's, so node 1 is invalidated while its upgrade is outstanding: the reply
    /// must then carry the data (node 1 no longer holds a valid copy), never a bare grant.
    func testUpgradeAfterCrossingInvalidationGetsTheData() throws {
        for seed in UInt64(0)..<40 {
            let c = try SimCluster(descriptor: ivy, nodes: 3, pages: 2, seed: seed, settings: noRequestTimeout)
            var oneSent = false, twoDelivered = false
            c.onSend = { m in
                if ivyType(m) == .getX && m.src == 1 { oneSent = true }
                return m
            }
            c.hold = { m in ivyType(m) == .getX && m.src == 1 && !twoDelivered }
            var grantsTo1 = 0
            c.onDeliver = { m in
                if ivyType(m) == .grant && m.dst == 1 { grantsTo1 += 1 }
                if ivyType(m) == .getX && m.src == 2 { twoDelivered = true }
            }
            var wrote = false, r1 = false, r2 = false, w2 = false
            c.addThread(node: 0, script([{ t in t.store(0, 0, 1) }, { t in t.store(0, 8, 0xBEEF) }, { _ in wrote = true; return true }]))
            c.addThread(node: 1, script([waitFor { wrote }, { t in t.load(0, 0).map { _ in r1 = true } != nil },
                                         waitFor { r2 }, { t in t.store(0, 0, 0x11) }]))
            c.addThread(node: 2, script([waitFor { r1 }, { t in t.load(0, 0).map { _ in r2 = true } != nil },
                                         waitFor { oneSent }, { t in t.store(0, 0, 0x22) }, { _ in w2 = true; return true }]))
            let r = c.run()
            assertClean(r)
            XCTAssertNil(r.stuck, "seed \(seed)")
            XCTAssertTrue(w2)
            XCTAssertEqual(c.latest(0, 0), 0x11, "seed \(seed): node 1's write was ordered after node 2's")
            XCTAssertEqual(counter(c, 1, "ivy.upgrade_lost_copy"), 1, "seed \(seed)")
            XCTAssertEqual(grantsTo1, 0, "seed \(seed): a bare grant to a node whose copy was invalidated")
            XCTAssertTrue(c.verifyFromEveryNode().ok)
        }
    }

    /// A grant without data arrives, but the host no longer has the page (page_upgrade returns
    /// GVM_ERR_NOT_PRESENT): the node must fetch the bytes from the old owner's stash.
    func testUpgradeNotPresentFetchesThePage() throws {
        for seed in UInt64(0)..<20 {
            let c = try SimCluster(descriptor: ivy, nodes: 2, pages: 2, seed: seed, settings: noRequestTimeout)
            var holdGrant = true
            c.hold = { m in holdGrant && ivyType(m) == .grant }
            var wrote = false, read = false
            var after: UInt64?
            c.addThread(node: 0, script([{ t in t.store(0, 0, 1) }, { t in t.store(0, 16, 0xCAFE) }, { _ in wrote = true; return true }]))
            c.addThread(node: 1, script([waitFor { wrote }, { t in t.load(0, 0).map { _ in read = true } != nil },
                                         { t in t.store(0, 0, 2) }, { t in
                                             guard let v = t.load(0, 16) else { return false }
                                             after = v; return true
                                         }]))
            let r1 = c.run()
            assertClean(r1)
            XCTAssertTrue(read)
            XCTAssertEqual(c.nodes[1].pageState[0], GVM_PAGE_SHARED, "seed \(seed)")
            c.nodes[1].forceDrop(0)
            holdGrant = false
            let r2 = c.run()
            assertClean(r2)
            XCTAssertNil(r2.stuck, "seed \(seed)")
            XCTAssertEqual(after, 0xCAFE, "seed \(seed): the fetched page must carry the owner's bytes")
            XCTAssertEqual(c.latest(0, 0), 2)
            XCTAssertEqual(counter(c, 1, "ivy.upgrade_refetch"), 1)
            XCTAssertEqual(counter(c, 1, "ivy.msg.Fetch"), 1)
            XCTAssertEqual(counter(c, 0, "dsm.page.sent_data"), 2, "one read copy, one fetched page")
        }
    }

    /// A sharer pins its copy for reading (host code reading guest RAM); another node's write
    /// must wait (the invalidation is deferred, not failed) until the pin goes away.
    func testReadPinDefersInvalidationUntilUnpin() throws {
        for seed in UInt64(0)..<30 {
            let c = try SimCluster(descriptor: ivy, nodes: 3, pages: 2, seed: seed, settings: noRequestTimeout)
            var wrote = false, pinned = false, writerDone = false
            c.addThread(node: 0, script([{ t in t.store(0, 0, 3) }, { _ in wrote = true; return true }]))
            c.addThread(node: 1, script([waitFor { wrote }, { t in t.pin(0, write: false) }, { _ in pinned = true; return true }]))
            c.addThread(node: 2, script([waitFor { pinned }, { t in t.store(0, 0, 4) }, { _ in writerDone = true; return true }]))
            let r1 = c.run()
            assertClean(r1)
            XCTAssertNotNil(r1.stuck)
            XCTAssertFalse(writerDone, "seed \(seed): write completed through a read pin")
            XCTAssertEqual(c.nodes[1].pageState[0], GVM_PAGE_SHARED)
            XCTAssertGreaterThanOrEqual(counter(c, 1, "dsm.pin.deferred"), 1)
            c.addThread(node: 1, script([{ t in t.unpin(0, write: false); return true }]))
            let r2 = c.run()
            assertClean(r2)
            XCTAssertNil(r2.stuck, "seed \(seed)")
            XCTAssertTrue(writerDone)
            XCTAssertEqual(c.latest(0, 0), 4)
        }
    }

    /// Four threads of one node fault on one page: one request goes out, and all four wake.
    func testSeveralLocalFaultsMakeOneRequestAndAllWake() throws {
        for seed in UInt64(0)..<20 {
            let c = try SimCluster(descriptor: ivy, nodes: 2, pages: 2, seed: seed, settings: noRequestTimeout)
            var wrote = false
            c.addThread(node: 0, script([{ t in t.store(0, 0, 9) }, { _ in wrote = true; return true }]))
            var readers: [SimThread] = []
            var seen: [UInt64] = []
            for _ in 0..<4 {
                readers.append(c.addThread(node: 1, script([waitFor { wrote }, { t in
                    guard let v = t.load(0, 0) else { return false }
                    seen.append(v); return true
                }])))
            }
            c.hold = { m in
                ivyType(m) == .data && m.dst == 1
                    && !(readers.allSatisfy { $0.blockedOn == 0 } && c.nodes[1].pendingFaults == 0)
            }
            let r = c.run()
            assertClean(r)
            XCTAssertNil(r.stuck, "seed \(seed)")
            XCTAssertEqual(seen, [9, 9, 9, 9])
            XCTAssertEqual(counter(c, 1, "ivy.msg.GetS"), 1, "seed \(seed): one request for four faults")
            XCTAssertEqual(counter(c, 1, "dsm.fault.read_miss"), 1)
            XCTAssertEqual(counter(c, 1, "dsm.fault.coalesced"), 3)
        }
    }

    /// A never-written page crosses the network as a 24-byte header with the zero flag.
    func testNeverWrittenPagesMoveWithoutZeros() throws {
        let c = try SimCluster(descriptor: ivy, nodes: 2, pages: 2, seed: 1, settings: noRequestTimeout)
        var seen: UInt64?
        var dataBytes: [Int] = []
        c.onDeliver = { m in if ivyType(m) == .data { dataBytes.append(m.bytes.count) } }
        c.addThread(node: 1, script([{ t in
            guard let v = t.load(0, 0) else { return false }
            seen = v; return true
        }, { t in t.store(0, 0, 1) }]))
        let r = c.run()
        assertClean(r)
        XCTAssertEqual(seen, 0)
        XCTAssertEqual(dataBytes, [24])
        // Pages handed over without bytes: the zero page, and the Grant of the upgrade.
        XCTAssertEqual(counter(c, 0, "dsm.page.sent_nodata"), 1 + counter(c, 0, "ivy.msg.Grant"))
        XCTAssertEqual(counter(c, 0, "dsm.page.sent_data"), 0)
        XCTAssertEqual(counter(c, 0, "ivy.bytes.Data"), 24)
    }

    /// A forward that reaches a node that does not own the page is refused, and the manager
    /// forwards it again to the owner: the request is never lost.
    func testForwardToANonOwnerIsRefusedAndRetried() throws {
        let c = try SimCluster(descriptor: ivy, nodes: 4, pages: 4, seed: 5, settings: noRequestTimeout)
        var redirected = false
        c.onSend = { m in
            var m = m
            if !redirected && ivyType(m) == .fwdGetS && m.dst == 1 {
                redirected = true
                m.dst = 3   // node 3 does not own gfn 0
            }
            return m
        }
        var wrote = false
        var seen: UInt64?
        c.addThread(node: 1, script([{ t in t.store(0, 0, 42) }, { _ in wrote = true; return true }]))
        c.addThread(node: 2, script([waitFor { wrote }, { t in
            guard let v = t.load(0, 0) else { return false }
            seen = v; return true
        }]))
        let r = c.run()
        assertClean(r)
        XCTAssertNil(r.stuck)
        XCTAssertTrue(redirected)
        XCTAssertEqual(seen, 42)
        XCTAssertEqual(counter(c, 3, "ivy.refusals"), 1)
        XCTAssertEqual(counter(c, 3, "ivy.msg.Nack"), 1)
    }

    /// A lost peer stops the node: no fatal, later input ignored, nothing hangs in the plugin.
    func testPeerLostStopsTheNode() throws {
        let c = try SimCluster(descriptor: ivy, nodes: 2, pages: 2, seed: 1, settings: noRequestTimeout)
        c.addThread(node: 1, script([{ t in t.store(0, 0, 1) }]))
        let r = c.run()
        assertClean(r)
        c.nodes[0].callPeerLost(1)
        XCTAssertTrue(c.nodes[0].logs.contains { $0.contains("peer node 1 lost") }, "\(c.nodes[0].logs)")
        c.inject(from: 1, to: 0, [1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
        XCTAssertEqual(c.nodes[0].fatals, [])
    }
}
