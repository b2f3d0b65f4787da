// Wire format of dsm-tso's own messages (pages of class `mw`). Messages about `sc` pages are
// dsm-ivy's, unchanged (IvyWire, types 1...12); dsm-tso's types start at 32, so the first byte
// tells the two apart. One fixed 32-byte header, then a payload. Little endian throughout.
//
//   offset size field
//   0      1    type      (TSOMessageType)
//   1      1    version   (TSOWire.version)
//   2      1    flags     (TSOFlags)
//   3      1    reserved  (0)
//   4      4    node      the writer a diff comes from (Diff, Update, UpdateAck, DiffDone);
//                         the sender otherwise
//   8      8    gfn       guest frame number, < page count, in a relaxed range
//   16     8    seq       the writer's diff number (Diff, Update, UpdateAck, DiffDone)
//   24     8    applied   Update: the highest diff number of the RECEIVER's own diffs the home
//                         had applied when it sent this update (0 elsewhere)
//   32     ...  payload   MwData: 4096 page bytes (none with `zero`);
//                         Diff, Update: runs, each [u16 offset][u16 length][bytes]
//                         with 0 < length, offset + length <= 4096, in increasing offset order
//
// Every received message is validated (length, version, type, flags, gfn range and class,
// node ids, who may send it, every run) before the protocol sees it: hostile bytes give a
// `WireError`, never a crash.
//
// Threading: value types only; safe anywhere.

import IvyCore
import PluginKit

public enum TSOMessageType: UInt8, CaseIterable, Sendable {
    case mwGet = 32       // node -> home: send me the page (read or write miss on an mw page)
    case mwData = 33      // home -> node: the home's copy (flag zero: all zeros, no payload)
    case diff = 34        // writer -> home: my changes (twin vs copy), number `seq`
    case update = 35      // home -> every other holder: apply a writer's diff, then ack
    case updateAck = 36   // holder -> home
    case diffDone = 37    // home -> writer: your diff is applied at the home and at every holder
    case classChange = 38 // a node passing on a guest hint -> every other node: pages gfn ..<
                          // gfn+seq are now of class mw (flag relaxed) or sc; `applied` numbers
                          // the request
    case classAck = 39    // -> the node that sent classChange (`node`): applied here

    public var name: String {
        switch self {
        case .mwGet: "MwGet"
        case .mwData: "MwData"
        case .diff: "Diff"
        case .update: "Update"
        case .updateAck: "UpdateAck"
        case .diffDone: "DiffDone"
        case .classChange: "ClassChange"
        case .classAck: "ClassAck"
        }
    }

    /// Who sends it: to the home (true) or from the home (false).
    var toHome: Bool { self == .mwGet || self == .diff || self == .updateAck }
    /// Messages about a page range's class, outside the mw table.
    var isClass: Bool { self == .classChange || self == .classAck }
    var carriesRuns: Bool { self == .diff || self == .update }
}

public struct TSOFlags: OptionSet, Sendable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    /// mwData: the page is all zeros; no payload follows.
    public static let zero = TSOFlags(rawValue: 1)
    /// classChange: the pages become mw (else sc).
    public static let relaxed = TSOFlags(rawValue: 2)
    /// classChange from a page's home switching it from sc to mw: stop starting sc requests for
    /// it and acknowledge (the home then gathers the page); without it (and with relaxed), the
    /// switch is complete.
    public static let prepare = TSOFlags(rawValue: 4)
}

/// One run of changed bytes in a page.
public struct DiffRun: Equatable, Sendable {
    public var offset: Int
    public var bytes: [UInt8]
    public init(offset: Int, bytes: [UInt8]) {
        self.offset = offset
        self.bytes = bytes
    }
}

/// A decoded message; `payload` points into the received buffer (borrowed for the call).
public struct TSOMessage {
    public var type: TSOMessageType
    public var flags: TSOFlags
    public var node: UInt32
    public var gfn: UInt64
    public var seq: UInt64
    public var applied: UInt64
    public var page: UnsafeRawPointer?   // mwData without zero
    public var runs: [DiffRun]

    public init(type: TSOMessageType, flags: TSOFlags = [], node: UInt32, gfn: UInt64, seq: UInt64 = 0,
                applied: UInt64 = 0, page: UnsafeRawPointer? = nil, runs: [DiffRun] = []) {
        self.applied = applied
        self.type = type
        self.flags = flags
        self.node = node
        self.gfn = gfn
        self.seq = seq
        self.page = page
        self.runs = runs
    }
}

