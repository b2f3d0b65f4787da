// TSONode: one node's instance of dsm-tso — an IvyNode (dsm-ivy's engine, unchanged) for the sc
// pages, and the engine of Table.swift's mw table for the pages in relaxed ranges.
//
// Page classes (hints, the sc -> mw switch) are in Classes.swift, sending and the outbox in
// Sending.swift.
//
// Threading: every entry point may be called from any thread, concurrently; the mw engine runs
// under the node's lock. Under it the node calls the host's page operations, send and wake, and
// calls into the IvyNode (which takes its own lock): the lock order is TSONode, then IvyNode,
// then `gateLock` (a leaf, the only lock the IvyNode's hooks take). Faults on sc pages and
// dsm-ivy's messages go to the IvyNode without this node's lock. `fence` sleeps on the node's
// condition variable (which releases the lock) until this node's releases are complete.
//
// Once `fail` has been called the node ignores everything that follows.

import IvyCore
import PluginKit

#if canImport(Glibc)
import Glibc
#endif

/// What the mw engine needs beyond dsm-ivy's PageHost: applying a diff (page_patch).
public protocol TSOPageHost: PageHost {
    func patch(_ gfn: UInt64, offset: UInt32, bytes: UnsafeRawBufferPointer) -> PageStatus
}

extension CoherenceHost: TSOPageHost {}

enum TSOInterrupt: Error {
    case deferPinned
    case violation(String)
}

public final class TSONode: @unchecked Sendable {
    public let ivy: IvyNode
    let ivyHost: WakeWatchHost
    public let selfID: UInt32
    public let nodeCount: UInt32
    public let pageCount: UInt64
    public let config: TSOConfig
    let host: TSOPageHost
    let services: ProtocolServices
    let stats: TSOStats

    // ---- per page
    /// 1 = the page is mw. Read without the lock (fault path); written under it, only for pages
    /// nobody uses (a guest hint declares a range before using it).
    let relaxed: UnsafeMutablePointer<UInt8>
    var state: [MwState]
    var twins: [UInt64: UnsafeMutableRawPointer] = [:]
    var dirty: Set<UInt64> = []
    var outstanding: [UInt64: (kind: FaultKind, start: UInt64)] = [:]
    var stalled: [UInt64: [Input]] = [:]
    var deferredFlush: Set<UInt64> = []

    // ---- writer: this node's diffs not yet applied everywhere (and the home's own rounds)
    var nextSeq: UInt64 = 1
    var inflight: [UInt64: (gfn: UInt64, ranges: [Range<Int>])] = [:]
    var pending: Set<UInt64> = []
    var releaseStarted: [UInt64: UInt64] = [:]     // ticket -> start time (latency)

    // ---- home
    var holders: [UInt64: UInt64] = [:]            // bit n: node n holds a copy
    var lastApplied: [UInt64]                      // per node: its highest diff number applied here
    var rounds: [RoundKey: Round] = [:]

    // ---- class changes this node passed on (request id -> acks missing)
    var nextClassRequest: UInt64 = 0
    var classAcksLeft: [UInt64: Int] = [:]
    // ---- sc -> mw switches: writers seen at the home, switches waiting for acks, faults waiting
    var writers: [UInt64: (last: UInt32, at: UInt64, moves: Int)] = [:]
    var switchOf: [UInt64: UInt64] = [:]          // request id -> gfn
    var switchWaiters: [UInt64: [Access]] = [:]
    // ---- mw -> sc switches: one writer's diffs in a row (home), pages leaving mw
    var diffStreak: [UInt64: (writer: UInt32, count: Int)] = [:]
    var leavingPages: [UInt64: (id: UInt64, home: UInt32)] = [:]  // non-home: ack owed when dropped
    var backOf: [UInt64: UInt64] = [:]                             // home: request id -> gfn
    var backReady: Set<UInt64> = []                                // home: every node dropped it

