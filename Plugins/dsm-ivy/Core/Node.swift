// IvyNode: one node's instance of the Ivy protocol — the engine that runs the tables of
// Table.swift against a PageHost (page operations + messaging) and ProtocolServices.
//
// Threading: every entry point (fault, receive, pageUnpinned, peerLost, stop, describe) may be
// called from any thread, concurrently; each takes the node's one lock for its whole run. Under
// the lock the node calls the host's page operations, send and wake, none of which waits for the
// network or calls back into the node. Messages a node sends to itself (the manager of a page
// being its requester or its owner) go through a local queue drained before the lock is released,
// never through recursion into a half-finished transition.
//
// Once `fail` has been called (a protocol violation, a malformed message, a lost peer) the node
// ignores everything that follows: the host stops every faulting thread.

import PluginKit

#if canImport(Glibc)
import Glibc
#endif

/// How guest-physical pages are spread over the managers.
public struct ManagerMap: Sendable, Equatable {
    /// Pages per chunk; chunk k is managed by node k % nodeCount.
    public var chunkPages: UInt64
    public var nodeCount: UInt32

    /// Contiguous ranges: page count split into nodeCount equal chunks (the paper's NUMA-like split).
    public static func blocks(pageCount: UInt64, nodeCount: UInt32) -> ManagerMap {
        let n = UInt64(max(nodeCount, 1))
        return ManagerMap(chunkPages: max(1, (pageCount + n - 1) / n), nodeCount: nodeCount)
    }

    public func manager(of gfn: UInt64) -> UInt32 {
        UInt32((gfn / chunkPages) % UInt64(nodeCount))
    }
}

/// Settings of the plugin (YAML `coherence: {plugin: dsm-ivy, settings: {...}}`).
public struct IvyConfig: Sendable, Equatable {
    public var managerMap: ManagerMap
    /// How many times the manager re-forwards a refused request before declaring the cluster
    /// inconsistent.
    public var maxRefusals: Int = 16
    /// Mirage-style hold window: after a fault is resolved, forwards and invalidations for that
    /// page wait this long, so the woken threads get to use the page before it is taken away
    /// (without it, a page can bounce forever between nodes that each never get to access it).
    public var holdNanoseconds: UInt64 = 20_000
    /// `request_timeout`: a page request unanswered this long stops the cluster naming the
    /// request, the page and the peer (0 = never). See Liveness.swift.
    public var requestTimeoutNanoseconds: UInt64 = 10_000_000_000
    /// `send_wait`: how long a message may wait for room in a full transport send queue before
    /// the cluster stops naming the peer. See Liveness.swift.
    public var sendWaitNanoseconds: UInt64 = 5_000_000_000
    /// `read_ahead`: pages requested ahead of a sequential or strided read stream, 0 (off) to
    /// IvyWire.maxBatch. See ReadAhead.swift.
    public var readAhead: Int = 16
    /// `replicated`: accept GVM_HINT_REPLICATED (on, the default: modules every node loads start
    /// as read copies everywhere) or answer UNSUPPORTED (off: the boot node loads them and the
    /// others fault them in, as before ABI 4). See Replicated.swift and docs/performance.md.
    public var replicated = true
    /// `zero_ahead`: when a local fault makes a never-written page present, the other
    /// never-written pages of its aligned group of this many pages are made present with it
    /// (1 = off, a power of two up to GVM_ZERO_RUN_MAX). See ZeroAhead.swift.
    public var zeroAhead: Int = Int(GVM_ZERO_RUN_MAX)

    public static let settingKeys = ["manager_chunk", "hold_time", "read_ahead", "replicated", "zero_ahead"] + livenessSettingKeys

    /// `manager_chunk`: "auto" (default: contiguous ranges, one per node) or a size that is a
    /// multiple of 4 KiB ("4KiB", "64KiB", "2MiB", "8192"): interleave chunks over the nodes.
    /// `hold_time`: a duration from 0 to 1s (default 20us). Both in the shared grammar of
    /// giantvm_units.h (a bare number is bytes for a size, seconds for a duration).
    public static func parse(_ settings: [String: String], pageCount: UInt64, nodeCount: UInt32) throws -> IvyConfig {
        for key in settings.keys.sorted() where !settingKeys.contains(key) {
            throw PluginError("unknown setting '\(key)' (accepted: \(settingKeys.joined(separator: ", ")))")
        }
        var config: IvyConfig
        let text = settings["manager_chunk"] ?? "auto"
        if text == "auto" {
            config = IvyConfig(managerMap: .blocks(pageCount: pageCount, nodeCount: nodeCount))
        } else {
            let bytes: UInt64
            switch parseSize(text) {
            case .success(let b): bytes = b
            case .failure(let f) where f.status == GVM_UNIT_NOT_NUMBER.rawValue || f.status == GVM_UNIT_EMPTY.rawValue:
                throw PluginError("setting 'manager_chunk': '\(text)' is not 'auto' or a size like 4KiB, 64KiB, 2MiB")
            case .failure(let f): throw PluginError("setting 'manager_chunk': \(f.message)")
            }
            guard bytes > 0, bytes % UInt64(GVM_PAGE_SIZE) == 0 else {
                throw PluginError("setting 'manager_chunk': \(bytes) bytes is not a positive multiple of 4096")
            }
            config = IvyConfig(managerMap: ManagerMap(chunkPages: bytes / UInt64(GVM_PAGE_SIZE), nodeCount: nodeCount))
        }
        if let h = settings["hold_time"] {
            switch parseDuration(h) {
            case .success(let ns): config.holdNanoseconds = ns
            case .failure(let f) where f.status == GVM_UNIT_NOT_NUMBER.rawValue || f.status == GVM_UNIT_EMPTY.rawValue:
                throw PluginError("setting 'hold_time': '\(h)' is not a duration up to 1s like 0, 20us, 1ms")
            case .failure(let f): throw PluginError("setting 'hold_time': \(f.message)")
            }
        }
        if let r = settings["read_ahead"] {
            guard let n = Int(r.trimmingSpaces), n >= 0, n <= IvyWire.maxBatch else {
                throw PluginError("setting 'read_ahead': '\(r)' is not a page count from 0 (off) to \(IvyWire.maxBatch)")
            }
            config.readAhead = n
        }
        if let z = settings["zero_ahead"] {
            guard let n = Int(z.trimmingSpaces), n >= 1, n <= Int(GVM_ZERO_RUN_MAX), n & (n - 1) == 0 else {
                throw PluginError("setting 'zero_ahead': '\(z)' is not a power of two from 1 (off) to \(GVM_ZERO_RUN_MAX) pages")
            }
            config.zeroAhead = n
        }
        switch settings["replicated"]?.trimmingSpaces ?? "on" {
        case "on": config.replicated = true
        case "off": config.replicated = false
        case let v: throw PluginError("setting 'replicated': '\(v)' is not on or off")
        }
        return config
    }

