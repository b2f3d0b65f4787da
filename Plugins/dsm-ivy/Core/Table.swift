// The Ivy protocol as two tables, gem5-SLICC style: for each controller, its states (with the
// access each grants), its events grouped by where they come from, and one exhaustive
// `switch (state, event)` giving the next state and the actions to run, in order.
//
// Section order (keep it the same in every protocol file): states, events, actions, transitions.
//
// Two controllers per node:
//   - the cache controller: this node's view of one page (holder, owner, requester);
//   - the manager (directory): for the pages this node manages, who owns each page, and the
//     serialization of requests — one transaction per page at a time, from the forward until the
//     requester confirms the new copy or ownership.
//
// Rules every transition obeys:
//   - a page operation that the host may refuse with GVM_ERR_PINNED is always the FIRST action,
//     so a refused transition has no side effects and is simply deferred until page_unpinned;
//   - `z_stall` keeps the event queued (unchanged) until the page leaves its transient state;
//   - an event with no transition is a protocol violation, reported through fatal (never dropped).
//
// Threading: pure functions and value types; safe anywhere.

import PluginKit

// MARK: - Cache controller: states

public enum CacheState: UInt8, CaseIterable, Sendable {
    // stable
    case I      // no copy, not the owner
    case S      // read-only copy; in the owner's copyset
    case OZ     // owner of a never-written page: no copy exists anywhere (it is all zeros)
    case OS     // owner with a read-only copy; keeps the copyset
    case OM     // owner with the only, writable copy
    // transient: named for what they wait for
    case IS_D   // read miss sent to the manager; waits for Data
    case IM_D   // write miss sent; waits for Data with ownership
    case SM_G   // upgrade sent while holding a valid copy; waits for Grant (or Data)
    case OM_A   // owner upgrading its own copy; waits for the sharers' invalidation Acks
    case OI_A   // owner handing the page to a writer (own copy already dropped); waits for Acks

    /// The access the host's page state gives local threads in this state.
    public var permission: String {
        switch self {
        case .I, .IS_D, .IM_D, .OZ, .OI_A: "none"
        case .S, .OS, .SM_G, .OM_A: "read"
        case .OM: "read-write"
        }
    }

    public var isOwner: Bool { [.OZ, .OS, .OM, .OM_A, .OI_A].contains(self) }
    public var isTransient: Bool { [.IS_D, .IM_D, .SM_G, .OM_A, .OI_A].contains(self) }

    public var meaning: String {
        switch self {
        case .I: "invalid: no copy, not the owner"
        case .S: "shared: read-only copy, in the owner's copyset"
        case .OZ: "owner of a never-written page (zeros, no copy anywhere)"
        case .OS: "owner, read-only copy, holds the copyset"
        case .OM: "owner, modified: the only, writable copy"
        case .IS_D: "read miss outstanding; waits for Data"
        case .IM_D: "write miss outstanding; waits for Data with ownership"
        case .SM_G: "upgrade outstanding (holds a copy); waits for Grant or Data"
        case .OM_A: "owner upgrading its own copy; waits for invalidation acks"
        case .OI_A: "owner handing over to a writer; waits for invalidation acks"
        }
    }
}

// MARK: - Cache controller: events

public enum CacheEvent: String, CaseIterable, Sendable {
    // from local threads (the host's fault hook)
    case load = "Load"                     // read fault
    case store = "Store"                   // write fault
    case storeSharers = "Store_Sharers"    // write fault by the owner while others share the page
    // from the manager (forwarded requests)
    case fwdGetS = "FwdGetS"
    case fwdGetX = "FwdGetX"                   // no sharer other than the requester
    case fwdGetXSharers = "FwdGetX_Sharers"    // other sharers must be invalidated first
    // from the owner
    case inv = "Inv"
    case dataS = "Data_S"                  // read-only copy
    case dataX = "Data_X"                  // bytes with ownership
    case grant = "Grant"                   // ownership without bytes (our copy is valid)
    case grantCopyLost = "Grant_CopyLost"  // Grant, but page_upgrade said NOT_PRESENT
    // from sharers
    case invAck = "InvAck"
    case lastInvAck = "LastInvAck"
    // from the new owner of a page we granted without bytes
    case fetch = "Fetch"
    case release = "Release"