    // ---- sc handover: sc pages whose departure waits for a release (replayed in order)
    var gate: [(pages: [UInt64], ticket: UInt64)] = []
    var gateLock = pthread_mutex_t()        // a leaf lock: the three fields below
    var unreleasedMirror = false            // hasUnreleased, as of the end of the last entry
    var heldScPages: [UInt64] = []
    var kickTimer: UInt64 = 0               // the pending kick (0 = none)
    var gathering: Set<UInt64> = []         // pages this home is gathering (sc -> mw)
    var gatherWoken: [UInt64] = []          // ... whose IvyNode woke them since the last kick
    var stopping = false

    // ---- engine
    var lock = pthread_mutex_t()
    var cond = pthread_cond_t()
    var failed = false
    var flushTimer: UInt64 = 0
    var retryTimer: UInt64 = 0              // re-checks pages being gathered (sc -> mw)
    var outbox: [LaneKey: [(bytes: [UInt8], type: TSOMessageType, gfn: UInt64, since: UInt64)]] = [:]
    var outboxTimer: UInt64 = 0             // retries the outbox; 0 = none
    let scratch: UnsafeMutableRawPointer

    struct RoundKey: Hashable {
        var origin: UInt32
        var seq: UInt64
    }

    struct Round {
        var gfn: UInt64
        var acksLeft: Int
    }

    enum Input {
        case fault(Access)
        case flush
        case message(TSOMessage, UInt32, [UInt8]?)
    }

    struct Context {
        var gfn: UInt64
        var src: UInt32
        var msg: TSOMessage?
        var input: Input
        var runs: [DiffRun] = []
    }

    public init(selfID: UInt32, nodeCount: UInt32, config: TSOConfig, host: TSOPageHost, services: ProtocolServices) throws {
        let watch = WakeWatchHost(host)
        ivyHost = watch
        ivy = try IvyNode(selfID: selfID, nodeCount: nodeCount, config: config.ivy, host: watch, services: services)
        self.selfID = selfID
        self.nodeCount = nodeCount
        self.pageCount = host.pageCount
        self.config = config
        self.host = host
        self.services = services
        stats = TSOStats(services)
        let pc = Int(host.pageCount)
        relaxed = .allocate(capacity: max(pc, 1))
        relaxed.initialize(repeating: 0, count: max(pc, 1))
        state = [MwState](repeating: .I, count: pc)
        for r in config.relaxed {
            for g in r where g < host.pageCount { relaxed[Int(g)] = config.startSc ? PageClass.scAuto : PageClass.mw }
        }
        for g in 0..<pc where config.ivy.managerMap.manager(of: UInt64(g)) == selfID { state[g] = .HZ }
        lastApplied = [UInt64](repeating: 0, count: Int(nodeCount))
        scratch = UnsafeMutableRawPointer.allocate(byteCount: TSOWire.pageSize, alignment: 4096)
        pthread_mutex_init(&lock, nil)
        pthread_mutex_init(&gateLock, nil)
        pthread_cond_init(&cond, nil)
        ivy.releaseGate = { [unowned self] gfn in scPageLeaving(gfn) }
        ivy.readAheadFilter = { [unowned self] gfn in relaxed[Int(gfn)] == PageClass.sc }
        watch.onWake = { [unowned self] gfn in ivyWoke(gfn) }
    }

    deinit {
        for id in [flushTimer, kickTimer, retryTimer, outboxTimer] where id != 0 { services.cancelOneShot(id) }
        for (_, t) in twins { t.deallocate() }
        scratch.deallocate()
        relaxed.deallocate()
        pthread_cond_destroy(&cond)
        pthread_mutex_destroy(&gateLock)
        pthread_mutex_destroy(&lock)
    }

    public func homeOf(_ gfn: UInt64) -> UInt32 { config.ivy.managerMap.manager(of: gfn) }

    /// Whether gfn is an mw page (a relaxed range). Lock not needed: classes are fixed at create.
    public func isRelaxed(_ gfn: UInt64) -> Bool { gfn < pageCount && relaxed[Int(gfn)] == PageClass.mw }

    /// The page's class byte (PageClass), for tests and diagnostics.
    public func pageClass(_ gfn: UInt64) -> UInt8 { relaxed[Int(gfn)] }

