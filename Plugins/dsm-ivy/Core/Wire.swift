// Wire format of the Ivy protocol: one fixed 24-byte header, then 4096 page bytes for `data`
// messages that do not carry the zero flag. Little endian throughout.
//
//   offset size field
//   0      1    type      (MessageType; first, so a fault-injecting transport can select by it)
//   1      1    version   (IvyWire.version)
//   2      1    flags     (MessageFlags)
//   3      1    hops      network hops so far on the fault's critical path
//   4      4    node      the node the message speaks for (see MessageType)
//   8      8    gfn       guest frame number, < page count
//   16     8    txn       the manager's transaction number for this page (0 where unused)
//   24     4096 payload   only `data` without `zero`
//   24     8*n  gfns      only `getSBatch` (read-ahead): `txn` holds n (1...maxBatch), then n
//                         distinct u64 gfns, the first equal to `gfn`, all managed by the receiver
//   24     16*n entries   only `fwdGetSBatch`: `txn` holds n, then n (gfn u64, txn u64), distinct
//                         gfns, the first equal to `gfn`, all managed by the sender; `node` is
//                         the requester of every entry
//   24     8*n  gfns      only `pull` (node evacuation): `txn` holds n (1...maxPull), distinct gfns
//   24     n    owners    only `managerState`: `txn` holds n (1...maxManagerState), the owner node
//                         of pages gfn..gfn+n-1, all managed by the sender
//   24     8    next txn  only `managerStateEnd`: the leaving manager's next transaction number
//   24     24*n entries   only `dataBatch`: `txn` holds n, then n (gfn u64, txn u64, flags u8,
//                         7 zero bytes; flags: zero only), then 4096 bytes for every entry
//                         without `zero`, in entry order; `node` is the sender (the old owner)
//
// Every received message is validated (length, version, type, flags, gfn range, node ids and
// who may send it) before the protocol sees it: hostile bytes give a `WireError`, never a crash.
//
// Threading: value types only; safe anywhere.

import PluginKit

/// Message types. `node` names: the requester for getS/getX/fwdGetS/fwdGetX/confirm, the sender
/// for invAck/nack/fetch/release, the owner (who must be acked) for inv, the old owner for
/// data/grant.
public enum MessageType: UInt8, CaseIterable, Sendable {
    case getS = 1       // requester -> manager: read miss
    case getX = 2       // requester -> manager: write miss or upgrade (flag holdsCopy)
    case fwdGetS = 3    // manager -> owner: serve a reader
    case fwdGetX = 4    // manager -> owner: hand the page to a writer (flag holdsCopy)
    case inv = 5        // owner -> sharer: drop your copy, then ack
    case invAck = 6     // sharer -> owner
    case data = 7       // owner -> requester: page bytes (flags exclusive, zero)
    case grant = 8      // owner -> requester: ownership without bytes (requester holds a valid copy)
    case confirm = 9    // requester -> manager: installed; the manager may serve the next request
    case nack = 10      // non-owner -> manager: a forward reached me but I do not own the page
    case fetch = 11     // new owner -> old owner: my copy was gone at upgrade time: send the bytes
    case release = 12   // new owner -> old owner: upgrade done, forget the stashed bytes
    case getSBatch = 13 // requester -> manager: read-ahead, a read miss for each listed page (ReadAhead.swift)
    case fwdGetSBatch = 14 // manager -> owner: a FwdGetS for each listed (page, transaction)
    case dataBatch = 15 // owner -> requester: a read-only Data for each listed page
    // node evacuation (Drain.swift); `node` is always the sender
    case pull = 16          // leaving node -> successor: take ownership of the listed pages (txn = count)
    case pullDone = 17      // successor -> leaving node: every pull that message started has finished
    case leavePrepare = 18  // leaving node -> every peer: hold new requests for pages it manages (txn = successor)
    case prepareAck = 19    // peer -> leaving node: no request of mine to you is still on its way
    case managerState = 20  // leaving node -> successor: owners of txn contiguous pages from gfn, 1 byte each
    case managerStateEnd = 21 // leaving node -> successor: every managerState is sent (txn = pages in all)
    case managerStateAck = 22 // successor -> leaving node: I manage them now
    case leaveCommit = 23   // leaving node -> every peer: its pages are managed by the successor (txn)
    case commitAck = 24     // peer -> leaving node