    /// `hold_time`'s range: 0 (no hold) to 1s.
    public static let holdTimeRange: ClosedRange<UInt64> = 0...Units.second
    /// `manager_chunk`'s range: at most 1TiB (and a positive multiple of 4 KiB, checked after).
    public static let managerChunkRange: ClosedRange<UInt64> = 0...(1 << 40)

    /// The shared duration grammar (giantvm_units.h; a bare number is seconds) in `holdTimeRange`.
    static func parseDuration(_ s: String) -> Result<UInt64, Units.Failure> {
        Units.duration(s, range: holdTimeRange)
    }

    /// The shared size grammar (a bare number is bytes) in `managerChunkRange`.
    static func parseSize(_ s: String) -> Result<UInt64, Units.Failure> {
        Units.size(s, range: managerChunkRange)
    }
}

extension String {
    var trimmingSpaces: String {
        var s = Substring(self)
        while s.first == " " { s.removeFirst() }
        while s.last == " " { s.removeLast() }
        return String(s)
    }
}

/// Kinds of faults, for statistics.
public enum FaultKind: Int, CaseIterable, Sendable {
    case readMiss = 0, writeMiss, upgrade
    public var name: String { ["read_miss", "write_miss", "upgrade"][rawValue] }
}

/// Thrown by actions: the transition stops before any side effect (only the first action may
/// throw `deferPinned` or `reclassify`), or the protocol is violated.
enum Interrupt: Error {
    case deferPinned
    case reclassify(CacheEvent)
    case violation(String)
}

/// One node's Ivy protocol instance.
public final class IvyNode: @unchecked Sendable {
    public let selfID: UInt32
    public let nodeCount: UInt32
    public let pageCount: UInt64
    public let config: IvyConfig
    let host: PageHost
    let services: ProtocolServices
    let stats: IvyStats
    let raStats: ReadAheadStats
    let zaStats: ZeroAheadStats
    /// Messages that found the transport's queue full and waited in the outbox (Liveness.swift).
    let sendWaits: (UInt64) -> Void
    /// Node evacuation (Drain.swift): requests deferred for a manager handing over, pulls taken,
    /// deferred requests for never-written pages re-run as local faults.
    let drainDeferred: (UInt64) -> Void, drainPulled: (UInt64) -> Void, drainRefaults: (UInt64) -> Void

    // ---- cache controller state (per page)
    var state: [CacheState]
    var copyset: [UInt64]                                  // owner only: bit n = node n shares
    var outstanding: [UInt64: Outstanding] = [:]           // requester: the fault being resolved
    var ownerTxn: [UInt64: OwnerTxn] = [:]                 // owner in OM_A / OI_A
    var stash: [StashKey: [UInt8]] = [:]                   // bytes of pages granted without data
    var stalled: [UInt64: [Input]] = [:]                   // deferred (pinned) or stalled inputs
    var heldUntil: [UInt64: UInt64] = [:]                  // hold window end (ns) after a resolved fault
    var held: [UInt64: [Input]] = [:]                      // forwards/invalidations waiting for it
    var holdTimer: UInt64 = 0                              // the pending one-shot timer, 0 = none

    // ---- manager state (per managed page; arrays are indexed by gfn, used for managed pages)
    var owner: [UInt32]
    var open: [UInt64: OpenTxn] = [:]
    var waiting: [UInt64: [Message]] = [:]
    var nextTxn: UInt64 = 1

    // ---- node evacuation (Drain.swift)
    var redirect: [UInt32]                                 // node n's managed pages are managed by redirect[n] (n: none left)
    var frozen: [UInt32: UInt32] = [:]                     // leaving node -> its successor, from Prepare to Commit
    var departed = Set<UInt32>()                           // nodes that left: their loss is not a failure
    var deferred: [Message] = []                           // GetS/GetX held for a frozen manager, in order
    var pulling = false                                    // the write misses being started are pulls
    var pullWaiting = Set<UInt64>()                        // successor: pulls (and released requests) not complete
    var pullsOwed: [UInt32: Int] = [:]                     // successor: PullDone owed per leaving node
    var leaving: DrainRun? = nil                           // the leaving node's drain
    var drainBytes: UInt64 = 0                             // bytes sent while `leaving` is set
    var takenOver: [UInt32: UInt64] = [:]                  // successor: managed pages received per leaving node

    // ---- engine
    var lock = pthread_mutex_t()
    var localQueue: [Message] = []
    var replayPending: [UInt64] = []
    var failed = false
    let scratch: UnsafeMutableRawPointer

    // ---- back pressure and request timeouts (Liveness.swift)
    var outbox: [OutboxKey: [Outgoing]] = [:]              // messages waiting for room, FIFO per (peer, lane)
    var flushTimer: UInt64 = 0                             // retries the outbox; 0 = none
    var watch = WatchState.idle                            // the request-timeout timer