    // MARK: - entry points

    public func fault(gfn: UInt64, access: Access) {
        let c = gfn < pageCount ? relaxed[Int(gfn)] : PageClass.sc
        if c == PageClass.sc {
            ivy.fault(gfn: gfn, access: access)
            return
        }
        entry {
            switch relaxed[Int(gfn)] {
            case PageClass.mw:
                handle(gfn, event: access == .read ? .load : .store, Context(gfn: gfn, src: selfID, msg: nil, input: .fault(access)))
            case PageClass.switching, PageClass.leaving:
                switchWaiters[gfn, default: []].append(access)
            case PageClass.scAuto:
                // Under the lock: no sc request starts after this node acknowledged a switch.
                if access == .write && homeOf(gfn) == selfID { noteWriter(gfn, selfID) }
                if relaxed[Int(gfn)] == PageClass.switching {
                    switchWaiters[gfn, default: []].append(access)
                } else {
                    ivy.fault(gfn: gfn, access: access)
                }
            default:
                ivy.fault(gfn: gfn, access: access)
            }
        }
    }

    public func receive(from src: UInt32, bytes: UnsafeRawBufferPointer) {
        guard let first = bytes.first, first >= TSOWire.firstType else {
            receiveIvy(from: src, bytes: bytes)
            return
        }
        entry {
            guard !failed else { return }
            let m: TSOMessage
            do {
                m = try TSOWire.decode(bytes, src: src, selfID: selfID, nodeCount: nodeCount, pageCount: pageCount,
                                       homeOf: homeOf, isRelaxed: { [unowned self] g in isRelaxed(g) || relaxed[Int(g)] == PageClass.leaving })
            } catch {
                stats.malformed(1)
                fail("malformed message from node \(src): \(error)")
                return
            }
            stats.receivedMessage(bytes: bytes.count)
            if m.type.isClass {
                receiveClass(m, from: src)
                return
            }
            if m.type == .update, relaxed[Int(m.gfn)] == PageClass.leaving, state[Int(m.gfn)] == .I {
                // Dropped for the switch back to sc: nothing to update.
                send(TSOMessage(type: .updateAck, node: m.node, gfn: m.gfn, seq: m.seq), to: src)
                return
            }
            handle(m.gfn, event: eventOf(m.type), Context(gfn: m.gfn, src: src, msg: m, input: .message(m, src, nil)))
        }
    }

    /// A dsm-ivy message: straight to the IvyNode (its releaseGate holds page departures).
    func receiveIvy(from src: UInt32, bytes: UnsafeRawBufferPointer) {
        // A write request at the manager of a page that may switch: count its writers.
        if bytes.count >= 16, bytes[0] == MessageType.getX.rawValue {
            var g: UInt64 = 0
            for i in 0..<8 { g |= UInt64(bytes[8 + i]) << (8 * UInt64(i)) }
            if g < pageCount, relaxed[Int(g)] == PageClass.scAuto, homeOf(g) == selfID {
                entry { noteWriter(g, src) }
            }
        }
        ivy.receive(from: src, bytes: bytes)
    }

    /// IvyNode.releaseGate: called under the IvyNode's lock when an sc page is about to leave
    /// this node. With writes unreleased, the page waits (the event stays stalled in the
    /// IvyNode) while a timer starts a release; once complete, the event is replayed.
    func scPageLeaving(_ gfn: UInt64) -> Bool {
        pthread_mutex_lock(&gateLock)
        defer { pthread_mutex_unlock(&gateLock) }
        guard unreleasedMirror else { return true }
        heldScPages.append(gfn)
        if kickTimer == 0 && !stopping {
            kickTimer = services.startOneShot(afterNanoseconds: 1, { ctx in
                Unmanaged<TSONode>.fromOpaque(ctx!).takeUnretainedValue().kick()
            }, context: Unmanaged.passUnretained(self).toOpaque())
        }
        return false
    }

