// Fuzz target "ivy-wire": arbitrary bytes as a dsm-ivy protocol message received by one node of
// a small cluster. The first 4 bytes choose the receiving context (sender, receiver, node count,
// pages); the rest is the message. A decoded message must re-encode to the same header (a
// GetSBatch to the same bytes, its page list checked).
#if !FUZZING
@testable import IvyCore
#endif

enum IvyWireFuzz {
    static func exercise(_ bytes: [UInt8]) {
        guard bytes.count >= 4 else { return }
        let nodes = UInt32(bytes[0] % 4) + 1
        let src = UInt32(bytes[1] % 5), me = UInt32(bytes[2] % 4)
        let pages = UInt64(bytes[3]) * 16
        let message = Array(bytes[4...])
        message.withUnsafeBytes { buf in
            guard let m = try? IvyWire.decode(buf, src: src, selfID: me, nodeCount: nodes, pageCount: pages,
                                                managerOf: { UInt32($0 % UInt64(nodes)) }) else { return }
            precondition(m.gfn < pages && m.node < nodes && src != me, "IvyWire.decode accepted \(m.type) out of range")
            precondition(IvyWire.header(m) == Array(message.prefix(IvyWire.headerSize)), "IvyWire header does not round-trip")
            if m.type == .getSBatch {
                precondition(UInt64(m.batch.count) == m.txn && Set(m.batch).count == m.batch.count
                             && m.batch.allSatisfy { $0 < pages && $0 % UInt64(nodes) == UInt64(me) },
                             "IvyWire.decode accepted a GetSBatch with a bad page list")
                precondition(IvyWire.encodeBatch(node: m.node, hops: m.hops, gfns: m.batch) == message,
                             "GetSBatch does not round-trip")
            }
            if m.type == .fwdGetSBatch || m.type == .dataBatch {
                precondition(UInt64(m.entries.count) == m.txn && Set(m.entries.map(\.gfn)).count == m.entries.count
                             && m.entries.allSatisfy { $0.gfn < pages && ($0.payload != nil) == (m.type == .dataBatch && !$0.zero) },
                             "IvyWire.decode accepted a \(m.type.name) with a bad entry list")
                let head = m.type == .fwdGetSBatch
                    ? IvyWire.encodeForwardBatch(requester: m.node, hops: m.hops, entries: m.entries.map { ($0.gfn, $0.txn) })
                    : IvyWire.encodeDataBatchHead(sender: m.node, hops: m.hops, entries: m.entries)
                precondition(head == Array(message.prefix(head.count)), "\(m.type.name) does not round-trip")
            }
        }
    }
}
