// DSMStatistics: the standard coherence statistics (giantvm_plugin.h, "Standard statistics",
// GVM_STAT_*) read out of a metrics snapshot, and nothing else. Summaries, `--stats-out` JSON and
// benchmark reports read a coherence plugin through this model, so they show the same figures
// whatever the protocol; a plugin's own extras are listed apart by `MetricsSnapshot.extras`.

import Foundation
import PluginAPI

public struct DSMStatistics: Codable, Sendable, Equatable {
    /// Every standard counter name (GVM_STAT_*), in the header's order.
    public static let counterNames: [String] = (0..<GVM_STAT_COUNTER_COUNT).map { String(cString: gvm_stat_counter_name($0)) }
    /// Every standard histogram name (nanoseconds).
    public static let histogramNames: [String] = (0..<GVM_STAT_HISTOGRAM_COUNT).map { String(cString: gvm_stat_histogram_name($0)) }

    /// Every standard counter, by its name ("dsm.fault.read_miss", ...): all present; 0 where the
    /// snapshot does not have the name (see `missing`).
    public var counters: [String: UInt64]
    /// The standard latency histograms the snapshot holds, by name.
    public var histograms: [String: HistogramSummary]
    /// Standard counter names the snapshot does not hold: the plugin did not report them (a
    /// plugin built for the standard statistics reports every one, 0 included).
    public var missing: [String]

    /// Reads the standard names out of counters and histograms (a snapshot, or a node report's
    /// maps); every other name is ignored.
    public init(counters all: [String: UInt64], histograms allHistograms: [String: HistogramSummary] = [:]) {
        var c: [String: UInt64] = [:]
        var missing: [String] = []
        for name in Self.counterNames {
            if let v = all[name] { c[name] = v } else { c[name] = 0; missing.append(name) }
        }
        var h: [String: HistogramSummary] = [:]
        for name in Self.histogramNames { if let s = allHistograms[name] { h[name] = s } }
        counters = c
        histograms = h
        self.missing = missing
    }

    public init(snapshot: MetricsSnapshot) {
        self.init(counters: snapshot.counters, histograms: snapshot.histograms)
    }

    /// The sum over several nodes: counters add up; a standard name is missing from the total if
    /// it is missing on any node. Histograms are not summed (percentiles do not add): the total
    /// has none.
    public static func total(_ nodes: [DSMStatistics]) -> DSMStatistics {
        var sum = DSMStatistics(counters: [:])
        sum.missing = counterNames.filter { name in nodes.isEmpty || nodes.contains { $0.missing.contains(name) } }
        for n in nodes { for (k, v) in n.counters { sum.counters[k, default: 0] &+= v } }
        return sum
    }

    func value(_ name: String) -> UInt64 { counters[name] ?? 0 }

    // Faults (GVM_STAT_FAULT_*): requests started, by kind, and fault() calls that started none.
    public var readMisses: UInt64 { value(GVM_STAT_FAULT_READ_MISS) }
    public var writeMisses: UInt64 { value(GVM_STAT_FAULT_WRITE_MISS) }
    public var upgrades: UInt64 { value(GVM_STAT_FAULT_UPGRADE) }
    /// Requests started: read misses + write misses + upgrades.
    public var faults: UInt64 { readMisses &+ writeMisses &+ upgrades }
    public var coalescedFaults: UInt64 { value(GVM_STAT_FAULT_COALESCED) }
    public var staleFaults: UInt64 { value(GVM_STAT_FAULT_STALE) }
    public var pinDeferred: UInt64 { value(GVM_STAT_PIN_DEFERRED) }

    // Traffic the plugin sent and received on the coherence channel (without transport framing).
    public var messagesSent: UInt64 { value(GVM_STAT_MSG_SENT) }
    public var bytesSent: UInt64 { value(GVM_STAT_BYTES_SENT) }
    public var messagesReceived: UInt64 { value(GVM_STAT_MSG_RECEIVED) }
    public var bytesReceived: UInt64 { value(GVM_STAT_BYTES_RECEIVED) }

