// Read-ahead: more than one page per fault where the access pattern says so.
//
// The detector (ReadAheadDetector) watches this node's read faults as streams: a fault one page
// after the last fault of a stream (or, for a stride d with 1 < |d| <= maxStride, the same stride
// twice in a row) confirms a sequential or strided stream. From then on every fault of the stream
// (a miss at the end of what was requested, or a wait on a page still in flight) asks for the
// pages up to `read_ahead` strides past it that this node does not hold. A stream whose reader
// misses one stride past everything requested (it used the whole window before asking for more)
// doubles its window, up to ReadAheadDetector.growth times `read_ahead`.
//
// How a prefetch runs, and why the Ivy invariants stay exact: each prefetched page takes the
// table's own read miss, (I, Load) -> IS_D [r_startReadMiss, r_sendGetS], exactly as a local
// thread's fault would — with no thread waiting on it. The only difference is on the wire: the
// GetS of one fault's prefetches are gathered per manager into one GetSBatch message (Wire.swift),
// which the manager splits into one GetS per page, each its own transaction in arrival order
// (begin, forward to the owner, wait for the Confirm; queued behind an open one). So the owner
// serves each page as a FwdGetS (deferring it while pinned, refusing it with Nack if it no longer
// owns it), the requester installs each Data_S and confirms it, and single writer, copysets and
// the manager's owner and queue are the same per page as without read-ahead. The model
// (Model/ivy.pml) checks that table, unchanged; zero pages still travel without bytes.
//
// Batching on the way back: the manager gathers the forwards one GetSBatch starts into one
// FwdGetSBatch per owner; the owner runs each entry as its own FwdGetS and gathers the read copies
// it sends meanwhile into DataBatch messages (within a transport frame); the requester runs each
// entry as its own Data_S. Only the packaging is shared: every page keeps its own transaction.
//
// Statistics (extras, "ivy.readahead."): `prefetched` pages requested by read-ahead; `used` those
// a later access was seen for — a fault on the page while still in flight (the thread then waits
// as a read miss, counted and timed from its fault), a write fault on it, or its stream's next
// fault lying past it; `wasted` those invalidated before any such access; `batches` GetSBatch
// messages sent. prefetched - used - wasted are in flight, resident or evicted otherwise.
//
// Threading: called by IvyNode under its lock; the detector is a plain value.

import PluginKit

/// Detects sequential and strided read streams among one node's faults.
public struct ReadAheadDetector: Sendable {
    /// The largest stride (in pages) taken for a pattern.
    public static let maxStride: Int64 = 64
    /// Streams tracked at once (least recently used replaced).
    public static let streamCount = 8

    struct Stream {
        var last: UInt64          // the stream's last fault
        var stride: Int64         // 0 = not known yet
        var confirmed: Bool
        var ahead: UInt64         // the furthest page requested along the stride (= last when none)
        var pending: [UInt64]     // pages requested ahead and not yet passed, in stride order
        var tick: UInt64
        var window = 0            // pages to keep requested ahead (grows, see `advance`)
    }

    public let window: Int
    /// The most a stream's window grows to: `growth` times `window`.
    public static let growth = 4
    var streams: [Stream] = []
    var tick: UInt64 = 0

    /// `window`: pages requested ahead of a confirmed stream's fault (0 turns read-ahead off).
    public init(window: Int) { self.window = max(0, window) }

    /// What a fault asks for: `fetch`, the pages to request ahead (in stride order, within the
    /// guest; the caller skips those it holds or has asked for); `passed`, pages requested ahead
    /// earlier that the stream has now moved past.
    public struct Decision: Equatable, Sendable {
        public var fetch: [UInt64] = []
        public var passed: [UInt64] = []
        public var stride: Int64 = 0
    }

    /// A local thread's read fault at `gfn` (a miss, or a wait on a page still in flight).
    public mutating func access(_ gfn: UInt64, pageCount: UInt64) -> Decision {
        guard window > 0 else { return Decision() }
        tick &+= 1
        let g = Int64(gfn)
        // 1. On a confirmed stream: between its last fault and one stride past what was requested.
        if let i = streams.indices.first(where: { onStream(streams[$0], g) }) {
            return advance(i, gfn, pageCount)
        }
        // 2. Near a stream's last fault: a stride seen (sequential at once, others twice).
        var best: (index: Int, distance: Int64)?
        for (i, s) in streams.enumerated() {
            let d = g - Int64(s.last)
            guard d != 0, abs(d) <= Self.maxStride else { continue }
            if best == nil || abs(d) < best!.distance { best = (i, abs(d)) }
        }
        if let (i, _) = best {
            let d = g - Int64(streams[i].last)
            if abs(d) == 1 || streams[i].stride == d {
                streams[i].stride = d
                streams[i].confirmed = true
                streams[i].ahead = streams[i].last
                streams[i].pending = []
                streams[i].window = window
                return advance(i, gfn, pageCount)
            }
            streams[i].stride = d
            streams[i].confirmed = false
            streams[i].last = gfn
            streams[i].ahead = gfn
            streams[i].pending = []
            streams[i].tick = tick
            return Decision()
        }
        // 3. A new stream, in place of the least recently used one.
        let fresh = Stream(last: gfn, stride: 0, confirmed: false, ahead: gfn, pending: [], tick: tick)
        if streams.count < Self.streamCount {
            streams.append(fresh)
        } else if let lru = streams.indices.min(by: { streams[$0].tick < streams[$1].tick }) {
            streams[lru] = fresh
        }
        return Decision()
    }