    public var name: String {
        switch self {
        case .getS: "GetS"
        case .getX: "GetX"
        case .fwdGetS: "FwdGetS"
        case .fwdGetX: "FwdGetX"
        case .inv: "Inv"
        case .invAck: "InvAck"
        case .data: "Data"
        case .grant: "Grant"
        case .confirm: "Confirm"
        case .nack: "Nack"
        case .fetch: "Fetch"
        case .release: "Release"
        case .getSBatch: "GetSBatch"
        case .fwdGetSBatch: "FwdGetSBatch"
        case .dataBatch: "DataBatch"
        case .pull: "Pull"
        case .pullDone: "PullDone"
        case .leavePrepare: "LeavePrepare"
        case .prepareAck: "PrepareAck"
        case .managerState: "ManagerState"
        case .managerStateEnd: "ManagerStateEnd"
        case .managerStateAck: "ManagerStateAck"
        case .leaveCommit: "LeaveCommit"
        case .commitAck: "CommitAck"
        }
    }

    /// Page data travels on the bulk lane; everything small on the urgent lane.
    public var urgent: Bool { self != .data && self != .dataBatch }
}

public struct MessageFlags: OptionSet, Sendable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    /// getX/fwdGetX: the requester holds a valid read-only copy (an upgrade).
    public static let holdsCopy = MessageFlags(rawValue: 1)
    /// data: the page is all zeros; no payload follows.
    public static let zero = MessageFlags(rawValue: 2)
    /// data/confirm: exclusive (ownership moves); otherwise a read-only copy.
    public static let exclusive = MessageFlags(rawValue: 4)
    static let all: MessageFlags = [.holdsCopy, .zero, .exclusive]
}

/// A decoded message. `payload` points into the received buffer (borrowed for the call).
public struct Message {
    public var type: MessageType
    public var flags: MessageFlags
    public var hops: UInt8
    public var node: UInt32
    public var gfn: UInt64
    public var txn: UInt64
    public var payload: UnsafeRawPointer?
    /// getSBatch: the pages requested (decoded and checked); empty for every other type.
    public var batch: [UInt64] = []
    /// fwdGetSBatch, dataBatch: the entries (decoded and checked). `payload` of a dataBatch entry
    /// points into the received buffer (nil for a zero page).
    public var entries: [BatchEntry] = []
    /// managerState: the owner of each page from `gfn` on (decoded and checked); empty otherwise.
    public var owners: [UInt32] = []

    public init(type: MessageType, flags: MessageFlags = [], hops: UInt8 = 0, node: UInt32, gfn: UInt64,
                txn: UInt64 = 0, payload: UnsafeRawPointer? = nil) {
        self.type = type
        self.flags = flags
        self.hops = hops
        self.node = node
        self.gfn = gfn
        self.txn = txn
        self.payload = payload
    }

    public var hasPayload: Bool { type == .data && !flags.contains(.zero) }
}

/// One entry of a fwdGetSBatch or dataBatch.
public struct BatchEntry {
    public var gfn: UInt64
    public var txn: UInt64
    public var zero = false
    public var payload: UnsafeRawPointer? = nil
    public init(gfn: UInt64, txn: UInt64, zero: Bool = false, payload: UnsafeRawPointer? = nil) {
        self.gfn = gfn; self.txn = txn; self.zero = zero; self.payload = payload
    }
}

public struct WireError: Error, CustomStringConvertible, Equatable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

public enum IvyWire {
    public static let version: UInt8 = 1
    public static let headerSize = 24
    public static let pageSize = Int(GVM_PAGE_SIZE)
    /// The most pages one getSBatch may list (and so the largest read-ahead window).
    public static let maxBatch = 64

    /// The largest dataBatch message (header, entries and pages): within a transport frame.
    public static let maxDataBatchBytes = 60 * 1024

    /// A fwdGetSBatch message: header (txn = count, node = requester) then (gfn, txn) pairs.
    public static func encodeForwardBatch(requester: UInt32, hops: UInt8, entries: [(gfn: UInt64, txn: UInt64)]) -> [UInt8] {
        precondition(!entries.isEmpty && entries.count <= maxBatch, "fwdGetSBatch lists 1...\(maxBatch) pages")
        var b = header(Message(type: .fwdGetSBatch, hops: hops, node: requester, gfn: entries[0].gfn, txn: UInt64(entries.count)))
        for e in entries { append64(&b, e.gfn); append64(&b, e.txn) }
        return b
    }

