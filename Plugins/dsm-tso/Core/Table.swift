// dsm-tso as tables, in IvyCore's style (Plugins/dsm-ivy/Core/Table.swift): states (with the
// access each grants), events grouped by where they come from, actions, and one exhaustive
// `switch (state, event)` giving the next state and the actions to run, in order.
//
// Two page classes:
//   - `sc` pages (everything outside the relaxed ranges) are dsm-ivy's, run by an IvyNode
//     unchanged: IvyTable is their table.
//   - `mw` pages (inside a relaxed range) are this file's: multiple writers, home based (the
//     page's home is its Ivy manager). A node's first write makes a twin and write-enables its
//     copy without asking anyone; at a release point the copy is write-protected, compared with
//     the twin, and the changed bytes (a diff) go to the home, which applies diffs in its arrival
//     order and forwards each as an Update to every other holder of a copy; once every holder
//     has acknowledged, the home tells the writer (DiffDone): the release is complete.
//   - Release points: the host's fences (GVM_FENCE_RELEASE, GVM_FENCE_FULL), the guest's fence
//     hint, the flush interval, and any request that would move an `sc` page away from this node
//     (the node holds the dsm-ivy message until its releases are complete): a lock handed over
//     through an `sc` page carries the data written under it.
//
// Applying a diff or an update never overwrites a byte this node has changed and not yet seen
// applied (dirty against its twin, or in one of its own diffs the home had not applied when it
// sent the update): those bytes are newer in the home's order, so every copy converges to the
// home's order of diffs.
//
// Rules every transition obeys (as IvyTable's): a page operation the host may refuse with
// GVM_ERR_PINNED is always the FIRST action; `z_stall` keeps an event until the page leaves a
// transient state; an event with no transition is a protocol violation, reported through fatal.
//
// Threading: pure functions and value types; safe anywhere.

import IvyCore

// MARK: - mw pages: states

public enum MwState: UInt8, CaseIterable, Sendable {
    // a node that is not the page's home
    case I      // no copy
    case IS_D   // fetch sent to the home; waits for MwData
    case S      // clean copy, write-protected; the home sends it every other writer's diffs
    case M      // dirty copy: twin kept, writable without ownership
    // the page's home (holds the master copy once anyone touched the page)
    case HZ     // never touched: no copy anywhere (zeros)
    case HS     // master copy, clean
    case HM     // master copy with the home's own unreleased writes (twin kept)

    public var permission: String {
        switch self {
        case .I, .IS_D, .HZ: "none"
        case .S, .HS: "read"
        case .M, .HM: "read-write"
        }
    }

    public var isHome: Bool { self == .HZ || self == .HS || self == .HM }
    public var isDirty: Bool { self == .M || self == .HM }

    public var meaning: String {
        switch self {
        case .I: "no copy"
        case .IS_D: "fetch outstanding; waits for MwData"
        case .S: "clean copy (write-protected); receives Updates"
        case .M: "dirty copy: twin kept, writable; a release sends its diff"
        case .HZ: "home, page never touched (zeros, no copy anywhere)"
        case .HS: "home, master copy clean"
        case .HM: "home, master copy with the home's unreleased writes (twin kept)"
        }
    }
}

// MARK: - mw pages: events

public enum MwEvent: String, CaseIterable, Sendable {
    // from local threads (the host's fault hook)
    case load = "Load"
    case store = "Store"
    // from this node's release points (fence, fence hint, interval, an sc page leaving)
    case flush = "Flush"
    // from the home
    case mwData = "MwData"
    case update = "Update"
    case diffDone = "DiffDone"
    // at the home, from other nodes
    case mwGet = "MwGet"
    case diff = "Diff"
    case updateAck = "UpdateAck"

    public var source: String {
        switch self {
        case .load, .store: "local thread"
        case .flush: "release point"
        case .mwData, .update, .diffDone: "home"
        case .mwGet, .diff: "requester/writer"
        case .updateAck: "holder"
        }
    }
}