    /// g lies on confirmed stream s: a whole number of strides past its last fault, and at most
    /// one stride past the furthest page requested.
    func onStream(_ s: Stream, _ g: Int64) -> Bool {
        guard s.confirmed, s.stride != 0 else { return false }
        let fromLast = g - Int64(s.last), fromAhead = g - Int64(s.ahead)
        return fromLast % s.stride == 0 && fromLast / s.stride >= 1 && fromAhead / s.stride <= 1
    }

    mutating func advance(_ i: Int, _ gfn: UInt64, _ pageCount: UInt64) -> Decision {
        var s = streams[i]
        let d = s.stride, g = Int64(gfn)
        var out = Decision(stride: d)
        // A miss one stride past everything requested: the reader used the whole window before
        // the next fault asked for more, so each window costs it a round trip. Double the window
        // (up to `growth` times the setting): fewer round trips per page on a long stream.
        if s.window == 0 { s.window = window }
        if s.ahead != s.last, g - Int64(s.ahead) == d { s.window = min(s.window * 2, window * Self.growth) }
        // Pages requested ahead that lie before this fault along the stride were passed over.
        let sign: Int64 = d > 0 ? 1 : -1
        let cut = s.pending.firstIndex { (Int64($0) - g) * sign >= 0 } ?? s.pending.count
        out.passed = Array(s.pending[..<cut])
        s.pending.removeFirst(cut)
        if s.pending.first == gfn { s.pending.removeFirst() }
        // Request up to `window` strides past this fault, beyond what was requested already.
        var next = max((Int64(s.ahead) - g) / d, 0) + 1
        while next <= Int64(s.window) {
            let p = g + next * d
            guard p >= 0, p < Int64(pageCount) else { break }
            out.fetch.append(UInt64(p))
            next += 1
        }
        if let last = out.fetch.last { s.ahead = last } else if (Int64(s.ahead) - g) / d < 0 { s.ahead = gfn }
        s.pending += out.fetch
        s.last = gfn
        s.tick = tick
        streams[i] = s
        return out
    }
}

/// The read-ahead counters (extras of dsm-ivy, see the header of this file).
final class ReadAheadStats {
    let prefetched, used, wasted, batches, batchInstalls, batchDowngrades: (UInt64) -> Void
    init(_ s: ProtocolServices) {
        batchInstalls = s.makeCounter("ivy.readahead.batch_installs")
        batchDowngrades = s.makeCounter("ivy.readahead.batch_downgrades")
        prefetched = s.makeCounter("ivy.readahead.prefetched")
        used = s.makeCounter("ivy.readahead.used")
        wasted = s.makeCounter("ivy.readahead.wasted")
        batches = s.makeCounter("ivy.readahead.batches")
    }
}

extension IvyNode {
    /// After a local read fault at gfn has run its transition: read ahead if its stream says so.
    func readAhead(after gfn: UInt64) {
        guard config.readAhead > 0, !failed else { return }
        let d = detector.access(gfn, pageCount: pageCount)
        for p in d.passed where prefetchedUnused.remove(p) != nil { raStats.used(1) }
        var wanted: [UInt64] = []
        for p in d.fetch {
            let g = Int(p)
            guard state[g] == .I, outstanding[p] == nil, stalled[p] == nil, held[p] == nil else { continue }
            if frozen[managerOf(p)] != nil { continue }   // its manager is handing over (Drain.swift)
            if let keep = readAheadFilter, !keep(p) { continue }
            wanted.append(p)
        }
        guard !wanted.isEmpty else { return }
        // Each page runs the table's read miss; r_sendGetS gathers the requests per manager.
        gathering = [:]
        prefetching = true
        for p in wanted {
            var ctx = Context(gfn: p, src: selfID, msg: nil, input: .fault(.read))
            ctx.requester = selfID
            run(.load, &ctx)
            if failed { break }
        }
        prefetching = false
        let batches = gathering ?? [:]
        gathering = nil
        guard !failed else { return }
        for (manager, gfns) in batches.sorted(by: { $0.key < $1.key }) {
            if manager == selfID {   // this node's own manager: the same batch, through the local queue
                var m = Message(type: .getSBatch, node: selfID, gfn: gfns[0], txn: UInt64(gfns.count))
                m.batch = gfns
                localQueue.append(m)
                continue
            }
            var start = 0
            while start < gfns.count {
                let chunk = Array(gfns[start..<min(start + IvyWire.maxBatch, gfns.count)])
                start += chunk.count
                let bytes = IvyWire.encodeBatch(node: selfID, hops: 1, gfns: chunk)
                bytes.withUnsafeBytes { transmit(.getSBatch, gfn: chunk[0], to: manager, [$0], urgent: true) }
                account(.getSBatch, bytes.count)
                raStats.batches(1)
            }
        }
    }

