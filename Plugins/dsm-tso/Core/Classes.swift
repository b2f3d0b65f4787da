// Page classes of dsm-tso: the guest's hints (a range made relaxed or sc on every node, declared
// before use) and the switch of a page from sc to mw by its home (relaxed_start: sc): prepare on
// every node, gather through dsm-ivy, then mw everywhere. docs/dsm-tso.md describes both.
//
// Threading: TSONode's (its lock held, except where a function says otherwise).

import IvyCore
import PluginKit

#if canImport(Glibc)
import Glibc
#endif

/// The page host as the IvyNode sees it: the real one, with `wake` also reported to dsm-tso (the
/// end of the gather that switches a page from sc to mw). `onWake` runs under the IvyNode's lock.
final class WakeWatchHost: PageHost, @unchecked Sendable {
    let base: TSOPageHost
    var onWake: ((UInt64) -> Void)?
    init(_ base: TSOPageHost) { self.base = base }
    var pageCount: UInt64 { base.pageCount }
    func send(to node: UInt32, _ parts: [UnsafeRawBufferPointer], urgent: Bool) -> PageStatus { base.send(to: node, parts, urgent: urgent) }
    func install(_ gfn: UInt64, bytes: UnsafeRawPointer?, state: PageState) -> PageStatus { base.install(gfn, bytes: bytes, state: state) }
    func installBatch(_ gfn: UInt64, count: Int, bytes: UnsafeRawPointer, state: PageState) -> PageStatus {
        base.installBatch(gfn, count: count, bytes: bytes, state: state)
    }
    func downgradeBatch(_ gfn: UInt64, count: Int) -> PageStatus { base.downgradeBatch(gfn, count: count) }
    func installZeros(_ gfn: UInt64, count: Int) -> PageStatus { base.installZeros(gfn, count: count) }
    var hasZeroRuns: Bool { base.hasZeroRuns }
    func upgrade(_ gfn: UInt64) -> PageStatus { base.upgrade(gfn) }
    func downgrade(_ gfn: UInt64, into out: UnsafeMutableRawPointer?) -> PageStatus { base.downgrade(gfn, into: out) }
    func drop(_ gfn: UInt64, into out: UnsafeMutableRawPointer?) -> PageStatus { base.drop(gfn, into: out) }
    func read(_ gfn: UInt64, into out: UnsafeMutableRawPointer) -> PageStatus { base.read(gfn, into: out) }
    func state(_ gfn: UInt64) -> PageState { base.state(gfn) }
    func pinned(_ gfn: UInt64) -> Access? { base.pinned(gfn) }
    func wake(_ gfn: UInt64) {
        base.wake(gfn)
        onWake?(gfn)
    }
}

/// A page's class, one byte per page (TSONode.relaxed).
enum PageClass {
    static let sc: UInt8 = 0         // dsm-ivy
    static let mw: UInt8 = 1         // this file's table
    static let switching: UInt8 = 2  // sc -> mw in progress: faults wait
    static let scAuto: UInt8 = 3     // sc in a relaxed range: switches to mw when several nodes write it
    static let leaving: UInt8 = 4    // mw -> sc in progress: copies flushed and dropped, faults wait
}

extension TSONode {
    // MARK: - guest hints: page classes

