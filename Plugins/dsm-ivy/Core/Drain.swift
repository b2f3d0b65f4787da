// Node evacuation for dsm-ivy (gvm_coherence_ops.drain, ABI 4): a node that no longer runs a vCPU
// or a device hands everything it keeps to a successor and leaves while the guest runs.
//
// What a node keeps: pages it owns (with their bytes and copysets), read copies it holds (it is in
// some owner's copyset), and, as a manager, the directory state of the pages it manages (owner,
// open transaction, queue). The drain moves them in this order, as a table like the protocol's
// (states, events, actions, transitions; `IvyTable.drain`):
//
//   1. Preparing. The leaving node L sends LeavePrepare(successor M) to every peer. From then on
//      a peer holds (defers) every NEW GetS/GetX for a page L manages, and answers PrepareAck.
//      Both travel on the urgent lane behind the peer's earlier requests (per-pair FIFO), so once
//      every ack is in, no request to L is on its way. Requests already at L are served as usual.
//      A peer accepts forwards for L's pages from M too (M may forward before the peer hears of
//      the hand-over) and sends a Nack to whichever manager forwarded.
//   2. Pulling. L lists to M (Pull) every page it holds in any state but I and OZ. M takes each
//      with the protocol's own write miss / upgrade (I or S: Store; OS with L in its copyset:
//      Store_Sharers): the table's transitions invalidate L's copy or move L's ownership, so the
//      Ivy model's guarantees cover every byte that moves. A pull is exempt from the deferral; a
//      request M had deferred for a pulled page is sent at once. M answers PullDone when all
//      pulls of a message (and the released requests) completed. L re-pulls what it still holds
//      (M skips a page in a transient state) until it holds nothing but OZ pages (never written:
//      no copy exists anywhere) and its manager role is idle: no open transaction or queue, no
//      owner transaction, stashed bytes, held or stalled input.
//   3. Handing. L gives up its OZ pages (I; M owns them as OZ) and sends M the owner of every
//      page it manages (ManagerState, one byte per page; L's own id marks an OZ page), then
//      ManagerStateEnd with its next transaction number. M records the owners, becomes their
//      manager (its own deferred requests now go to itself; one for an OZ page it now owns is
//      re-run as a fault: zeros, no message) and answers ManagerStateAck.
//   4. Committing. L sends LeaveCommit(M) to every peer; each maps L's pages to M from then on,
//      sends M the requests it had deferred, records L as departed (its disconnect is not a
//      lost peer), and answers CommitAck. With the last ack L has left: no peer will send it a
//      coherence message again.
//
// Outside the Ivy tables: the pulls are ordinary transitions, but steps 1, 3 and 4 change which
// node manages a page, which the tables (and Model/ivy.pml) take as fixed. They run only while
// the pages concerned are quiescent (step 3 waits until L's directory is idle and every new
// request is deferred), so no table transition observes the change mid-transaction; the unit
// tests on the simulated cluster (Tests/DsmIvyTests/DrainTests.swift) check the hand-over.
//
// Threading: the receive side runs under the node's lock like every message; `drain` polls the
// leaving node's progress from a host control thread, taking the lock for each poll.

import PluginKit

#if canImport(Glibc)
import Glibc
#endif

// MARK: - Leaving node: states, events, actions, transitions

public enum DrainState: String, CaseIterable, Sendable {
    case Member = "Member"           // not leaving
    case Preparing = "Preparing"     // LeavePrepare sent; waits for every PrepareAck
    case Pulling = "Pulling"         // the successor pulls what this node holds
    case Handing = "Handing"         // ManagerState sent; waits for ManagerStateAck
    case Committing = "Committing"   // LeaveCommit sent; waits for every CommitAck
    case Left = "Left"               // no peer sends this node a coherence message again
}