    // ---- read-ahead (ReadAhead.swift)
    var detector: ReadAheadDetector
    var prefetchedUnused = Set<UInt64>()                   // installed by read-ahead, no access seen yet
    var prefetching = false                                // the read misses being started are read-ahead
    var gathering: [UInt32: [UInt64]]? = nil               // while prefetching: GetS gathered per manager
    var forwardGather: [ForwardKey: [(gfn: UInt64, txn: UInt64)]]? = nil  // serving a GetSBatch
    var dataGather: [UInt32: [GatheredData]]? = nil        // serving a FwdGetSBatch: Data per requester
    var preinstalled = Set<UInt64>()                       // a DataBatch run installed in one copy; Data_S next
    var predowngraded = Set<UInt64>()                      // a FwdGetSBatch run write-protected at once; FwdGetS next
    /// A hook for a protocol built on this one (dsm-tso): called under this node's lock before
    /// a transition whose first action sends this page's contents away or gives up this node's
    /// copy (`CacheAction.movesPageAway`). Returning false keeps the event stalled, exactly as a
    /// pinned page does, until `pageUnpinned(gfn:)` replays it. Must not call back into this
    /// node or take a lock held around calls into it. Set before the first fault or message.
    public var releaseGate: ((_ gfn: UInt64) -> Bool)?
    /// A hook for a protocol built on this one (dsm-tso): called under this node's lock for each
    /// page read-ahead is about to request; false leaves the page alone (its next access faults
    /// as usual). Must not call back into this node. nil: every page may be read ahead. Set
    /// before the first fault.
    public var readAheadFilter: ((_ gfn: UInt64) -> Bool)?

    struct Outstanding {
        var kind: FaultKind
        var start: UInt64
        var txn: UInt64 = 0
        var grantedBy: UInt32 = 0
        var prefetch = false   // read-ahead: no thread waits (yet)
        var pull = false       // a pull for a leaving node (Drain.swift): no thread waits (yet)
    }

    struct OwnerTxn {
        var requester: UInt32   // selfID for the owner's own upgrade
        var txn: UInt64
        var holdsCopy: Bool
        var hops: UInt8
        var acksLeft: Int
        var bytes: [UInt8]      // the page (OI_A); empty for OM_A
        var waitingOn: UInt64 = 0  // bit n: node n's InvAck has not arrived (diagnostics)
    }

    struct OpenTxn {
        var txn: UInt64
        var requester: UInt32
        var exclusive: Bool
        var holdsCopy: Bool
        var hops: UInt8
        var forwardedTo: UInt32
        var refusals: Int
    }

    struct StashKey: Hashable {
        var gfn: UInt64
        var txn: UInt64
    }

    /// An input kept for later: a local fault, or a message (payload copied).
    enum Input {
        case fault(Access)
        case message(Message, UInt32, [UInt8]?)
    }

    /// What one transition works on.
    struct Context {
        var gfn: UInt64
        var src: UInt32
        var msg: Message?
        var input: Input
        // filled by actions
        var requester: UInt32 = 0
        var txn: UInt64 = 0
        var holdsCopy = false
        var hops: UInt8 = 0
        var zero = false
        var buffer: [UInt8]? = nil   // page bytes kept beyond the scratch buffer
    }

    public init(selfID: UInt32, nodeCount: UInt32, config: IvyConfig, host: PageHost, services: ProtocolServices) throws {
        guard nodeCount >= 1, nodeCount <= 64 else {
            throw PluginError("dsm-ivy supports 1 to 64 nodes, the cluster has \(nodeCount)")
        }
        guard selfID < nodeCount else { throw PluginError("self id \(selfID) out of range (\(nodeCount) nodes)") }
        self.selfID = selfID
        self.nodeCount = nodeCount
        self.pageCount = host.pageCount
        self.config = config
        self.host = host
        self.services = services
        self.stats = IvyStats(services)
        self.raStats = ReadAheadStats(services)
        self.zaStats = ZeroAheadStats(services)
        self.detector = ReadAheadDetector(window: config.readAhead)
        self.sendWaits = services.makeCounter("ivy.send_waits")
        drainDeferred = services.makeCounter("ivy.drain.deferred")
        drainPulled = services.makeCounter("ivy.drain.pulled")
        drainRefaults = services.makeCounter("ivy.drain.zero_refaults")
        let pc = Int(host.pageCount)
        var st = [CacheState](repeating: .I, count: pc)
        var own = [UInt32](repeating: 0, count: pc)
        for g in 0..<pc {
            let m = config.managerMap.manager(of: UInt64(g))
            own[g] = m
            if m == selfID { st[g] = .OZ }   // the manager first owns its pages, zero-filled
        }
        state = st
        owner = own
        redirect = (0..<nodeCount).map { $0 }
        copyset = [UInt64](repeating: 0, count: pc)
        scratch = UnsafeMutableRawPointer.allocate(byteCount: IvyWire.pageSize, alignment: 4096)
        pthread_mutex_init(&lock, nil)
    }

    deinit {
        for t in [holdTimer, flushTimer, takeWatchTimer()] where t != 0 { services.cancelOneShot(t) }
        scratch.deallocate()
        pthread_mutex_destroy(&lock)
    }

    /// The node that manages gfn now: the map's, or whoever took the role from a node that left
    /// (Drain.swift). Lock held (or before the first event).
    public func managerOf(_ gfn: UInt64) -> UInt32 {
        var m = config.managerMap.manager(of: gfn)
        var steps = 0
        while redirect[Int(m)] != m && steps < redirect.count {
            m = redirect[Int(m)]
            steps += 1
        }
        return m
    }

    // MARK: - entry points

