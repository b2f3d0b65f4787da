// bench dsm's control protocol: round trips for the floor, and "finished" agreement (every node
// keeps serving pages until every node's workload is done).

import Cluster
import DsmWorkloads
import Foundation
import Metrics
import PluginAPI


/// Control messages 0xC0 ping (payload echoed), 0xC1 pong, 0xC2 finished (MessageType.Control.bench*).
/// Threading: `handle` on receive threads (never blocks); waits on the worker thread.
public final class BenchControl: @unchecked Sendable {
    let node: Node
    let nodes: Int
    let cond = NSCondition()
    var pongs = 0
    var finishedNodes = Set<UInt32>()
    var stopping = false

    /// Registers the bench types on the control channel and wakes waiters when the node stops:
    /// before `node.start()`.
    public init(node: Node, nodes: Int) {
        self.node = node
        self.nodes = nodes
        node.register(channel: .control, types: [Self.ping, Self.pong, Self.finished]) { [weak self] from, p in self?.handle(from, p) }
        node.onStop { [weak self] _ in self?.wakeAll() }
    }

    static let ping = MessageType.Control.benchPing.rawValue
    static let pong = MessageType.Control.benchPong.rawValue
    static let finished = MessageType.Control.benchFinished.rawValue

    func handle(_ from: UInt32, _ payload: UnsafeRawBufferPointer) {
        guard let type = payload.first else { return }
        switch type {
        case Self.ping:
            var reply = Array(payload)
            reply[0] = Self.pong
            _ = node.send(channel: .control, to: from, reply, lane: GVM_LANE_BULK)
        case Self.pong:
            cond.lock(); pongs += 1; cond.signal(); cond.unlock()
        case Self.finished:
            cond.lock(); finishedNodes.insert(from); cond.broadcast(); cond.unlock()
        default:
            break
        }
    }

    public func wakeAll() {
        cond.lock(); stopping = true; cond.broadcast(); cond.unlock()
    }

    /// `count` round trips of `size` bytes to `peer` on the bulk lane (after 100 warm-up ones).
    public func roundTrips(to peer: UInt32, count: Int, size: Int) throws -> HistogramSummary {
        var frame = [UInt8](repeating: 0x5A, count: size)
        frame[0] = Self.ping
        var samples: [UInt64] = []
        for i in 0..<(count + 100) {
            let t0 = DispatchTime.now().uptimeNanoseconds
            cond.lock()
            let before = pongs
            cond.unlock()
            guard node.send(channel: .control, to: peer, frame, lane: GVM_LANE_BULK) == GVM_OK.rawValue else {
                throw WorkloadError("round trip to node \(peer): send failed")
            }
            cond.lock()
            while pongs == before && !stopping {
                if !cond.wait(until: Date().addingTimeInterval(5)) { break }
            }
            let ok = pongs > before
            cond.unlock()
            guard ok else { throw WorkloadError("round trip to node \(peer): no answer within 5 s") }
            if i >= 100 { samples.append(DispatchTime.now().uptimeNanoseconds - t0) }
        }
        return HistogramSummary(samples: samples)
    }

    /// Tells every node this one is done, then waits until all are (or the node stops).
    public func finished(_ timeout: Double) {
        for p in 0..<UInt32(nodes) where p != node.id { _ = node.send(channel: .control, to: p, [Self.finished]) }
        cond.lock()
        finishedNodes.insert(node.id)
        let deadline = Date().addingTimeInterval(timeout)
        while finishedNodes.count < nodes && !stopping {
            if !cond.wait(until: deadline) { break }
        }
        cond.unlock()
    }
}