    public var source: String {
        switch self {
        case .load, .store, .storeSharers: "local thread"
        case .fwdGetS, .fwdGetX, .fwdGetXSharers: "manager"
        case .inv, .dataS, .dataX, .grant, .grantCopyLost: "owner"
        case .invAck, .lastInvAck: "sharer"
        case .fetch, .release: "new owner"
        }
    }
}

// MARK: - Cache controller: actions

public enum CacheAction: String, CaseIterable, Sendable {
    // page operations (the pinnable ones are always first in a transition)
    case p_dropCopy              // sharer: drop the read-only copy                       (pinnable)
    case p_dropToBuffer          // owner: protect, copy out, drop                        (pinnable)
    case p_downgradeToBuffer     // owner: protect, copy out, keep read-only              (pinnable)
    case p_readToBuffer          // owner: copy out its read-only copy
    case p_zeroBuffer            // owner of a never-written page: the bytes are zeros
    case p_installZeroModified   // owner's first touch: zeros, writable
    case p_installZeroShared     // owner serving a never-written page: keep a zero copy
    case p_installData           // install received bytes (or zeros) as granted      (pinnable)
    case p_upgrade               // requester: SHARED -> MODIFIED; NOT_PRESENT => Grant_CopyLost
    case p_upgradeOwn            // owner: SHARED -> MODIFIED after the acks
    // requester
    case r_startReadMiss
    case r_startWriteMiss
    case r_startUpgrade
    case r_sendGetS
    case r_sendGetX
    case r_coalesce              // another local thread faulted on a page already requested
    case r_complete              // wake every waiter; record latency and hops
    case r_sendConfirm
    case r_sendRelease
    case r_sendFetch
    case r_lostCopy              // an invalidation crossed our upgrade: it is now a write miss
    // owner
    case o_addSharer
    case o_sendDataS
    case o_invalidateOthers      // Inv to every sharer except the requester; remember the txn
    case o_countAck
    case o_handOver              // Grant if the requester holds a valid copy, else Data_X; clear copyset
    case o_sendStash
    case o_freeStash
    // sharer
    case s_sendInvAck
    // any
    case w_wakeStale             // the fault is already satisfied: wake the waiters
    case z_stall                 // keep the event until the page leaves this transient state
    case f_nack                  // a forward reached a non-owner: refuse; the manager retries
}

extension CacheAction {
    /// Actions that send the page's contents to another node or give up this node's copy (the
    /// points where IvyNode.releaseGate is asked first).
    public var movesPageAway: Bool {
        [.p_dropCopy, .p_dropToBuffer, .p_downgradeToBuffer, .p_readToBuffer].contains(self)
    }
}

// MARK: - Cache controller: transitions

public enum Transition<State, Action>: Sendable where State: Sendable, Action: Sendable {
    case go(State, [Action])
    case error(String)
}

public enum IvyTable {
    public typealias CacheTransition = Transition<CacheState, CacheAction>