    /// A local access needs a better state. Never waits for the network.
    public func fault(gfn: UInt64, access: Access) {
        entry {
            guard !failed else { return }
            guard gfn < pageCount else {
                fail("fault on gfn \(gfn) beyond the \(pageCount) guest pages")
                return
            }
            handleFault(gfn, access)
            drain()
        }
    }

    /// A message from node `src`; untrusted bytes.
    public func receive(from src: UInt32, bytes: UnsafeRawBufferPointer) {
        entry {
            guard !failed else { return }
            let m: Message
            do {
                m = try IvyWire.decode(bytes, src: src, selfID: selfID, nodeCount: nodeCount, pageCount: pageCount,
                                       managerOf: managerOf, successorOf: successorOf)
            } catch {
                stats.malformed(1)
                fail("malformed message from node \(src): \(error)")
                return
            }
            stats.received(m.type, bytes: bytes.count)
            handleMessage(m, from: src)
            drain()
        }
    }

    /// The last pin on gfn is gone: retry what was deferred for it.
    public func pageUnpinned(gfn: UInt64) {
        entry {
            guard !failed, gfn < pageCount else { return }
            if stalled[gfn] != nil { replayPending.append(gfn) }
            drain()
        }
    }

    /// A peer is gone: the node is stopping; nothing waits on it silently.
    public func peerLost(node: UInt32) {
        withLock {
            guard !failed, !departed.contains(node) else { return }
            let waitingPages = outstanding.count
            failed = true
            services.log(.error, "peer node \(node) lost; \(waitingPages) page request(s) cannot complete; stopping")
        }
    }

    public func stop() {
        let timers: [UInt64] = withLock {
            failed = true
            let t = [holdTimer, flushTimer, takeWatchTimer()]
            holdTimer = 0
            flushTimer = 0
            return t
        }
        // Outside the lock: cancel waits for a running callback, which takes the lock.
        for t in timers where t != 0 { services.cancelOneShot(t) }
    }

    /// The number of pages with a request outstanding (tests, diagnostics).
    public var outstandingCount: Int { withLock { outstanding.count } }

    /// The cache-controller state of a page (tests, diagnostics).
    public func cacheState(_ gfn: UInt64) -> CacheState { withLock { state[Int(gfn)] } }

    /// Whether nothing is in progress for gfn on this node: no request, owner transaction, held or
    /// stalled input (cache controller), and no open or queued transaction (as its manager).
    public func isSettled(_ gfn: UInt64) -> Bool {
        withLock {
            outstanding[gfn] == nil && ownerTxn[gfn] == nil && held[gfn] == nil && (stalled[gfn] ?? []).isEmpty
                && open[gfn] == nil && (waiting[gfn] ?? []).isEmpty
        }
    }

    /// Whether this node has stopped after a failure.
    public var hasFailed: Bool { withLock { failed } }

    /// A one-line summary of every page not in a stable state, for "stuck" diagnostics.
    public func pendingSummary() -> String {
        withLock {
            var parts: [String] = []
            for (g, s) in state.enumerated() where s.isTransient { parts.append("gfn \(g): \(s)") }
            for (g, t) in open.sorted(by: { $0.key < $1.key }) {
                parts.append("manager gfn \(g): txn \(t.txn) for node \(t.requester), queue \(waiting[g]?.count ?? 0)")
            }
            for (g, l) in stalled where !l.isEmpty { parts.append("gfn \(g): \(l.count) stalled") }
            return parts.joined(separator: "; ")
        }
    }

    func withLock<T>(_ body: () -> T) -> T {
        pthread_mutex_lock(&lock)
        defer { pthread_mutex_unlock(&lock) }
        return body()
    }

    func fail(_ why: String) {
        if failed { return }
        failed = true
        services.log(.error, "node \(selfID): \(why)")
        services.fatal("dsm-ivy node \(selfID): \(why)")
    }

    /// Runs messages this node sent itself, and replays of stalled inputs, until none is left.
    func drain() {
        while !failed {
            if !localQueue.isEmpty {
                let m = localQueue.removeFirst()
                handleMessage(m, from: selfID)
            } else if !replayPending.isEmpty {
                let g = replayPending.removeFirst()
                guard let inputs = stalled.removeValue(forKey: g) else { continue }
                for input in inputs {
                    if failed { return }
                    switch input {
                    case let .fault(a): handleFault(g, a)
                    case let .message(m, src, payload):
                        if let payload {
                            payload.withUnsafeBytes { p in
                                var mm = m
                                mm.payload = p.baseAddress
                                handleMessage(mm, from: src)
                            }
                        } else {
                            handleMessage(m, from: src)
                        }
                    }
                }
            } else {
                return
            }
        }
    }

    // MARK: - classification (SLICC "in_port" logic: message -> refined event)

    func handleFault(_ gfn: UInt64, _ access: Access) {
        let g = Int(gfn)
        let event: CacheEvent
        if access == .read {
            event = .load
        } else {
            event = (state[g] == .OS && copyset[g] != 0) ? .storeSharers : .store
        }
        let before = state[g]
        if before == .IS_D { claimPrefetch(gfn) }
        if outstanding[gfn]?.pull == true { outstanding[gfn]!.pull = false }   // a thread now waits for the pull
        if access != .read, prefetchedUnused.remove(gfn) != nil { raStats.used(1) }
        var ctx = Context(gfn: gfn, src: selfID, msg: nil, input: .fault(access))
        ctx.requester = selfID
        run(event, &ctx)
        if access == .read, before == .I || before == .IS_D, !prefetching { readAhead(after: gfn) }
        if before == .OZ, state[g] == .OM { zeroAhead(after: gfn) }
    }