    /// Starts the release sc pages wait for; replays them once it is complete.
    func kick() {
        entry {
            pthread_mutex_lock(&gateLock)
            let pages = heldScPages
            heldScPages = []
            kickTimer = 0
            let gathered = gatherWoken
            gatherWoken = []
            pthread_mutex_unlock(&gateLock)
            for g in gathered { finishSwitch(g) }
            guard !failed, !pages.isEmpty else { return }
            stats.scHeld(UInt64(pages.count))
            let ticket = release(.scHandover) ?? 0
            gate.append((pages, ticket))
        }
    }

    public func pageUnpinned(gfn: UInt64) {
        ivy.pageUnpinned(gfn: gfn)
        if gfn < pageCount, relaxed[Int(gfn)] == PageClass.switching {
            entry { finishSwitch(gfn) }
            return
        }
        guard isRelaxed(gfn) || relaxed[Int(gfn)] == PageClass.leaving else { return }
        entry {
            guard !failed, let inputs = stalled.removeValue(forKey: gfn) else { return }
            for input in inputs { replay(gfn, input) }
        }
    }

    public func peerLost(node: UInt32) {
        // This node first: no diff or update is sent to the lost peer after this.
        withLock {
            failed = true
            pthread_cond_broadcast(&cond)
        }
        ivy.peerLost(node: node)
    }

    public func stop() {
        ivy.stop()
        let t: UInt64 = withLock {
            failed = true
            pthread_cond_broadcast(&cond)
            let t = flushTimer
            flushTimer = 0
            return t
        }
        let r: [UInt64] = withLock {
            let r = [retryTimer, outboxTimer]
            retryTimer = 0
            outboxTimer = 0
            return r
        }
        pthread_mutex_lock(&gateLock)
        stopping = true
        let k = kickTimer
        kickTimer = 0
        pthread_mutex_unlock(&gateLock)
        // Outside the locks: cancel waits for a running callback, which takes them.
        for id in [t, k] + r where id != 0 { services.cancelOneShot(id) }
    }

    // MARK: - releases

    /// Starts a release: every dirty mw page's diff goes out. Returns a ticket to wait on, or nil
    /// when this node had nothing unreleased. Any thread; never waits.
    public func startRelease(_ cause: FlushCause) -> UInt64? {
        var t: UInt64?
        entry { t = release(cause) }
        return t
    }

    /// Whether every diff made up to `ticket` is applied at its home and every holder.
    public func isReleased(_ ticket: UInt64) -> Bool { withLock { released(ticket) } }

    /// The fence hook: a release, waited for (at most request_timeout; then the node stops).
    public func fence(kind: UInt32) -> PageStatus {
        guard kind == GVM_FENCE_RELEASE || kind == GVM_FENCE_FULL else { return .ok }
        return releaseAndWait(.fence)
    }

    /// A release that blocks the calling thread until complete (fence hook, fence hint).
    public func releaseAndWait(_ cause: FlushCause) -> PageStatus {
        pthread_mutex_lock(&lock)
        defer { pthread_mutex_unlock(&lock) }
        guard !failed else { return .closed }
        guard let ticket = release(cause) else { return .ok }
        drainGate()
        let timeout = config.ivy.requestTimeoutNanoseconds
        let deadline = services.nowNanoseconds() &+ timeout
        while !failed && !released(ticket) {
            var ts = timespec()
            clock_gettime(CLOCK_REALTIME, &ts)
            ts.tv_nsec += 50_000_000
            if ts.tv_nsec >= 1_000_000_000 { ts.tv_sec += 1; ts.tv_nsec -= 1_000_000_000 }
            pthread_cond_timedwait(&cond, &lock, &ts)
            if timeout > 0 && !failed && !released(ticket) && services.nowNanoseconds() > deadline {
                fail("a \(cause.rawValue) release waited \(Units.format(nanoseconds: timeout)) (request_timeout) for its diffs: \(pendingSummaryLocked())")
            }
        }
        return failed ? .closed : .ok
    }

    var hasUnreleased: Bool { !dirty.isEmpty || !pending.isEmpty || !deferredFlush.isEmpty }

