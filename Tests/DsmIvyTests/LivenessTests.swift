// Back pressure and lost messages (Plugins/dsm-ivy/Core/Liveness.swift), in the simulation:
// transport queues that fill up must slow the protocol down, never stop it; a lost message must
// stop the cluster after `request_timeout`, naming the request, the page and the peer.

import XCTest
import PluginAPI
import CoherenceKit
@testable import IvyCore

final class LivenessTests: XCTestCase {
    /// Every (sender, receiver, lane) queue holds one message: almost every send finds the
    /// transport full. The workload still completes, exactly, with no fatal.
    func testFullSendQueuesSlowTheProtocolDownButNeverStopIt() throws {
        for seed in UInt64(0)..<6 {
            let c = try SimCluster(descriptor: ivy, nodes: 3, pages: 4, seed: seed)
            c.queueCapacity = 1
            var programs: [RandomProgram] = []
            for n in 0..<3 {
                for k in 0..<2 {
                    let p = RandomProgram(pages: [0, 1, 2, 3], slots: 4, ops: 60, writePercent: 60, seed: seed * 10 + UInt64(n * 2 + k))
                    programs.append(p)
                    c.addThread(node: UInt32(n), p)
                }
            }
            let r = c.run(maxSteps: 3_000_000)
            XCTAssertTrue(r.fatals.isEmpty, "seed \(seed): \(r)")
            XCTAssertTrue(r.violations.isEmpty, "seed \(seed): \(r)")
            XCTAssertNil(r.stuck, "seed \(seed): \(r)")
            XCTAssertGreaterThan(c.sendsRefused, 0, "seed \(seed): the queues never filled")
            XCTAssertGreaterThan(c.total("ivy.send_waits"), 0, "seed \(seed)")
            let v = c.verifyFromEveryNode(maxSteps: 3_000_000)
            XCTAssertTrue(v.fatals.isEmpty && v.violations.isEmpty && v.stuck == nil, "seed \(seed): \(v)")
        }
    }

    /// A queue that never drains: the message waits `send_wait`, then the cluster stops naming
    /// the peer, the message and the page.
    func testAQueueThatStaysFullStopsTheClusterNamingThePeer() throws {
        let c = try SimCluster(descriptor: ivy, nodes: 2, pages: 4, seed: 3, settings: [("send_wait", "20ms")])
        c.queueCapacity = 1
        // Node 1's queues to node 0 are never delivered: they stay full.
        c.hold = { m in m.src == 1 && m.dst == 0 }
        // gfn 0 and 1 are managed by node 0: the second request finds the queue full.
        c.addThread(node: 1, script([{ t in t.store(0, 0, 1) }]))
        c.addThread(node: 1, script([{ t in t.store(1, 0, 2) }]))
        let r = c.run(maxSteps: 2_000_000)
        let fatal = r.fatals.first ?? ""
        XCTAssertTrue(fatal.contains("dsm-ivy node 1: the transport's send queue to node 0"), "\(r)")
        XCTAssertTrue(fatal.contains("stayed full for"), fatal)
        XCTAssertTrue(fatal.contains("(send_wait 0.02"), fatal)
        XCTAssertTrue(fatal.contains("node 0 is not reading"), fatal)
        XCTAssertLessThan(c.now, 40_000, "stopped at \(c.now) µs, long after send_wait")
    }

    /// One GetX is lost on its way to the manager: after `request_timeout` the requester stops
    /// the cluster naming the request, the page, its state and the manager it waits on.
    func testALostRequestTimesOutNamingRequestPageAndPeer() throws {
        let c = try SimCluster(descriptor: ivy, nodes: 2, pages: 2, seed: 1, settings: [("request_timeout", "0.05")])
        var dropped = 0
        c.onSend = { m in
            if ivyType(m) == .getX && m.src == 1 && dropped == 0 { dropped += 1; return nil }
            return m
        }
        c.addThread(node: 1, script([{ t in t.store(0, 0, 9) }]))
        let r = c.run(maxSteps: 2_000_000)
        XCTAssertEqual(dropped, 1)
        XCTAssertNil(r.stuck, "the lost request must not hang: \(r)")
        XCTAssertEqual(r.fatals.count, 1, "\(r)")
        let fatal = r.fatals.first ?? ""
        XCTAssertTrue(fatal.contains("dsm-ivy node 1: request timed out: write miss of gfn 0 (state IM_D) unanswered for 0.05"), fatal)
        XCTAssertTrue(fatal.contains("(request_timeout 0.05"), fatal)
        XCTAssertTrue(fatal.contains("waiting on node 0"), fatal)
        // The simulated clock: about request_timeout after the fault, not much later.
        XCTAssertLessThan(c.now, 80_000, "timed out at \(c.now) µs")
    }

