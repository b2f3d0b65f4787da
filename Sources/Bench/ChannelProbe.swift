// The start-up check of `giantvm node` without a guest: one test frame to every peer on every
// channel (types 0xE0 ping, 0xE1 pong: MessageType.probe), each answer checked byte for byte.

import Cluster
import Foundation
import Metrics
import PluginAPI

/// Sends one test frame to every peer on every channel and checks each answer.
/// Threading: handlers run on receive threads; `exchange` on the main thread.
public final class ChannelProbe: @unchecked Sendable {
    static let ping = MessageType.Control.probePing.rawValue
    static let pong = MessageType.Control.probePong.rawValue
    private let node: Node
    private let mon = Monitor()
    private var answered = Set<String>()
    private var pinged = Set<String>()
    private var wrong: [String] = []

    /// Registers the probe's two types (MessageType.probe) on every channel: before `node.start()`.
    public init(node: Node) {
        self.node = node
        for channel in Channel.allCases {
            node.register(channel: channel, types: MessageType.probe) { [weak self] from, payload in self?.handle(channel, from, payload) }
        }
    }

    private func expected(_ channel: Channel, from: UInt32, to: UInt32) -> [UInt8] {
        [Self.ping] + Array("test frame from node \(from) to node \(to) on channel \(channel)".utf8)
    }

    private func handle(_ channel: Channel, _ from: UInt32, _ payload: UnsafeRawBufferPointer) {
        guard let type = payload.first else { return }
        let bytes = [UInt8](payload)
        if type == Self.ping {
            let ok = bytes == expected(channel, from: from, to: node.id)
            mon.withLock {
                if ok { pinged.insert("\(channel)/\(from)") } else { wrong.append("bad ping on \(channel) from node \(from)") }
                mon.broadcast()
            }
            node.send(channel: channel, to: from, [Self.pong] + bytes.dropFirst())
        } else {
            let ok = Array(bytes.dropFirst()) == Array(expected(channel, from: node.id, to: from).dropFirst())
            mon.withLock {
                if ok { answered.insert("\(channel)/\(from)") } else { wrong.append("bad answer on \(channel) from node \(from)") }
                mon.broadcast()
            }
        }
    }

    /// Pings every peer on every channel; waits for every answer and for every peer's pings.
    public func exchange(timeout: Double) -> Result<String, ClusterError> {
        for channel in Channel.allCases {
            for p in node.peers {
                let rc = node.send(channel: channel, to: p, expected(channel, from: node.id, to: p))
                if rc != GVM_OK.rawValue {
                    return .failure(ClusterError("sending on \(channel) to node \(p): \(String(cString: gvm_status_name(rc)))"))
                }
            }
        }
        let want = Channel.allCases.count * node.peers.count
        let deadline = monotonicNanoseconds() + UInt64(timeout * 1e9)
        return mon.withLock {
            while (answered.count < want || pinged.count < want) && wrong.isEmpty
                    && node.stopReason == nil && monotonicNanoseconds() < deadline {
                mon.wait(until: min(deadline, monotonicNanoseconds() + 100_000_000))
            }
            if !wrong.isEmpty { return .failure(ClusterError(wrong.joined(separator: "; "))) }
            if answered.count < want || pinged.count < want {
                let missing = Channel.allCases.flatMap { c in node.peers.compactMap { p in
                    answered.contains("\(c)/\(p)") && pinged.contains("\(c)/\(p)") ? nil : "\(c) with node \(p)" } }
                return .failure(ClusterError("no test exchange on \(missing.joined(separator: ", "))"))
            }
            let names = Channel.allCases.map(\.description).joined(separator: ", ")
            return .success("test frames exchanged with every peer on every channel (\(names)): "
                            + "\(want) sent and answered, \(want) received")
        }
    }
}