    func released(_ ticket: UInt64) -> Bool {
        deferredFlush.isEmpty && !pending.contains { $0 <= ticket }
    }

    /// Lock held. Flushes every dirty page; nil if nothing was unreleased.
    func release(_ cause: FlushCause) -> UInt64? {
        guard !failed, hasUnreleased else { return nil }
        if !dirty.isEmpty {
            stats.flushes[cause]!(1)
            for g in dirty.sorted() {
                handle(g, event: .flush, Context(gfn: g, src: selfID, msg: nil, input: .flush))
            }
        }
        let ticket = nextSeq - 1
        if !released(ticket) && releaseStarted[ticket] == nil { releaseStarted[ticket] = services.nowNanoseconds() }
        return ticket
    }

    func armFlushTimer() {
        guard flushTimer == 0, !failed else { return }
        flushTimer = services.startOneShot(afterNanoseconds: config.flushIntervalNanoseconds, { ctx in
            Unmanaged<TSONode>.fromOpaque(ctx!).takeUnretainedValue().flushTimerFired()
        }, context: Unmanaged.passUnretained(self).toOpaque())
    }

    func flushTimerFired() {
        entry {
            flushTimer = 0
            _ = release(.interval)
        }
    }

    // MARK: - engine

    func entry(_ body: () -> Void) {
        pthread_mutex_lock(&lock)
        body()
        if !leavingPages.isEmpty || !backReady.isEmpty { progressLeaving() }
        drainGate()
        let unreleased = hasUnreleased
        pthread_mutex_lock(&gateLock)
        unreleasedMirror = unreleased
        pthread_mutex_unlock(&gateLock)
        pthread_cond_broadcast(&cond)
        pthread_mutex_unlock(&lock)
    }

    func withLock<T>(_ body: () -> T) -> T {
        pthread_mutex_lock(&lock)
        defer { pthread_mutex_unlock(&lock) }
        return body()
    }

    /// Replays held sc page departures, in order, once the release each waits for is complete.
    func drainGate() {
        while !failed, let first = gate.first, released(first.ticket) {
            gate.removeFirst()
            for g in first.pages { ivy.pageUnpinned(gfn: g) }
        }
        if !pending.isEmpty || releaseStarted.isEmpty { return }
        let now = services.nowNanoseconds()
        for (t, start) in releaseStarted where released(t) {
            stats.releaseLatency(now &- start)
            releaseStarted[t] = nil
        }
    }

    func fail(_ why: String) {
        if failed { return }
        failed = true
        pthread_cond_broadcast(&cond)
        services.log(.error, "node \(selfID): \(why)")
        services.fatal("dsm-tso node \(selfID): \(why)")
    }

    /// Runs one input, or queues it behind inputs already stalled on its page.
    func handle(_ gfn: UInt64, event: MwEvent, _ ctx: Context) {
        guard !failed else { return }
        if stalled[gfn] != nil {
            stalled[gfn]!.append(ctx.input)
            if event == .flush { deferredFlush.insert(gfn) }
            return
        }
        var c = ctx
        run(event, &c)
    }

    func replay(_ gfn: UInt64, _ input: Input) {
        if failed { return }
        if stalled[gfn] != nil {
            stalled[gfn]!.append(input)
            return
        }
        switch input {
        case let .fault(a):
            var c = Context(gfn: gfn, src: selfID, msg: nil, input: input)
            run(a == .read ? .load : .store, &c)
        case .flush:
            deferredFlush.remove(gfn)
            guard state[Int(gfn)].isDirty else { return }   // an earlier replay already flushed it
            var c = Context(gfn: gfn, src: selfID, msg: nil, input: input)
            run(.flush, &c)
        case let .message(m, src, page):
            var mm = m
            let event = eventOf(m.type)
            if let page {
                page.withUnsafeBytes { p in
                    mm.page = p.baseAddress
                    var c = Context(gfn: gfn, src: src, msg: mm, input: .message(mm, src, page))
                    run(event, &c)
                }
            } else {
                var c = Context(gfn: gfn, src: src, msg: mm, input: input)
                run(event, &c)
            }
        }
    }

