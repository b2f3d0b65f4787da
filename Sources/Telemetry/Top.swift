// `giantvm top`: every node's live metrics, scraped once per interval, shown as rates.
//
//   node  endpoint             read/s  write/s  upgr/s  stale/s  pages/s  inv/s  tx KiB/s  rx KiB/s  p50 µs  p99 µs
//   0     127.0.0.1:9400         1520      880     120        3     2410     90    9650.2    9700.1    ≤50    ≤200
// then the hottest pages of each node: gfn, faults per second over the interval, total faults.

import Config
import Foundation

/// One scrape of one node.
public struct NodeScrape: Sendable {
    public var node: UInt32
    public var endpoint: String
    /// Monotonic seconds when the answer came.
    public var time: Double
    public var samples: [PrometheusSample]
    /// Why there are no samples (unreachable, bad answer).
    public var error: String?

    public init(node: UInt32, endpoint: String, time: Double, samples: [PrometheusSample], error: String? = nil) {
        self.node = node; self.endpoint = endpoint; self.time = time; self.samples = samples; self.error = error
    }

    /// The sum of every sample named `name` whose labels include `match`.
    public func value(_ name: String, _ match: [String: String] = [:]) -> Double {
        samples.filter { s in s.name == name && match.allSatisfy { k, v in s.labels[k] == v } }.reduce(0) { $0 + $1.value }
    }

    /// gfn label -> faults, from giantvm_page_faults.
    public var hotPages: [String: Double] {
        var out: [String: Double] = [:]
        for s in samples where s.name == "giantvm_page_faults" { if let g = s.labels["gfn"] { out[g] = s.value } }
        return out
    }

    /// Cumulative bucket counts of a histogram, by upper bound (seconds).
    public func buckets(_ histogram: String) -> [(le: Double, count: Double)] {
        samples.filter { $0.name == histogram + "_bucket" }.compactMap { s in
            guard let le = s.labels["le"], let v = le == "+Inf" ? Double.infinity : Double(le) else { return nil }
            return (v, s.value)
        }.sorted { $0.le < $1.le }
    }
}

/// Rates of one node between two scrapes.
public struct NodeRates: Sendable {
    public var readMiss = 0.0, writeMiss = 0.0, upgrade = 0.0, stale = 0.0, coalesced = 0.0
    public var pagesSent = 0.0, invalidations = 0.0, txBytes = 0.0, rxBytes = 0.0
    /// Upper bounds (µs) of the buckets holding the 50th and 99th percentile fault latency over
    /// the interval (nil: no fault).
    public var p50Micros: Double?, p99Micros: Double?
    /// Hottest pages now: gfn, faults per second over the interval, faults in all.
    public var hot: [(gfn: String, rate: Double, total: Double)] = []

    public init(previous p: NodeScrape, current c: NodeScrape) {
        let dt = max(c.time - p.time, 1e-3)
        func rate(_ name: String) -> Double { max(0, c.value(name) - p.value(name)) / dt }
        readMiss = rate("giantvm_dsm_fault_read_miss_total")
        writeMiss = rate("giantvm_dsm_fault_write_miss_total")
        upgrade = rate("giantvm_dsm_fault_upgrade_total")
        stale = rate("giantvm_dsm_fault_stale_total")
        coalesced = rate("giantvm_dsm_fault_coalesced_total")
        pagesSent = rate("giantvm_dsm_page_sent_data_total") + rate("giantvm_dsm_page_sent_nodata_total")
        invalidations = rate("giantvm_dsm_inv_sent_total")
        txBytes = rate("giantvm_dsm_bytes_sent_total")
        rxBytes = rate("giantvm_dsm_bytes_received_total")
        let now = c.buckets("giantvm_dsm_fault_latency_seconds"), before = Dictionary(p.buckets("giantvm_dsm_fault_latency_seconds").map { ($0.le, $0.count) }) { a, _ in a }
        let delta = now.map { ($0.le, max(0, $0.count - (before[$0.le] ?? 0))) }
        if let total = delta.last?.1, total > 0 {
            func quantile(_ q: Double) -> Double? { delta.first { $0.1 >= q * total }.map { $0.0 * 1e6 } }
            p50Micros = quantile(0.5)
            p99Micros = quantile(0.99)
        }
        let old = p.hotPages
        hot = c.hotPages.map { (gfn: $0.key, rate: max(0, $0.value - (old[$0.key] ?? 0)) / dt, total: $0.value) }
            .sorted { ($0.rate, $0.total) > ($1.rate, $1.total) }
    }
}