public enum DrainEvent: String, CaseIterable, Sendable {
    case start = "Start"                     // the host asked (drain hook)
    case prepareAck = "PrepareAck"
    case lastPrepareAck = "LastPrepareAck"
    case pullDone = "PullDone"
    case holding = "Holding"                 // poll: pages still held, no pull in flight
    case settled = "Settled"                 // poll: only OZ pages left, directory idle
    case stateAck = "ManagerStateAck"
    case commitAck = "CommitAck"
    case lastCommitAck = "LastCommitAck"
}

public enum DrainAction: String, CaseIterable, Sendable {
    case d_sendPrepare          // LeavePrepare(successor) to every peer
    case d_countAck             // record the peer's ack
    case d_sendPulls            // Pull: every page held in a state other than I and OZ
    case d_countPullDone
    case d_handOverZeroPages    // OZ pages -> I here (the successor owns them as OZ)
    case d_sendManagerState     // owners of every managed page, then ManagerStateEnd
    case d_sendCommit           // LeaveCommit(successor) to every peer
    case d_finish
}

extension IvyTable {
    public typealias DrainTransition = Transition<DrainState, DrainAction>

    /// The leaving node's table. Exhaustive: every (state, event) pair is listed.
    public static func drain(_ s: DrainState, _ e: DrainEvent) -> DrainTransition {
        switch (s, e) {
        case (.Member, .start): return .go(.Preparing, [.d_sendPrepare])
        case (.Member, _): return .error("not leaving")
        case (.Preparing, .prepareAck): return .go(.Preparing, [.d_countAck])
        case (.Preparing, .lastPrepareAck): return .go(.Pulling, [.d_countAck, .d_sendPulls])
        case (.Preparing, _): return .error("a peer may still send requests")
        case (.Pulling, .pullDone): return .go(.Pulling, [.d_countPullDone])
        case (.Pulling, .holding): return .go(.Pulling, [.d_sendPulls])
        case (.Pulling, .settled): return .go(.Handing, [.d_handOverZeroPages, .d_sendManagerState])
        case (.Pulling, _): return .error("pages are still moving")
        case (.Handing, .stateAck): return .go(.Committing, [.d_sendCommit])
        case (.Handing, _): return .error("the successor has not taken the manager role")
        case (.Committing, .commitAck): return .go(.Committing, [.d_countAck])
        case (.Committing, .lastCommitAck): return .go(.Left, [.d_countAck, .d_finish])
        case (.Committing, _): return .error("peers have not all heard of the new manager")
        case (.Left, _): return .error("this node has left")
        }
    }

    /// The drain as text (appended to the plugin's description; Model/ reads only `describe()`).
    public static func describeDrain() -> String {
        var out = """

        Node evacuation (drain hook, ABI 4; Drain.swift): the leaving node defers new requests for
        the pages it manages on every peer (LeavePrepare/PrepareAck), has the successor pull every
        page it holds with the table's own write misses and upgrades (Pull/PullDone), hands its
        never-written pages and its directory (the owner of each managed page) to the successor
        (ManagerState/ManagerStateEnd/ManagerStateAck), then has every peer map its pages to the
        successor (LeaveCommit/CommitAck). Peers then take its disconnect as a departure.

        Leaving node transitions (state, event -> next: actions):

        """
        for s in DrainState.allCases {
            for e in DrainEvent.allCases {
                switch drain(s, e) {
                case let .go(n, actions):
                    out += "  \(pad(s.rawValue, 10)) \(pad(e.rawValue, 15)) -> \(pad(n.rawValue, 10)) \(actions.map(\.rawValue).joined(separator: ", "))\n"
                case let .error(why):
                    out += "  \(pad(s.rawValue, 10)) \(pad(e.rawValue, 15)) -> error: \(why)\n"
                }
            }
        }
        return out
    }
}

/// The leaving node's drain in progress.
struct DrainRun {
    var phase: DrainState = .Member
    var to: UInt32
    var started: UInt64
    var peers: Set<UInt32>
    var acks = Set<UInt32>()
    var pullsInFlight = 0
    var pulled = Set<UInt64>()
    var zeroPages: UInt64 = 0
    var managed: UInt64 = 0
    var finished: UInt64 = 0
}