// MARK: - mw pages: actions

public enum MwAction: String, CaseIterable, Sendable {
    // page operations (the pinnable ones are always first in a transition)
    case p_installFetched   // install the home's bytes (or zeros) read-only               (pinnable)
    case p_installZero      // home's first touch: zeros, read-only
    case p_twinAndUpgrade   // copy the page into a twin, then write-enable it
    case p_protectAndDiff   // write-protect, copy out, diff against the twin, drop the twin (pinnable)
    case p_applyRuns        // patch the runs in, skipping bytes this node changed (pinnable if dirty)
    // requester
    case r_startReadMiss
    case r_startWriteMiss
    case r_startUpgrade
    case r_sendGet
    case r_coalesce
    case r_complete         // wake every waiter; record latency
    // writer
    case d_sendDiff         // number the diff, remember its bytes as in flight, send it to the home
    case d_done             // the home says the diff is applied everywhere
    // holder
    case u_sendAck
    // home
    case h_addHolder
    case h_sendData
    case h_forward          // number the round; Update to every holder but the writer
    case h_forwardOwn       // the home's own diff: Update to every holder
    case h_countAck         // the last ack completes the round: DiffDone to the writer
    // any
    case w_wakeStale
}

public enum TSOTable {
    public typealias MwTransition = Transition<MwState, MwAction>

    /// The mw controller's table. Exhaustive: every (state, event) pair is listed.
    public static func mw(_ s: MwState, _ e: MwEvent) -> MwTransition {
        switch (s, e) {
        // --- every state: acks only matter at the home
        case (.HZ, .updateAck), (.HS, .updateAck), (.HM, .updateAck): return .go(s, [.h_countAck])
        case (_, .updateAck): return .error("UpdateAck at a node that is not the page's home")
        case (.I, .mwGet), (.IS_D, .mwGet), (.S, .mwGet), (.M, .mwGet),
             (.I, .diff), (.IS_D, .diff), (.S, .diff), (.M, .diff):
            return .error("request for the home at a node that is not the page's home")
        case (.HZ, .mwData), (.HS, .mwData), (.HM, .mwData), (.HZ, .update), (.HS, .update), (.HM, .update),
             (.HZ, .diffDone), (.HS, .diffDone), (.HM, .diffDone):
            return .error("the home never requests, holds a copy of or writes a diff to its own page")

        // --- I: no copy
        case (.I, .load): return .go(.IS_D, [.r_startReadMiss, .r_sendGet])
        case (.I, .store): return .go(.IS_D, [.r_startWriteMiss, .r_sendGet])
        case (.I, .flush): return .error("flush of a page without a copy")
        case (.I, .mwData): return .error("data without an outstanding fetch")
        case (.I, .update): return .error("update to a node that never fetched the page")
        case (.I, .diffDone): return .error("DiffDone for a page this node never wrote")

        // --- IS_D: fetch outstanding
        case (.IS_D, .load), (.IS_D, .store): return .go(.IS_D, [.r_coalesce])
        case (.IS_D, .flush): return .error("flush of a page without a copy")
        case (.IS_D, .mwData): return .go(.S, [.p_installFetched, .r_complete])
        case (.IS_D, .update): return .error("update before the page's data (the home sends data first)")
        case (.IS_D, .diffDone): return .error("DiffDone for a page this node has no copy of")

        // --- S: clean copy
        case (.S, .load): return .go(.S, [.w_wakeStale])
        case (.S, .store): return .go(.M, [.r_startUpgrade, .p_twinAndUpgrade, .r_complete])
        case (.S, .flush): return .error("flush of a clean page")
        case (.S, .mwData): return .error("data without an outstanding fetch")
        case (.S, .update): return .go(.S, [.p_applyRuns, .u_sendAck])
        case (.S, .diffDone): return .go(.S, [.d_done])

        // --- M: dirty copy
        case (.M, .load), (.M, .store): return .go(.M, [.w_wakeStale])
        case (.M, .flush): return .go(.S, [.p_protectAndDiff, .d_sendDiff])
        case (.M, .mwData): return .error("data without an outstanding fetch")
        case (.M, .update): return .go(.M, [.p_applyRuns, .u_sendAck])
        case (.M, .diffDone): return .go(.M, [.d_done])

        // --- HZ: home, never touched
        case (.HZ, .load): return .go(.HS, [.r_startReadMiss, .p_installZero, .r_complete])
        case (.HZ, .store): return .go(.HM, [.r_startWriteMiss, .p_installZero, .p_twinAndUpgrade, .r_complete])
        case (.HZ, .flush): return .error("flush of a page never written")
        case (.HZ, .mwGet): return .go(.HS, [.p_installZero, .h_addHolder, .h_sendData])
        case (.HZ, .diff): return .error("diff for a page nobody fetched")

        // --- HS: home, master clean
        case (.HS, .load): return .go(.HS, [.w_wakeStale])
        case (.HS, .store): return .go(.HM, [.r_startUpgrade, .p_twinAndUpgrade, .r_complete])
        case (.HS, .flush): return .error("flush of a clean page")
        case (.HS, .mwGet): return .go(.HS, [.h_addHolder, .h_sendData])
        case (.HS, .diff): return .go(.HS, [.p_applyRuns, .h_forward])

        // --- HM: home, master with the home's own writes
        case (.HM, .load), (.HM, .store): return .go(.HM, [.w_wakeStale])
        case (.HM, .flush): return .go(.HS, [.p_protectAndDiff, .h_forwardOwn])
        case (.HM, .mwGet): return .go(.HM, [.h_addHolder, .h_sendData])
        case (.HM, .diff): return .go(.HM, [.p_applyRuns, .h_forward])
        }
    }

