import Cluster
import Config
import Foundation
import Logging
import PluginAPI
import PluginHost
import XCTest

/// Two `Node`s in this process over the real transport-tcp plugin (.so loaded by the loader):
/// the Node API, lane independence, in-order delivery and size limits.
final class InProcessNodeTests: XCTestCase {
    private func makePair(ports: [Int]) throws -> [Node] {
        try Paths.requireBinaries()
        let yaml = clusterYAML(addresses: ["127.0.0.1", "127.0.0.1"], ports: ports, heartbeat: "100ms", failure: "3s")
        let cfg = try ConfigLoader.parse(yaml: yaml, path: "inprocess.yaml")
        var logger = Logger(label: "inprocess")
        logger.logLevel = .error
        return try (0..<2).map { id in
            let loader = PluginLoader(searchPath: [Paths.productsDirectory.path])
            return try Node(config: cfg, id: UInt32(id), loader: loader, logger: logger)
        }
    }

    /// Starts both nodes (each start waits for the other).
    private func startBoth(_ nodes: [Node]) throws {
        let err1 = Box<Error>()
        let done = DispatchSemaphore(value: 0)
        let t = Thread { do { try nodes[1].start() } catch { err1.value = error }; done.signal() }
        t.start()
        try nodes[0].start()
        XCTAssertEqual(done.wait(timeout: .now() + 15), .success)
        if let e = err1.value { throw e }
    }

    private func stopBoth(_ nodes: [Node]) -> [StopReason] {
        nodes[0].stop(reason: "test finished")
        let r1 = Box<StopReason>()
        let done = DispatchSemaphore(value: 0)
        let t = Thread { r1.value = nodes[1].waitUntilStopped(); done.signal() }
        t.start()
        let r0 = nodes[0].waitUntilStopped()
        XCTAssertEqual(done.wait(timeout: .now() + 10), .success)
        return [r0, r1.value!]
    }

    /// LEAVE (node evacuation): node 1 leaves, stops with status 0 and closes its connections;
    /// node 0 records it as departed and keeps running past the failure timeout (its disconnect
    /// and silence are no lost node; a send to it is dropped), then stops cleanly on its own.
    func testALeavingNodeIsNotALostNode() throws {
        let nodes = try makePair(ports: [17294, 17295])
        try startBoth(nodes)
        XCTAssertFalse(nodes[0].hasDeparted(1))
        try nodes[1].leave(timeout: 5)
        XCTAssertTrue(nodes[0].hasDeparted(1))
        XCTAssertTrue(nodes[1].leftCluster)
        nodes[1].stop(reason: "left the cluster")
        XCTAssertEqual(nodes[1].waitUntilStopped().status, 0)
        usleep(3_600_000)   // past timeouts.failure (3s): no heartbeat from node 1 any more
        XCTAssertNil(nodes[0].stopReason, "node 0 stopped: \(nodes[0].stopReason?.message ?? "")")
        XCTAssertEqual(nodes[0].send(channel: .cpu, to: 1, [0x90, 1]), GVM_OK.rawValue)
        nodes[0].stop(reason: "test finished")
        XCTAssertEqual(nodes[0].waitUntilStopped().status, 0)
    }