extension IvyNode {
    // MARK: - the leaving node

    /// Starts the drain toward `to`; nil when started. Lock not held.
    public func startDrain(to: UInt32) -> DrainFailure? {
        var result: DrainFailure?
        entry {
            if failed { result = DrainFailure(.init(raw: GVM_ERR_STATE.rawValue), "the protocol has stopped"); return }
            guard to < nodeCount, to != selfID, !departed.contains(to) else {
                result = DrainFailure(.invalid, "node \(to) cannot take node \(selfID)'s pages (\(nodeCount) nodes\(departed.isEmpty ? "" : ", left: \(departed.sorted())"))")
                return
            }
            guard leaving == nil, frozen.isEmpty else {
                result = DrainFailure(.init(raw: GVM_ERR_STATE.rawValue),
                                      leaving != nil ? "a drain of this node already ran" : "node(s) \(frozen.keys.sorted()) are leaving: one at a time")
                return
            }
            let peers = Set((0..<nodeCount).filter { $0 != selfID && !departed.contains($0) })
            leaving = DrainRun(to: to, started: services.nowNanoseconds(), peers: peers)
            drainBytes = 0
            services.log(.info, "drain: node \(selfID) hands its pages and manager role to node \(to)")
            runDrain(.start, from: selfID)
            drain()
        }
        return result
    }

    /// One look at the drain (lock not held): nil while it runs, else the outcome.
    public func pollDrain() -> Result<DrainReport, DrainFailure>? {
        var out: Result<DrainReport, DrainFailure>?
        entry {
            guard let d = leaving else {
                out = .failure(DrainFailure(.init(raw: GVM_ERR_STATE.rawValue), "no drain was started"))
                return
            }
            if failed {
                out = .failure(DrainFailure(.init(raw: GVM_ERR_STATE.rawValue), "the protocol stopped during the drain (\(d.phase.rawValue))"))
                return
            }
            if d.phase == .Pulling && d.pullsInFlight == 0 {
                if state.contains(where: Self.isHeld) { runDrain(.holding, from: selfID) } else if directoryIdle() { runDrain(.settled, from: selfID) }
                drain()
            }
            if let d = leaving, d.phase == .Left {
                out = .success(DrainReport(to: d.to, pagesMoved: UInt64(d.pulled.count) + d.zeroPages, managedPagesMoved: d.managed,
                                           bytesSent: drainBytes, durationNanoseconds: d.finished &- d.started))
            }
        }
        return out
    }

    /// What the drain still waits for (timeouts, diagnostics).
    public func drainProgress() -> String {
        withLock {
            guard let d = leaving else { return "no drain" }
            let held = heldPages()
            var parts = ["phase \(d.phase.rawValue)"]
            switch d.phase {
            case .Preparing, .Committing: parts.append("waiting for node(s) \(d.peers.subtracting(d.acks).sorted())")
            case .Pulling:
                parts.append("\(held.count) page(s) still held\(held.first.map { " (gfn \($0): \(state[Int($0)]))" } ?? ""), \(d.pullsInFlight) pull message(s) in flight")
                if !directoryIdle() { parts.append("directory busy: \(open.count) open, \(waiting.count) queued, \(outstanding.count) own request(s), \(stash.count) stashed") }
            case .Handing: parts.append("waiting for node \(d.to) to take the manager role")
            default: break
            }
            return parts.joined(separator: "; ")
        }
    }

    /// The blocking hook: starts the drain and polls it (every millisecond at first, every 10 ms
    /// after the first 100: a poll may scan every page's state under the lock) until done or
    /// timeout.
    public func drain(to: UInt32, timeoutNanoseconds: UInt64) -> Result<DrainReport, DrainFailure> {
        if let f = startDrain(to: to) { return .failure(f) }
        let start = services.nowNanoseconds()
        var polls: UInt32 = 0
        while true {
            polls += 1
            if let r = pollDrain() { return r }
            if timeoutNanoseconds > 0, services.nowNanoseconds() &- start > timeoutNanoseconds {
                return .failure(DrainFailure(.init(raw: GVM_ERR_STATE.rawValue),
                                             "drain of node \(selfID) not done after \(seconds(timeoutNanoseconds)): \(drainProgress())"))
            }
            usleep(polls < 100 ? 1000 : 10_000)
        }
    }

