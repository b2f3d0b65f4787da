// The report of one `giantvm ab`: the model written to DIR/report.json (every raw run, the
// configs and how they differ, the environment, the comparisons) and its text form.

import Foundation

public struct ConfigEntry: Codable, Sendable {
    /// "A", "B", "C", ...
    public var label: String
    public var path: String
    public var sha256: String?
    /// The coherence plugin it names (the usual subject of a comparison).
    public var coherence: String
}

public struct ABReport: Codable, Sendable {
    public var format = 1
    public var created: String
    public var command: [String]
    public var workload: String
    public var runsPerConfig: Int
    public var warmup: Int
    public var seed: UInt64
    public var analysis: AnalysisSettings
    public var configs: [ConfigEntry]
    /// differences[i]: config i against config 0 (differences[0] is empty).
    public var differences: [[ConfigDifference]]
    public var environment: RunEnvironment
    /// Every run in schedule order, warm-ups included (marked).
    public var runs: [RunRecord]
    public var metrics: [MetricSpec]
    /// Config 1, 2, ... each against config 0.
    public var comparisons: [ConfigComparison]

    public var labels: [String] { configs.map(\.label) }

    public func write(json path: String) throws {
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        enc.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        try enc.encode(self).write(to: URL(fileURLWithPath: path), options: .atomic)
    }

    public static func read(json path: String) throws -> ABReport {
        guard let data = FileManager.default.contents(atPath: path) else { throw ABError("\(path): cannot read") }
        let dec = JSONDecoder()
        dec.nonConformingFloatDecodingStrategy = .convertFromString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return try dec.decode(ABReport.self, from: data)
    }

    /// A number with its unit's usual precision.
    static func num(_ x: Double) -> String {
        if !x.isFinite { return "-" }
        let a = abs(x)
        if a >= 1e6 { return String(format: "%.4g", x) }
        if a >= 100 || x == x.rounded() { return String(format: "%.0f", x) }
        if a >= 1 { return String(format: "%.2f", x) }
        return String(format: "%.3g", x)
    }

    static func interval(_ i: Stats.Interval?, percent: Bool = false) -> String {
        guard let i else { return "[-]" }
        return percent ? String(format: "[%+.1f%%, %+.1f%%]", i.low * 100, i.high * 100) : "[\(num(i.low)), \(num(i.high))]"
    }

    /// The text printed at the end: what differs between the configs, then one table per
    /// comparison and its summary line.
    public func text() -> String {
        var out = "giantvm ab: workload '\(workload)', \(runsPerConfig) runs per config after \(warmup) warm-up round(s), seed \(seed)\n"
        for c in configs { out += "  \(c.label) = \(c.path) (coherence \(c.coherence))\n" }
        for (i, d) in differences.enumerated() where i > 0 {
            out += "what differs, \(configs[i].label) vs \(configs[0].label):\(d.isEmpty ? " nothing (identical fields)" : "")\n"
            for x in d { out += "  \(x.text)\n" }
        }
        for cmp in comparisons {
            let a = labels[cmp.base], b = labels[cmp.other]
            out += "\n\(b) vs \(a): median [\(Int(analysis.confidence * 100))% bootstrap CI], change of the median, "
                + "Mann-Whitney U p (Holm-adjusted over \(cmp.metrics.count) metrics)\n"
            let header = ["metric", "unit", "\(a) median", "\(a) CI", "\(b) median", "\(b) CI", "change", "change CI", "p", "p adj", "verdict"]
            var rows = [header]
            for m in cmp.metrics {
                rows.append([m.metric.name, m.metric.unit, Self.num(m.base.median), Self.interval(m.base.ci),
                             Self.num(m.other.median), Self.interval(m.other.ci),
                             m.change.map { String(format: "%+.1f%%", $0 * 100) } ?? "-", Self.interval(m.changeCI, percent: true),
                             String(format: "%.3g", m.p), String(format: "%.3g", m.pAdjusted),
                             (m.significant ? "** " : "") + m.verdict])
            }
            let widths = (0..<header.count).map { c in rows.map { $0[c].count }.max() ?? 0 }
            for r in rows {
                out += "  " + zip(r, widths).enumerated().map { i, p in
                    i == r.count - 1 ? p.0 : p.0.padding(toLength: p.1, withPad: " ", startingAt: 0)
                }.joined(separator: "  ") + "\n"
            }
            let outliers = cmp.metrics.flatMap { m in
                [(labels[cmp.base], m.base.outliers), (labels[cmp.other], m.other.outliers)].filter { !$0.1.isEmpty }.map {
                    "\(m.metric.name) \($0.0): run(s) \($0.1.map { "\($0 + 1)" }.joined(separator: ", "))"
                }
            }
            if !outliers.isEmpty {
                out += "  outliers (> 3 scaled MADs from the median; kept in every figure): " + outliers.joined(separator: "; ") + "\n"
            }
            out += "verdict: \(cmp.summary)\n"
        }
        return out
    }
}