    func eventOf(_ t: TSOMessageType) -> MwEvent {
        switch t {
        case .mwGet: .mwGet
        case .mwData: .mwData
        case .diff: .diff
        case .update: .update
        case .updateAck: .updateAck
        case .diffDone: .diffDone
        case .classChange, .classAck: .mwGet   // never: class messages bypass the table
        }
    }

    func run(_ event: MwEvent, _ ctx: inout Context) {
        let g = Int(ctx.gfn)
        let from = state[g]
        switch TSOTable.mw(from, event) {
        case let .error(why):
            fail("gfn \(ctx.gfn): \(event.rawValue) in state \(from)\(ctx.msg != nil ? " from node \(ctx.src)" : ""): \(why)")
        case let .go(next, actions):
            for (i, a) in actions.enumerated() {
                do {
                    try perform(a, &ctx, event)
                } catch TSOInterrupt.deferPinned {
                    guard i == 0 else {
                        fail("gfn \(ctx.gfn): \(a.rawValue) refused (pinned) after side effects in \(from)/\(event.rawValue)")
                        return
                    }
                    stats.pinDeferred(1)
                    var input = ctx.input
                    if case let .message(m, src, nil) = input, let p = m.page {
                        input = .message(m, src, Array(UnsafeRawBufferPointer(start: p, count: TSOWire.pageSize)))
                    }
                    stalled[ctx.gfn, default: []].append(input)
                    if event == .flush { deferredFlush.insert(ctx.gfn) }
                    return
                } catch let TSOInterrupt.violation(why) {
                    fail("gfn \(ctx.gfn): \(event.rawValue) in state \(from): \(a.rawValue): \(why)")
                    return
                } catch {
                    fail("gfn \(ctx.gfn): \(error)")
                    return
                }
                if failed { return }
            }
            state[g] = next
        }
    }

    func require(_ cond: Bool, _ why: @autoclosure () -> String) throws {
        if !cond { throw TSOInterrupt.violation(why()) }
    }

    func pageOp(_ st: PageStatus, _ what: String) throws {
        if st == .ok { return }
        if st == .pinned { throw TSOInterrupt.deferPinned }
        throw TSOInterrupt.violation("\(what) failed: \(st)")
    }

    func bit(_ n: UInt32) -> UInt64 { UInt64(1) << UInt64(n) }

    func message(_ ctx: Context) throws -> TSOMessage {
        guard let m = ctx.msg else { throw TSOInterrupt.violation("action needs a message") }
        return m
    }

    // MARK: - actions

