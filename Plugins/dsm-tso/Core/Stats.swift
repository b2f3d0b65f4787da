// TSOStats: what one dsm-tso node reports for its mw pages. dsm-ivy's engine reports the
// standard statistics (giantvm_plugin.h, "dsm.") for the sc pages under the same names, so each
// standard counter is the sum over both classes. dsm-tso's extras live under "tso.":
//
//   tso.twins                          twins made (first write on a node since its last release)
//   tso.diff.bytes                     changed bytes carried by the diffs this node made
//   tso.diff.empty                     releases of a written page that found no byte changed
//   tso.flush.fence, .hint, .interval, .sc_handover
//                                      releases that had dirty pages, by cause: a host fence, the
//                                      guest's fence hint, the flush interval, an sc page leaving
//   tso.update.sent                    updates a home forwarded to holders
//   tso.update.skipped_bytes           bytes of diffs not applied because this node's own write
//                                      is later in the home's order
//   tso.sc_held                        sc page departures (forward, invalidation, downgrade) held
//                                      until this node's releases completed
//   tso.class_switch.to_mw, .to_sc     on this node: ranges a guest hint made mw or sc, and pages
//                                      that switched from sc to mw (relaxed_start: sc)
//   tso.msg.<Type>, tso.bytes.<Type>   messages and bytes sent per dsm-tso message type
//   tso.rx_malformed                   dsm-tso messages that failed to decode (the node then stops)
//   tso.release_latency (histogram)    from a release with work to its completion (ns)

import IvyCore
import PluginKit

public enum FlushCause: String, CaseIterable, Sendable {
    case fence, hint, interval
    case scHandover = "sc_handover"
}

final class TSOStats {
    let faults: [(UInt64) -> Void]
    let latency: [(UInt64) -> Void]
    let latencyAll: (UInt64) -> Void
    let msgCount: [TSOMessageType: (UInt64) -> Void]
    let msgBytes: [TSOMessageType: (UInt64) -> Void]
    let flushes: [FlushCause: (UInt64) -> Void]
    let coalesced, stale, pinDeferred, pagesSent, zeroPagesSent, diffMade, diffApplied, twins, diffBytes, diffEmpty,
        updatesSent, skippedBytes, scHeld, toMw, toSc, malformed, releaseLatency: (UInt64) -> Void
    private let received, receivedBytes: (UInt64) -> Void

    init(_ s: ProtocolServices) {
        func both(_ a: @escaping (UInt64) -> Void, _ b: @escaping (UInt64) -> Void) -> (UInt64) -> Void { { a($0); b($0) } }
        faults = [s.makeCounter(GVM_STAT_FAULT_READ_MISS), s.makeCounter(GVM_STAT_FAULT_WRITE_MISS), s.makeCounter(GVM_STAT_FAULT_UPGRADE)]
        latency = [s.makeHistogram(GVM_STAT_FAULT_LATENCY_READ_MISS), s.makeHistogram(GVM_STAT_FAULT_LATENCY_WRITE_MISS),
                   s.makeHistogram(GVM_STAT_FAULT_LATENCY_UPGRADE)]
        latencyAll = s.makeHistogram(GVM_STAT_FAULT_LATENCY)
        let sent = s.makeCounter(GVM_STAT_MSG_SENT), sentBytes = s.makeCounter(GVM_STAT_BYTES_SENT)
        var c: [TSOMessageType: (UInt64) -> Void] = [:], b: [TSOMessageType: (UInt64) -> Void] = [:]
        for t in TSOMessageType.allCases {
            c[t] = both(s.makeCounter("tso.msg.\(t.name)"), sent)
            b[t] = both(s.makeCounter("tso.bytes.\(t.name)"), sentBytes)
        }
        msgCount = c
        msgBytes = b
        var f: [FlushCause: (UInt64) -> Void] = [:]
        for cause in FlushCause.allCases { f[cause] = s.makeCounter("tso.flush.\(cause.rawValue)") }
        flushes = f
        coalesced = s.makeCounter(GVM_STAT_FAULT_COALESCED)
        stale = s.makeCounter(GVM_STAT_FAULT_STALE)
        pinDeferred = s.makeCounter(GVM_STAT_PIN_DEFERRED)
        pagesSent = s.makeCounter(GVM_STAT_PAGES_SENT_DATA)
        zeroPagesSent = s.makeCounter(GVM_STAT_PAGES_SENT_NODATA)
        diffMade = s.makeCounter(GVM_STAT_DIFF_MADE)
        diffApplied = s.makeCounter(GVM_STAT_DIFF_APPLIED)
        received = s.makeCounter(GVM_STAT_MSG_RECEIVED)
        receivedBytes = s.makeCounter(GVM_STAT_BYTES_RECEIVED)
        twins = s.makeCounter("tso.twins")
        diffBytes = s.makeCounter("tso.diff.bytes")
        diffEmpty = s.makeCounter("tso.diff.empty")
        updatesSent = s.makeCounter("tso.update.sent")
        skippedBytes = s.makeCounter("tso.update.skipped_bytes")
        scHeld = s.makeCounter("tso.sc_held")
        toMw = s.makeCounter("tso.class_switch.to_mw")
        toSc = s.makeCounter("tso.class_switch.to_sc")
        malformed = s.makeCounter("tso.rx_malformed")
        releaseLatency = s.makeHistogram("tso.release_latency")
    }

    func receivedMessage(bytes: Int) {
        received(1)
        receivedBytes(UInt64(bytes))
    }
}