    /// The cache controller's table. Exhaustive: every (state, event) pair is listed.
    public static func cache(_ s: CacheState, _ e: CacheEvent) -> CacheTransition {
        typealias A = CacheAction
        switch (s, e) {
        // --- fetch / release of stashed bytes: independent of the page's current state
        case (_, .fetch): return .go(s, [.o_sendStash])
        case (_, .release): return .go(s, [.o_freeStash])

        // --- I: no copy
        case (.I, .load): return .go(.IS_D, [.r_startReadMiss, .r_sendGetS])
        case (.I, .store): return .go(.IM_D, [.r_startWriteMiss, .r_sendGetX])
        case (.I, .storeSharers): return .error("Store_Sharers is only classified at OS")
        case (.I, .fwdGetS), (.I, .fwdGetX), (.I, .fwdGetXSharers): return .go(.I, [.f_nack])
        case (.I, .inv): return .error("a node without a copy is never in a copyset")
        case (.I, .dataS), (.I, .dataX), (.I, .grant), (.I, .grantCopyLost):
            return .error("reply without an outstanding request")
        case (.I, .invAck), (.I, .lastInvAck): return .error("ack while not collecting acks")

        // --- S: read-only copy
        case (.S, .load): return .go(.S, [.w_wakeStale])
        case (.S, .store): return .go(.SM_G, [.r_startUpgrade, .r_sendGetX])
        case (.S, .storeSharers): return .error("Store_Sharers is only classified at OS")
        case (.S, .fwdGetS), (.S, .fwdGetX), (.S, .fwdGetXSharers): return .go(.S, [.f_nack])
        case (.S, .inv): return .go(.I, [.p_dropCopy, .s_sendInvAck])
        case (.S, .dataS), (.S, .dataX), (.S, .grant), (.S, .grantCopyLost):
            return .error("reply without an outstanding request")
        case (.S, .invAck), (.S, .lastInvAck): return .error("ack while not collecting acks")

        // --- OZ: owner of a never-written page
        case (.OZ, .load): return .go(.OM, [.r_startReadMiss, .p_installZeroModified, .r_complete])
        case (.OZ, .store): return .go(.OM, [.r_startWriteMiss, .p_installZeroModified, .r_complete])
        case (.OZ, .storeSharers): return .error("Store_Sharers is only classified at OS")
        case (.OZ, .fwdGetS): return .go(.OS, [.p_installZeroShared, .o_addSharer, .o_sendDataS])
        case (.OZ, .fwdGetX): return .go(.I, [.p_zeroBuffer, .o_handOver])
        case (.OZ, .fwdGetXSharers): return .error("a never-written page has no sharers")
        case (.OZ, .inv): return .error("the owner is never invalidated")
        case (.OZ, .dataS), (.OZ, .dataX), (.OZ, .grant), (.OZ, .grantCopyLost):
            return .error("the owner never requests its own page")
        case (.OZ, .invAck), (.OZ, .lastInvAck): return .error("ack while not collecting acks")

        // --- OS: owner, read-only copy, copyset
        case (.OS, .load): return .go(.OS, [.w_wakeStale])
        case (.OS, .store): return .go(.OM, [.r_startUpgrade, .p_upgradeOwn, .r_complete])
        case (.OS, .storeSharers): return .go(.OM_A, [.r_startUpgrade, .o_invalidateOthers])
        case (.OS, .fwdGetS): return .go(.OS, [.p_readToBuffer, .o_addSharer, .o_sendDataS])
        case (.OS, .fwdGetX): return .go(.I, [.p_dropToBuffer, .o_handOver])
        case (.OS, .fwdGetXSharers): return .go(.OI_A, [.p_dropToBuffer, .o_invalidateOthers])
        case (.OS, .inv): return .error("the owner is never invalidated")
        case (.OS, .dataS), (.OS, .dataX), (.OS, .grant), (.OS, .grantCopyLost):
            return .error("the owner never requests its own page")
        case (.OS, .invAck), (.OS, .lastInvAck): return .error("ack while not collecting acks")

        // --- OM: owner, modified
        case (.OM, .load), (.OM, .store): return .go(.OM, [.w_wakeStale])
        case (.OM, .storeSharers): return .error("Store_Sharers is only classified at OS")
        case (.OM, .fwdGetS): return .go(.OS, [.p_downgradeToBuffer, .o_addSharer, .o_sendDataS])
        case (.OM, .fwdGetX): return .go(.I, [.p_dropToBuffer, .o_handOver])
        case (.OM, .fwdGetXSharers): return .error("a modified page has no sharers")
        case (.OM, .inv): return .error("the owner is never invalidated")
        case (.OM, .dataS), (.OM, .dataX), (.OM, .grant), (.OM, .grantCopyLost):
            return .error("the owner never requests its own page")
        case (.OM, .invAck), (.OM, .lastInvAck): return .error("ack while not collecting acks")

        // --- IS_D: read miss outstanding
        case (.IS_D, .load), (.IS_D, .store): return .go(.IS_D, [.r_coalesce])
        case (.IS_D, .storeSharers): return .error("Store_Sharers is only classified at OS")
        case (.IS_D, .fwdGetS), (.IS_D, .fwdGetX), (.IS_D, .fwdGetXSharers): return .go(.IS_D, [.f_nack])
        case (.IS_D, .inv): return .error("invalidation before the read copy was confirmed")
        case (.IS_D, .dataS): return .go(.S, [.p_installData, .r_complete, .r_sendConfirm])
        case (.IS_D, .dataX), (.IS_D, .grant), (.IS_D, .grantCopyLost):
            return .error("ownership granted for a read request")
        case (.IS_D, .invAck), (.IS_D, .lastInvAck): return .error("ack while not collecting acks")

        // --- IM_D: write miss outstanding
        case (.IM_D, .load), (.IM_D, .store): return .go(.IM_D, [.r_coalesce])
        case (.IM_D, .storeSharers): return .error("Store_Sharers is only classified at OS")
        case (.IM_D, .fwdGetS), (.IM_D, .fwdGetX), (.IM_D, .fwdGetXSharers): return .go(.IM_D, [.f_nack])
        case (.IM_D, .inv): return .error("invalidation of a node that holds no copy")
        case (.IM_D, .dataX): return .go(.OM, [.p_installData, .r_complete, .r_sendConfirm])
        case (.IM_D, .dataS): return .error("read-only copy for a write request")
        case (.IM_D, .grant), (.IM_D, .grantCopyLost): return .error("grant without bytes to a node without a copy")
        case (.IM_D, .invAck), (.IM_D, .lastInvAck): return .error("ack while not collecting acks")

        // --- SM_G: upgrade outstanding, copy still valid
        case (.SM_G, .load): return .go(.SM_G, [.w_wakeStale])
        case (.SM_G, .store): return .go(.SM_G, [.r_coalesce])
        case (.SM_G, .storeSharers): return .error("Store_Sharers is only classified at OS")
        case (.SM_G, .fwdGetS), (.SM_G, .fwdGetX), (.SM_G, .fwdGetXSharers): return .go(.SM_G, [.f_nack])
        case (.SM_G, .inv): return .go(.IM_D, [.p_dropCopy, .s_sendInvAck, .r_lostCopy])
        case (.SM_G, .dataX): return .go(.OM, [.p_installData, .r_complete, .r_sendConfirm])
        case (.SM_G, .grant): return .go(.OM, [.p_upgrade, .r_complete, .r_sendConfirm, .r_sendRelease])
        case (.SM_G, .grantCopyLost): return .go(.IM_D, [.r_sendFetch])
        case (.SM_G, .dataS): return .error("read-only copy for a write request")
        case (.SM_G, .invAck), (.SM_G, .lastInvAck): return .error("ack while not collecting acks")

        // --- OM_A: owner upgrading its own copy, collecting acks
        case (.OM_A, .load): return .go(.OM_A, [.w_wakeStale])
        case (.OM_A, .store): return .go(.OM_A, [.r_coalesce])
        case (.OM_A, .storeSharers): return .error("Store_Sharers is only classified at OS")
        case (.OM_A, .fwdGetS), (.OM_A, .fwdGetX), (.OM_A, .fwdGetXSharers): return .go(.OM_A, [.z_stall])
        case (.OM_A, .inv): return .error("the owner is never invalidated")
        case (.OM_A, .dataS), (.OM_A, .dataX), (.OM_A, .grant), (.OM_A, .grantCopyLost):
            return .error("the owner never requests its own page")
        case (.OM_A, .invAck): return .go(.OM_A, [.o_countAck])
        case (.OM_A, .lastInvAck): return .go(.OM, [.o_countAck, .p_upgradeOwn, .r_complete])

        // --- OI_A: owner handing over to a writer, collecting acks
        case (.OI_A, .load), (.OI_A, .store): return .go(.OI_A, [.z_stall])
        case (.OI_A, .storeSharers): return .error("Store_Sharers is only classified at OS")
        case (.OI_A, .fwdGetS), (.OI_A, .fwdGetX), (.OI_A, .fwdGetXSharers):
            return .error("a second forward while the manager's transaction is open")
        case (.OI_A, .inv): return .error("the owner is never invalidated")
        case (.OI_A, .dataS), (.OI_A, .dataX), (.OI_A, .grant), (.OI_A, .grantCopyLost):
            return .error("the owner never requests its own page")
        case (.OI_A, .invAck): return .go(.OI_A, [.o_countAck])
        case (.OI_A, .lastInvAck): return .go(.I, [.o_countAck, .o_handOver])
        }
    }
}