public enum TSOWire {
    public static let version: UInt8 = 1
    public static let headerSize = 32
    public static let pageSize = Int(GVM_PAGE_SIZE)
    /// The first type byte of a dsm-tso message; anything below is dsm-ivy's.
    public static let firstType: UInt8 = 32

    public static func header(_ m: TSOMessage) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: headerSize)
        b[0] = m.type.rawValue
        b[1] = version
        b[2] = m.flags.rawValue
        put(&b, 4, UInt64(m.node), 4)
        put(&b, 8, m.gfn, 8)
        put(&b, 16, m.seq, 8)
        put(&b, 24, m.applied, 8)
        return b
    }

    /// Runs as bytes.
    public static func encodeRuns(_ runs: [DiffRun]) -> [UInt8] {
        var b: [UInt8] = []
        b.reserveCapacity(runs.reduce(0) { $0 + 4 + $1.bytes.count })
        for r in runs {
            b.append(UInt8(r.offset & 0xFF)); b.append(UInt8(r.offset >> 8))
            b.append(UInt8(r.bytes.count & 0xFF)); b.append(UInt8(r.bytes.count >> 8))
            b += r.bytes
        }
        return b
    }

    /// The whole message (header, then runs or page), for tests and tools.
    public static func encode(_ m: TSOMessage) -> [UInt8] {
        var b = header(m)
        if m.type.carriesRuns { b += encodeRuns(m.runs) }
        if m.type == .mwData, !m.flags.contains(.zero), let p = m.page {
            b += UnsafeRawBufferPointer(start: p, count: pageSize)
        }
        return b
    }

    /// The runs where `copy` differs from `twin` (byte granular; adjacent changed bytes form one run).
    public static func diff(twin: UnsafeRawPointer, copy: UnsafeRawPointer) -> [DiffRun] {
        var runs: [DiffRun] = []
        var i = 0
        let t = twin.assumingMemoryBound(to: UInt8.self), c = copy.assumingMemoryBound(to: UInt8.self)
        while i < pageSize {
            // Skip equal 8-byte words quickly.
            if i % 8 == 0, i + 8 <= pageSize,
               twin.loadUnaligned(fromByteOffset: i, as: UInt64.self) == copy.loadUnaligned(fromByteOffset: i, as: UInt64.self) {
                i += 8
                continue
            }
            if t[i] == c[i] { i += 1; continue }
            let start = i
            while i < pageSize && t[i] != c[i] { i += 1 }
            runs.append(DiffRun(offset: start, bytes: Array(UnsafeBufferPointer(start: c + start, count: i - start))))
        }
        return runs
    }

    /// Decodes and validates one dsm-tso message from `src` received by `selfID`.
    /// - Parameters:
    ///   - homeOf: the home node of a gfn; `isRelaxed`: whether the gfn is of class mw here.
    public static func decode(_ buf: UnsafeRawBufferPointer, src: UInt32, selfID: UInt32, nodeCount: UInt32,
                              pageCount: UInt64, homeOf: (UInt64) -> UInt32, isRelaxed: (UInt64) -> Bool) throws -> TSOMessage {
        guard buf.count >= headerSize, let base = buf.baseAddress else {
            throw WireError("message of \(buf.count) bytes is shorter than the \(headerSize)-byte header")
        }
        guard src < nodeCount, src != selfID else { throw WireError("message from invalid source node \(src)") }
        guard let type = TSOMessageType(rawValue: buf[0]) else { throw WireError("unknown message type \(buf[0])") }
        guard buf[1] == version else { throw WireError("\(type.name): wire version \(buf[1]), expected \(version)") }
        let flags = TSOFlags(rawValue: buf[2])
        let allowed: TSOFlags = type == .mwData ? .zero : (type == .classChange ? [.relaxed, .prepare] : [])
        guard allowed.isSuperset(of: flags) else {
            throw WireError("\(type.name): flags 0x\(String(buf[2], radix: 16)) not allowed")
        }
        guard buf[3] == 0 else { throw WireError("\(type.name): reserved byte is \(buf[3])") }
        let node = UInt32(truncatingIfNeeded: get(buf, 4, 4))
        let gfn = get(buf, 8, 8)
        let seq = get(buf, 16, 8)
        let applied = get(buf, 24, 8)
        guard gfn < pageCount else { throw WireError("\(type.name): gfn \(gfn) out of range (\(pageCount) pages)") }
        guard node < nodeCount else { throw WireError("\(type.name): node \(node) out of range (\(nodeCount) nodes)") }
        if type == .classChange || type == .classAck {
            guard buf.count == headerSize else { throw WireError("\(type.name): \(buf.count) bytes, expected \(headerSize)") }
            guard seq >= 1, seq <= pageCount - gfn else {
                throw WireError("\(type.name): \(seq) pages from gfn \(gfn) leave guest memory (\(pageCount) pages)")
            }
            if type == .classChange {
                guard node == src else { throw WireError("ClassChange from node \(src) claims to be from node \(node)") }
            } else {
                guard node == selfID else { throw WireError("ClassAck for node \(node)'s request reached node \(selfID)") }
            }
            return TSOMessage(type: type, flags: flags, node: node, gfn: gfn, seq: seq, applied: applied)
        }
        guard isRelaxed(gfn) else {
            throw WireError("\(type.name): gfn \(gfn) is not a relaxed (mw) page on node \(selfID)")
        }
        let home = homeOf(gfn)
        if type.toHome {
            guard home == selfID else { throw WireError("\(type.name) for gfn \(gfn) sent to node \(selfID), but its home is node \(home)") }
        } else {
            guard home == src else { throw WireError("\(type.name) for gfn \(gfn) from node \(src), but its home is node \(home)") }
        }
        switch type {
        case .mwGet, .mwData, .diff:
            guard node == src else { throw WireError("\(type.name) from node \(src) claims to be from node \(node)") }
        case .updateAck:
            guard node != src else { throw WireError("UpdateAck from node \(src) for its own diff") }
        case .diffDone:
            guard node == selfID else { throw WireError("DiffDone for node \(node)'s diff reached node \(selfID)") }
        case .update:
            break
        case .classChange, .classAck:
            break   // handled above
        }
        guard type == .update || applied == 0 else { throw WireError("\(type.name): applied field is \(applied), must be 0") }
        var m = TSOMessage(type: type, flags: flags, node: node, gfn: gfn, seq: seq, applied: applied)
        let body = UnsafeRawBufferPointer(rebasing: buf[headerSize...])
        switch type {
        case .mwGet, .updateAck, .diffDone:
            guard body.isEmpty else { throw WireError("\(type.name): \(buf.count) bytes, expected \(headerSize)") }
        case .mwData:
            let expected = flags.contains(.zero) ? 0 : pageSize
            guard body.count == expected else {
                throw WireError("MwData: \(buf.count) bytes, expected \(headerSize + expected)")
            }
            if expected > 0 { m.page = UnsafeRawPointer(base + headerSize) }
        case .classChange, .classAck:
            break
        case .diff, .update:
            m.runs = try decodeRuns(body, type.name)
            guard !m.runs.isEmpty else { throw WireError("\(type.name) for gfn \(gfn) has no runs") }
        }
        return m
    }

    static func decodeRuns(_ b: UnsafeRawBufferPointer, _ what: String) throws -> [DiffRun] {
        var runs: [DiffRun] = []
        var i = 0
        var end = 0
        while i < b.count {
            guard b.count - i >= 4 else { throw WireError("\(what): truncated run header at byte \(i)") }
            let off = Int(b[i]) | Int(b[i + 1]) << 8
            let len = Int(b[i + 2]) | Int(b[i + 3]) << 8
            i += 4
            guard len > 0, off + len <= pageSize else { throw WireError("\(what): run at offset \(off), length \(len) leaves the page") }
            guard off >= end else { throw WireError("\(what): run at offset \(off) overlaps or precedes the previous run") }
            guard b.count - i >= len else { throw WireError("\(what): run at offset \(off) needs \(len) bytes, \(b.count - i) left") }
            runs.append(DiffRun(offset: off, bytes: Array(b[i..<(i + len)])))
            i += len
            end = off + len
        }
        return runs
    }

    static func put(_ b: inout [UInt8], _ at: Int, _ v: UInt64, _ n: Int) {
        for i in 0..<n { b[at + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(i))) }
    }

    static func get(_ b: UnsafeRawBufferPointer, _ at: Int, _ n: Int) -> UInt64 {
        var v: UInt64 = 0
        for i in 0..<n { v |= UInt64(b[at + i]) << (8 * UInt64(i)) }
        return v
    }
}
