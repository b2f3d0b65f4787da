// The I/O-forwarding RPC between two Nodes joined by an in-memory transport (no plugin, no KVM):
// request ids, concurrent callers each matched to their own reply, a reply that never comes
// (timeout with a clear error), and a stop that fails a waiting call at once.

import Cluster
import Config
import Foundation
import Logging
import Metrics
import PluginAPI
@testable import Distributed
@testable import Machine
import TestSupport
import XCTest

/// Frames from one node go straight to the other on a delivery thread (per-pair FIFO).
final class MemoryWire: @unchecked Sendable {
    var nodes: [Node?] = [nil, nil]
    let cond = NSCondition()
    var queue: [(to: Int, from: UInt32, lane: UInt32, frame: [UInt8])] = []
    var dropChannel: UInt8?
    var stopped = false

    init() {
        let t = Thread { [self] in
            while true {
                cond.lock()
                while queue.isEmpty && !stopped { cond.wait() }
                if stopped { cond.unlock(); return }
                let f = queue.removeFirst()
                cond.unlock()
                f.frame.withUnsafeBytes { nodes[f.to]?.deliver(from: f.from, lane: f.lane, frame: $0) }
            }
        }
        t.start()
    }

    func stop() { cond.lock(); stopped = true; cond.broadcast(); cond.unlock() }

    final class End: FrameTransport {
        let wire: MemoryWire
        let id: Int
        init(_ wire: MemoryWire, _ id: Int) { self.wire = wire; self.id = id }
        func start() throws { wire.nodes[id]?.peerState(UInt32(1 - id), up: true, reason: "memory wire") }
        func send(to node: UInt32, lane: UInt32, _ iov: UnsafeBufferPointer<gvm_iovec>) -> Int32 {
            var bytes: [UInt8] = []
            for v in iov where v.len > 0 { bytes += UnsafeRawBufferPointer(start: v.base, count: v.len) }
            wire.cond.lock()
            defer { wire.cond.unlock() }
            if let d = wire.dropChannel, bytes.first == d { return GVM_OK.rawValue }
            wire.queue.append((Int(node), UInt32(id), lane, bytes))
            wire.cond.broadcast()
            return GVM_OK.rawValue
        }
        func stop() {}
    }
}

final class IORPCTests: XCTestCase {
    var wire: MemoryWire!
    var nodes: [Node] = []
    var forwarders: [IOForwarder] = []
    var scratch: [UInt8] = Array(repeating: 0, count: 16)
    let lock = NSLock()

    override func setUpWithError() throws {
        let cfg = try ConfigLoader.parse(yaml: """
            cluster: rpc
            nodes:
              - {id: 0, address: 127.0.0.1, port: 20500, vcpus: 1}
              - {id: 1, address: 127.0.0.1, port: 20501, vcpus: 1}
            memory: 8MiB
            transport: {plugin: transport-tcp}
            coherence: {plugin: dsm-ivy}
            timeouts: {connect: 5s, heartbeat: 100ms, failure: 2s}
            """, path: "rpc.yaml")
        wire = MemoryWire()
        var logger = Logger(label: "rpc")
        logger.logLevel = .critical
        let metrics = MetricsRegistry()
        for id in 0..<2 {
            let n = try Node(config: cfg, id: UInt32(id), logger: logger, metrics: metrics) { [wire] _ in MemoryWire.End(wire!, id) }
            wire.nodes[id] = n
            let f = IOForwarder(node: n, metrics: MetricsRegistry(), timeout: 0.5, logger: logger)
            n.register(channel: .io) { from, p in f.handle(from: from, p) }
            nodes.append(n)
            forwarders.append(f)
        }
        // Node 1 serves a 16-byte scratch device at port 0x100.
        forwarders[1].serve = { [self] space, address, size, data, isWrite in
            guard space == .pio, address >= 0x100, address + UInt64(size) <= 0x110 else {
                if !isWrite { data.initializeMemory(as: UInt8.self, repeating: 0xFF) }
                return .noDevice
            }
            lock.lock(); defer { lock.unlock() }
            let o = Int(address - 0x100)
            for i in 0..<size {
                if isWrite { scratch[o + i] = data[i] } else { data[i] = scratch[o + i] }
            }
            return .ok
        }
        forwarders[1].startServer()
        let t = Thread { [nodes] in try? nodes[1].start() }
        t.start()
        try nodes[0].start()
    }

    override func tearDown() {
        for f in forwarders { f.failAll("test finished") }
        for n in nodes { n.stop(reason: "test finished") }
        wire?.stop()
        nodes = []
        forwarders = []
    }

    func call(_ port: UInt64, _ bytes: inout [UInt8], itemSize: Int, write: Bool) throws {
        try bytes.withUnsafeMutableBytes {
            try forwarders[0].call(home: 1, space: .pio, address: port, itemSize: itemSize, data: $0, isWrite: write)
        }
    }

    func testWriteReadAndNoDevice() throws {
        var w: [UInt8] = [1, 2, 3, 4]
        try call(0x104, &w, itemSize: 4, write: true)
        var r: [UInt8] = [0, 0, 0, 0]
        try call(0x104, &r, itemSize: 4, write: false)
        XCTAssertEqual(r, [1, 2, 3, 4])
        // A string read: 4 items of 1 byte from the same port, in one request.
        var s: [UInt8] = [0, 0, 0, 0]
        try call(0x105, &s, itemSize: 1, write: false)
        XCTAssertEqual(s, [2, 2, 2, 2])
        var none: [UInt8] = [0, 0]
        try call(0x200, &none, itemSize: 2, write: false)
        XCTAssertEqual(none, [0xFF, 0xFF])
    }

    func testConcurrentCallersGetTheirOwnReplies() throws {
        let group = DispatchGroup()
        let bad = LockedValue<String>()
        for t in 0..<4 {
            group.enter()
            Thread { [self] in
                defer { group.leave() }
                for i in 0..<200 {
                    let port = 0x100 + UInt64(t * 4)
                    var w = [UInt8(t), UInt8(i), UInt8(t), UInt8(i)]
                    var r: [UInt8] = [0, 0, 0, 0]
                    do {
                        try call(port, &w, itemSize: 4, write: true)
                        try call(port, &r, itemSize: 4, write: false)
                    } catch { bad.set("\(error)"); return }
                    if r != w { bad.set("thread \(t) read \(r) after writing \(w)"); return }
                }
            }.start()
        }
        XCTAssertEqual(group.wait(timeout: .now() + 30), .success)
        XCTAssertNil(bad.get())
    }

    func testNoReplyTimesOutWithAClearError() {
        wire.dropChannel = Channel.io.rawValue   // every io frame is lost
        var r: [UInt8] = [0]
        let start = Date()
        XCTAssertThrowsError(try call(0x100, &r, itemSize: 1, write: false)) { e in
            XCTAssertEqual("\(e)", "port I/O access 0x100 forwarded to node 1 got no reply within 0.5 s")
        }
        XCTAssertLessThan(Date().timeIntervalSince(start), 3)
    }

    func testStopFailsAWaitingCallAtOnce() {
        wire.dropChannel = Channel.io.rawValue
        let f = forwarders[0]
        DispatchQueue.global().asyncAfter(deadline: .now() + 0.1) { f.failAll("node 0 is stopping: test") }
        var r: [UInt8] = [0]
        XCTAssertThrowsError(try call(0x100, &r, itemSize: 1, write: false)) { e in
            XCTAssertEqual("\(e)", "node 0 is stopping: test")
        }
        // And every later call fails without waiting.
        XCTAssertThrowsError(try call(0x100, &r, itemSize: 1, write: false))
    }
}