    /// Makes `pages` mw (`relaxed`) or sc on every node, waiting for every node's ack. The pages
    /// must be unused (the guest declares a range before touching it): a page in use is
    /// GVM_ERR_STATE here, and stops the cluster with a message on another node.
    public func setClass(_ pages: Range<UInt64>, relaxed toMw: Bool) -> PageStatus {
        pthread_mutex_lock(&lock)
        defer { pthread_mutex_unlock(&lock) }
        guard !failed else { return .closed }
        if let why = classChangeRefused(pages, toMw) {
            services.log(.warning, "node \(selfID): \(toMw ? "relaxed" : "sc") hint for gfn \(pages.lowerBound)..<\(pages.upperBound) refused: \(why)")
            return PageStatus(raw: GVM_ERR_STATE.rawValue)
        }
        applyClass(pages, toMw)
        nextClassRequest += 1
        let id = nextClassRequest
        classAcksLeft[id] = Int(nodeCount) - 1
        let m = TSOMessage(type: .classChange, flags: toMw ? .relaxed : [], node: selfID, gfn: pages.lowerBound,
                           seq: UInt64(pages.count), applied: id)
        for n in 0..<nodeCount where n != selfID { send(m, to: n) }
        let deadline = services.nowNanoseconds() &+ config.ivy.requestTimeoutNanoseconds
        while !failed && classAcksLeft[id, default: 0] > 0 {
            var ts = timespec()
            clock_gettime(CLOCK_REALTIME, &ts)
            ts.tv_nsec += 50_000_000
            if ts.tv_nsec >= 1_000_000_000 { ts.tv_sec += 1; ts.tv_nsec -= 1_000_000_000 }
            pthread_cond_timedwait(&cond, &lock, &ts)
            if config.ivy.requestTimeoutNanoseconds > 0 && !failed && services.nowNanoseconds() > deadline {
                fail("class change of gfn \(pages.lowerBound)..<\(pages.upperBound): \(classAcksLeft[id]!) node(s) did not acknowledge within request_timeout")
            }
        }
        classAcksLeft[id] = nil
        return failed ? .closed : .ok
    }

    func receiveClass(_ m: TSOMessage, from src: UInt32) {
        let pages = m.gfn..<(m.gfn + m.seq)
        if m.type == .classAck {
            guard let left = classAcksLeft[m.applied], left > 0 else {
                fail("ClassAck from node \(src) for request \(m.applied), which is not waiting")
                return
            }
            classAcksLeft[m.applied] = left - 1
            if left == 1, let g = switchOf.removeValue(forKey: m.applied) {
                classAcksLeft[m.applied] = nil
                startGather(g)
            }
            if left == 1, let g = backOf.removeValue(forKey: m.applied) {
                classAcksLeft[m.applied] = nil
                backReady.insert(g)
            }
            return
        }
        if m.flags.contains(.prepare) && !m.flags.contains(.relaxed) {
            guard m.seq == 1, src == homeOf(m.gfn), relaxed[Int(m.gfn)] == PageClass.mw else {
                fail("node \(src) asked to switch gfn \(m.gfn) back to sc, but it is not that page's home or the page is not mw here (class \(relaxed[Int(m.gfn)]))")
                return
            }
            relaxed[Int(m.gfn)] = PageClass.leaving
            leavingPages[m.gfn] = (m.applied, src)
            return
        }
        if m.seq == 1, src == homeOf(m.gfn), relaxed[Int(m.gfn)] == PageClass.leaving, m.flags.isEmpty {
            // Every copy is gone and the home holds the page under dsm-ivy: sc from now on.
            guard leavingPages[m.gfn] == nil, state[Int(m.gfn)] == .I else {
                fail("gfn \(m.gfn): switch back to sc completed by node \(src) while this node still holds the page")
                return
            }
            relaxed[Int(m.gfn)] = PageClass.scAuto
            stats.toSc(1)
            for a in switchWaiters.removeValue(forKey: m.gfn) ?? [] { ivy.fault(gfn: m.gfn, access: a) }
            return
        }
        if m.flags.contains(.prepare) {
            guard m.seq == 1, src == homeOf(m.gfn), relaxed[Int(m.gfn)] == PageClass.scAuto else {
                fail("node \(src) asked to switch gfn \(m.gfn) to mw, but it is not that page's home or the page is not an sc page of a relaxed range here (class \(relaxed[Int(m.gfn)]))")
                return
            }
            relaxed[Int(m.gfn)] = PageClass.switching
            send(TSOMessage(type: .classAck, node: m.node, gfn: m.gfn, seq: 1, applied: m.applied), to: src)
            return
        }
        if m.seq == 1, src == homeOf(m.gfn), relaxed[Int(m.gfn)] == PageClass.switching, m.flags.contains(.relaxed) {
            // The home gathered the page: it is mw from now on; waiting faults fetch it.
            relaxed[Int(m.gfn)] = PageClass.mw
            state[Int(m.gfn)] = .I
            stats.toMw(1)
            for a in switchWaiters.removeValue(forKey: m.gfn) ?? [] { replay(m.gfn, .fault(a)) }
            return
        }
        let toMw = m.flags.contains(.relaxed)
        if let why = classChangeRefused(pages, toMw) {
            fail("node \(src) passed on a guest hint making gfn \(pages.lowerBound)..<\(pages.upperBound) \(toMw ? "relaxed (mw)" : "sc"), but \(why): a guest must declare a range before it uses it")
            return
        }
        applyClass(pages, toMw)
        send(TSOMessage(type: .classAck, node: m.node, gfn: m.gfn, seq: m.seq, applied: m.applied), to: src)
    }