/// Scrapes every node of a config and renders the screen.
public final class TopSession {
    public let config: ClusterConfig
    public let metrics: MetricsConfig
    public var hotRows: Int
    private var previous: [UInt32: NodeScrape] = [:]

    public init(config: ClusterConfig, hotRows: Int = 5) throws {
        guard let m = config.metrics else {
            throw HTTPGetError(description: "\(config.sourcePath): metrics: not set, so the nodes serve no live metrics "
                               + "(add e.g. metrics: {address: 127.0.0.1, port: 9400})")
        }
        self.config = config
        metrics = m
        self.hotRows = max(0, hotRows)
    }

    /// One scrape of every node (in turn, each bounded by `timeout`).
    public func scrape(timeout: Double = 0.5) -> [NodeScrape] {
        config.nodes.map { n in
            let (host, port) = metrics.endpoint(of: n)
            let endpoint = "\(host):\(port)"
            do {
                let r = try HTTPGet.get(host: host, port: port, timeout: timeout)
                let t = Double(DispatchTime.now().uptimeNanoseconds) / 1e9
                guard r.status == 200 else { return NodeScrape(node: n.id, endpoint: endpoint, time: t, samples: [], error: "HTTP \(r.status)") }
                return NodeScrape(node: n.id, endpoint: endpoint, time: t, samples: PrometheusText.parse(r.body))
            } catch {
                return NodeScrape(node: n.id, endpoint: endpoint, time: Double(DispatchTime.now().uptimeNanoseconds) / 1e9,
                                  samples: [], error: "\(error)")
            }
        }
    }

    /// Scrapes and renders one screen (rates against the previous call's scrape).
    public func frame(timeout: Double = 0.5, clock: String = "") -> String {
        let now = scrape(timeout: timeout)
        defer { for s in now where s.error == nil { previous[s.node] = s } }
        return Self.render(cluster: config.cluster, previous: previous, current: now, hotRows: hotRows, clock: clock)
    }

    static func pad(_ s: String, _ w: Int, right: Bool = true) -> String {
        s.count >= w ? s : (right ? String(repeating: " ", count: w - s.count) + s : s + String(repeating: " ", count: w - s.count))
    }

    /// The screen for `current` against `previous` (by node id).
    public static func render(cluster: String, previous: [UInt32: NodeScrape], current: [NodeScrape], hotRows: Int, clock: String = "") -> String {
        var lines = ["giantvm top: cluster \(cluster), \(current.count) node\(current.count == 1 ? "" : "s")  \(clock)".trimmingCharacters(in: .whitespaces), ""]
        let head = [pad("node", 5, right: false), pad("endpoint", 22, right: false), pad("read/s", 9), pad("write/s", 9), pad("upgr/s", 9),
                    pad("stale/s", 8), pad("coal/s", 8), pad("pages/s", 9), pad("inv/s", 8), pad("tx KiB/s", 10), pad("rx KiB/s", 10),
                    pad("p50 µs", 8), pad("p99 µs", 8)]
        lines.append(head.joined(separator: " "))
        var hotLines: [String] = []
        for c in current {
            let prefix = pad(String(c.node), 5, right: false) + " " + pad(c.endpoint, 22, right: false) + " "
            if let e = c.error { lines.append(prefix + "unreachable: \(e)"); continue }
            guard let p = previous[c.node] else { lines.append(prefix + "(first sample; rates from the next refresh)"); continue }
            let r = NodeRates(previous: p, current: c)
            func f(_ v: Double, _ w: Int) -> String { pad(String(format: "%.0f", v), w) }
            func k(_ v: Double) -> String { pad(String(format: "%.1f", v / 1024), 10) }
            func us(_ v: Double?) -> String { pad(v.map { $0.isInfinite ? ">1e6" : "≤" + String(format: "%.0f", $0) } ?? "-", 8) }
            lines.append(prefix + [f(r.readMiss, 9), f(r.writeMiss, 9), f(r.upgrade, 9), f(r.stale, 8), f(r.coalesced, 8),
                                   f(r.pagesSent, 9), f(r.invalidations, 8), k(r.txBytes), k(r.rxBytes), us(r.p50Micros), us(r.p99Micros)].joined(separator: " "))
            if hotRows > 0 {
                let words = r.hot.prefix(hotRows).map { "\($0.gfn) \(String(format: "%.0f", $0.rate))/s (\(String(format: "%.0f", $0.total)))" }
                hotLines.append("node \(c.node) hottest: " + (words.isEmpty ? "-" : words.joined(separator: "  ")))
            }
        }
        if !hotLines.isEmpty { lines += ["", "hottest pages (gfn faults/s (faults in all)):"] + hotLines }
        return lines.joined(separator: "\n") + "\n"
    }
}