    func testUrgentLaneIsNotBlockedByABlockedBulkLaneAndBulkStaysInOrder() throws {
        let nodes = try makePair(ports: [17290, 17291])
        let release = DispatchSemaphore(value: 0)
        let lock = NSLock()
        var bulkSeqs: [UInt32] = []
        var urgentAt: Double?
        var firstBulkAt: Double?
        nodes[1].register(channel: .coherence) { _, payload in
            let seq = UInt32(payload[1]) | UInt32(payload[2]) << 8 | UInt32(payload[3]) << 16
            lock.lock()
            let first = bulkSeqs.isEmpty
            bulkSeqs.append(seq)
            if first { firstBulkAt = clusterTestNow() }
            lock.unlock()
            if first { _ = release.wait(timeout: .now() + 10) }  // blocks the bulk receive thread
        }
        nodes[1].register(channel: .cpu) { _, payload in
            lock.lock(); if payload.first == 0x90 { urgentAt = clusterTestNow() }; lock.unlock()
        }
        try startBoth(nodes)
        let frames = 200
        for i in 0..<frames {
            var f = [UInt8](repeating: 0xC3, count: 60 * 1024)
            f[0] = 0x81; f[1] = UInt8(i & 0xff); f[2] = UInt8((i >> 8) & 0xff); f[3] = 0
            XCTAssertEqual(nodes[0].send(channel: .coherence, to: 1, f), GVM_OK.rawValue)
        }
        XCTAssertEqual(nodes[0].send(channel: .cpu, to: 1, [0x90, 1, 2, 3]), GVM_OK.rawValue)
        // The urgent frame arrives while the bulk lane's receiver is still blocked.
        let t0 = clusterTestNow()
        while clusterTestNow() - t0 < 5 {
            lock.lock(); let got = urgentAt != nil; lock.unlock()
            if got { break }
            usleep(2_000)
        }
        lock.lock()
        XCTAssertNotNil(urgentAt, "urgent frame did not arrive while bulk was blocked")
        XCTAssertNotNil(firstBulkAt)
        XCTAssertEqual(bulkSeqs.count, 1, "bulk receiver should be blocked on its first frame")
        lock.unlock()
        release.signal()
        while clusterTestNow() - t0 < 10 {
            lock.lock(); let n = bulkSeqs.count; lock.unlock()
            if n == frames { break }
            usleep(5_000)
        }
        lock.lock()
        XCTAssertEqual(bulkSeqs, (0..<UInt32(frames)).map { $0 }, "bulk frames lost, duplicated or out of order")
        lock.unlock()
        // Limits: a frame over GVM_MAX_FRAME (with the 4-byte channel header) is refused.
        XCTAssertEqual(nodes[0].send(channel: .coherence, to: 1, [UInt8](repeating: 0, count: Int(GVM_MAX_FRAME) - 4)), GVM_OK.rawValue)
        XCTAssertEqual(nodes[0].send(channel: .coherence, to: 1, [UInt8](repeating: 0, count: Int(GVM_MAX_FRAME) - 3)), GVM_ERR_INVALID.rawValue)
        XCTAssertEqual(nodes[0].send(channel: .io, to: 7, [1]), GVM_ERR_INVALID.rawValue)
        let reasons = stopBoth(nodes)
        XCTAssertEqual(reasons[0].status, 0)
        XCTAssertEqual(reasons[0].message, "test finished")
        XCTAssertEqual(reasons[1].status, 0)
        XCTAssertEqual(reasons[1].message, "node 0 finished: test finished")
        XCTAssertEqual(nodes[0].send(channel: .io, to: 1, [1]), GVM_ERR_CLOSED.rawValue)
    }