    // MARK: - switching a page from sc to mw (relaxed_start: sc)

    /// The home saw node `n` take write ownership of gfn. Lock held.
    func noteWriter(_ gfn: UInt64, _ n: UInt32) {
        guard relaxed[Int(gfn)] == PageClass.scAuto else { return }
        let now = services.nowNanoseconds()
        var w = writers[gfn] ?? (n, now, 0)
        if n != w.last { w.moves = now &- w.at <= config.switchWindowNanoseconds ? w.moves + 1 : 1 }
        w.last = n
        w.at = now
        if w.moves >= config.switchAfter {
            writers[gfn] = nil
            beginSwitch(gfn)
        } else {
            writers[gfn] = w
        }
    }

    /// The home starts a switch: every node stops starting sc requests for the page and acks;
    /// then the home gathers it through dsm-ivy (a write fault of its own), and it is mw.
    func beginSwitch(_ gfn: UInt64) {
        relaxed[Int(gfn)] = PageClass.switching
        if nodeCount == 1 {
            startGather(gfn)
            return
        }
        nextClassRequest += 1
        let id = nextClassRequest
        classAcksLeft[id] = Int(nodeCount) - 1
        switchOf[id] = gfn
        let m = TSOMessage(type: .classChange, flags: [.relaxed, .prepare], node: selfID, gfn: gfn, seq: 1, applied: id)
        for n in 0..<nodeCount where n != selfID { send(m, to: n) }
    }

    func startGather(_ gfn: UInt64) {
        pthread_mutex_lock(&gateLock)
        gathering.insert(gfn)
        pthread_mutex_unlock(&gateLock)
        ivy.fault(gfn: gfn, access: .write)
        finishSwitch(gfn)
    }

    func armGatherRetry() {
        guard retryTimer == 0, !failed else { return }
        retryTimer = services.startOneShot(afterNanoseconds: 50_000, { ctx in
            let node = Unmanaged<TSONode>.fromOpaque(ctx!).takeUnretainedValue()
            node.entry {
                node.retryTimer = 0
                pthread_mutex_lock(&node.gateLock)
                let pages = node.gathering.sorted()
                pthread_mutex_unlock(&node.gateLock)
                for g in pages { node.finishSwitch(g) }
            }
        }, context: Unmanaged.passUnretained(self).toOpaque())
    }

    /// IvyNode woke a page (under its lock): if it is being gathered, finish from a kick.
    func ivyWoke(_ gfn: UInt64) {
        pthread_mutex_lock(&gateLock)
        defer { pthread_mutex_unlock(&gateLock) }
        guard gathering.contains(gfn) else { return }
        gatherWoken.append(gfn)
        if kickTimer == 0 && !stopping {
            kickTimer = services.startOneShot(afterNanoseconds: 1, { ctx in
                Unmanaged<TSONode>.fromOpaque(ctx!).takeUnretainedValue().kick()
            }, context: Unmanaged.passUnretained(self).toOpaque())
        }
    }

