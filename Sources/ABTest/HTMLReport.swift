// DIR/report.html: one self-contained page (inline CSS and SVG drawn here; no script, no font, no
// network), readable offline: the verdicts, what differs between the configs, one distribution
// chart per metric (every run a dot, the quartile box, the median and its bootstrap interval,
// outliers ringed) and the fault-latency CDFs of every config (all measured runs' histograms merged).

import Foundation
import Metrics

public enum HTMLReport {
    static let palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]
    static func color(_ i: Int) -> String { palette[i % palette.count] }

    static func esc(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }
    static func f(_ x: Double) -> String { String(format: "%.1f", x) }

    /// Round tick values covering lo...hi (about `count` of them).
    static func ticks(_ lo: Double, _ hi: Double, count: Int = 5) -> [Double] {
        let span = hi - lo
        guard span > 0, span.isFinite else { return [lo] }
        let raw = span / Double(count)
        let mag = pow(10, (log10(raw)).rounded(.down))
        let step = [1.0, 2, 5, 10].map { $0 * mag }.first { $0 >= raw } ?? raw
        var t = (lo / step).rounded(.up) * step
        var out: [Double] = []
        while t <= hi + step * 1e-9 { out.append(abs(t) < step * 1e-9 ? 0 : t); t += step }
        return out
    }

    /// One metric: a row per config.
    static func distribution(_ report: ABReport, _ spec: MetricSpec) -> String {
        let rows = report.configs.indices.map { c in
            report.runs.filter { $0.config == c && !$0.warmup }.compactMap { r in r.metrics[spec.name].map { (r.index, $0) } }
        }
        let all = rows.flatMap { $0.map(\.1) }
        guard var lo = all.min(), var hi = all.max() else { return "" }
        if lo == hi { let d = lo == 0 ? 1 : abs(lo) * 0.05; lo -= d; hi += d }
        let pad = (hi - lo) * 0.05
        lo -= pad; hi += pad
        let left = 50.0, right = 20.0, width = 660.0, rowH = 40.0, top = 10.0
        let height = top + rowH * Double(rows.count) + 34
        func x(_ v: Double) -> Double { left + (v - lo) / (hi - lo) * (width - left - right) }
        var s = "<svg class=\"chart distribution\" data-metric=\"\(esc(spec.name))\" xmlns=\"http://www.w3.org/2000/svg\" "
            + "width=\"\(f(width))\" height=\"\(f(height))\" viewBox=\"0 0 \(f(width)) \(f(height))\" role=\"img\">"
        s += "<title>\(esc(spec.name)) (\(esc(spec.unit))) per run</title>"
        let axisY = top + rowH * Double(rows.count) + 4
        s += "<line x1=\"\(f(left))\" y1=\"\(f(axisY))\" x2=\"\(f(width - right))\" y2=\"\(f(axisY))\" stroke=\"#444\"/>"
        for t in ticks(lo, hi) {
            s += "<line x1=\"\(f(x(t)))\" y1=\"\(f(top))\" x2=\"\(f(x(t)))\" y2=\"\(f(axisY + 4))\" stroke=\"#ddd\"/>"
            s += "<text x=\"\(f(x(t)))\" y=\"\(f(axisY + 16))\" text-anchor=\"middle\">\(ABReport.num(t))</text>"
        }
        s += "<text x=\"\(f(width - right))\" y=\"\(f(axisY + 30))\" text-anchor=\"end\">\(esc(spec.unit)) "
            + "(\(spec.better == .higher ? "higher" : "lower") is better)</text>"
        let cmp = report.comparisons
        for (c, row) in rows.enumerated() {
            let yMid = top + rowH * (Double(c) + 0.5)
            s += "<text x=\"8\" y=\"\(f(yMid + 4))\" font-weight=\"bold\" fill=\"\(color(c))\">\(esc(report.labels[c]))</text>"
            let xs = row.map(\.1).sorted()
            guard !xs.isEmpty else { continue }
            let q1 = Stats.quantile(sorted: xs, 0.25), q3 = Stats.quantile(sorted: xs, 0.75), med = Stats.median(xs)!
            s += "<rect class=\"box\" x=\"\(f(x(q1)))\" y=\"\(f(yMid - 11))\" width=\"\(f(max(x(q3) - x(q1), 1)))\" height=\"22\" "
                + "fill=\"\(color(c))\" fill-opacity=\"0.12\" stroke=\"\(color(c))\"/>"
            let summary = c == 0 ? cmp.first?.metrics.first { $0.metric.name == spec.name }?.base
                : cmp.first { $0.other == c }?.metrics.first { $0.metric.name == spec.name }?.other
            if let ci = summary?.ci {
                s += "<line class=\"ci\" x1=\"\(f(x(ci.low)))\" y1=\"\(f(yMid + 15))\" x2=\"\(f(x(ci.high)))\" y2=\"\(f(yMid + 15))\" "
                    + "stroke=\"\(color(c))\" stroke-width=\"3\"/>"
            }
            s += "<line class=\"median\" x1=\"\(f(x(med)))\" y1=\"\(f(yMid - 14))\" x2=\"\(f(x(med)))\" y2=\"\(f(yMid + 14))\" "
                + "stroke=\"\(color(c))\" stroke-width=\"3\"/>"
            let outliers = Set(summary?.outliers ?? [])
            for (k, (index, v)) in row.enumerated() {
                let jitter = Double((k * 7) % 9 - 4) * 1.6
                let ring = outliers.contains(index) ? " stroke=\"#000\" stroke-width=\"1.5\"" : ""
                s += "<circle class=\"run\" cx=\"\(f(x(v)))\" cy=\"\(f(yMid + jitter))\" r=\"3.5\" fill=\"\(color(c))\" "
                    + "fill-opacity=\"0.7\"\(ring)><title>run \(index + 1): \(ABReport.num(v))</title></circle>"
            }
        }
        return s + "</svg>"
    }

    /// The fault-latency CDF of every config (log x axis, µs).
    static func latencyCDF(_ report: ABReport) -> String {
        let dists = report.configs.indices.map { c -> LatencyDistribution in
            var d = LatencyDistribution()
            for r in report.runs where r.config == c && !r.warmup { d.merge(r.faultLatency) }
            return d
        }
        let values = dists.flatMap(\.values).filter { $0 > 0 }
        guard let vmin = values.min(), let vmax = values.max() else { return "" }
        let lo = log10(Double(vmin) / 1000 * 0.9), hi = log10(max(Double(vmax) / 1000 * 1.1, Double(vmin) / 1000 * 2))
        let left = 50.0, right = 20.0, width = 660.0, height = 300.0, top = 10.0, bottom = 40.0
        func x(_ ns: UInt64) -> Double { left + (log10(max(Double(ns), 1) / 1000) - lo) / (hi - lo) * (width - left - right) }
        func y(_ p: Double) -> Double { top + (1 - p) * (height - top - bottom) }
        var s = "<svg class=\"chart cdf\" data-metric=\"dsm.fault_latency\" xmlns=\"http://www.w3.org/2000/svg\" width=\"\(f(width))\" "
            + "height=\"\(f(height))\" viewBox=\"0 0 \(f(width)) \(f(height))\" role=\"img\"><title>fault latency CDF</title>"
        s += "<line x1=\"\(f(left))\" y1=\"\(f(y(0)))\" x2=\"\(f(width - right))\" y2=\"\(f(y(0)))\" stroke=\"#444\"/>"
        s += "<line x1=\"\(f(left))\" y1=\"\(f(y(0)))\" x2=\"\(f(left))\" y2=\"\(f(y(1)))\" stroke=\"#444\"/>"
        for p in [0.0, 0.25, 0.5, 0.75, 0.9, 1.0] {
            s += "<line x1=\"\(f(left))\" y1=\"\(f(y(p)))\" x2=\"\(f(width - right))\" y2=\"\(f(y(p)))\" stroke=\"#eee\"/>"
            s += "<text x=\"\(f(left - 4))\" y=\"\(f(y(p) + 4))\" text-anchor=\"end\">\(String(format: "%g", p))</text>"
        }
        var decade = lo.rounded(.up)
        while decade <= hi {
            let xv = left + (decade - lo) / (hi - lo) * (width - left - right)
            s += "<line x1=\"\(f(xv))\" y1=\"\(f(y(0)))\" x2=\"\(f(xv))\" y2=\"\(f(y(1)))\" stroke=\"#eee\"/>"
            s += "<text x=\"\(f(xv))\" y=\"\(f(y(0) + 16))\" text-anchor=\"middle\">\(ABReport.num(pow(10, decade)))</text>"
            decade += 1
        }
        s += "<text x=\"\(f(width - right))\" y=\"\(f(height - 6))\" text-anchor=\"end\">fault latency, µs (log scale); "
            + "y: fraction of faults at or below</text>"
        for (c, d) in dists.enumerated() where d.total > 0 {
            var pts = "\(f(x(d.values[0]))),\(f(y(0)))"
            var last = 0.0
            for p in d.cdf {
                pts += " \(f(x(p.value))),\(f(y(last))) \(f(x(p.value))),\(f(y(p.fraction)))"
                last = p.fraction
            }
            s += "<polyline class=\"cdf-line\" fill=\"none\" stroke=\"\(color(c))\" stroke-width=\"2\" points=\"\(pts)\">"
                + "<title>\(esc(report.labels[c])): \(d.total) faults</title></polyline>"
            s += "<text x=\"\(f(width - right - 10 - Double(dists.count - c - 1) * 130))\" y=\"\(f(y(0.5)))\" text-anchor=\"end\" fill=\"\(color(c))\" font-weight=\"bold\">"
                + "\(esc(report.labels[c])) (\(d.total) faults)</text>"
        }
        return s + "</svg>"
    }

    public static func render(_ report: ABReport) -> String {
        var h = "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>giantvm ab: \(esc(report.workload))</title>"
        h += "<style>body{font:14px sans-serif;margin:24px;max-width:1100px;color:#222}table{border-collapse:collapse;margin:8px 0}"
            + "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}td:first-child,th:first-child{text-align:left}"
            + ".sig{background:#fff3c4;font-weight:bold}svg text{font:11px sans-serif}code{background:#f4f4f4}"
            + "section{margin:18px 0}h2{border-bottom:1px solid #ddd}</style></head><body>"
        h += "<h1>giantvm ab: <code>\(esc(report.workload))</code></h1>"
        h += "<p>\(report.runsPerConfig) runs per config after \(report.warmup) warm-up round(s), interleaved in a seeded random order "
            + "(seed \(report.seed)); created \(esc(report.created)).</p><ul>"
        for c in report.configs {
            h += "<li><b style=\"color:\(color(report.labels.firstIndex(of: c.label) ?? 0))\">\(esc(c.label))</b> = "
                + "<code>\(esc(c.path))</code> (coherence \(esc(c.coherence)))</li>"
        }
        h += "</ul><section id=\"verdict\"><h2>Verdict</h2>"
        for cmp in report.comparisons { h += "<p>\(esc(cmp.summary))</p>" }
        h += "<p>A difference is called real only when the Mann-Whitney U p-value, Holm-adjusted over every metric of the "
            + "comparison, is below \(report.analysis.alpha) and the median changed by more than "
            + "\(String(format: "%.1f%%", report.analysis.threshold * 100)). Intervals: \(Int(report.analysis.confidence * 100))% "
            + "percentile bootstrap (\(report.analysis.resamples) resamples).</p></section>"
        h += "<section id=\"diff\"><h2>What differs</h2>"
        for (i, d) in report.differences.enumerated() where i > 0 {
            h += "<p>\(esc(report.labels[i])) vs \(esc(report.labels[0])):\(d.isEmpty ? " nothing" : "")</p>"
            if !d.isEmpty {
                h += "<table><tr><th>field</th><th>\(esc(report.labels[0]))</th><th>\(esc(report.labels[i]))</th></tr>"
                for x in d { h += "<tr><td>\(esc(x.path))</td><td>\(esc(x.base ?? "(absent)"))</td><td>\(esc(x.other ?? "(absent)"))</td></tr>" }
                h += "</table>"
            }
        }
        h += "</section>"
        for cmp in report.comparisons {
            let a = report.labels[cmp.base], b = report.labels[cmp.other]
            h += "<section class=\"comparison\"><h2>\(esc(b)) vs \(esc(a))</h2><table><tr><th>metric</th><th>unit</th>"
                + "<th>\(esc(a)) median [CI]</th><th>\(esc(b)) median [CI]</th><th>change [CI]</th><th>p</th><th>p adj.</th><th>verdict</th></tr>"
            for m in cmp.metrics {
                h += "<tr\(m.significant ? " class=\"sig\"" : "")><td>\(esc(m.metric.name))</td><td>\(esc(m.metric.unit))</td>"
                    + "<td>\(ABReport.num(m.base.median)) \(ABReport.interval(m.base.ci))</td>"
                    + "<td>\(ABReport.num(m.other.median)) \(ABReport.interval(m.other.ci))</td>"
                    + "<td>\(m.change.map { String(format: "%+.1f%%", $0 * 100) } ?? "-") \(ABReport.interval(m.changeCI, percent: true))</td>"
                    + "<td>\(String(format: "%.3g", m.p))</td><td>\(String(format: "%.3g", m.pAdjusted))</td><td>\(esc(m.verdict))</td></tr>"
            }
            h += "</table></section>"
        }
        let cdf = latencyCDF(report)
        if !cdf.isEmpty { h += "<section id=\"latency\"><h2>Fault latency CDF</h2>\(cdf)</section>" }
        h += "<section id=\"distributions\"><h2>Distributions</h2><p>Every dot is one run; box: quartiles; thick line: median; "
            + "bar below: its bootstrap interval; ringed: outlier (&gt; 3 scaled MADs from the median, kept).</p>"
        for m in report.metrics { h += "<h3>\(esc(m.name))</h3>" + distribution(report, m) }
        h += "</section><section id=\"environment\"><h2>Environment</h2><table>"
        let e = report.environment
        h += "<tr><td>commit</td><td>\(esc(e.gitCommit ?? "(not a git checkout)"))\(e.gitDirty == true ? " (uncommitted changes)" : "")</td></tr>"
        h += "<tr><td>giantvm</td><td>\(esc(e.giantvm.path)) \(esc(e.giantvm.sha256 ?? "?"))</td></tr>"
        for (i, ps) in e.plugins.enumerated() {
            for p in ps { h += "<tr><td>\(esc(report.labels[i])): \(esc(p.name))</td><td>\(esc(p.path)) \(esc(p.sha256 ?? "?"))</td></tr>" }
        }
        h += "<tr><td>kernel</td><td>\(esc(e.kernel)) \(esc(e.machine))</td></tr><tr><td>CPUs</td><td>\(e.cpus)</td></tr>"
        h += "</table></section></body></html>\n"
        return h
    }
}