// MARK: - Manager: states, events, actions, transitions

public enum ManagerState: String, CaseIterable, Sendable {
    case Idle = "Idle"       // no transaction open for the page
    case Busy_C = "Busy_C"   // a request was forwarded; waits for the requester's Confirm
}

public enum ManagerEvent: String, CaseIterable, Sendable {
    // from requesters
    case getS = "GetS"
    case getX = "GetX"
    case confirm = "Confirm"
    // from a node a forward reached
    case nack = "Nack"
}

public enum ManagerAction: String, CaseIterable, Sendable {
    case m_beginTxn        // open a transaction: number it, remember requester and kind
    case m_forward         // forward the request to the recorded owner (never the requester)
    case m_queue           // the page is busy: queue the request in arrival order
    case m_checkConfirm    // the confirm matches the open transaction (node and number)
    case m_recordOwner     // a write moves ownership to the requester
    case m_serveNext       // start the oldest queued request, if any
    case m_reforward       // a forward was refused: forward again to the recorded owner (bounded)
}

extension IvyTable {
    public typealias ManagerTransition = Transition<ManagerState, ManagerAction>

    public static func manager(_ s: ManagerState, _ e: ManagerEvent) -> ManagerTransition {
        switch (s, e) {
        case (.Idle, .getS), (.Idle, .getX): return .go(.Busy_C, [.m_beginTxn, .m_forward])
        case (.Idle, .confirm): return .error("confirm with no open transaction")
        case (.Idle, .nack): return .error("refusal with no open transaction")
        case (.Busy_C, .getS), (.Busy_C, .getX): return .go(.Busy_C, [.m_queue])
        case (.Busy_C, .confirm): return .go(.Idle, [.m_checkConfirm, .m_recordOwner, .m_serveNext])
        case (.Busy_C, .nack): return .go(.Busy_C, [.m_reforward])
        }
    }

