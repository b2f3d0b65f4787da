// What one run measures, as named numbers: the workload's own figures (the test guest's RESULT
// line and its job time, or bench dsm's operations), the wall time, and the standard coherence
// statistics summed over nodes (faults by kind, messages, bytes, pages moved, invalidations,
// diffs) with the fault latency percentiles of the histograms merged over nodes.

import Foundation
import Metrics

/// Which direction of a metric is an improvement.
public enum Better: String, Codable, Sendable {
    case higher, lower
}

/// The name, unit and direction of one metric.
public struct MetricSpec: Codable, Sendable, Equatable {
    public var name: String
    public var unit: String
    public var better: Better
    public init(_ name: String, _ unit: String, _ better: Better) {
        self.name = name; self.unit = unit; self.better = better
    }
}

public enum RunMetrics {
    /// The standard statistics every run reports, in report order (after the workload's own).
    public static let standard: [MetricSpec] = [
        MetricSpec("wall_time", "s", .lower),
        MetricSpec("faults.read_miss", "faults", .lower),
        MetricSpec("faults.write_miss", "faults", .lower),
        MetricSpec("faults.upgrade", "faults", .lower),
        MetricSpec("faults.coalesced", "faults", .lower),
        MetricSpec("faults.stale", "faults", .lower),
        MetricSpec("fault_latency.p50", "us", .lower),
        MetricSpec("fault_latency.p99", "us", .lower),
        MetricSpec("messages", "msgs", .lower),
        MetricSpec("bytes", "bytes", .lower),
        MetricSpec("pages_moved", "pages", .lower),
        MetricSpec("invalidations", "msgs", .lower),
        MetricSpec("diffs.made", "diffs", .lower),
        MetricSpec("diffs.applied", "diffs", .lower),
    ]

    /// The standard metrics of one run from its nodes' counters and merged fault latency.
    /// Diffs only when some node reported the counters (multiple-writer protocols).
    public static func coherence(counters nodes: [[String: UInt64]], latency: LatencyDistribution) -> [String: Double] {
        let total = DSMStatistics.total(nodes.map { DSMStatistics(counters: $0) })
        var m: [String: Double] = [
            "faults.read_miss": Double(total.readMisses), "faults.write_miss": Double(total.writeMisses),
            "faults.upgrade": Double(total.upgrades), "faults.coalesced": Double(total.coalescedFaults),
            "faults.stale": Double(total.staleFaults), "messages": Double(total.messagesSent),
            "bytes": Double(total.bytesSent), "pages_moved": Double(total.pagesMoved),
            "invalidations": Double(total.invalidationsSent),
        ]
        if nodes.contains(where: { $0["dsm.diff.made"] != nil || $0["dsm.diff.applied"] != nil }) {
            m["diffs.made"] = Double(total.diffsMade)
            m["diffs.applied"] = Double(total.diffsApplied)
        }
        if let p50 = latency.percentile(50), let p99 = latency.percentile(99) {
            m["fault_latency.p50"] = Double(p50) / 1000
            m["fault_latency.p99"] = Double(p99) / 1000
        }
        return m
    }

    /// The workload's own figures from the test guest's RESULT JSON: every rate (`*_per_s`,
    /// `mib_s`), named by its path (`ops_per_s`; `cases.locks16.ops_per_s` for the mutex cases,
    /// `cases.4096.local.read.mib_s` for memory). Numbers outside 0...1e15 are refused.
    public static func guestFigures(resultJSON: String) throws -> [String: Double] {
        guard let obj = try? JSONSerialization.jsonObject(with: Data(resultJSON.utf8)) as? [String: Any] else {
            throw ABError("the guest's RESULT line is not a JSON object: \(resultJSON.prefix(200))")
        }
        if let ok = obj["ok"] as? Bool, !ok {
            throw ABError("the guest reported a failure: \(obj["error"] as? String ?? resultJSON)")
        }
        var out: [String: Double] = [:]
        func isRate(_ key: String) -> Bool { key.hasSuffix("_per_s") || key == "mib_s" }
        func label(_ item: [String: Any], _ i: Int) -> String {
            if let l = item["locks"] as? NSNumber { return "locks\(l)" }
            if let b = item["block"] as? NSNumber, let s = item["scope"] as? String, let o = item["op"] as? String {
                return "\(b).\(s).\(o)"
            }
            return "\(i)"
        }
        func walk(_ o: [String: Any], _ prefix: String) throws {
            for (k, v) in o {
                if let n = v as? NSNumber, isRate(k) {
                    let d = n.doubleValue
                    guard d.isFinite, d >= 0, d <= 1e15 else { throw ABError("the guest's \(prefix)\(k) = \(d) is out of range") }
                    out[prefix + k] = d
                } else if let list = v as? [[String: Any]] {
                    for (i, item) in list.enumerated() { try walk(item, "\(prefix)\(k).\(label(item, i)).") }
                }
            }
        }
        try walk(obj, "")
        return out
    }

    /// The spec of a workload figure by its name.
    public static func workloadSpec(_ name: String) -> MetricSpec {
        if name == "job_time" { return MetricSpec(name, "ms", .lower) }
        if name.hasSuffix("mib_s") { return MetricSpec(name, "MiB/s", .higher) }
        return MetricSpec(name, "1/s", .higher)
    }
}

/// An error of `giantvm ab`, printed as is.
public struct ABError: Error, CustomStringConvertible {
    public var description: String
    public init(_ d: String) { description = d }
}
