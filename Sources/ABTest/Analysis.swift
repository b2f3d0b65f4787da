// The comparison of every config against the first (the baseline), metric by metric: medians with
// bootstrap intervals, the relative change with its interval, the Mann-Whitney p-value (and its
// Holm adjustment over all the metrics of one comparison), outliers, and a verdict. A difference
// is called real only when both hold: the adjusted p is below alpha AND the median changed by more
// than the noise threshold; identical samples therefore never produce a winner (p = 1).

import Foundation

/// One config's values of one metric.
public struct ArmSummary: Codable, Sendable {
    public var n: Int
    public var median: Double
    public var ci: Stats.Interval?
    /// Median absolute deviation (unscaled).
    public var mad: Double
    /// Schedule indices (RunRecord.index) of the runs more than 3 scaled MADs from the median:
    /// reported, never dropped.
    public var outliers: [Int]
}

public struct MetricComparison: Codable, Sendable {
    public var metric: MetricSpec
    public var base: ArmSummary
    public var other: ArmSummary
    /// median(other) / median(base) - 1; nil when the base median is 0 and the other's is not.
    public var change: Double?
    public var changeCI: Stats.Interval?
    public var u: Double
    public var p: Double
    /// p after Holm's correction over every metric of this comparison.
    public var pAdjusted: Double
    public var method: String
    /// Adjusted p < alpha and |change| > threshold.
    public var significant: Bool
    public var verdict: String
}

public struct ConfigComparison: Codable, Sendable {
    public var base: Int
    public var other: Int
    public var metrics: [MetricComparison]
    /// One line: which metrics changed for real, or that none did.
    public var summary: String
}

public struct AnalysisSettings: Codable, Sendable {
    /// Significance level of the adjusted p-values.
    public var alpha: Double = 0.05
    /// Smallest |relative change| called real (0.05 = 5 %).
    public var threshold: Double = 0.05
    public var confidence: Double = 0.95
    public var resamples: Int = 2000
    public var seed: UInt64 = 1
    public init() {}
}

public enum Analysis {
    /// The metrics in report order: the workload's own first, then the standard ones; only
    /// metrics some measured run has.
    public static func metrics(of runs: [RunRecord]) -> [MetricSpec] {
        let names = Set(runs.filter { !$0.warmup }.flatMap { $0.metrics.keys })
        let standard = RunMetrics.standard.filter { names.contains($0.name) }
        let own = names.subtracting(RunMetrics.standard.map(\.name)).sorted().map(RunMetrics.workloadSpec)
        return own + standard
    }

    public static func summarize(_ values: [(index: Int, value: Double)], settings: AnalysisSettings,
                                 rng: inout SeededGenerator) -> ArmSummary {
        let xs = values.map(\.value)
        return ArmSummary(n: xs.count, median: Stats.median(xs) ?? .nan,
                          ci: Stats.bootstrapMedianCI(xs, level: settings.confidence, resamples: settings.resamples, rng: &rng),
                          mad: Stats.mad(xs) ?? .nan, outliers: Stats.outliers(xs).map { values[$0].index })
    }

    /// Compares config `other` with config `base` on every metric both have measured (at least
    /// one run each).
    public static func compare(base: Int, other: Int, runs: [RunRecord], labels: [String],
                               settings: AnalysisSettings) -> ConfigComparison {
        var rng = SeededGenerator(seed: settings.seed &+ UInt64(other) &* 0x1000_0000_01B3)
        var rows: [MetricComparison] = []
        for spec in metrics(of: runs) {
            func values(_ c: Int) -> [(index: Int, value: Double)] {
                runs.filter { $0.config == c && !$0.warmup }.compactMap { r in r.metrics[spec.name].map { (r.index, $0) } }
            }
            let a = values(base), b = values(other)
            guard !a.isEmpty, !b.isEmpty, let mw = Stats.mannWhitney(b.map(\.value), a.map(\.value)) else { continue }
            rows.append(MetricComparison(
                metric: spec, base: summarize(a, settings: settings, rng: &rng), other: summarize(b, settings: settings, rng: &rng),
                change: Stats.relativeChange(base: a.map(\.value), other: b.map(\.value)),
                changeCI: Stats.bootstrapChangeCI(base: a.map(\.value), other: b.map(\.value), level: settings.confidence,
                                                  resamples: settings.resamples, rng: &rng),
                u: mw.u, p: mw.p, pAdjusted: mw.p, method: mw.method, significant: false, verdict: ""))
        }
        let adjusted = Stats.holm(rows.map(\.p))
        let name = labels.indices.contains(other) ? labels[other] : "\(other)"
        for i in rows.indices {
            rows[i].pAdjusted = adjusted[i]
            (rows[i].significant, rows[i].verdict) = verdict(rows[i], label: name, settings: settings)
        }
        let real = rows.filter(\.significant)
        let summary = real.isEmpty
            ? "\(name) vs \(labels.first ?? "A"): no significant difference on any of \(rows.count) metrics"
                + " (Holm-adjusted p < \(fmt(settings.alpha)) and |change| > \(pct(settings.threshold)) required)"
            : "\(name) vs \(labels.first ?? "A"): " + real.map { "\($0.metric.name) \($0.verdict)" }.joined(separator: "; ")
        return ConfigComparison(base: base, other: other, metrics: rows, summary: summary)
    }

    /// (significant, text) for one metric.
    static func verdict(_ m: MetricComparison, label: String, settings: AnalysisSettings) -> (Bool, String) {
        let pSignificant = m.pAdjusted < settings.alpha
        guard pSignificant else { return (false, "no significant difference") }
        let up = m.other.median > m.base.median
        let better = (up && m.metric.better == .higher) || (!up && m.metric.better == .lower)
        guard let change = m.change else {
            return (true, "\(label) \(better ? "better" : "worse"): \(up ? "higher" : "lower") than a baseline of 0")
        }
        guard abs(change) > settings.threshold else {
            return (false, "significant, but |change| \(pct(abs(change))) is within the noise threshold \(pct(settings.threshold))")
        }
        return (true, "\(label) \(better ? "better" : "worse") (\(signedPct(change)))")
    }

    static func fmt(_ x: Double) -> String { String(format: "%g", x) }
    static func pct(_ x: Double) -> String { String(format: "%.1f%%", x * 100) }
    static func signedPct(_ x: Double) -> String { String(format: "%+.1f%%", x * 100) }
}