    func handleMessage(_ m: Message, from src: UInt32) {
        switch m.type {
        case .getS: runManager(.getS, m, src); return
        case .getX: runManager(.getX, m, src); return
        case .confirm: runManager(.confirm, m, src); return
        case .nack: runManager(.nack, m, src); return
        case .getSBatch: serveBatch(m, from: src); return
        case .fwdGetSBatch: serveForwardBatch(m, from: src); return
        case .dataBatch: receiveDataBatch(m, from: src); return
        case .pull, .pullDone, .leavePrepare, .prepareAck, .managerState, .managerStateEnd, .managerStateAck,
             .leaveCommit, .commitAck:
            receiveDrain(m, from: src); return
        default: break
        }

        let g = Int(m.gfn)
        var ctx = Context(gfn: m.gfn, src: src, msg: m, input: .message(m, src, nil))
        if [.fwdGetS, .fwdGetX, .inv].contains(m.type), let until = heldUntil[m.gfn] {
            if services.nowNanoseconds() < until || held[m.gfn] != nil {
                hold(ctx, until: until)
                return
            }
            heldUntil[m.gfn] = nil
        }
        let event: CacheEvent
        switch m.type {
        case .fwdGetS:
            event = .fwdGetS
        case .fwdGetX:
            let others = copyset[g] & ~(UInt64(1) << UInt64(m.node))
            event = (state[g] == .OS && others != 0) ? .fwdGetXSharers : .fwdGetX
        case .inv:
            event = .inv
        case .invAck:
            event = (ownerTxn[m.gfn]?.acksLeft == 1) ? .lastInvAck : .invAck
        case .data:
            event = m.flags.contains(.exclusive) ? .dataX : .dataS
        case .grant:
            event = .grant
        case .fetch:
            event = .fetch
        case .release:
            event = .release
        case .getS, .getX, .confirm, .nack, .getSBatch, .fwdGetSBatch, .dataBatch, .pull, .pullDone, .leavePrepare,
             .prepareAck, .managerState, .managerStateEnd, .managerStateAck, .leaveCommit, .commitAck:
            return
        }
        run(event, &ctx)
    }

    // MARK: - the cache controller's executor

    func run(_ event: CacheEvent, _ ctx: inout Context) {
        let g = Int(ctx.gfn)
        let from = state[g]
        switch IvyTable.cache(from, event) {
        case let .error(why):
            fail("gfn \(ctx.gfn): \(event.rawValue) in state \(from)\(ctx.msg != nil ? " from node \(ctx.src)" : ""): \(why)")
        case let .go(next, actions):
            if let gate = releaseGate, let first = actions.first, first.movesPageAway, !gate(ctx.gfn) {
                stall(ctx)
                return
            }
            for (i, a) in actions.enumerated() {
                do {
                    try perform(a, &ctx, event)
                } catch Interrupt.deferPinned {
                    guard i == 0 else {
                        fail("gfn \(ctx.gfn): \(a.rawValue) refused (pinned) after side effects in \(from)/\(event.rawValue)")
                        return
                    }
                    stats.pinDeferred(1)
                    stall(ctx)
                    return
                } catch let Interrupt.reclassify(e2) {
                    guard i == 0 else {
                        fail("gfn \(ctx.gfn): \(a.rawValue) reclassified after side effects")
                        return
                    }
                    run(e2, &ctx)
                    return
                } catch let Interrupt.violation(why) {
                    fail("gfn \(ctx.gfn): \(event.rawValue) in state \(from): \(a.rawValue): \(why)")
                    return
                } catch {
                    fail("gfn \(ctx.gfn): \(error)")
                    return
                }
                if failed { return }
            }
            state[g] = next
            if next != from, stalled[ctx.gfn] != nil { replayPending.append(ctx.gfn) }
        }
    }

    /// Keeps a forward or invalidation until the page's hold window ends (in arrival order).
    func hold(_ ctx: Context, until: UInt64) {
        stats.held(1)
        held[ctx.gfn, default: []].append(ctx.input)
        armHoldTimer(until)
    }

    func armHoldTimer(_ until: UInt64) {
        guard holdTimer == 0 else { return }
        let now = services.nowNanoseconds()
        let delay = until > now ? until - now : 1
        holdTimer = services.startOneShot(afterNanoseconds: delay, { ctx in
            Unmanaged<IvyNode>.fromOpaque(ctx!).takeUnretainedValue().holdTimerFired()
        }, context: Unmanaged.passUnretained(self).toOpaque())
        if holdTimer == 0 {
            // No timers: release at once rather than risk waiting forever.
            releaseHeld(upTo: .max)
        }
    }

    func holdTimerFired() {
        entry {
            holdTimer = 0
            guard !failed else { return }
            releaseHeld(upTo: services.nowNanoseconds())
            drain()
        }
    }

    /// Releases every held page whose window ended by `now`; re-arms for the rest.
    func releaseHeld(upTo now: UInt64) {
        var next: UInt64 = .max
        for g in held.keys.sorted() {
            let until = heldUntil[g] ?? 0
            if until <= now {
                heldUntil[g] = nil
                let inputs = held.removeValue(forKey: g)!
                stalled[g, default: []].insert(contentsOf: inputs, at: 0)
                replayPending.append(g)
            } else {
                next = min(next, until)
            }
        }
        if next != .max { armHoldTimer(next) }
    }

    /// Keeps an input for later; a message's borrowed payload is copied.
    func stall(_ ctx: Context) {
        var input = ctx.input
        if case let .message(m, src, nil) = input, m.hasPayload, let p = m.payload {
            input = .message(m, src, Array(UnsafeRawBufferPointer(start: p, count: IvyWire.pageSize)))
        }
        stalled[ctx.gfn, default: []].append(input)
    }

    func require(_ cond: Bool, _ why: @autoclosure () -> String) throws {
        if !cond { throw Interrupt.violation(why()) }
    }

    /// Maps a page-operation status: PINNED defers, anything else but OK is a violation.
    func pageOp(_ st: PageStatus, _ what: String) throws {
        if st == .ok { return }
        if st == .pinned { throw Interrupt.deferPinned }
        throw Interrupt.violation("\(what) failed: \(st)")
    }

