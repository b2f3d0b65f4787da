// IvyStats: what one Ivy node reports. The standard coherence statistics (giantvm_plugin.h,
// GVM_STAT_*, "dsm.") are what the host's summaries read; Ivy's own extras live under "ivy.":
//
//   ivy.msg.<Type>, ivy.bytes.<Type>   messages and bytes sent, per message type (GetS, Data, ...)
//   ivy.hops.<n>, ivy.hops.5plus       resolved faults by network hops on their critical path
//   ivy.latency.hops_<n>, _5plus       fault latency (ns) by hops
//   ivy.fault.local                    faults resolved without a message (0 hops)
//   ivy.stalled                        events parked behind a transaction on their page
//   ivy.held                           requests held back by the hold window (hold_time)
//   ivy.upgrade_lost_copy              upgrades whose copy was invalidated while they waited
//   ivy.upgrade_refetch                grants whose copy was gone at install (fetched instead)
//   ivy.manager_queued                 requests a manager queued behind an open transaction
//   ivy.refusals                       forwards refused (Nack) by a node that no longer owns
//   ivy.rx_malformed                   messages that failed to decode (the node then stops)
//   ivy.zero_pages_sent                pages handed over as "zero" without data (part of dsm.page.sent_nodata)
//   ivy.replicated                     pages started as read copies on every node (GVM_HINT_REPLICATED)
//
// Each handle is a closure from ProtocolServices so the same code counts through the host's C
// table and in tests. Events that are both standard and Ivy-specific update both names here, so
// the protocol code in Node.swift counts each event once.

import PluginKit

/// The node's counters and histograms (names are the stable statistics interface).
final class IvyStats {
    let faults: [(UInt64) -> Void]     // by FaultKind: dsm.fault.*
    let latency: [(UInt64) -> Void]    // by FaultKind: dsm.fault_latency.*
    let latencyAll: (UInt64) -> Void   // dsm.fault_latency
    let latencyByHops: [(UInt64) -> Void]  // 0, 1, 2, 3, 4, 5+
    let hops: [(UInt64) -> Void]  // 0, 1, 2, 3, 4, 5+
    let msgCount: [(UInt64) -> Void]   // indexed by type raw value
    let msgBytes: [(UInt64) -> Void]
    let coalesced, stale, pagesSent, zeroPagesSent, pinDeferred, stalled, invalidationsSent,
        upgradeLostCopy, upgradeRefetch, managerQueued, refusals, localFaults, malformed, held, replicated: (UInt64) -> Void
    private let messagesReceived, bytesReceived, invalidationsReceived: (UInt64) -> Void

    init(_ s: ProtocolServices) {
        func both(_ a: @escaping (UInt64) -> Void, _ b: @escaping (UInt64) -> Void) -> (UInt64) -> Void {
            { a($0); b($0) }
        }
        // Look up every standard name first, even those Ivy never counts (diffs): a true 0.
        var standard: [String: (UInt64) -> Void] = [:]
        for name in StandardStatistic.counters { standard[name] = s.makeCounter(name) }
        var standardHistograms: [String: (UInt64) -> Void] = [:]
        for name in StandardStatistic.histograms { standardHistograms[name] = s.makeHistogram(name) }
        func std(_ name: String) -> (UInt64) -> Void { standard[name]! }

        faults = [std(GVM_STAT_FAULT_READ_MISS), std(GVM_STAT_FAULT_WRITE_MISS), std(GVM_STAT_FAULT_UPGRADE)]
        latency = [standardHistograms[GVM_STAT_FAULT_LATENCY_READ_MISS]!, standardHistograms[GVM_STAT_FAULT_LATENCY_WRITE_MISS]!,
                   standardHistograms[GVM_STAT_FAULT_LATENCY_UPGRADE]!]
        latencyAll = standardHistograms[GVM_STAT_FAULT_LATENCY]!
        latencyByHops = (0...5).map { s.makeHistogram($0 == 5 ? "ivy.latency.hops_5plus" : "ivy.latency.hops_\($0)") }
        hops = (0...5).map { s.makeCounter($0 == 5 ? "ivy.hops.5plus" : "ivy.hops.\($0)") }
        // Every message sent: its type's extras and the standard totals. A Grant hands a page
        // over without its bytes.
        let sent = std(GVM_STAT_MSG_SENT), sentBytes = std(GVM_STAT_BYTES_SENT)
        let noData = std(GVM_STAT_PAGES_SENT_NODATA)
        var counts: [(UInt64) -> Void] = [{ _ in }]
        var bytes: [(UInt64) -> Void] = [{ _ in }]
        for t in MessageType.allCases {
            let count = both(s.makeCounter("ivy.msg.\(t.name)"), sent)
            counts.append(t == .grant ? both(count, noData) : count)
            bytes.append(both(s.makeCounter("ivy.bytes.\(t.name)"), sentBytes))
        }
        msgCount = counts
        msgBytes = bytes
        coalesced = std(GVM_STAT_FAULT_COALESCED)
        stale = std(GVM_STAT_FAULT_STALE)
        // Zero pages are the part of dsm.page.sent_nodata that is not a Grant: an extra of Ivy's.
        pagesSent = std(GVM_STAT_PAGES_SENT_DATA)
        zeroPagesSent = both(noData, s.makeCounter("ivy.zero_pages_sent"))
        pinDeferred = std(GVM_STAT_PIN_DEFERRED)
        invalidationsSent = std(GVM_STAT_INV_SENT)
        messagesReceived = std(GVM_STAT_MSG_RECEIVED)
        bytesReceived = std(GVM_STAT_BYTES_RECEIVED)
        invalidationsReceived = std(GVM_STAT_INV_RECEIVED)
        localFaults = s.makeCounter("ivy.fault.local")
        stalled = s.makeCounter("ivy.stalled")
        upgradeLostCopy = s.makeCounter("ivy.upgrade_lost_copy")
        upgradeRefetch = s.makeCounter("ivy.upgrade_refetch")
        managerQueued = s.makeCounter("ivy.manager_queued")
        refusals = s.makeCounter("ivy.refusals")
        malformed = s.makeCounter("ivy.rx_malformed")
        held = s.makeCounter("ivy.held")
        replicated = s.makeCounter("ivy.replicated")
    }

    /// A well-formed message of `type` arrived (`bytes` long).
    func received(_ type: MessageType, bytes: Int) {
        messagesReceived(1)
        bytesReceived(UInt64(bytes))
        if type == .inv { invalidationsReceived(1) }
    }
}