    /// A page this node still holds: any state but I and OZ.
    static func isHeld(_ s: CacheState) -> Bool { s != .I && s != .OZ }

    /// Pages this node holds (lock held).
    func heldPages() -> [UInt64] {
        state.indices.filter { Self.isHeld(state[$0]) }.map(UInt64.init)
    }

    /// Nothing in progress here: no request, owner transaction, stash, held or stalled input,
    /// queued local message or message waiting for room in the transport (Liveness.swift), and
    /// no open or queued transaction in the directory (lock held).
    func directoryIdle() -> Bool {
        outstanding.isEmpty && ownerTxn.isEmpty && stash.isEmpty && held.isEmpty && stalled.values.allSatisfy(\.isEmpty)
            && localQueue.isEmpty && open.isEmpty && waiting.values.allSatisfy(\.isEmpty) && outbox.values.allSatisfy(\.isEmpty)
    }

    func runDrain(_ e: DrainEvent, from src: UInt32) {
        guard var d = leaving else {
            fail("\(e.rawValue) from node \(src) but this node is not leaving")
            return
        }
        switch IvyTable.drain(d.phase, e) {
        case let .error(why):
            fail("drain: \(e.rawValue) from node \(src) in \(d.phase.rawValue): \(why)")
        case let .go(next, actions):
            for a in actions {
                performDrain(a, &d, src)
                if failed { return }
            }
            d.phase = next
            leaving = d
        }
    }

    func performDrain(_ a: DrainAction, _ d: inout DrainRun, _ src: UInt32) {
        switch a {
        case .d_sendPrepare:
            for p in d.peers.sorted() {
                send(Message(type: .leavePrepare, node: selfID, gfn: 0, txn: UInt64(d.to)), to: p)
            }
        case .d_countAck:
            d.acks.insert(src)
        case .d_sendPulls:
            let held = heldPages()
            var i = 0
            while i < held.count {
                let chunk = Array(held[i..<min(i + IvyWire.maxPull, held.count)])
                i += chunk.count
                let bytes = IvyWire.encodePull(node: selfID, gfns: chunk)
                bytes.withUnsafeBytes { transmit(.pull, gfn: chunk[0], to: d.to, [$0], urgent: true) }
                account(.pull, bytes.count)
                d.pullsInFlight += 1
            }
            d.pulled.formUnion(held)
        case .d_countPullDone:
            if d.pullsInFlight == 0 { fail("drain: PullDone from node \(src) with no pull in flight"); return }
            d.pullsInFlight -= 1
        case .d_handOverZeroPages:
            for g in 0..<Int(pageCount) where managerOf(UInt64(g)) == selfID && owner[g] == selfID {
                guard state[g] == .OZ else { fail("drain: gfn \(g): directory says this node owns it, state \(state[g])"); return }
                state[g] = .I
                d.zeroPages += 1
            }
            if let g = state.firstIndex(where: { $0 != .I }) { fail("drain: gfn \(g) still \(state[g]) here after the pulls"); return }
        case .d_sendManagerState:
            var run: [UInt32] = []
            var first: UInt64 = 0
            func flush() {
                guard !run.isEmpty else { return }
                let bytes = IvyWire.encodeManagerState(node: selfID, first: first, owners: run)
                bytes.withUnsafeBytes { transmit(.managerState, gfn: first, to: d.to, [$0], urgent: true) }
                account(.managerState, bytes.count)
                run = []
            }
            for g in 0..<pageCount where managerOf(g) == selfID {
                if run.isEmpty || first + UInt64(run.count) != g || run.count == IvyWire.maxManagerState {
                    flush()
                    first = g
                }
                run.append(owner[Int(g)])   // this node's own id: an OZ page (the successor owns it now)
                d.managed += 1
            }
            flush()
            var end = IvyWire.header(Message(type: .managerStateEnd, node: selfID, gfn: 0, txn: d.managed))
            IvyWire.append64(&end, nextTxn)
            end.withUnsafeBytes { transmit(.managerStateEnd, gfn: 0, to: d.to, [$0], urgent: true) }
            account(.managerStateEnd, end.count)
            // From here a request reaching this node for one of its former pages is a violation.
            redirect[Int(selfID)] = d.to
        case .d_sendCommit:
            d.acks = []
            for p in d.peers.sorted() {
                send(Message(type: .leaveCommit, node: selfID, gfn: 0, txn: UInt64(d.to)), to: p)
            }
        case .d_finish:
            d.finished = services.nowNanoseconds()
            services.log(.info, "drain: node \(selfID) left: \(d.pulled.count) page(s) pulled, \(d.zeroPages) never-written page(s) and the manager role of \(d.managed) page(s) handed to node \(d.to), \(drainBytes) bytes sent")
        }
    }