    /// A local fault found a page that read-ahead has in flight: from now on it is that thread's
    /// read miss (counted, and timed from this fault).
    func claimPrefetch(_ gfn: UInt64) {
        guard var o = outstanding[gfn], o.prefetch else { return }
        o.prefetch = false
        o.kind = .readMiss
        o.start = services.nowNanoseconds()
        outstanding[gfn] = o
        stats.faults[FaultKind.readMiss.rawValue](1)
        raStats.used(1)
    }

    /// The manager's side of a GetSBatch: one GetS per listed page, in order; the forwards this
    /// starts (pages idle at the manager) are gathered into one FwdGetSBatch per owner.
    func serveBatch(_ m: Message, from src: UInt32) {
        forwardGather = [:]
        for g in m.batch {
            if failed { break }
            runManager(.getS, Message(type: .getS, hops: m.hops, node: m.node, gfn: g), src)
        }
        let gathered = forwardGather ?? [:]
        forwardGather = nil
        guard !failed else { return }
        for (key, list) in gathered.sorted(by: { ($0.key.owner, $0.value[0].gfn) < ($1.key.owner, $1.value[0].gfn) }) {
            if key.owner == selfID {
                // The manager owns the pages itself (the usual case: pages start at their manager):
                // the same forward batch through the local queue, so the read copies still leave
                // as DataBatch messages (one per frame budget, not one message per page).
                var f = Message(type: .fwdGetSBatch, hops: key.hops, node: key.requester, gfn: list[0].gfn)
                f.entries = list.map { BatchEntry(gfn: $0.gfn, txn: $0.txn) }
                localQueue.append(f)
                continue
            }
            var start = 0
            while start < list.count {
                let chunk = Array(list[start..<min(start + IvyWire.maxBatch, list.count)])
                start += chunk.count
                let bytes = IvyWire.encodeForwardBatch(requester: key.requester, hops: key.hops == .max ? .max : key.hops + 1,
                                                       entries: chunk)
                bytes.withUnsafeBytes { transmit(.fwdGetSBatch, gfn: chunk[0].gfn, to: key.owner, [$0], urgent: true) }
                account(.fwdGetSBatch, bytes.count)
            }
        }
    }

    /// The owner's side of a FwdGetSBatch: one FwdGetS per entry (each through the table, the
    /// hold window and pins as usual); the read copies sent meanwhile go out as DataBatch messages.
    func serveForwardBatch(_ m: Message, from src: UInt32) {
        dataGather = [:]
        predowngradeRuns(m.entries.map(\.gfn))
        for e in m.entries {
            if failed { break }
            handleMessage(Message(type: .fwdGetS, hops: m.hops, node: m.node, gfn: e.gfn, txn: e.txn), from: src)
            if predowngraded.remove(e.gfn) != nil {
                fail("gfn \(e.gfn): write-protected with its FwdGetSBatch run but its downgrade did not run")
                return
            }
        }
        let gathered = dataGather ?? [:]
        dataGather = nil
        guard !failed else { return }
        for (dst, list) in gathered.sorted(by: { $0.key < $1.key }) { flushData(list, to: dst) }
    }

    /// The owner's side of a FwdGetSBatch, before its FwdGetS run: runs of consecutive pages
    /// whose FwdGetS will take (OM, FwdGetS) at once — whose first action is the downgrade — are
    /// write-protected first with one call (page_downgrade_batch: one TLB flush for the run, where
    /// a downgrade per page pays one each); their downgrade then only reads the bytes. A run the
    /// host refuses (a pin, no service) goes page by page.
    func predowngradeRuns(_ gfns: [UInt64]) {
        guard releaseGate == nil else { return }     // a protocol built on this one decides per page
        let now = services.nowNanoseconds()
        func ready(_ g: UInt64) -> Bool {
            guard state[Int(g)] == .OM, held[g] == nil, stalled[g] == nil else { return false }
            if let until = heldUntil[g], now < until { return false }
            return true
        }
        var i = 0
        while i < gfns.count {
            var j = i
            while j < gfns.count, j - i < IvyWire.maxBatch, ready(gfns[j]), j == i || gfns[j] == gfns[j - 1] + 1 { j += 1 }
            if j - i >= 2, host.downgradeBatch(gfns[i], count: j - i) == .ok {
                for g in gfns[i..<j] { predowngraded.insert(g) }
                raStats.batchDowngrades(1)
            }
            i = max(j, i + 1)
        }
    }