    func bit(_ n: UInt32) -> UInt64 { UInt64(1) << UInt64(n) }

    // MARK: - actions

    func perform(_ a: CacheAction, _ ctx: inout Context, _ event: CacheEvent) throws {
        let gfn = ctx.gfn
        let g = Int(gfn)
        switch a {
        // --- page operations
        case .p_dropCopy:
            try pageOp(host.drop(gfn, into: nil), "drop")
            if prefetchedUnused.remove(gfn) != nil { raStats.wasted(1) }
        case .p_dropToBuffer:
            try pageOp(host.drop(gfn, into: scratch), "drop")
            ctx.zero = IvyWire.isZeroPage(scratch)
        case .p_downgradeToBuffer:
            if !predowngraded.isEmpty, predowngraded.remove(gfn) != nil {   // only while serving a batch
                try pageOp(host.read(gfn, into: scratch), "read (downgraded with its batch)")
            } else {
                try pageOp(host.downgrade(gfn, into: scratch), "downgrade")
            }
            ctx.zero = IvyWire.isZeroPage(scratch)
        case .p_readToBuffer:
            try pageOp(host.read(gfn, into: scratch), "read")
            ctx.zero = IvyWire.isZeroPage(scratch)
        case .p_zeroBuffer:
            ctx.zero = true
        case .p_installZeroModified:
            try pageOp(host.install(gfn, bytes: nil, state: .modified), "install zeros")
        case .p_installZeroShared:
            try pageOp(host.install(gfn, bytes: nil, state: .shared), "install zeros")
            ctx.zero = true
        case .p_installData:
            let m = try message(ctx)
            let st: PageState = m.flags.contains(.exclusive) ? .modified : .shared
            if preinstalled.remove(gfn) == nil {   // else installed already with its DataBatch run (ReadAhead.swift)
                try pageOp(host.install(gfn, bytes: m.flags.contains(.zero) ? nil : m.payload, state: st), "install")
            }
            ctx.hops = m.hops
            ctx.txn = m.txn
        case .p_upgrade:
            let st = host.upgrade(gfn)
            if st == .notPresent {
                stats.upgradeRefetch(1)
                throw Interrupt.reclassify(.grantCopyLost)
            }
            try pageOp(st, "upgrade")
            let m = try message(ctx)
            ctx.hops = m.hops
            ctx.txn = m.txn
        case .p_upgradeOwn:
            try pageOp(host.upgrade(gfn), "upgrade of the owner's copy")

        // --- requester
        case .r_startReadMiss: startFault(gfn, .readMiss)
        case .r_startWriteMiss: startFault(gfn, .writeMiss)
        case .r_startUpgrade: startFault(gfn, .upgrade)
        case .r_sendGetS:
            if prefetching, gathering != nil {
                gathering![managerOf(gfn), default: []].append(gfn)
            } else {
                send(Message(type: .getS, node: selfID, gfn: gfn), to: managerOf(gfn))
            }
        case .r_sendGetX:
            let holds = state[g] == .S
            send(Message(type: .getX, flags: holds ? .holdsCopy : [], node: selfID, gfn: gfn), to: managerOf(gfn))
        case .r_coalesce:
            stats.coalesced(1)
        case .r_complete:
            try require(outstanding[gfn] != nil, "no outstanding fault to complete")
            let o = outstanding.removeValue(forKey: gfn)!
            if !pullWaiting.isEmpty { pullCompleted(gfn) }
            if o.pull { break }   // a pull for a leaving node: nobody waited
            if o.prefetch {   // read-ahead: nobody waited (a thread that faulted since claimed it); not a fault
                prefetchedUnused.insert(gfn)
                break
            }
            host.wake(gfn)
            let dt = services.nowNanoseconds() &- o.start
            stats.latency[o.kind.rawValue](dt)
            stats.latencyAll(dt)
            stats.hops[min(Int(ctx.hops), 5)](1)
            stats.latencyByHops[min(Int(ctx.hops), 5)](dt)
            if ctx.hops == 0 { stats.localFaults(1) }
            if config.holdNanoseconds > 0 { heldUntil[gfn] = services.nowNanoseconds() &+ config.holdNanoseconds }
        case .r_sendConfirm:
            let m = try message(ctx)
            send(Message(type: .confirm, flags: (event == .dataS) ? [] : .exclusive, node: selfID, gfn: gfn,
                         txn: m.txn), to: managerOf(gfn))
        case .r_sendRelease:
            let m = try message(ctx)
            send(Message(type: .release, node: selfID, gfn: gfn, txn: m.txn), to: m.node)
        case .r_sendFetch:
            let m = try message(ctx)
            send(Message(type: .fetch, node: selfID, gfn: gfn, txn: m.txn), to: m.node)
        case .r_lostCopy:
            stats.upgradeLostCopy(1)

        // --- owner
        case .o_addSharer:
            let m = try message(ctx)
            try require(m.node != selfID, "the owner cannot share with itself")
            copyset[g] |= bit(m.node)
        case .o_sendDataS:
            let m = try message(ctx)
            sendData(gfn: gfn, to: m.node, exclusive: false, zero: ctx.zero, bytes: scratch,
                     txn: m.txn, hops: m.hops)
        case .o_invalidateOthers:
            let requester: UInt32
            var t = OwnerTxn(requester: selfID, txn: 0, holdsCopy: false, hops: 0, acksLeft: 0, bytes: [])
            if let m = ctx.msg {   // handing over to a writer (OI_A)
                requester = m.node
                t.requester = m.node
                t.txn = m.txn
                t.holdsCopy = m.flags.contains(.holdsCopy) && copyset[g] & bit(m.node) != 0
                t.hops = m.hops
                t.bytes = ctx.zero ? [] : Array(UnsafeRawBufferPointer(start: scratch, count: IvyWire.pageSize))
            } else {               // the owner's own upgrade (OM_A)
                requester = selfID
            }
            let targets = copyset[g] & ~bit(requester)
            try require(targets != 0, "no sharer to invalidate")
            try require(ownerTxn[gfn] == nil, "a second invalidation round on one page")
            // The owner's own upgrade is not serialized by the manager: a read copy it just sent
            // (Data_S, bulk lane) may still be in flight to a sharer, so its Inv must follow on the
            // same lane (per-pair FIFO) and never overtake the data. During a manager transaction
            // every sharer has confirmed its copy, so the Inv may take the urgent lane.
            let lane: Bool = ctx.msg != nil
            t.waitingOn = targets
            for n in 0..<nodeCount where targets & bit(n) != 0 {
                send(Message(type: .inv, node: selfID, gfn: gfn, txn: t.txn), to: n, urgent: lane)
                t.acksLeft += 1
                stats.invalidationsSent(1)
            }
            copyset[g] &= ~targets
            ownerTxn[gfn] = t
        case .o_countAck:
            let m = try message(ctx)
            try require(ownerTxn[gfn] != nil, "no invalidation round open")
            try require(ownerTxn[gfn]!.txn == m.txn, "ack for txn \(m.txn), open round is txn \(ownerTxn[gfn]!.txn)")
            ownerTxn[gfn]!.acksLeft -= 1
            ownerTxn[gfn]!.waitingOn &= ~bit(m.node)
            if ownerTxn[gfn]!.acksLeft == 0 {
                let t = ownerTxn.removeValue(forKey: gfn)!
                ctx.requester = t.requester
                ctx.txn = t.txn
                ctx.holdsCopy = t.holdsCopy
                ctx.hops = t.hops &+ 2   // the invalidation round trip is on the critical path
                ctx.zero = t.bytes.isEmpty
                ctx.buffer = t.bytes
            }
        case .o_handOver:
            // Direct path: the forward is the message; after acks: o_countAck filled ctx.
            if event == .fwdGetX, let m = ctx.msg {
                ctx.requester = m.node
                ctx.txn = m.txn
                ctx.holdsCopy = m.flags.contains(.holdsCopy) && copyset[g] & bit(m.node) != 0
                ctx.hops = m.hops
            }
            copyset[g] = 0
            if ctx.holdsCopy {
                let bytes: [UInt8]
                if let b = ctx.buffer { bytes = b.isEmpty ? [UInt8](repeating: 0, count: IvyWire.pageSize) : b }
                else { bytes = Array(UnsafeRawBufferPointer(start: scratch, count: IvyWire.pageSize)) }
                stash[StashKey(gfn: gfn, txn: ctx.txn)] = bytes
                send(Message(type: .grant, hops: ctx.hops, node: selfID, gfn: gfn, txn: ctx.txn), to: ctx.requester)
            } else if let b = ctx.buffer, !b.isEmpty {
                b.withUnsafeBytes { p in
                    sendData(gfn: gfn, to: ctx.requester, exclusive: true, zero: false, bytes: p.baseAddress!,
                             txn: ctx.txn, hops: ctx.hops)
                }
            } else {
                sendData(gfn: gfn, to: ctx.requester, exclusive: true, zero: ctx.zero, bytes: scratch,
                         txn: ctx.txn, hops: ctx.hops)
            }
        case .o_sendStash:
            let m = try message(ctx)
            let key = StashKey(gfn: gfn, txn: m.txn)
            try require(stash[key] != nil, "no bytes kept for txn \(m.txn)")
            let bytes = stash.removeValue(forKey: key)!
            let zero = bytes.withUnsafeBytes { IvyWire.isZeroPage($0.baseAddress!) }
            bytes.withUnsafeBytes { p in
                sendData(gfn: gfn, to: m.node, exclusive: true, zero: zero, bytes: p.baseAddress!, txn: m.txn, hops: m.hops)
            }
        case .o_freeStash:
            let m = try message(ctx)
            try require(stash.removeValue(forKey: StashKey(gfn: gfn, txn: m.txn)) != nil,
                        "no bytes kept for txn \(m.txn)")

        // --- sharer
        case .s_sendInvAck:
            let m = try message(ctx)
            send(Message(type: .invAck, node: selfID, gfn: gfn, txn: m.txn), to: m.node)

        // --- any
        case .w_wakeStale:
            stats.stale(1)
            host.wake(gfn)
        case .z_stall:
            stats.stalled(1)
            stall(ctx)
        case .f_nack:
            let m = try message(ctx)
            stats.refusals(1)
            // To the manager that forwarded it (during a hand-over the successor may forward
            // before this node has heard of the new manager: Drain.swift).
            send(Message(type: .nack, node: selfID, gfn: gfn, txn: m.txn), to: ctx.src)
        }
    }