    /// The protocol as text: both tables, every (state, event) pair.
    public static func describe() -> String {
        var out = """
        dsm-ivy: Ivy (Li & Hudak, "improved" distributed manager) as in GiantVM section 3.4.
        Sequentially consistent per 4 KiB page: M/S/I, one owner per page holding the copyset,
        managers by guest-physical range that track owners and serialize each page's requests
        until the requester confirms. Pinnable page operations come first in a transition; a
        refused one (GVM_ERR_PINNED) defers the event until page_unpinned. z_stall keeps an event
        until the page leaves its transient state. Anything not listed is a protocol violation.

        Cache controller states:

        """
        for s in CacheState.allCases {
            out += "  \(pad(String(describing: s), 6)) \(pad(s.permission, 11)) \(s.meaning)\n"
        }
        out += "\nCache controller events:\n"
        for e in CacheEvent.allCases { out += "  \(pad(e.rawValue, 16)) from \(e.source)\n" }
        out += "\nCache controller transitions (state, event -> next: actions):\n"
        for s in CacheState.allCases {
            for e in CacheEvent.allCases {
                let st = pad(String(describing: s), 5)
                let ev = pad(e.rawValue, 15)
                switch cache(s, e) {
                case let .go(n, actions):
                    out += "  \(st) \(ev) -> \(pad(String(describing: n), 5)) \(actions.map(\.rawValue).joined(separator: ", "))\n"
                case let .error(why):
                    out += "  \(st) \(ev) -> error: \(why)\n"
                }
            }
        }
        out += "\nManager transitions (per managed page):\n"
        for s in ManagerState.allCases {
            for e in ManagerEvent.allCases {
                switch manager(s, e) {
                case let .go(n, actions):
                    out += "  \(pad(s.rawValue, 7)) \(pad(e.rawValue, 8)) -> \(pad(n.rawValue, 7)) \(actions.map(\.rawValue).joined(separator: ", "))\n"
                case let .error(why):
                    out += "  \(pad(s.rawValue, 7)) \(pad(e.rawValue, 8)) -> error: \(why)\n"
                }
            }
        }
        return out
    }

    public static func pad(_ s: String, _ n: Int) -> String {
        s.count >= n ? s : s + String(repeating: " ", count: n - s.count)
    }
}