    /// Once dsm-ivy made this home the page's only (writable) holder: write-protect the master
    /// copy, make the page mw here and everywhere, replay the faults that waited. Lock held.
    func finishSwitch(_ gfn: UInt64) {
        pthread_mutex_lock(&gateLock)
        let mine = gathering.contains(gfn)
        pthread_mutex_unlock(&gateLock)
        guard !failed, mine, relaxed[Int(gfn)] == PageClass.switching else { return }
        // dsm-ivy must hold the page here, writable, with nothing in progress for it (a forward
        // held by the hold window would still hand it away): otherwise look again shortly, and
        // ask for the page again if it went elsewhere meanwhile.
        guard ivy.isSettled(gfn), ivy.cacheState(gfn) == .OM else {
            if ivy.isSettled(gfn) { ivy.fault(gfn: gfn, access: .write) }
            armGatherRetry()
            return
        }
        let st = host.downgrade(gfn, into: nil)
        if st == .pinned { return }   // retried from pageUnpinned
        guard st == .ok else {
            fail("gfn \(gfn): write-protecting the gathered page failed: \(st)")
            return
        }
        pthread_mutex_lock(&gateLock)
        gathering.remove(gfn)
        pthread_mutex_unlock(&gateLock)
        relaxed[Int(gfn)] = PageClass.mw
        state[Int(gfn)] = .HS
        holders[gfn] = 0
        stats.toMw(1)
        let m = TSOMessage(type: .classChange, flags: .relaxed, node: selfID, gfn: gfn, seq: 1, applied: 0)
        for n in 0..<nodeCount where n != selfID { send(m, to: n) }
        for a in switchWaiters.removeValue(forKey: gfn) ?? [] { replay(gfn, .fault(a)) }
    }

    // MARK: - switching a page back from mw to sc (relaxed_start: sc, switch_back_after)

    /// The home applied a diff of `writer` (or made its own): after switch_back_after in a row
    /// from one writer, the page goes back to sc. Lock held.
    func noteDiff(_ gfn: UInt64, _ writer: UInt32) {
        guard config.startSc, config.switchBackAfter > 0, relaxed[Int(gfn)] == PageClass.mw else { return }
        var s = diffStreak[gfn] ?? (writer, 0)
        s = s.writer == writer ? (writer, s.count + 1) : (writer, 1)
        if s.count >= config.switchBackAfter {
            diffStreak[gfn] = nil
            beginBack(gfn)
        } else {
            diffStreak[gfn] = s
        }
    }

    /// The home starts the switch back: every node flushes and drops its copy and acks; then the
    /// home hands the page back to dsm-ivy (it owns it there since the gather).
    func beginBack(_ gfn: UInt64) {
        relaxed[Int(gfn)] = PageClass.leaving
        if nodeCount == 1 {
            backReady.insert(gfn)
            return
        }
        nextClassRequest += 1
        let id = nextClassRequest
        classAcksLeft[id] = Int(nodeCount) - 1
        backOf[id] = gfn
        let m = TSOMessage(type: .classChange, flags: .prepare, node: selfID, gfn: gfn, seq: 1, applied: id)
        for n in 0..<nodeCount where n != selfID { send(m, to: n) }
    }

