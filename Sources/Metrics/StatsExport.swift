// One node's statistics as a file: `giantvm node --stats-out FILE` (a VM node) writes it when the
// node stops, `giantvm ab` reads one per node per run. Counters and histogram summaries as in
// `--stats`, plus the recorded values of the standard latency histograms, so that histograms of
// several nodes and runs can be merged exactly (percentiles do not add).

import Foundation

public struct NodeStatisticsFile: Codable, Sendable {
    /// Format version (bump when a field changes meaning).
    public static let format = 1
    public var format: Int
    public var node: Int
    /// Seconds the node ran (its VM's run), as it measured them.
    public var seconds: Double
    public var counters: [String: UInt64]
    public var histograms: [String: HistogramSummary]
    /// Standard latency histograms (DSMStatistics.histogramNames) as [value ns, count] pairs,
    /// lowest value first (values at the histogram's 3 significant digits).
    public var latencyValues: [String: [[UInt64]]]

    public init(node: Int, seconds: Double, registry: MetricsRegistry) {
        let snap = registry.snapshot()
        format = Self.format
        self.node = node
        self.seconds = seconds
        counters = snap.counters
        histograms = snap.histograms
        var values: [String: [[UInt64]]] = [:]
        for name in DSMStatistics.histogramNames {
            if let v = registry.recordedValues(name) { values[name] = v.map { [$0.value, $0.count] } }
        }
        latencyValues = values
    }

    /// Writes pretty JSON to `path` (atomically: a reader never sees half a file).
    public func write(to path: String) throws {
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        try enc.encode(self).write(to: URL(fileURLWithPath: path), options: .atomic)
    }

    /// Reads a file written by `write`; throws naming the file and what is wrong. Every number
    /// is range-checked: counts and values fit, pairs are pairs.
    public static func read(_ path: String) throws -> NodeStatisticsFile {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw StatsFileError("\(path): cannot read the node statistics file")
        }
        let f: NodeStatisticsFile
        do { f = try JSONDecoder().decode(NodeStatisticsFile.self, from: data) } catch {
            throw StatsFileError("\(path): not a node statistics file: \(error)")
        }
        guard f.format == format else { throw StatsFileError("\(path): format \(f.format), this giantvm reads \(format)") }
        guard f.seconds.isFinite, f.seconds >= 0, f.seconds < 1e7 else {
            throw StatsFileError("\(path): seconds \(f.seconds) is out of range")
        }
        for (name, pairs) in f.latencyValues where pairs.contains(where: { $0.count != 2 }) {
            throw StatsFileError("\(path): latencyValues.\(name): every entry must be [value, count]")
        }
        return f
    }
}

public struct StatsFileError: Error, CustomStringConvertible {
    public var description: String
    public init(_ d: String) { description = d }
}

/// A latency distribution merged from recorded (value, count) pairs of any number of histograms.
public struct LatencyDistribution: Sendable, Equatable {
    /// Distinct values, ascending, with their counts.
    public private(set) var values: [UInt64] = []
    public private(set) var counts: [UInt64] = []
    public private(set) var total: UInt64 = 0

    public init() {}
    public init(pairs: [[UInt64]]) { merge(pairs) }

    /// Adds [value, count] pairs (entries that are not pairs are ignored).
    public mutating func merge(_ pairs: [[UInt64]]) {
        var m: [UInt64: UInt64] = Dictionary(uniqueKeysWithValues: zip(values, counts))
        for p in pairs where p.count == 2 && p[1] > 0 {
            m[p[0], default: 0] &+= p[1]
            total &+= p[1]
        }
        let keys = m.keys.sorted()
        values = keys
        counts = keys.map { m[$0]! }
    }

    public mutating func merge(_ other: LatencyDistribution) {
        merge(zip(other.values, other.counts).map { [$0, $1] })
    }

    /// The smallest value v such that at least p% of the samples are <= v (nil when empty).
    public func percentile(_ p: Double) -> UInt64? {
        guard total > 0 else { return nil }
        let rank = max(1, UInt64((min(max(p, 0), 100) / 100 * Double(total)).rounded(.up)))
        var seen: UInt64 = 0
        for (v, c) in zip(values, counts) {
            seen &+= c
            if seen >= rank { return v }
        }
        return values.last
    }

    /// Points of the empirical CDF: (value, fraction of samples <= value), one per distinct value.
    public var cdf: [(value: UInt64, fraction: Double)] {
        var seen: UInt64 = 0
        return zip(values, counts).map { v, c in
            seen &+= c
            return (v, Double(seen) / Double(max(total, 1)))
        }
    }
}