    // Pages handed to other nodes (counted by the sender) and invalidations.
    public var pagesSentWithData: UInt64 { value(GVM_STAT_PAGES_SENT_DATA) }
    /// Zero pages and ownership-only hand-overs.
    public var pagesSentWithoutData: UInt64 { value(GVM_STAT_PAGES_SENT_NODATA) }
    /// Pages that crossed to another node, with or without their bytes.
    public var pagesMoved: UInt64 { pagesSentWithData &+ pagesSentWithoutData }
    public var invalidationsSent: UInt64 { value(GVM_STAT_INV_SENT) }
    public var invalidationsReceived: UInt64 { value(GVM_STAT_INV_RECEIVED) }

    // Multiple-writer protocols only.
    public var diffsMade: UInt64 { value(GVM_STAT_DIFF_MADE) }
    public var diffsApplied: UInt64 { value(GVM_STAT_DIFF_APPLIED) }

    /// Fault latency (ns) over every request, if the snapshot holds it.
    public var faultLatency: HistogramSummary? { histograms[GVM_STAT_FAULT_LATENCY] }
    public var readMissLatency: HistogramSummary? { histograms[GVM_STAT_FAULT_LATENCY_READ_MISS] }
    public var writeMissLatency: HistogramSummary? { histograms[GVM_STAT_FAULT_LATENCY_WRITE_MISS] }
    public var upgradeLatency: HistogramSummary? { histograms[GVM_STAT_FAULT_LATENCY_UPGRADE] }

    /// One line of `key=value` words, e.g. for "node 0: DSM stats: <line>":
    /// `read_miss=3 write_miss=5 upgrade=1 coalesced=0 stale=2 pages_sent=4 pages_sent_nodata=1
    /// invalidations_sent=1 invalidations_received=0 msgs_sent=12 bytes_sent=16672
    /// fault_p50_us=41.0 fault_p99_us=80.2` (the latency words only when there were faults;
    /// diff words only for a protocol that made or applied diffs; "(plugin reports no standard
    /// statistics)" appended when every standard counter is missing).
    public var summaryLine: String {
        var words = ["read_miss=\(readMisses)", "write_miss=\(writeMisses)", "upgrade=\(upgrades)",
                     "coalesced=\(coalescedFaults)", "stale=\(staleFaults)", "pages_sent=\(pagesSentWithData)",
                     "pages_sent_nodata=\(pagesSentWithoutData)", "invalidations_sent=\(invalidationsSent)",
                     "invalidations_received=\(invalidationsReceived)", "msgs_sent=\(messagesSent)",
                     "bytes_sent=\(bytesSent)"]
        if diffsMade > 0 || diffsApplied > 0 { words += ["diffs_made=\(diffsMade)", "diffs_applied=\(diffsApplied)"] }
        if let h = faultLatency, h.count > 0 {
            words.append("fault_p50_us=" + String(format: "%.1f", Double(h.p50) / 1000))
            words.append("fault_p99_us=" + String(format: "%.1f", Double(h.p99) / 1000))
        }
        if missing.count == Self.counterNames.count { words.append("(plugin reports no standard statistics)") }
        return words.joined(separator: " ")
    }

    /// Pretty JSON: {"counters": {every standard name: value}, "histograms": {...}, "missing": [...]}.
    public func json() -> String {
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        return (try? String(data: enc.encode(self), encoding: .utf8)) ?? "{}"
    }

    /// The prefix a plugin's own extras use by convention (giantvm_plugin.h): its name without
    /// "dsm-", then a dot (dsm-ivy -> `ivy.`, dsm-local -> `local.`, mine -> `mine.`).
    public static func extrasPrefix(plugin name: String) -> String {
        (name.hasPrefix("dsm-") ? String(name.dropFirst(4)) : name) + "."
    }
}

extension MetricsSnapshot {
    /// The standard coherence statistics in this snapshot.
    public var dsm: DSMStatistics { DSMStatistics(snapshot: self) }

    /// Only the counters and histograms whose names start with `prefix` (a plugin's own extras,
    /// e.g. `ivy.`); print them with `table(title:)`.
    public func extras(prefix: String) -> MetricsSnapshot {
        MetricsSnapshot(counters: counters.filter { $0.key.hasPrefix(prefix) },
                        histograms: histograms.filter { $0.key.hasPrefix(prefix) })
    }
}