    /// Both nodes flood each other with bulk frames and answer every frame from their receive
    /// thread: with full socket buffers both ways, nothing deadlocks (send only queues).
    func testTwoNodesFloodingEachOtherWithRepliesFromReceiveThreadsDoNotDeadlock() throws {
        let nodes = try makePair(ports: [17292, 17293])
        let frames = 300
        let lock = NSLock()
        var replies = [0, 0]
        var requests = [0, 0]
        for id in 0..<2 {
            let me = nodes[id]
            me.register(channel: .coherence) { from, payload in
                if payload.first == 0x81 {
                    var r = [UInt8](payload)
                    r[0] = 0x82
                    XCTAssertEqual(me.send(channel: .coherence, to: from, r), GVM_OK.rawValue)
                    lock.lock(); requests[id] += 1; lock.unlock()
                } else if payload.first == 0x82 {
                    lock.lock(); replies[id] += 1; lock.unlock()
                }
            }
        }
        try startBoth(nodes)
        let frame = [0x81] + [UInt8](repeating: 0x11, count: 60 * 1024)
        let senders = (0..<2).map { id in
            Thread {
                for _ in 0..<frames { XCTAssertEqual(nodes[id].send(channel: .coherence, to: UInt32(1 - id), frame), GVM_OK.rawValue) }
            }
        }
        senders.forEach { $0.start() }
        let t0 = clusterTestNow()
        while clusterTestNow() - t0 < 30 {
            lock.lock(); let done = replies == [frames, frames]; lock.unlock()
            if done { break }
            usleep(10_000)
        }
        lock.lock()
        XCTAssertEqual(replies, [frames, frames], "replies missing after \(clusterTestNow() - t0) s")
        XCTAssertEqual(requests, [frames, frames])
        lock.unlock()
        let reasons = stopBoth(nodes)
        XCTAssertEqual(reasons.map(\.status), [0, 0])
    }
}

/// A value shared with another thread (written before a semaphore signal, read after the wait).
final class Box<T>: @unchecked Sendable { var value: T? }

/// The in-memory test double: three Nodes in one process, no sockets.
final class InMemoryNetworkTests: XCTestCase {
    func testThreeNodesMeetExchangeAndStopNamingACutNode() throws {
        let yaml = clusterYAML(addresses: ["127.0.0.1", "127.0.0.1", "127.0.0.1"], ports: [1, 2, 3],
                               heartbeat: "50ms", failure: "1s")
        let cfg = try ConfigLoader.parse(yaml: yaml, path: "mem.yaml")
        var logger = Logger(label: "mem")
        logger.logLevel = .critical
        let net = InMemoryNetwork(nodeCount: 3)
        let nodes = try (0..<3).map { id in
            try Node(config: cfg, id: UInt32(id), logger: logger) { node in net.endpoint(UInt32(id), events: node) }
        }
        let lock = NSLock()
        var got: [String] = []
        for (id, n) in nodes.enumerated() {
            n.register(channel: .io) { from, payload in
                lock.lock(); got.append("\(from)->\(id):\(Array(payload))"); lock.unlock()
            }
        }
        let starters = (1..<3).map { i in Thread { try? nodes[i].start() } }
        starters.forEach { $0.start() }
        try nodes[0].start()
        // Wait until 1 and 2 have met everyone too (a send to an unmet peer is refused).
        let t0 = clusterTestNow()
        while clusterTestNow() - t0 < 5 {
            if nodes[1].send(channel: .io, to: 2, [0x80, 12]) == GVM_OK.rawValue { break }
            usleep(10_000)
        }
        XCTAssertEqual(nodes[0].send(channel: .io, to: 1, [0x80, 1]), GVM_OK.rawValue)
        XCTAssertEqual(nodes[0].send(channel: .io, to: 2, [0x80, 2]), GVM_OK.rawValue)
        XCTAssertEqual(nodes[2].send(channel: .io, to: 0, [0x80, 20]), GVM_OK.rawValue)
        while clusterTestNow() - t0 < 5 {
            lock.lock(); let n = got.count; lock.unlock()
            if n == 4 { break }
            usleep(10_000)
        }
        lock.lock()
        XCTAssertEqual(Set(got), ["1->2:[128, 12]", "0->1:[128, 1]", "0->2:[128, 2]", "2->0:[128, 20]"])
        lock.unlock()
        net.cut(2)
        let r2 = Box<StopReason>()
        let w = Thread { r2.value = nodes[2].waitUntilStopped() }
        nodes[2].stop(reason: "cut off", status: 1)
        w.start()
        let r0 = nodes[0].waitUntilStopped()
        let r1 = nodes[1].waitUntilStopped()
        for r in [r0, r1] {
            XCTAssertEqual(r.status, 1)
            XCTAssertTrue(r.message.contains("lost node 2"), r.message)
        }
    }
}