    /// The requester's side of a DataBatch: one Data_S per entry, in order. Runs of consecutive
    /// pages that will take (IS_D, Data_S) at once — whose first action is the install — are
    /// installed first with one copy (page_install_batch); their Data_S then skips the install.
    /// A run the host refuses (a pin, a present page, no service) goes page by page.
    func receiveDataBatch(_ m: Message, from src: UInt32) {
        var i = 0
        while i < m.entries.count {
            var j = i
            while j < m.entries.count, installableAtOnce(m.entries[j]),
                  j == i || (m.entries[j].gfn == m.entries[j - 1].gfn + 1
                             && m.entries[j].payload == m.entries[j - 1].payload! + IvyWire.pageSize) {
                j += 1
            }
            if j - i >= 2, host.installBatch(m.entries[i].gfn, count: j - i, bytes: m.entries[i].payload!, state: .shared) == .ok {
                for e in m.entries[i..<j] { preinstalled.insert(e.gfn) }
                raStats.batchInstalls(1)
            }
            i = max(j, i + 1)
        }
        for e in m.entries {
            if failed { return }
            handleMessage(Message(type: .data, flags: e.zero ? .zero : [], hops: m.hops, node: m.node, gfn: e.gfn,
                                  txn: e.txn, payload: e.payload), from: src)
            if preinstalled.remove(e.gfn) != nil {
                fail("gfn \(e.gfn): installed with its DataBatch run but its Data_S did not run")
                return
            }
        }
    }

    /// The entry's Data_S will run at once with the install first: a page with bytes, waiting
    /// for exactly this read copy (IS_D, nothing parked before it).
    func installableAtOnce(_ e: BatchEntry) -> Bool {
        guard !e.zero, e.payload != nil, state[Int(e.gfn)] == .IS_D, outstanding[e.gfn] != nil, stalled[e.gfn] == nil else {
            return false
        }
        return true
    }

    func gatherData(gfn: UInt64, to dst: UInt32, zero: Bool, bytes: UnsafeRawPointer, txn: UInt64, hops: UInt8) {
        let copy = zero ? [] : Array(UnsafeRawBufferPointer(start: bytes, count: IvyWire.pageSize))
        dataGather![dst, default: []].append(GatheredData(gfn: gfn, txn: txn, hops: hops, bytes: copy))
        if zero { stats.zeroPagesSent(1) } else { stats.pagesSent(1) }
    }

    /// Sends gathered read copies to `dst` as DataBatch messages within the frame budget.
    func flushData(_ list: [GatheredData], to dst: UInt32) {
        var start = 0
        while start < list.count {
            var end = start, bytes = IvyWire.headerSize
            while end < list.count, end - start < IvyWire.maxBatch {
                let more = 24 + list[end].bytes.count
                if end > start && bytes + more > IvyWire.maxDataBatchBytes { break }
                bytes += more
                end += 1
            }
            let chunk = Array(list[start..<end])
            start = end
            let hops = chunk.map(\.hops).max()!
            let head = IvyWire.encodeDataBatchHead(sender: selfID, hops: hops == .max ? .max : hops + 1,
                                                   entries: chunk.map { BatchEntry(gfn: $0.gfn, txn: $0.txn, zero: $0.bytes.isEmpty) })
            var parts: [[UInt8]] = [head]
            for d in chunk where !d.bytes.isEmpty { parts.append(d.bytes) }
            withBuffers(parts) { transmit(.dataBatch, gfn: chunk[0].gfn, to: dst, $0, urgent: false) }
            account(.dataBatch, bytes)
        }
    }
}

/// Where a gathered forward goes.
struct ForwardKey: Hashable {
    var owner: UInt32
    var requester: UInt32
    var hops: UInt8
}

/// A read copy gathered for a DataBatch (empty bytes: a zero page).
struct GatheredData {
    var gfn: UInt64
    var txn: UInt64
    var hops: UInt8
    var bytes: [UInt8]
}

/// Calls body with borrowed buffer pointers to every array (kept alive for the call).
func withBuffers<R>(_ arrays: [[UInt8]], _ body: ([UnsafeRawBufferPointer]) -> R) -> R {
    func go(_ i: Int, _ acc: [UnsafeRawBufferPointer]) -> R {
        if i == arrays.count { return body(acc) }
        return arrays[i].withUnsafeBytes { go(i + 1, acc + [$0]) }
    }
    return go(0, [])
}
