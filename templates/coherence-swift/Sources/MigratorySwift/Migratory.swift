// dsm-migratory-swift: the migratory coherence protocol, in Swift over GiantVM's PluginKit.
//
// Every guest page has exactly one copy in the cluster. A node that faults on a page, to read or
// to write, gets that copy wholesale and writable (MODIFIED); the node that had it drops it. One
// copy means no sharers to invalidate and sequential consistency by construction; reads cost as
// much as writes.
//
// Each page has a fixed manager, node gfn % nodes, which knows the page's owner and moves the page
// one request at a time (later requests wait in a FIFO):
//
//   requester R               manager M                      owner O
//   fault ---- request ---->  busy? queue R : busy, forward -> drop (pinned: wait for the unpin)
//         <------------------------------------------ page -- its bytes (none: zeros)
//   install MODIFIED, wake
//         ---- done ------->  owner = R, next request
//
// At start every page belongs to its manager, untouched: the first move sends zeros. R, M and O
// may be one node: a message to oneself is a direct call. A page stays at least `hold` where it
// arrived before it moves on (a timer finishes the move), so the thread that faulted for it gets
// its access in; without it, a page with a queue of requesters could leave before that thread runs.
//
// State table (this node; the host holds the page state):
//   INVALID  + read or write fault -> request to the manager (a fault while one is out joins it)
//   MODIFIED + any fault           -> stale: wake
//   owner    + forward             -> drop, send the page (held: after `hold`; pinned: pageUnpinned)
//   waiting  + page                -> install MODIFIED, wake, done to the manager
//
// Threading: fault, receive, pageUnpinned and the hold timer run on different host threads at
// once; one Mutex serialises the protocol state.

import PluginKit
import Synchronization

public final class Migratory: CoherencePlugin {
    enum Kind: UInt8 { case request = 1, forward = 2, page = 3, done = 4 }
    static let wireVersion: UInt8 = 1
    static let zeroFlag: UInt16 = 1           // page: no bytes follow, the page is all zeros
    static let headerSize = 16                // kind, version, flags (2), node (4), gfn (8); little endian
    static let pageSize = Int(GVM_PAGE_SIZE)
    static let hold: UInt64 = 50_000          // nanoseconds a page stays where it arrived

    struct State {
        var owner: [UInt32]                   // manager: who holds each page
        var busy: [Bool]                      // manager: a move is under way
        var queue: [(gfn: UInt64, node: UInt32)] = []
        var askedAt: [UInt64]                 // requester: when our request started, 0 = none
        var askedWrite: [Bool]
        var deferred: [UInt32?]               // owner: requester waiting for the hold or an unpin
        var arrived: [UInt64]                 // owner: when the page was installed here
        var timer: [UInt64]                   // owner: the pending hold timer, 0 = none
    }

    /// A hold timer's context (the C callback gets one pointer): one per page.
    struct HoldContext {
        var plugin: Unmanaged<Migratory>
        var gfn: UInt64
    }

    let memory: CoherenceHost
    let services: HostServices
    let me: UInt32
    let nodes: UInt32
    let stats: CoherenceStatistics
    let state: Mutex<State>
    let buffer = UnsafeMutableRawPointer.allocate(byteCount: Migratory.pageSize, alignment: 8)
    let holds: UnsafeMutablePointer<HoldContext>

    public init(services: HostServices, memory: CoherenceHost, cluster: ClusterInfo, settings: Settings) throws {
        try settings.allowOnly([])
        guard !cluster.nodes.isEmpty, memory.pageCount > 0 else { throw PluginError("no nodes or no guest memory") }
        self.memory = memory
        self.services = services
        me = cluster.selfID
        nodes = UInt32(cluster.nodes.count)
        stats = CoherenceStatistics(services)
        let n = Int(memory.pageCount), count = UInt64(cluster.nodes.count)
        state = Mutex(State(owner: (0..<UInt64(n)).map { UInt32($0 % count) }, busy: .init(repeating: false, count: n),
                            askedAt: .init(repeating: 0, count: n), askedWrite: .init(repeating: false, count: n),
                            deferred: .init(repeating: nil, count: n), arrived: .init(repeating: 0, count: n),
                            timer: .init(repeating: 0, count: n)))
        holds = .allocate(capacity: n)
        for g in 0..<n { (holds + g).initialize(to: HoldContext(plugin: .passUnretained(self), gfn: UInt64(g))) }
    }