    func perform(_ a: MwAction, _ ctx: inout Context, _ event: MwEvent) throws {
        let gfn = ctx.gfn
        switch a {
        case .p_installFetched:
            let m = try message(ctx)
            try pageOp(host.install(gfn, bytes: m.flags.contains(.zero) ? nil : m.page, state: .shared), "install")
        case .p_installZero:
            try pageOp(host.install(gfn, bytes: nil, state: .shared), "install zeros")
        case .p_twinAndUpgrade:
            try require(twins[gfn] == nil, "a twin already exists")
            let twin = UnsafeMutableRawPointer.allocate(byteCount: TSOWire.pageSize, alignment: 64)
            let st = host.read(gfn, into: twin)
            guard st == .ok else {
                twin.deallocate()
                throw TSOInterrupt.violation("reading the page for its twin failed: \(st)")
            }
            try pageOp(host.upgrade(gfn), "upgrade")
            twins[gfn] = twin
            dirty.insert(gfn)
            stats.twins(1)
            armFlushTimer()
        case .p_protectAndDiff:
            try pageOp(host.downgrade(gfn, into: scratch), "write-protect")
            try require(twins[gfn] != nil, "dirty page without a twin")
            let twin = twins.removeValue(forKey: gfn)!
            ctx.runs = TSOWire.diff(twin: twin, copy: scratch)
            twin.deallocate()
            dirty.remove(gfn)
            deferredFlush.remove(gfn)
        case .p_applyRuns:
            let m = try message(ctx)
            try applyRuns(gfn, m, event)
        case .r_startReadMiss: startFault(gfn, .readMiss)
        case .r_startWriteMiss: startFault(gfn, .writeMiss)
        case .r_startUpgrade: startFault(gfn, .upgrade)
        case .r_sendGet:
            send(TSOMessage(type: .mwGet, node: selfID, gfn: gfn), to: homeOf(gfn))
        case .r_coalesce:
            stats.coalesced(1)
        case .r_complete:
            try require(outstanding[gfn] != nil, "no outstanding fault to complete")
            let o = outstanding.removeValue(forKey: gfn)!
            host.wake(gfn)
            let dt = services.nowNanoseconds() &- o.start
            stats.latency[o.kind.rawValue](dt)
            stats.latencyAll(dt)
        case .d_sendDiff:
            guard !ctx.runs.isEmpty else { stats.diffEmpty(1); return }
            let seq = nextSeq
            nextSeq += 1
            inflight[seq] = (gfn, ctx.runs.map { $0.offset..<($0.offset + $0.bytes.count) })
            pending.insert(seq)
            send(TSOMessage(type: .diff, node: selfID, gfn: gfn, seq: seq, runs: ctx.runs), to: homeOf(gfn))
            stats.diffMade(1)
            stats.diffBytes(UInt64(ctx.runs.reduce(0) { $0 + $1.bytes.count }))
        case .d_done:
            let m = try message(ctx)
            try require(inflight[m.seq]?.gfn == gfn, "DiffDone for diff \(m.seq), which is not in flight for this page")
            inflight[m.seq] = nil
            pending.remove(m.seq)
        case .u_sendAck:
            let m = try message(ctx)
            send(TSOMessage(type: .updateAck, node: m.node, gfn: gfn, seq: m.seq), to: homeOf(gfn))
        case .h_addHolder:
            holders[gfn, default: 0] |= bit(ctx.src)
        case .h_sendData:
            try pageOp(host.read(gfn, into: scratch), "read")
            let zero = IvyWire.isZeroPage(scratch)
            let m = TSOMessage(type: .mwData, flags: zero ? .zero : [], node: selfID, gfn: gfn, page: zero ? nil : UnsafeRawPointer(scratch))
            send(m, to: ctx.src)
            if zero { stats.zeroPagesSent(1) } else { stats.pagesSent(1) }
        case .h_forward:
            let m = try message(ctx)
            try require(holders[gfn, default: 0] & bit(m.node) != 0, "diff from node \(m.node), which never fetched the page")
            try require(m.seq > lastApplied[Int(m.node)], "diff \(m.seq) from node \(m.node) after its diff \(lastApplied[Int(m.node)])")
            lastApplied[Int(m.node)] = m.seq
            startRound(origin: m.node, seq: m.seq, gfn: gfn, runs: m.runs)
            noteDiff(gfn, m.node)
        case .h_forwardOwn:
            guard !ctx.runs.isEmpty else { stats.diffEmpty(1); return }
            let seq = nextSeq
            nextSeq += 1
            pending.insert(seq)
            stats.diffMade(1)
            stats.diffBytes(UInt64(ctx.runs.reduce(0) { $0 + $1.bytes.count }))
            startRound(origin: selfID, seq: seq, gfn: gfn, runs: ctx.runs)
            noteDiff(gfn, selfID)
        case .h_countAck:
            let m = try message(ctx)
            let key = RoundKey(origin: m.node, seq: m.seq)
            try require(rounds[key]?.gfn == gfn, "UpdateAck for diff \(m.seq) of node \(m.node), which has no open round on this page")
            rounds[key]!.acksLeft -= 1
            if rounds[key]!.acksLeft == 0 {
                rounds[key] = nil
                finishRound(origin: m.node, seq: m.seq, gfn: gfn)
            }
        case .w_wakeStale:
            stats.stale(1)
            host.wake(gfn)
        }
    }

