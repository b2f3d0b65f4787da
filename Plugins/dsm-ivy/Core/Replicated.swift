// Replicated read-only ranges (ABI 4, GVM_HINT_REPLICATED): at start-up the host loads a range
// (a guest.modules file) into every node's guest RAM itself and asks the protocol to start its
// pages as read copies everywhere, instead of one node writing them and every other node pulling
// them through read misses.
//
// The initial state given to each page of the range is one the table already reaches when every
// node has read a page its manager served: the manager (the usual initial owner) is OS with the
// copyset of every other node, every other node is S, the manager's directory keeps the manager
// as owner. So nothing in Table.swift changes, and a later write goes through the usual paths
// (the owner's Store_Sharers, a sharer's upgrade GetX -> FwdGetX_Sharers): coherence holds.
// Every node applies the same call locally, without messages; the host installs the bytes in
// state SHARED right after this returns OK, before any vCPU runs.
//
// Threading: `replicate` takes the node's lock; call it before the first fault on the range.

import PluginKit

extension IvyNode {
    /// Starts `pages` as read copies on every node (see above). Every page must be untouched on
    /// this node (OZ on its manager, I elsewhere; no request, transaction or stalled input), else
    /// nothing changes and the result is GVM_ERR_STATE (logged, naming the first page in use).
    /// With the setting `replicated: off` the answer is GVM_ERR_UNSUPPORTED.
    public func replicate(_ pages: Range<UInt64>) -> PageStatus {
        withLock {
            guard !failed else { return .closed }
            guard config.replicated else { return PageStatus(raw: GVM_ERR_UNSUPPORTED.rawValue) }
            guard !pages.isEmpty, pages.upperBound <= pageCount else { return .invalid }
            for g in pages {
                let i = Int(g)
                let untouched = managerOf(g) == selfID ? state[i] == .OZ : state[i] == .I
                let busy = outstanding[g] != nil || ownerTxn[g] != nil || stalled[g] != nil || held[g] != nil
                    || open[g] != nil || waiting[g] != nil
                if !untouched || busy || host.state(g) != .invalid {
                    services.log(.warning, "node \(selfID): replicated range gfn \(pages.lowerBound)..<\(pages.upperBound) refused: gfn \(g) is in use (state \(state[i]))")
                    return PageStatus(raw: GVM_ERR_STATE.rawValue)
                }
            }
            let everyone: UInt64 = nodeCount == 64 ? ~0 : (UInt64(1) << UInt64(nodeCount)) - 1
            for g in pages {
                let i = Int(g)
                if managerOf(g) == selfID {
                    state[i] = .OS
                    copyset[i] = everyone & ~(UInt64(1) << UInt64(selfID))
                } else {
                    state[i] = .S
                }
                // The manager's directory already names the manager as owner (owner[i] == managerOf).
            }
            stats.replicated(UInt64(pages.count))
            return .ok
        }
    }

    /// GVM_HINT_REPLICATED's range check: page aligned, inside guest memory, not empty.
    public static func pageRange(gpa: UInt64, length: UInt64, pageCount: UInt64) -> Range<UInt64>? {
        let page = UInt64(GVM_PAGE_SIZE)
        guard length > 0, gpa % page == 0, length % page == 0, gpa / page < pageCount,
              length / page <= pageCount - gpa / page else { return nil }
        return (gpa / page)..<((gpa + length) / page)
    }
}