    deinit {
        // Cancel outside the lock: cancel waits for a running callback, which takes the lock.
        for t in state.withLock({ $0.timer.filter { $0 != 0 } }) { services.cancelTimer(t) }
        holds.deallocate()
        buffer.deallocate()
    }

    func manager(_ gfn: UInt64) -> UInt32 { UInt32(gfn % UInt64(nodes)) }

    public func fault(gfn: UInt64, access: Access, fromPin: Bool) {
        guard gfn < memory.pageCount else { return }
        state.withLock { st in
            if memory.state(gfn) != .invalid {
                stats.stale.add()
                memory.wake(gfn)
            } else if st.askedAt[Int(gfn)] != 0 {
                stats.coalesced.add()
            } else {
                stats.requests(access == .write ? .writeMiss : .readMiss).add()
                st.askedAt[Int(gfn)] = services.nowNanoseconds() | 1
                st.askedWrite[Int(gfn)] = access == .write
                post(&st, to: manager(gfn), .request, node: me, gfn: gfn)
            }
        }
    }

    /// Sends a message, or handles it at once when it is for this node.
    func post(_ st: inout State, to dst: UInt32, _ kind: Kind, node: UInt32, gfn: UInt64, flags: UInt16 = 0,
              page: UnsafeRawBufferPointer? = nil) {
        if dst == me { return dispatch(&st, from: me, kind, node: node, gfn: gfn, flags: flags, page: page) }
        var header = [UInt8](repeating: 0, count: Self.headerSize)
        header[0] = kind.rawValue
        header[1] = Self.wireVersion
        withUnsafeBytes(of: flags.littleEndian) { header.replaceSubrange(2..<4, with: $0) }
        withUnsafeBytes(of: node.littleEndian) { header.replaceSubrange(4..<8, with: $0) }
        withUnsafeBytes(of: gfn.littleEndian) { header.replaceSubrange(8..<16, with: $0) }
        stats.messagesSent.add()
        stats.bytesSent.add(UInt64(header.count + (page?.count ?? 0)))
        let rc = header.withUnsafeBytes { h in memory.send(to: dst, page.map { [h, $0] } ?? [h]) }
        if rc != .ok && rc != .closed { services.fatal("migratory: send to node \(dst) failed: \(rc)") }
    }

    /// Owner: hands the page to `to`, dropping it here first.
    func moveOut(_ st: inout State, _ gfn: UInt64, to: UInt32) {
        let g = Int(gfn), held = services.nowNanoseconds() &- st.arrived[g]
        if st.arrived[g] != 0 && held < Self.hold {   // just arrived: move it when the hold is over
            st.deferred[g] = to
            if st.timer[g] == 0 {
                let s = services.raw.pointee
                st.timer[g] = s.timer_start(s.host, Self.hold - held, 0, { ctx in
                    let h = ctx!.assumingMemoryBound(to: HoldContext.self).pointee
                    h.plugin.takeUnretainedValue().holdOver(h.gfn)
                }, UnsafeMutableRawPointer(holds + g))
            }
            if st.timer[g] != 0 { return }               // no timer: move it now
        }
        let rc = memory.drop(gfn, into: buffer)
        if rc == .pinned {
            st.deferred[Int(gfn)] = to
            stats.pinDeferred.add()
            return
        }
        st.deferred[Int(gfn)] = nil
        let zero = rc == .notPresent          // never touched: its first owner gets zeros
        (zero ? stats.pagesSentWithoutData : stats.pagesSentWithData).add()
        post(&st, to: to, .page, node: to, gfn: gfn, flags: zero ? Self.zeroFlag : 0,
             page: zero ? nil : UnsafeRawBufferPointer(start: buffer, count: Self.pageSize))
    }