    func message(_ ctx: Context) throws -> Message {
        guard let m = ctx.msg else { throw Interrupt.violation("action needs a message") }
        return m
    }

    func startFault(_ gfn: UInt64, _ kind: FaultKind) {
        if pulling {
            outstanding[gfn] = Outstanding(kind: kind, start: services.nowNanoseconds(), pull: true)
            return
        }
        if prefetching {
            raStats.prefetched(1)
            outstanding[gfn] = Outstanding(kind: kind, start: services.nowNanoseconds(), prefetch: true)
            return
        }
        stats.faults[kind.rawValue](1)
        outstanding[gfn] = Outstanding(kind: kind, start: services.nowNanoseconds())
    }

    // MARK: - sending

    func send(_ m: Message, to dst: UInt32, urgent: Bool? = nil) {
        if !frozen.isEmpty, m.type == .getS || m.type == .getX, frozen[dst] != nil, !pulling {
            deferred.append(m)   // its manager is handing its role over (Drain.swift)
            drainDeferred(1)
            return
        }
        if dst == selfID {
            precondition(!m.hasPayload, "page data is never sent to this node itself")
            localQueue.append(m)
            return
        }
        var mm = m
        mm.hops = m.hops == .max ? .max : m.hops + 1
        let header = IvyWire.header(mm)
        header.withUnsafeBytes { transmit(m.type, gfn: m.gfn, to: dst, [$0], urgent: urgent ?? m.type.urgent) }
        account(mm.type, IvyWire.headerSize)
    }

