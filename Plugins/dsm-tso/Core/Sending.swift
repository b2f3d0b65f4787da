// dsm-tso's sending: lanes (home-to-holder messages on the bulk lane, in the home's order;
// requests, acks and class changes on the urgent lane) and an outbox for a full transport queue.
//
// Threading: TSONode's (its lock held).

import IvyCore
import PluginKit

/// The transport status for a full send queue.
let queueFull = PageStatus(raw: GVM_ERR_NOMEM.rawValue)

/// One lane to one peer (the outbox keeps each lane's order).
struct LaneKey: Hashable, Comparable {
    var node: UInt32
    var urgent: Bool
    static func < (a: LaneKey, b: LaneKey) -> Bool { (a.node, a.urgent ? 0 : 1) < (b.node, b.urgent ? 0 : 1) }
}

extension TSONode {
    // MARK: - sending

    /// Home-to-holder messages (data, updates, DiffDone) share the bulk lane, so they arrive in
    /// the home's order; requests, acks and class changes take the urgent lane — dsm-ivy's lane
    /// for its requests, so a node's acknowledgement of a switch never overtakes an sc request
    /// it sent before.
    func send(_ m: TSOMessage, to dst: UInt32) {
        precondition(dst != selfID, "dsm-tso never sends to itself")
        let urgent = m.type == .mwGet || m.type == .updateAck || m.type.isClass
        var bytes = TSOWire.header(m)
        if m.type.carriesRuns { bytes += TSOWire.encodeRuns(m.runs) }
        if m.type == .mwData, let p = m.page { bytes += UnsafeRawBufferPointer(start: p, count: TSOWire.pageSize) }
        stats.msgCount[m.type]!(1)
        stats.msgBytes[m.type]!(UInt64(bytes.count))
        let key = LaneKey(node: dst, urgent: urgent)
        if outbox[key] == nil {
            let st = bytes.withUnsafeBytes { host.send(to: dst, [$0], urgent: urgent) }
            if st == .ok { return }
            guard st == queueFull else {
                fail("sending \(m.type.name) for gfn \(m.gfn) to node \(dst): \(st)")
                return
            }
        }
        // The transport's queue is full (or messages already wait): keep it, in order, and
        // retry every millisecond; after send_wait the cluster stops naming the peer.
        outbox[key, default: []].append((bytes, m.type, m.gfn, services.nowNanoseconds()))
        armOutboxTimer()
    }

    func armOutboxTimer() {
        guard outboxTimer == 0, !failed else { return }
        outboxTimer = services.startOneShot(afterNanoseconds: 1_000_000, { ctx in
            let node = Unmanaged<TSONode>.fromOpaque(ctx!).takeUnretainedValue()
            node.entry {
                node.outboxTimer = 0
                node.retryOutbox()
            }
        }, context: Unmanaged.passUnretained(self).toOpaque())
    }

    func retryOutbox() {
        guard !failed else { return }
        let now = services.nowNanoseconds()
        for key in outbox.keys.sorted() {
            while let first = outbox[key]?.first {
                let st = first.bytes.withUnsafeBytes { host.send(to: key.node, [$0], urgent: key.urgent) }
                if st == .ok {
                    outbox[key]!.removeFirst()
                    if outbox[key]!.isEmpty { outbox[key] = nil }
                    continue
                }
                if st != queueFull || now &- first.since > config.ivy.sendWaitNanoseconds {
                    fail("sending \(first.type.name) for gfn \(first.gfn) to node \(key.node): \(st == queueFull ? "the transport's queue stayed full for send_wait (\(Units.format(nanoseconds: config.ivy.sendWaitNanoseconds)))" : "\(st)")")
                    return
                }
                break
            }
        }
        if !outbox.isEmpty { armOutboxTimer() }
    }
}