    // MARK: - every node: the messages of a drain

    func receiveDrain(_ m: Message, from src: UInt32) {
        if leaving?.phase == .Left {
            fail("\(m.type.name) from node \(src) after this node left")
            return
        }
        switch m.type {
        case .prepareAck:
            guard let d = leaving else { fail("PrepareAck from node \(src), but this node is not leaving"); return }
            runDrain(d.acks.union([src]) == d.peers ? .lastPrepareAck : .prepareAck, from: src)
        case .commitAck:
            guard let d = leaving else { fail("CommitAck from node \(src), but this node is not leaving"); return }
            runDrain(d.acks.union([src]) == d.peers ? .lastCommitAck : .commitAck, from: src)
        case .pullDone: runDrain(.pullDone, from: src)
        case .managerStateAck: runDrain(.stateAck, from: src)
        case .leavePrepare:
            guard leaving == nil, frozen[src] == nil, !departed.contains(src) else {
                fail("LeavePrepare from node \(src) while \(leaving != nil ? "this node is leaving" : "node \(src) is already leaving or left")")
                return
            }
            frozen[src] = UInt32(m.txn)
            send(Message(type: .prepareAck, node: selfID, gfn: 0), to: src)
        case .pull: receivePull(m, from: src)
        case .managerState: receiveManagerState(m, from: src)
        case .managerStateEnd:
            guard frozen[src] == selfID else { fail("ManagerStateEnd from node \(src), which does not hand over to this node"); return }
            guard takenOver[src, default: 0] == m.txn else {
                fail("ManagerStateEnd from node \(src) says \(m.txn) pages, \(takenOver[src, default: 0]) arrived")
                return
            }
            takenOver[src] = nil
            nextTxn = max(nextTxn, m.batch.first ?? 0)
            redirect[Int(src)] = selfID
            frozen[src] = nil
            send(Message(type: .managerStateAck, node: selfID, gfn: 0), to: src)
            releaseDeferred()
        case .leaveCommit:
            guard frozen[src] == UInt32(m.txn) || (redirect[Int(src)] == selfID && UInt32(m.txn) == selfID) else {
                fail("LeaveCommit from node \(src) naming node \(m.txn), which it did not prepare")
                return
            }
            redirect[Int(src)] = UInt32(m.txn)
            frozen[src] = nil
            departed.insert(src)
            send(Message(type: .commitAck, node: selfID, gfn: 0), to: src)
            releaseDeferred()
        default:
            fail("\(m.type.name) is not a drain message")
        }
    }