    func sendData(gfn: UInt64, to dst: UInt32, exclusive: Bool, zero: Bool, bytes: UnsafeRawPointer, txn: UInt64, hops: UInt8) {
        precondition(dst != selfID, "page data is never sent to this node itself")
        if !exclusive, dataGather != nil {   // serving a FwdGetSBatch: one DataBatch per requester (ReadAhead.swift)
            gatherData(gfn: gfn, to: dst, zero: zero, bytes: bytes, txn: txn, hops: hops)
            return
        }
        var flags: MessageFlags = exclusive ? .exclusive : []
        if zero { flags.insert(.zero) }
        let m = Message(type: .data, flags: flags, hops: hops == .max ? .max : hops + 1, node: selfID, gfn: gfn, txn: txn)
        let header = IvyWire.header(m)
        header.withUnsafeBytes { h in
            zero ? transmit(.data, gfn: gfn, to: dst, [h], urgent: false)
                 : transmit(.data, gfn: gfn, to: dst, [h, UnsafeRawBufferPointer(start: bytes, count: IvyWire.pageSize)], urgent: false)
        }
        account(.data, IvyWire.headerSize + (zero ? 0 : IvyWire.pageSize))
        if zero { stats.zeroPagesSent(1) } else { stats.pagesSent(1) }
    }

    func account(_ t: MessageType, _ bytes: Int) {
        if leaving != nil { drainBytes &+= UInt64(bytes) }
        stats.msgCount[Int(t.rawValue)](1)
        stats.msgBytes[Int(t.rawValue)](UInt64(bytes))
    }

    // MARK: - the manager's executor

    func runManager(_ e: ManagerEvent, _ m: Message, _ src: UInt32) {
        let gfn = m.gfn
        guard managerOf(gfn) == selfID else {
            fail("\(e.rawValue) for gfn \(gfn) reached node \(selfID), which does not manage it")
            return
        }
        let from: ManagerState = open[gfn] == nil ? .Idle : .Busy_C
        switch IvyTable.manager(from, e) {
        case let .error(why):
            fail("manager gfn \(gfn): \(e.rawValue) from node \(src) in \(from.rawValue): \(why)")
        case let .go(_, actions):
            var serveNext = false
            for a in actions {
                do {
                    try performManager(a, m, &serveNext)
                } catch let Interrupt.violation(why) {
                    fail("manager gfn \(gfn): \(e.rawValue) from node \(src) in \(from.rawValue): \(a.rawValue): \(why)")
                    return
                } catch {
                    fail("manager gfn \(gfn): \(error)")
                    return
                }
                if failed { return }
            }
            if serveNext, var q = waiting[gfn], !q.isEmpty {
                let next = q.removeFirst()
                waiting[gfn] = q.isEmpty ? nil : q
                runManager(next.type == .getS ? .getS : .getX, next, next.node)
            }
        }
    }

    func performManager(_ a: ManagerAction, _ m: Message, _ serveNext: inout Bool) throws {
        let gfn = m.gfn
        let g = Int(gfn)
        switch a {
        case .m_beginTxn:
            try require(open[gfn] == nil, "a transaction is already open")
            open[gfn] = OpenTxn(txn: nextTxn, requester: m.node, exclusive: m.type == .getX,
                                holdsCopy: m.flags.contains(.holdsCopy), hops: m.hops, forwardedTo: owner[g], refusals: 0)
            nextTxn += 1
        case .m_forward:
            let t = open[gfn]!
            try require(owner[g] != t.requester, "node \(t.requester) requests a page it owns")
            open[gfn]!.forwardedTo = owner[g]
            forward(gfn, t)
        case .m_queue:
            stats.managerQueued(1)
            waiting[gfn, default: []].append(m)
        case .m_checkConfirm:
            let t = open[gfn]!
            try require(m.node == t.requester, "confirm from node \(m.node), open transaction is for node \(t.requester)")
            try require(m.txn == t.txn, "confirm for txn \(m.txn), open transaction is \(t.txn)")
            try require(m.flags.contains(.exclusive) == t.exclusive, "confirm kind does not match the request")
        case .m_recordOwner:
            let t = open.removeValue(forKey: gfn)!
            if t.exclusive { owner[g] = t.requester }
            serveNext = true
        case .m_serveNext:
            serveNext = true
        case .m_reforward:
            try require(m.txn == open[gfn]!.txn, "refusal for txn \(m.txn), open transaction is \(open[gfn]!.txn)")
            open[gfn]!.refusals += 1
            try require(open[gfn]!.refusals <= config.maxRefusals,
                        "forward refused \(open[gfn]!.refusals) times; manager and owner disagree")
            forward(gfn, open[gfn]!)
        }
    }

    func forward(_ gfn: UInt64, _ t: OpenTxn) {
        if !t.exclusive, forwardGather != nil {   // serving a GetSBatch: one FwdGetSBatch per owner
            forwardGather![ForwardKey(owner: owner[Int(gfn)], requester: t.requester, hops: t.hops), default: []]
                .append((gfn, t.txn))
            return
        }
        let fwd = Message(type: t.exclusive ? .fwdGetX : .fwdGetS, flags: t.holdsCopy ? .holdsCopy : [],
                          hops: t.hops, node: t.requester, gfn: gfn, txn: t.txn)
        send(fwd, to: owner[Int(gfn)])
    }
}