    /// The header and entry table of a dataBatch (the pages follow, one per non-zero entry).
    public static func encodeDataBatchHead(sender: UInt32, hops: UInt8, entries: [BatchEntry]) -> [UInt8] {
        precondition(!entries.isEmpty && entries.count <= maxBatch, "dataBatch lists 1...\(maxBatch) pages")
        var b = header(Message(type: .dataBatch, hops: hops, node: sender, gfn: entries[0].gfn, txn: UInt64(entries.count)))
        for e in entries {
            append64(&b, e.gfn)
            append64(&b, e.txn)
            append64(&b, e.zero ? UInt64(MessageFlags.zero.rawValue) : 0)
        }
        return b
    }

    static func append64(_ b: inout [UInt8], _ v: UInt64) {
        for i in 0..<8 { b.append(UInt8(truncatingIfNeeded: v >> (8 * UInt64(i)))) }
    }

    /// A getSBatch message: header (txn = count) then the gfns, little endian.
    public static func encodeBatch(node: UInt32, hops: UInt8 = 0, gfns: [UInt64]) -> [UInt8] {
        precondition(!gfns.isEmpty && gfns.count <= maxBatch, "getSBatch lists 1...\(maxBatch) pages")
        var b = header(Message(type: .getSBatch, hops: hops, node: node, gfn: gfns[0], txn: UInt64(gfns.count)))
        b.reserveCapacity(headerSize + 8 * gfns.count)
        for g in gfns {
            for i in 0..<8 { b.append(UInt8(truncatingIfNeeded: g >> (8 * UInt64(i)))) }
        }
        return b
    }