    /// The successor takes each listed page with the table's own write miss or upgrade.
    func receivePull(_ m: Message, from src: UInt32) {
        guard frozen[src] != nil else { fail("Pull from node \(src), which is not leaving"); return }
        for g in m.batch {
            let gi = Int(g)
            if let k = deferred.firstIndex(where: { $0.gfn == g }) {
                // This node already wants the page: its request goes now (exempt), then a later
                // pull finds it in a stable state.
                let r = deferred.remove(at: k)
                pulling = true
                send(r, to: managerOf(g))
                pulling = false
                pullWaiting.insert(g)
                continue
            }
            let event: CacheEvent
            switch state[gi] {
            case .I, .S: event = .store
            case .OS where copyset[gi] & bit(src) != 0: event = .storeSharers
            default: continue   // transient, or nothing of the leaving node's to take: it asks again
            }
            var ctx = Context(gfn: g, src: selfID, msg: nil, input: .fault(.write))
            ctx.requester = selfID
            pulling = true
            run(event, &ctx)
            pulling = false
            if failed { return }
            if outstanding[g] != nil { pullWaiting.insert(g); drainPulled(1) }
        }
        pullsOwed[src, default: 0] += 1
        if pullWaiting.isEmpty { payPulls() }
    }

    /// A request for a pulled page completed (r_complete).
    func pullCompleted(_ gfn: UInt64) {
        guard pullWaiting.remove(gfn) != nil, pullWaiting.isEmpty else { return }
        payPulls()
    }

    func payPulls() {
        for (n, k) in pullsOwed.sorted(by: { $0.key < $1.key }) {
            for _ in 0..<k { send(Message(type: .pullDone, node: selfID, gfn: 0), to: n) }
        }
        pullsOwed = [:]
    }

    /// The successor records the owners of a run of the leaving node's pages.
    func receiveManagerState(_ m: Message, from src: UInt32) {
        guard frozen[src] == selfID else { fail("ManagerState from node \(src), which does not hand over to this node"); return }
        for (i, o) in m.owners.enumerated() {
            let g = m.gfn + UInt64(i)
            let gi = Int(g)
            guard open[g] == nil, (waiting[g] ?? []).isEmpty else { fail("ManagerState: gfn \(g) has a transaction here already"); return }
            if o != src {
                owner[gi] = o
                continue
            }
            // A never-written page the leaving node owned: this node owns it now (zeros, no copy
            // anywhere). A request of this node's for it waits in `deferred`: it becomes a fault
            // on the page this node now owns.
            owner[gi] = selfID
            switch state[gi] {
            case .I:
                state[gi] = .OZ
            case .IS_D, .IM_D:
                guard let k = deferred.firstIndex(where: { $0.gfn == g }) else {
                    fail("ManagerState: gfn \(g) is \(state[gi]) here with no deferred request")
                    return
                }
                let access: Access = deferred[k].type == .getS ? .read : .write
                deferred.remove(at: k)
                outstanding[g] = nil
                state[gi] = .OZ
                drainRefaults(1)
                handleFault(g, access)
            default:
                fail("ManagerState: gfn \(g) is never written, yet \(state[gi]) here")
                return
            }
        }
        takenOver[src, default: 0] += UInt64(m.owners.count)
    }

    /// Sends every deferred request whose manager is no longer handing over (to its new manager).
    func releaseDeferred() {
        let list = deferred
        deferred = []
        for r in list { send(r, to: managerOf(r.gfn)) }   // still frozen: deferred again, in order
    }

    /// While node n hands its manager role over, the node taking it (which may already forward).
    func successorOf(_ gfn: UInt64) -> UInt32? {
        frozen.isEmpty ? nil : frozen[managerOf(gfn)]
    }

    /// Whether node n left the cluster through a drain (tests, diagnostics).
    public func hasDeparted(_ n: UInt32) -> Bool { withLock { departed.contains(n) } }

    /// The current manager of gfn as this node sees it (tests, diagnostics).
    public func currentManager(_ gfn: UInt64) -> UInt32 { withLock { managerOf(gfn) } }

    /// The owner this node's directory records for a page it manages (tests, diagnostics).
    public func recordedOwner(_ gfn: UInt64) -> UInt32 { withLock { owner[Int(gfn)] } }
}