    func dispatch(_ st: inout State, from src: UInt32, _ kind: Kind, node: UInt32, gfn: UInt64, flags: UInt16,
                  page: UnsafeRawBufferPointer?) {
        let g = Int(gfn)
        switch kind {
        case .request:
            if st.busy[g] { st.queue.append((gfn, src)) } else {
                st.busy[g] = true
                post(&st, to: st.owner[g], .forward, node: src, gfn: gfn)
            }
        case .forward:
            moveOut(&st, gfn, to: node)
        case .page:
            guard st.askedAt[g] != 0 else { return services.fatal("migratory: page \(gfn) arrived unasked") }
            let rc = memory.install(gfn, bytes: flags & Self.zeroFlag != 0 ? nil : page?.baseAddress, state: .modified)
            guard rc == .ok else { return services.fatal("migratory: installing page \(gfn): \(rc)") }
            stats.recordLatency(st.askedWrite[g] ? .writeMiss : .readMiss, nanoseconds: services.nowNanoseconds() &- st.askedAt[g])
            st.askedAt[g] = 0
            st.arrived[g] = services.nowNanoseconds()
            memory.wake(gfn)
            post(&st, to: manager(gfn), .done, node: me, gfn: gfn)
        case .done:
            guard st.busy[g] else { return services.fatal("migratory: done for page \(gfn), which is not moving") }
            st.owner[g] = src
            st.busy[g] = false
            if let i = st.queue.firstIndex(where: { $0.gfn == gfn }) {
                let next = st.queue.remove(at: i).node
                st.busy[g] = true
                post(&st, to: src, .forward, node: next, gfn: gfn)
            }
        }
    }

    public func receive(from node: UInt32, message: UnsafeRawBufferPointer) {
        stats.messagesReceived.add()
        stats.bytesReceived.add(UInt64(message.count))
        guard message.count >= Self.headerSize, let kind = Kind(rawValue: message[0]), message[1] == Self.wireVersion else {
            return services.fatal("migratory: malformed message from node \(node) (\(message.count) bytes)")
        }
        let flags = UInt16(littleEndian: message.loadUnaligned(fromByteOffset: 2, as: UInt16.self))
        let who = UInt32(littleEndian: message.loadUnaligned(fromByteOffset: 4, as: UInt32.self))
        let gfn = UInt64(littleEndian: message.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
        let withData = kind == .page && flags & Self.zeroFlag == 0
        guard gfn < memory.pageCount, who < nodes, node < nodes,
              message.count == Self.headerSize + (withData ? Self.pageSize : 0),
              kind == .forward || kind == .page || manager(gfn) == me else {
            return services.fatal("migratory: malformed \(kind) message from node \(node)")
        }
        let page = withData ? UnsafeRawBufferPointer(rebasing: message[Self.headerSize...]) : nil
        state.withLock { dispatch(&$0, from: node, kind, node: who, gfn: gfn, flags: flags, page: page) }
    }

    /// The hold on gfn is over. Thread: the host timer thread.
    func holdOver(_ gfn: UInt64) {
        state.withLock { st in
            st.timer[Int(gfn)] = 0
            if let to = st.deferred[Int(gfn)] { moveOut(&st, gfn, to: to) }
        }
    }

    public func pageUnpinned(gfn: UInt64) {
        guard gfn < memory.pageCount else { return }
        state.withLock { st in
            if let to = st.deferred[Int(gfn)] { moveOut(&st, gfn, to: to) }
        }
    }

    public func describe() -> String {
        """
        dsm-migratory-swift: one copy per page, moved wholesale (MODIFIED) to each faulting node
          manager of gfn = gfn % nodes: knows the owner, moves one request at a time (FIFO)
          INVALID + fault -> request to manager; manager forwards to owner; owner drops, sends the page
          page            -> install MODIFIED, wake, done to manager (owner := requester)
          present + fault -> stale: wake;  owner pinned -> defer the drop until page_unpinned
          a page stays 50 us where it arrived before it moves on (its faulting thread's access)
        """
    }
}

let entry = CoherencePluginEntry(Migratory.self, name: "dsm-migratory-swift", version: "0.1.0",
                                 summary: "migratory protocol in Swift: one copy per page, moved to each faulting node")

@_cdecl("giantvm_plugin_entry")
public func giantvm_plugin_entry() -> UnsafeRawPointer { entry.pointer }