    /// Encodes the header of `m` into 24 bytes.
    public static func header(_ m: Message) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: headerSize)
        b[0] = m.type.rawValue
        b[1] = version
        b[2] = m.flags.rawValue
        b[3] = m.hops
        put32(&b, 4, m.node)
        put64(&b, 8, m.gfn)
        put64(&b, 16, m.txn)
        return b
    }

    /// The whole message as bytes (header plus payload when it has one), for tests and tools.
    public static func encode(_ m: Message) -> [UInt8] {
        var b = header(m)
        if m.hasPayload, let p = m.payload {
            b.append(contentsOf: UnsafeRawBufferPointer(start: p, count: pageSize))
        }
        return b
    }

    /// Decodes and validates one message from `src` received by `selfID`.
    /// - Parameters:
    ///   - managerOf: the manager of a gfn (checks who may send manager-bound and forwarded messages)
    ///   - successorOf: while a leaving node hands its manager role over (Drain.swift), the node
    ///     taking it for a gfn, which may already forward requests for it; nil otherwise
    public static func decode(_ buf: UnsafeRawBufferPointer, src: UInt32, selfID: UInt32, nodeCount: UInt32,
                              pageCount: UInt64, managerOf: (UInt64) -> UInt32,
                              successorOf: (UInt64) -> UInt32? = { _ in nil }) throws -> Message {
        guard buf.count >= headerSize, let base = buf.baseAddress else {
            throw WireError("message of \(buf.count) bytes is shorter than the \(headerSize)-byte header")
        }
        guard src < nodeCount, src != selfID else { throw WireError("message from invalid source node \(src)") }
        let v = buf[1]
        guard v == version else { throw WireError("wire version \(v), expected \(version)") }
        guard let type = MessageType(rawValue: buf[0]) else { throw WireError("unknown message type \(buf[0])") }
        let flags = MessageFlags(rawValue: buf[2])
        guard MessageFlags.all.isSuperset(of: flags) else {
            throw WireError("\(type.name): unknown flag bits 0x\(String(buf[2], radix: 16))")
        }
        let hops = buf[3]
        let node = get32(buf, 4)
        let gfn = get64(buf, 8)
        let txn = get64(buf, 16)
        guard gfn < pageCount else { throw WireError("\(type.name): gfn \(gfn) out of range (\(pageCount) pages)") }
        guard node < nodeCount else { throw WireError("\(type.name): node \(node) out of range (\(nodeCount) nodes)") }

        // Which flags each type may carry.
        let allowed: MessageFlags
        switch type {
        case .getX, .fwdGetX: allowed = .holdsCopy
        case .data: allowed = [.zero, .exclusive]
        case .confirm: allowed = .exclusive
        default: allowed = []
        }
        guard allowed.isSuperset(of: flags) else {
            throw WireError("\(type.name): flags 0x\(String(flags.rawValue, radix: 16)) not allowed")
        }

        // Who may send it and about whom.
        let manager = managerOf(gfn)
        switch type {
        case .fwdGetSBatch:
            guard manager == src || successorOf(gfn) == src else { throw WireError("\(type.name) for gfn \(gfn) from node \(src), but its manager is node \(manager)") }
            guard node != selfID else { throw WireError("\(type.name) for gfn \(gfn) names this node as requester") }
        case .dataBatch:
            guard node == src else { throw WireError("\(type.name) from node \(src) claims to be from node \(node)") }
        case .getS, .getX, .confirm, .nack, .getSBatch:
            guard manager == selfID else { throw WireError("\(type.name) for gfn \(gfn) sent to node \(selfID), but its manager is node \(manager)") }
            guard node == src else { throw WireError("\(type.name) from node \(src) claims to be from node \(node)") }
        case .fwdGetS, .fwdGetX:
            guard manager == src || successorOf(gfn) == src else { throw WireError("\(type.name) for gfn \(gfn) from node \(src), but its manager is node \(manager)") }
            guard node != selfID else { throw WireError("\(type.name) for gfn \(gfn) names this node as requester") }
        case .inv, .invAck, .data, .grant, .fetch, .release:
            guard node == src else { throw WireError("\(type.name) from node \(src) claims to be from node \(node)") }
        case .pull, .pullDone, .leavePrepare, .prepareAck, .managerState, .managerStateEnd, .managerStateAck,
             .leaveCommit, .commitAck:
            guard node == src else { throw WireError("\(type.name) from node \(src) claims to be from node \(node)") }
            return try decodeDrain(buf, type: type, src: src, selfID: selfID, nodeCount: nodeCount, pageCount: pageCount,
                                   managerOf: managerOf, flags: flags, hops: hops, gfn: gfn, txn: txn)
        }

        if type == .getSBatch {
            return try decodeBatch(buf, src: src, selfID: selfID, pageCount: pageCount, managerOf: managerOf,
                                   hops: hops, node: node, gfn: gfn, count: txn)
        }
        if type == .fwdGetSBatch || type == .dataBatch {
            // A successor taking over a leaving node's pages may already forward them (Drain.swift).
            let sender: (UInt64) -> UInt32 = { g in successorOf(g) == src ? src : managerOf(g) }
            return try decodeEntries(buf, type: type, src: src, pageCount: pageCount, managerOf: sender,
                                     hops: hops, node: node, gfn: gfn, count: txn)
        }

        // Exact length.
        let expected = headerSize + ((type == .data && !flags.contains(.zero)) ? pageSize : 0)
        guard buf.count == expected else {
            throw WireError("\(type.name): \(buf.count) bytes, expected \(expected)")
        }
        let payload: UnsafeRawPointer? = expected > headerSize ? UnsafeRawPointer(base + headerSize) : nil
        return Message(type: type, flags: flags, hops: hops, node: node, gfn: gfn, txn: txn, payload: payload)
    }

    /// The gfn list of a getSBatch whose header checked out: count in range, exact length, every
    /// gfn in range, managed by this node, listed once, the first equal to the header's.
    static func decodeBatch(_ buf: UnsafeRawBufferPointer, src: UInt32, selfID: UInt32, pageCount: UInt64,
                            managerOf: (UInt64) -> UInt32, hops: UInt8, node: UInt32, gfn: UInt64,
                            count: UInt64) throws -> Message {
        guard count >= 1, count <= UInt64(maxBatch) else {
            throw WireError("GetSBatch: \(count) pages listed, expected 1...\(maxBatch)")
        }
        let n = Int(count)
        guard buf.count == headerSize + 8 * n else {
            throw WireError("GetSBatch: \(buf.count) bytes, expected \(headerSize + 8 * n) for \(n) pages")
        }
        var gfns: [UInt64] = []
        gfns.reserveCapacity(n)
        var seen = Set<UInt64>()
        for i in 0..<n {
            let g = get64(buf, headerSize + 8 * i)
            guard g < pageCount else { throw WireError("GetSBatch: gfn \(g) out of range (\(pageCount) pages)") }
            guard managerOf(g) == selfID else {
                throw WireError("GetSBatch: gfn \(g) sent to node \(selfID), but its manager is node \(managerOf(g))")
            }
            guard seen.insert(g).inserted else { throw WireError("GetSBatch: gfn \(g) listed twice") }
            gfns.append(g)
        }
        guard gfns[0] == gfn else { throw WireError("GetSBatch: header gfn \(gfn) is not the first listed (\(gfns[0]))") }
        var m = Message(type: .getSBatch, hops: hops, node: node, gfn: gfn, txn: count)
        m.batch = gfns
        return m
    }

    /// The entries of a fwdGetSBatch (every gfn managed by the sender) or a dataBatch (flags zero
    /// only; exactly one page of bytes per non-zero entry): count in range, exact length, gfns in
    /// range and listed once, the first equal to the header's.
    static func decodeEntries(_ buf: UnsafeRawBufferPointer, type: MessageType, src: UInt32, pageCount: UInt64,
                              managerOf: (UInt64) -> UInt32, hops: UInt8, node: UInt32, gfn: UInt64,
                              count: UInt64) throws -> Message {
        let name = type.name
        guard count >= 1, count <= UInt64(maxBatch) else {
            throw WireError("\(name): \(count) pages listed, expected 1...\(maxBatch)")
        }
        let n = Int(count)
        let entrySize = type == .dataBatch ? 24 : 16
        guard buf.count >= headerSize + entrySize * n else {
            throw WireError("\(name): \(buf.count) bytes, shorter than the \(headerSize + entrySize * n)-byte entry table")
        }
        var entries: [BatchEntry] = []
        entries.reserveCapacity(n)
        var seen = Set<UInt64>()
        var pages = 0
        for i in 0..<n {
            let at = headerSize + entrySize * i
            let g = get64(buf, at)
            guard g < pageCount else { throw WireError("\(name): gfn \(g) out of range (\(pageCount) pages)") }
            guard seen.insert(g).inserted else { throw WireError("\(name): gfn \(g) listed twice") }
            var e = BatchEntry(gfn: g, txn: get64(buf, at + 8))
            if type == .fwdGetSBatch {
                guard managerOf(g) == src else {
                    throw WireError("\(name): gfn \(g) from node \(src), but its manager is node \(managerOf(g))")
                }
            } else {
                let flags = get64(buf, at + 16)
                guard flags == 0 || flags == UInt64(MessageFlags.zero.rawValue) else {
                    throw WireError("\(name): gfn \(g): flags 0x\(String(flags, radix: 16)) not allowed")
                }
                e.zero = flags != 0
                if !e.zero { pages += 1 }
            }
            entries.append(e)
        }
        guard entries[0].gfn == gfn else { throw WireError("\(name): header gfn \(gfn) is not the first listed (\(entries[0].gfn))") }
        let expected = headerSize + entrySize * n + pageSize * pages
        guard buf.count == expected else {
            throw WireError("\(name): \(buf.count) bytes, expected \(expected) for \(n) entries and \(pages) pages")
        }
        if type == .dataBatch, let base = buf.baseAddress {
            var at = headerSize + entrySize * n
            for i in entries.indices where !entries[i].zero {
                entries[i].payload = UnsafeRawPointer(base + at)
                at += pageSize
            }
        }
        var m = Message(type: type, hops: hops, node: node, gfn: gfn, txn: count)
        m.entries = entries
        return m
    }

    /// The most pages one pull lists.
    public static let maxPull = 512
    /// The most pages one managerState covers (one byte each).
    public static let maxManagerState = 16384

    /// A pull message: header (txn = count) then the gfns.
    public static func encodePull(node: UInt32, gfns: [UInt64]) -> [UInt8] {
        precondition(!gfns.isEmpty && gfns.count <= maxPull, "pull lists 1...\(maxPull) pages")
        var b = header(Message(type: .pull, node: node, gfn: gfns[0], txn: UInt64(gfns.count)))
        for g in gfns { append64(&b, g) }
        return b
    }

    /// A managerState message: header (gfn = first page, txn = count) then one owner byte per page.
    public static func encodeManagerState(node: UInt32, first: UInt64, owners: [UInt32]) -> [UInt8] {
        precondition(!owners.isEmpty && owners.count <= maxManagerState, "managerState covers 1...\(maxManagerState) pages")
        var b = header(Message(type: .managerState, node: node, gfn: first, txn: UInt64(owners.count)))
        for o in owners { b.append(UInt8(truncatingIfNeeded: o)) }
        return b
    }

    /// The node-evacuation messages (sender already checked): exact lengths, counts, node ids and
    /// pages in range; a managerState only for pages the sender manages.
    static func decodeDrain(_ buf: UnsafeRawBufferPointer, type: MessageType, src: UInt32, selfID: UInt32, nodeCount: UInt32,
                            pageCount: UInt64, managerOf: (UInt64) -> UInt32, flags: MessageFlags, hops: UInt8,
                            gfn: UInt64, txn: UInt64) throws -> Message {
        let name = type.name
        guard flags.isEmpty else { throw WireError("\(name): flags 0x\(String(flags.rawValue, radix: 16)) not allowed") }
        var m = Message(type: type, hops: hops, node: src, gfn: gfn, txn: txn)
        switch type {
        case .pull:
            guard txn >= 1, txn <= UInt64(maxPull) else { throw WireError("\(name): \(txn) pages listed, expected 1...\(maxPull)") }
            let n = Int(txn)
            guard buf.count == headerSize + 8 * n else { throw WireError("\(name): \(buf.count) bytes, expected \(headerSize + 8 * n)") }
            var seen = Set<UInt64>()
            for i in 0..<n {
                let g = get64(buf, headerSize + 8 * i)
                guard g < pageCount else { throw WireError("\(name): gfn \(g) out of range (\(pageCount) pages)") }
                guard seen.insert(g).inserted else { throw WireError("\(name): gfn \(g) listed twice") }
                m.batch.append(g)
            }
        case .managerState:
            guard txn >= 1, txn <= UInt64(maxManagerState) else {
                throw WireError("\(name): \(txn) pages, expected 1...\(maxManagerState)")
            }
            let n = Int(txn)
            guard gfn + txn <= pageCount else { throw WireError("\(name): pages \(gfn)+\(txn) beyond the \(pageCount) guest pages") }
            guard buf.count == headerSize + n else { throw WireError("\(name): \(buf.count) bytes, expected \(headerSize + n)") }
            for i in 0..<n {
                let o = UInt32(buf[headerSize + i])
                guard o < nodeCount else { throw WireError("\(name): gfn \(gfn + UInt64(i)): owner node \(o) out of range") }
                guard managerOf(gfn + UInt64(i)) == src else {
                    throw WireError("\(name): gfn \(gfn + UInt64(i)) is not managed by node \(src)")
                }
                m.owners.append(o)
            }
        case .managerStateEnd:
            // the leaving manager's next transaction number follows the header (the successor
            // numbers on from it, so no (page, txn) pair is reused): kept in `batch[0]`
            guard buf.count == headerSize + 8 else { throw WireError("\(name): \(buf.count) bytes, expected \(headerSize + 8)") }
            guard txn <= pageCount else { throw WireError("\(name): \(txn) pages, more than the \(pageCount) guest pages") }
            m.batch = [get64(buf, headerSize)]
        case .leavePrepare, .leaveCommit:
            guard txn < UInt64(nodeCount), txn != UInt64(src) else {
                throw WireError("\(name): successor \(txn) is not another node (\(nodeCount) nodes)")
            }
            guard buf.count == headerSize else { throw WireError("\(name): \(buf.count) bytes, expected \(headerSize)") }
        default:
            guard buf.count == headerSize else { throw WireError("\(name): \(buf.count) bytes, expected \(headerSize)") }
        }
        return m
    }

    static func put32(_ b: inout [UInt8], _ at: Int, _ v: UInt32) {
        for i in 0..<4 { b[at + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt32(i))) }
    }

    static func put64(_ b: inout [UInt8], _ at: Int, _ v: UInt64) {
        for i in 0..<8 { b[at + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(i))) }
    }

    static func get32(_ b: UnsafeRawBufferPointer, _ at: Int) -> UInt32 {
        var v: UInt32 = 0
        for i in 0..<4 { v |= UInt32(b[at + i]) << (8 * UInt32(i)) }
        return v
    }

    static func get64(_ b: UnsafeRawBufferPointer, _ at: Int) -> UInt64 {
        var v: UInt64 = 0
        for i in 0..<8 { v |= UInt64(b[at + i]) << (8 * UInt64(i)) }
        return v
    }

    /// True if the 4096 bytes at p are all zero.
    public static func isZeroPage(_ p: UnsafeRawPointer) -> Bool {
        var acc: UInt64 = 0
        for i in 0..<(pageSize / 8) { acc |= p.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self) }
        return acc == 0
    }
}