    /// Moves leaving pages along (end of every entry): a node flushes a written copy, waits for
    /// its diffs, drops the copy and acks; the home, once every node acked and no update round is
    /// open, flushes its own writes and gives the page back to dsm-ivy. Lock held.
    func progressLeaving() {
        for (g, req) in leavingPages {
            guard !failed, stalled[g] == nil else { continue }
            let i = Int(g)
            if state[i] == .M { handle(g, event: .flush, Context(gfn: g, src: selfID, msg: nil, input: .flush)) }
            guard state[i] == .S || state[i] == .I, !inflight.values.contains(where: { $0.gfn == g }) else { continue }
            if state[i] == .S {
                let st = host.drop(g, into: nil)
                if st == .pinned { continue }   // again after page_unpinned
                guard st == .ok else { fail("gfn \(g): dropping the copy for the switch back to sc failed: \(st)"); return }
                state[i] = .I
            }
            leavingPages[g] = nil
            send(TSOMessage(type: .classAck, node: req.home, gfn: g, seq: 1, applied: req.id), to: req.home)
        }
        for g in backReady.sorted() {
            guard !failed, stalled[g] == nil, !rounds.values.contains(where: { $0.gfn == g }) else { continue }
            let i = Int(g)
            // Every other node dropped its copy: the home's last diff has nobody to update.
            holders[g] = 0
            if state[i] == .HM { handle(g, event: .flush, Context(gfn: g, src: selfID, msg: nil, input: .flush)) }
            guard !rounds.values.contains(where: { $0.gfn == g }) else { continue }
            guard state[i] == .HS, ivy.cacheState(g) == .OM else {
                if state[i] == .HZ || state[i] == .HS { fail("gfn \(g): the switch back to sc found dsm-ivy in state \(ivy.cacheState(g)) at the home") }
                continue
            }
            let st = host.upgrade(g)
            guard st == .ok else { fail("gfn \(g): re-enabling writes for dsm-ivy failed: \(st)"); return }
            backReady.remove(g)
            holders[g] = nil
            state[i] = .HZ
            relaxed[i] = PageClass.scAuto
            writers[g] = nil
            stats.toSc(1)
            let m = TSOMessage(type: .classChange, flags: [], node: selfID, gfn: g, seq: 1, applied: 0)
            for n in 0..<nodeCount where n != selfID { send(m, to: n) }
            for a in switchWaiters.removeValue(forKey: g) ?? [] { ivy.fault(gfn: g, access: a) }
        }
    }

    /// Why this node cannot change the pages' class now (nil: it can): a page must be unused
    /// (a relaxed range is declared before use; an mw page never returns to sc once used). Lock held.
    func classChangeRefused(_ pages: Range<UInt64>, _ toMw: Bool) -> String? {
        for g in pages {
            let i = Int(g)
            let c = relaxed[i]
            if toMw == (c != PageClass.sc) { continue }   // already in that class
            switch c {
            case PageClass.sc, PageClass.scAuto:
                let s = ivy.cacheState(g)
                let untouched = homeOf(g) == selfID ? s == .OZ : s == .I
                if !untouched || host.state(g) != .invalid {
                    return "gfn \(g) is in use on node \(selfID) (sc state \(s))"
                }
            case PageClass.mw:
                let untouched = state[i] == (homeOf(g) == selfID ? .HZ : .I)
                if !untouched || host.state(g) != .invalid {
                    return "gfn \(g) is in use on node \(selfID) (mw state \(state[i])); an mw page cannot return to sc once used"
                }
            default:
                return "gfn \(g) is switching from sc to mw on node \(selfID)"
            }
        }
        return nil
    }

    func applyClass(_ pages: Range<UInt64>, _ toMw: Bool) {
        var changed = false
        for g in pages where toMw != (relaxed[Int(g)] != PageClass.sc) {
            relaxed[Int(g)] = toMw ? (config.startSc ? PageClass.scAuto : PageClass.mw) : PageClass.sc
            changed = true
        }
        // Counted when pages became mw (or sc) here; with relaxed_start: sc, at their switch.
        if changed && !(toMw && config.startSc) { (toMw ? stats.toMw : stats.toSc)(1) }
    }
}

extension TSONode {
    // MARK: - replicated ranges (ABI 4)

    /// GVM_HINT_REPLICATED: a range every node loaded itself starts as dsm-ivy read copies
    /// everywhere (IvyCore Replicated.swift). Only for sc pages: a range touching a relaxed range
    /// (whose class comes from the settings, the same on every node) is GVM_ERR_UNSUPPORTED, and
    /// the host then loads it on one node as before.
    public func replicate(_ pages: Range<UInt64>) -> PageStatus {
        pthread_mutex_lock(&lock)
        defer { pthread_mutex_unlock(&lock) }
        guard !failed else { return .closed }
        for g in pages where relaxed[Int(g)] != PageClass.sc {
            services.log(.info, "node \(selfID): replicated range gfn \(pages.lowerBound)..<\(pages.upperBound) overlaps relaxed page \(g): loaded on one node instead")
            return PageStatus(raw: GVM_ERR_UNSUPPORTED.rawValue)
        }
        return ivy.replicate(pages)
    }
}