    /// A lost invalidation ack: the owner upgrading its own copy names the sharer it waits on.
    func testALostInvalidationAckNamesTheSharer() throws {
        let c = try SimCluster(descriptor: ivy, nodes: 3, pages: 3, seed: 2,
                               settings: [("request_timeout", "30ms"), ("manager_chunk", "4KiB")])
        var dropAcks = false
        c.onSend = { m in (dropAcks && ivyType(m) == .invAck && m.src == 2) ? nil : m }
        var shared = false
        // gfn 0: managed and owned by node 0. Node 0 writes it, node 2 reads it (a sharer), then
        // node 0 writes again: its own upgrade invalidates node 2, whose ack is lost.
        c.addThread(node: 0, script([{ t in t.store(0, 0, 1) }, waitFor { shared }, { _ in dropAcks = true; return true },
                                     { t in t.store(0, 0, 2) }]))
        c.addThread(node: 2, script([{ t in t.load(0, 0) != nil }, { _ in shared = true; return true }]))
        let r = c.run(maxSteps: 2_000_000)
        let fatal = r.fatals.first ?? ""
        XCTAssertTrue(fatal.contains("dsm-ivy node 0: request timed out: upgrade of gfn 0 (state OM_A)"), "\(r)")
        XCTAssertTrue(fatal.contains("no invalidation acknowledgement from node 2"), fatal)
    }

    /// Requests that are answered leave no timer behind, and a run ends at once when done.
    func testAnsweredRequestsLeaveNoTimer() throws {
        let c = try SimCluster(descriptor: ivy, nodes: 2, pages: 2, seed: 4, settings: [("request_timeout", "1h")])
        c.addThread(node: 1, script([{ t in t.store(0, 0, 3) }, { t in t.load(1, 0) != nil }]))
        let r = c.run()
        XCTAssertTrue(r.fatals.isEmpty && r.stuck == nil, "\(r)")
        XCTAssertLessThan(c.now, 1_000_000, "the run idled towards a request timer: now \(c.now) µs")
    }

    func testSettingsAreRangeChecked() throws {
        var cfg = try IvyConfig.parse([:], pageCount: 4, nodeCount: 2)
        XCTAssertEqual(cfg.requestTimeoutNanoseconds, 10_000_000_000)
        XCTAssertEqual(cfg.sendWaitNanoseconds, 5_000_000_000)
        try cfg.parseLivenessSettings(["request_timeout": "30", "send_wait": "250ms"])
        XCTAssertEqual(cfg.requestTimeoutNanoseconds, 30_000_000_000)
        XCTAssertEqual(cfg.sendWaitNanoseconds, 250_000_000)
        try cfg.parseLivenessSettings(["request_timeout": "0"])
        XCTAssertEqual(cfg.requestTimeoutNanoseconds, 0)
        for (k, v) in [("request_timeout", "1e300"), ("request_timeout", "2h"), ("request_timeout", "-1"), ("request_timeout", "soon"),
                       ("request_timeout", "10us"), ("send_wait", "0"), ("send_wait", "nan"), ("send_wait", "inf")] {
            XCTAssertThrowsError(try cfg.parseLivenessSettings([k: v]), "\(k): \(v)") { e in
                XCTAssertTrue("\(e)".contains("setting '\(k)': '\(v)'"), "\(e)")
            }
        }
        // The plugin accepts both keys (and still refuses unknown ones).
        XCTAssertNoThrow(try SimCluster(descriptor: ivy, nodes: 2, pages: 2, seed: 1,
                                        settings: [("request_timeout", "2s"), ("send_wait", "1s")]))
        XCTAssertThrowsError(try SimCluster(descriptor: ivy, nodes: 2, pages: 2, seed: 1, settings: [("request_timeout", "forever")]))
    }
}
