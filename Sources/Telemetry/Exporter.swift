// NodeExporter: one node's live metrics as Prometheus text, built with swift-prometheus.
//
// Sources, read at each scrape (nothing is added to the paths that count):
//  - every counter of the node's MetricsRegistry: the standard coherence statistics
//    (giantvm_plugin.h, `dsm.*`), interrupt and I/O forwarding (`cpu.*`, `io.*`), transport and
//    the plugin's own extras. Name `a.b_c` is exported as `giantvm_a_b_c_total`;
//  - every histogram of the registry (nanoseconds), e.g. the fault latencies `dsm.fault_latency*`,
//    as `giantvm_<name>_seconds`, from the exporter's start on: at each scrape the samples the
//    registry recorded since the last one (`MetricsRegistry.recordedValues`, at its 3-digit
//    resolution) are added to the Prometheus histogram; recording a sample costs nothing more;
//  - guest memory's own fault counters (`memory.*`, from the `memoryCounters` closure);
//  - the hottest pages: gauge `giantvm_page_faults{gfn="0x…"}` for the `hotPages` pages with the
//    most faults (GuestMemory.hottestPages), replaced at each scrape.
// Every series carries the label node="<id>".

import Foundation
import Metrics
import Prometheus
import Synchronization

public final class NodeExporter: @unchecked Sendable {
    /// Upper bounds of the latency histograms' buckets: 1 µs to 1 s.
    public static let latencyBuckets: [Duration] = [
        .microseconds(1), .microseconds(2), .microseconds(5), .microseconds(10), .microseconds(20), .microseconds(50),
        .microseconds(100), .microseconds(200), .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5),
        .milliseconds(10), .milliseconds(50), .milliseconds(100), .seconds(1),
    ]

    public let nodeID: UInt32
    let metrics: MetricsRegistry
    let memoryCounters: (@Sendable () -> [String: UInt64])?
    let hottest: (@Sendable (Int) -> [(gfn: UInt64, faults: UInt64)])?
    let hotPages: Int
    let labels: [(String, String)]
    let prometheus = PrometheusCollectorRegistry()

    private struct State {
        /// Per exported counter name: the Prometheus counter and the value it has been given.
        var counters: [String: (counter: Counter, value: UInt64)] = [:]
        /// Registry names already exported under some Prometheus name (collisions are skipped).
        var exportedAs: [String: String] = [:]
        /// Per registry histogram: the Prometheus histogram and the (value -> count) fed to it.
        var histograms: [String: (histogram: DurationHistogram, fed: [UInt64: UInt64])] = [:]
        var pageGauges: [UInt64: Gauge] = [:]
    }
    private let state = Mutex(State())

    /// `memoryCounters`: extra counters by name (guest memory's fault path); `hottest(n)`: the n
    /// most-faulted pages; `hotPages`: how many to export.
    public init(nodeID: UInt32, metrics: MetricsRegistry, hotPages: Int = 10,
                memoryCounters: (@Sendable () -> [String: UInt64])? = nil,
                hottest: (@Sendable (Int) -> [(gfn: UInt64, faults: UInt64)])? = nil) {
        self.nodeID = nodeID
        self.metrics = metrics
        self.hotPages = max(0, hotPages)
        self.memoryCounters = memoryCounters
        self.hottest = hottest
        labels = [("node", String(nodeID))]
        // Samples recorded before the exporter started are not exported: they count as fed.
        syncHistograms(baseline: true)
    }

    /// The Prometheus name of a registry name: `giantvm_` + the name with every character outside
    /// [A-Za-z0-9_] as `_`, + suffix.
    public static func exportName(_ name: String, suffix: String) -> String {
        let body = String(name.unicodeScalars.map { s -> Character in
            (("0"..."9").contains(s) || ("a"..."z").contains(s) || ("A"..."Z").contains(s) || s == "_") ? Character(s) : "_"
        })
        return "giantvm_" + body + suffix
    }

    /// Adds to each Prometheus histogram the registry's samples not yet fed to it (or, with
    /// `baseline`, only records what exists as already fed). Histograms appearing later start
    /// from zero.
    private func syncHistograms(baseline: Bool = false) {
        for name in metrics.histogramNames {
            guard let values = metrics.recordedValues(name) else { continue }
            var entry = state.withLock { $0.histograms[name] }
            if entry == nil {
                let promName = Self.exportName(name, suffix: "_seconds")
                guard claim(promName, for: name) else { continue }
                entry = (prometheus.makeDurationHistogram(name: promName, labels: labels, buckets: Self.latencyBuckets,
                                                          help: "\(name) (latency; samples since the exporter started)"), [:])
            }
            guard var (histogram, fed) = entry else { continue }
            for (value, count) in values where count > fed[value, default: 0] {
                if !baseline {
                    for _ in 0..<(count - fed[value, default: 0]) { histogram.record(.nanoseconds(Int64(clamping: value))) }
                }
                fed[value] = count
            }
            state.withLock { $0.histograms[name] = (histogram, fed) }
        }
    }

    /// True if `promName` is free or already `name`'s.
    private func claim(_ promName: String, for name: String) -> Bool {
        state.withLock { s in
            if let owner = s.exportedAs[promName] { return owner == name }
            s.exportedAs[promName] = name
            return true
        }
    }

    private func syncCounter(_ name: String, _ value: UInt64) {
        let promName = Self.exportName(name, suffix: "_total")
        guard claim(promName, for: name) else { return }
        let existing = state.withLock { $0.counters[promName] }
        let entry = existing ?? (prometheus.makeCounter(name: promName, labels: labels, help: name), 0)
        // Counters only grow; a smaller value (never expected) is left as it was.
        if value > entry.value { entry.counter.increment(by: Int64(clamping: value - entry.value)) }
        state.withLock { $0.counters[promName] = (entry.counter, max(value, entry.value)) }
    }

    private func syncHotPages() {
        guard let hottest, hotPages > 0 else { return }
        let top = hottest(hotPages)
        let keep = Set(top.map(\.gfn))
        let stale = state.withLock { s -> [Gauge] in
            let gone = s.pageGauges.filter { !keep.contains($0.key) }
            for g in gone.keys { s.pageGauges[g] = nil }
            return Array(gone.values)
        }
        for g in stale { prometheus.unregisterGauge(g) }
        for p in top {
            let gauge = state.withLock { $0.pageGauges[p.gfn] } ?? prometheus.makeGauge(
                name: "giantvm_page_faults", labels: labels + [("gfn", "0x" + String(p.gfn, radix: 16))],
                help: "faults handed to the coherence plugin for this guest page (the node's most-faulted pages)")
            gauge.set(Double(p.faults))
            state.withLock { $0.pageGauges[p.gfn] = gauge }
        }
    }

    /// The current metrics as Prometheus text (format 0.0.4). Scrapes are serialized.
    public func render() -> String {
        scrapeLock.withLock { _ in
            syncHistograms()
            let snap = metrics.snapshot()
            for (name, value) in snap.counters { syncCounter(name, value) }
            if let memoryCounters { for (name, value) in memoryCounters() { syncCounter(name, value) } }
            syncHotPages()
            return prometheus.emitToString()
        }
    }
    private let scrapeLock = Mutex(())
}