    func startFault(_ gfn: UInt64, _ kind: FaultKind) {
        stats.faults[kind.rawValue](1)
        outstanding[gfn] = (kind, services.nowNanoseconds())
    }

    /// Patches a diff's runs into the page (and the twin), skipping bytes this node changed
    /// later in the home's order: dirty against the twin, or (an Update) in one of this node's
    /// diffs the home had not applied when it sent the update.
    func applyRuns(_ gfn: UInt64, _ m: TSOMessage, _ event: MwEvent) throws {
        let twin = twins[gfn]
        if twin != nil {
            try pageOp(host.downgrade(gfn, into: scratch), "write-protect")
        } else {
            try pageOp(host.read(gfn, into: scratch), "read")
        }
        var mine: [Range<Int>] = []
        if event == .update {
            for (seq, d) in inflight where d.gfn == gfn && seq > m.applied { mine += d.ranges }
        }
        let copy = scratch.assumingMemoryBound(to: UInt8.self)
        let tw = twin?.assumingMemoryBound(to: UInt8.self)
        var skipped = 0
        for run in m.runs {
            var i = 0
            while i < run.bytes.count {
                func keep(_ k: Int) -> Bool {
                    let at = run.offset + k
                    if let tw, copy[at] != tw[at] { return true }
                    return mine.contains { $0.contains(at) }
                }
                if keep(i) { skipped += 1; i += 1; continue }
                let start = i
                while i < run.bytes.count && !keep(i) { i += 1 }
                let st = run.bytes[start..<i].withUnsafeBytes {
                    host.patch(gfn, offset: UInt32(run.offset + start), bytes: $0)
                }
                if st != .ok { throw TSOInterrupt.violation("patch failed: \(st)") }
                if let tw { for k in start..<i { tw[run.offset + k] = run.bytes[k] } }
            }
        }
        if twin != nil { try pageOp(host.upgrade(gfn), "re-enable writes") }
        stats.diffApplied(1)
        if skipped > 0 { stats.skippedBytes(UInt64(skipped)) }
    }

    /// The home forwards a diff to every holder but its writer; the last ack completes it.
    func startRound(origin: UInt32, seq: UInt64, gfn: UInt64, runs: [DiffRun]) {
        let targets = holders[gfn, default: 0] & ~bit(origin) & ~bit(selfID)
        var n = 0
        for dst in 0..<nodeCount where targets & bit(dst) != 0 {
            send(TSOMessage(type: .update, node: origin, gfn: gfn, seq: seq, applied: lastApplied[Int(dst)], runs: runs), to: dst)
            stats.updatesSent(1)
            n += 1
        }
        if n == 0 {
            finishRound(origin: origin, seq: seq, gfn: gfn)
        } else {
            rounds[RoundKey(origin: origin, seq: seq)] = Round(gfn: gfn, acksLeft: n)
        }
    }

    func finishRound(origin: UInt32, seq: UInt64, gfn: UInt64) {
        if origin == selfID {
            pending.remove(seq)
        } else {
            send(TSOMessage(type: .diffDone, node: origin, gfn: gfn, seq: seq), to: origin)
        }
    }

    // MARK: - diagnostics

    public var dirtyCount: Int { withLock { dirty.count } }
    public var pendingCount: Int { withLock { pending.count } }
    public func mwState(_ gfn: UInt64) -> MwState { withLock { state[Int(gfn)] } }
    public var hasFailed: Bool { withLock { failed } }

    func pendingSummaryLocked() -> String {
        var parts: [String] = []
        for (seq, d) in inflight.sorted(by: { $0.key < $1.key }) {
            parts.append("diff \(seq) for gfn \(d.gfn) unacknowledged by home node \(homeOf(d.gfn))")
        }
        for (k, r) in rounds { parts.append("round \(k.seq) of node \(k.origin) on gfn \(r.gfn): \(r.acksLeft) ack(s) missing") }
        if !deferredFlush.isEmpty { parts.append("\(deferredFlush.count) page(s) pinned, flush deferred") }
        return parts.isEmpty ? "nothing pending" : parts.joined(separator: "; ")
    }
}