    /// The protocol as text: the mw table, then dsm-ivy's tables for sc pages.
    public static func describe() -> String {
        var out = """
        dsm-tso: a hybrid of sequential consistency and multiple writers (GiantVM section 6.1).
        Pages outside the relaxed ranges are `sc`: dsm-ivy's protocol, unchanged (its tables
        follow). Pages inside are `mw`: several nodes write at once; the first write on a node
        makes a twin and write-enables its copy; at a release point (host fence, guest fence
        hint, flush interval, or an sc page about to leave this node) the copy is write-protected
        and its diff against the twin goes to the page's home (its Ivy manager), which applies
        diffs in arrival order and forwards each to every other holder; the release completes
        when every holder has acknowledged. A diff never overwrites bytes the receiver changed
        later in the home's order, so racy writes converge to the home's order everywhere.
        With relaxed_start: sc, relaxed pages start sc; a page's home switches it to mw after
        switch_after ownership moves between writers (prepare on every node, gather through
        Ivy, then mw everywhere), and back to sc after switch_back_after diffs in a row from
        one writer (every copy flushed and dropped, the master handed back to Ivy).

        mw states:

        """
        for s in MwState.allCases {
            out += "  \(IvyTable.pad(String(describing: s), 5)) \(IvyTable.pad(s.permission, 11)) \(s.meaning)\n"
        }
        out += "\nmw events:\n"
        for e in MwEvent.allCases { out += "  \(IvyTable.pad(e.rawValue, 10)) from \(e.source)\n" }
        out += "\nmw transitions (state, event -> next: actions):\n"
        for s in MwState.allCases {
            for e in MwEvent.allCases {
                let st = IvyTable.pad(String(describing: s), 5)
                let ev = IvyTable.pad(e.rawValue, 10)
                switch mw(s, e) {
                case let .go(n, actions):
                    out += "  \(st) \(ev) -> \(IvyTable.pad(String(describing: n), 5)) \(actions.map(\.rawValue).joined(separator: ", "))\n"
                case let .error(why):
                    out += "  \(st) \(ev) -> error: \(why)\n"
                }
            }
        }
        out += "\nsc pages:\n\n" + IvyTable.describe()
        return out
    }
}
