// bench dsm's report models: what each node reports (one `RESULT {json}` line), and the summary
// the launcher prints and writes as JSON (--stats-out), with its checks.

import DsmWorkloads
import Foundation
import GuestMemory
import Metrics


/// The read-miss floor (ReadMissFloor): a userfaultfd read fault plus one request/reply round
/// trip shaped like an Ivy read miss, between node 0 and `peer`, timed by the faulting thread.
public struct FloorReport: Codable, Sendable {
    /// The node at the other end of the round trip (the node the workload reads from).
    public var peer: Int
    /// True when the samples were taken between the workload's own reads; false when right
    /// after the workload (workloads without a single reader).
    public var interleaved: Bool
    public var requestBytes: Int
    public var replyBytes: Int
    public var latency: HistogramSummary
    public var p50: UInt64 { latency.p50 }
    public init(peer: Int, interleaved: Bool, requestBytes: Int = ReadMissFloor.requestBytes,
                replyBytes: Int = ReadMissFloor.replyBytes, samples: [UInt64]) {
        self.peer = peer; self.interleaved = interleaved; self.requestBytes = requestBytes; self.replyBytes = replyBytes
        latency = HistogramSummary(samples: samples)
    }
}

public struct MemoryReport: Codable, Sendable {
    public var missingEvents: UInt64, writeProtectEvents: UInt64, staleEvents: UInt64, pluginFaults: UInt64
    public init(_ s: FaultStats) {
        missingEvents = s.missingEvents
        writeProtectEvents = s.writeProtectEvents
        staleEvents = s.staleEvents
        pluginFaults = s.pluginFaults
    }
}

public struct NodeReport: Codable {
    public var node: Int
    public var result: NodeResult
    public var counters: [String: UInt64]
    public var histograms: [String: HistogramSummary]
    public var floor: FloorReport?
    public var memory: MemoryReport
    /// The coherence plugin's name (its extras are printed under its prefix).
    public var plugin: String?
    /// The standard latency histograms' recorded [value ns, count] pairs (NodeStatisticsFile),
    /// so that `giantvm ab` can merge them across nodes.
    public var latencyValues: [String: [[UInt64]]]?
    public init(node: Int, result: NodeResult, counters: [String: UInt64], histograms: [String: HistogramSummary],
                floor: FloorReport?, memory: MemoryReport, plugin: String? = nil) {
        self.node = node; self.result = result; self.counters = counters; self.histograms = histograms
        self.floor = floor; self.memory = memory; self.plugin = plugin
    }
}

public struct DsmBenchSummary {
    public var workload: String
    public var config: String
    public var nodes: Int
    public var threadsPerNode: Int
    public var mode: String
    public var cpus: Int
    public var reports: [NodeReport]
    public init(workload: String, config: String, nodes: Int, threadsPerNode: Int, mode: String, cpus: Int, reports: [NodeReport]) {
        self.workload = workload; self.config = config; self.nodes = nodes; self.threadsPerNode = threadsPerNode
        self.mode = mode; self.cpus = cpus; self.reports = reports
    }

    /// The standard statistics (giantvm_plugin.h) of one node, and of all nodes.
    func dsm(_ r: NodeReport) -> DSMStatistics { DSMStatistics(counters: r.counters, histograms: r.histograms) }
    var dsmTotal: DSMStatistics { DSMStatistics.total(reports.map(dsm)) }
    var pagesCrossed: UInt64 { dsmTotal.pagesMoved }

    public var problems: [String] {
        var p: [String] = []
        for r in reports { p += r.result.errors.map { "node \(r.node): \($0)" } }
        if reports.count == nodes && pagesCrossed == 0 {
            p.append("no page crossed between nodes: the run shared nothing")
        }
        for r in reports where r.result.operations.reduce(0, +) == 0 && workloadNeedsAll {
            p.append("node \(r.node) did no work")
        }
        return p
    }

    var workloadNeedsAll: Bool { workload == "counter" || workload == "random" }

    public var stats: [String: AnyCodable] {
        var perNode: [String: AnyCodable] = [:]
        var totals: [String: UInt64] = [:]
        for r in reports {
            perNode["node\(r.node)"] = AnyCodable(["counters": AnyCodable(r.counters), "histograms": AnyCodable(r.histograms),
                                                   "dsm": AnyCodable(dsm(r)),
                                                   "operations": AnyCodable(r.result.operations), "checks": AnyCodable(r.result.checks),
                                                   "seconds": AnyCodable(r.result.seconds),
                                                   "latency_values": AnyCodable(r.latencyValues ?? [:])])
            for (k, v) in r.counters { totals[k, default: 0] += v }
        }
        var s: [String: AnyCodable] = ["workload": AnyCodable(workload), "nodes": AnyCodable(nodes),
                                       "threads_per_node": AnyCodable(threadsPerNode), "pages_crossed": AnyCodable(pagesCrossed),
                                       "per_node": AnyCodable(perNode), "total": AnyCodable(totals), "cpus": AnyCodable(cpus)]
        if let f = reports.first(where: { $0.floor != nil })?.floor { s["floor"] = AnyCodable(f) }
        if let r = readMissRatio { s["read_miss_p50_ratio_to_floor"] = AnyCodable(r) }
        if let t = sequentialRead {
            s["sequential_read"] = AnyCodable(["pages": AnyCodable(t.pages), "passes": AnyCodable(t.passes),
                                               "nanoseconds": AnyCodable(t.nanoseconds), "pages_per_second": AnyCodable(t.pagesPerSecond),
                                               "mib_per_second": AnyCodable(t.mibPerSecond)])
        }
        if let f = falseShareRate {
            s["falseshare"] = AnyCodable(["increments": AnyCodable(f.increments), "longest_loop_ns": AnyCodable(f.longestNanoseconds),
                                          "increments_per_second": AnyCodable(f.perSecond)])
        }
        if let lit = reports.first(where: { !$0.result.litmus.isEmpty })?.result.litmus { s["litmus"] = AnyCodable(lit) }
        return s
    }

    func us(_ ns: UInt64) -> String { String(format: "%.1f", Double(ns) / 1000) }
    func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s + " " : s + String(repeating: " ", count: n - s.count) }

    /// seqread: node 0's sequential passes over the pages the last node wrote.
    public struct SequentialRead: Sendable {
        public var pages: Int, passes: Int, nanoseconds: UInt64
        public var pagesPerSecond: Double { Double(pages * passes) / max(Double(nanoseconds) / 1e9, 1e-9) }
        public var mibPerSecond: Double { pagesPerSecond * 4096 / 1048576 }
        var line: String {
            String(format: "sequential remote read by one thread (node 0): %d pages x %d passes in %.3f s = %.0f pages/s, %.1f MiB/s",
                   pages, passes, Double(nanoseconds) / 1e9, pagesPerSecond, mibPerSecond)
        }
    }

    public var sequentialRead: SequentialRead? {
        guard workload == "seqread", let r0 = reports.first(where: { $0.node == 0 }), !r0.result.latencies.isEmpty else { return nil }
        let pages = r0.result.operations.reduce(0, +) / r0.result.latencies.count
        return SequentialRead(pages: pages, passes: r0.result.latencies.count, nanoseconds: r0.result.latencies.reduce(0, +))
    }

    /// falseshare: every thread's increments over the longest thread's loop (each loop timed by
    /// its own thread from the start barrier on).
    public struct FalseShareRate: Sendable {
        public var increments: Int, longestNanoseconds: UInt64
        public var perSecond: Double { Double(increments) / max(Double(longestNanoseconds) / 1e9, 1e-9) }
        var line: String {
            String(format: "falseshare: %d increments, longest thread's loop %.3f s = %.0f increments/s (all threads)",
                   increments, Double(longestNanoseconds) / 1e9, perSecond)
        }
    }

    public var falseShareRate: FalseShareRate? {
        guard workload == "falseshare" else { return nil }
        let loops = reports.flatMap(\.result.latencies)
        guard let longest = loops.max() else { return nil }
        return FalseShareRate(increments: reports.reduce(0) { $0 + $1.result.operations.reduce(0, +) }, longestNanoseconds: longest)
    }

    /// readmiss: node 0's thread-observed read-miss p50 over the floor's p50 (same run, same way).
    public var readMissRatio: Double? {
        guard workload == "readmiss", let f = reports.first(where: { $0.floor != nil })?.floor, f.latency.count > 0,
              let r0 = reports.first(where: { $0.node == 0 }), !r0.result.latencies.isEmpty else { return nil }
        return Double(HistogramSummary(samples: r0.result.latencies).p50) / Double(max(f.p50, 1))
    }

    public func table() -> String {
        var out = "bench dsm \(workload): \(nodes) nodes x \(threadsPerNode) threads, wake mode \(mode), \(cpus) CPUs on this machine (threads unpinned), config \(config)\n"
        out += "pages crossed between nodes: \(pagesCrossed) (\(dsmTotal.pagesSentWithData) with data, \(dsmTotal.pagesSentWithoutData) without)\n"
        out += pad("node", 6) + pad("ops", 10) + pad("read_miss", 11) + pad("write_miss", 11) + pad("upgrade", 9)
            + pad("msgs", 9) + pad("bytes", 12) + "fault p50/p99 us\n"
        for r in reports.sorted(by: { $0.node < $1.node }) {
            let d = dsm(r)
            let lat = d.faultLatency
            out += pad("\(r.node)", 6) + pad("\(r.result.operations.reduce(0, +))", 10)
                + pad("\(d.readMisses)", 11) + pad("\(d.writeMisses)", 11)
                + pad("\(d.upgrades)", 9) + pad("\(d.messagesSent)", 9) + pad("\(d.bytesSent)", 12)
                + (lat.map { "\(us($0.p50)) / \(us($0.p99))" } ?? "-") + "\n"
        }
        let faults = dsmTotal.faults
        let seconds = reports.map(\.result.seconds).max() ?? 0
        if seconds > 0 {
            out += String(format: "throughput: %llu faults in %.3f s = %.0f faults/s (all nodes), %llu operations\n",
                          faults, seconds, Double(faults) / seconds,
                          UInt64(reports.reduce(0) { $0 + $1.result.operations.reduce(0, +) }))
        }
        for r in reports {
            for (k, v) in r.result.checks.sorted(by: { $0.key < $1.key }) { out += "check node \(r.node): \(k) = \(v) (exact)\n" }
        }
        if let t = sequentialRead { out += t.line + "\n" }
        if let f = falseShareRate { out += f.line + "\n" }
        if let lit = reports.first(where: { !$0.result.litmus.isEmpty })?.result.litmus {
            for (name, outcomes) in lit.sorted(by: { $0.key < $1.key }) {
                out += "litmus \(name): " + outcomes.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: ", ") + "\n"
            }
        }
        if let f = reports.first(where: { $0.floor != nil })?.floor {
            let when = f.interleaved ? "interleaved with the workload's reads" : "right after the workload"
            out += "floor (node 0 <-> node \(f.peer), \(when)): userfaultfd read fault + \(f.requestBytes) B request / "
                + "\(f.replyBytes) B reply over the transport, timed by the faulting thread: n=\(f.latency.count) "
                + "p50 \(us(f.latency.p50)) us, p90 \(us(f.latency.p90)) us, p99 \(us(f.latency.p99)) us\n"
            if let r0 = reports.first(where: { $0.node == 0 }), !r0.result.latencies.isEmpty, workload != "seqread" {
                let s = HistogramSummary(samples: r0.result.latencies)
                if workload == "readmiss" {
                    out += "read miss (node 0 reads a page the last node wrote, timed by the reading thread): n=\(s.count) "
                        + "p50 \(us(s.p50)) us, p90 \(us(s.p90)) us, p99 \(us(s.p99)) us, max \(us(s.max)) us; "
                        + String(format: "p50 ratio to floor %.2fx\n", readMissRatio ?? 0)
                } else if workload == "pingpong" {
                    out += "pingpong round (two page moves, timed by the thread): n=\(s.count) p50 \(us(s.p50)) us, "
                        + "p99 \(us(s.p99)) us (two write misses: not the floor's shape, no ratio)\n"
                }
            }
            guard let r0 = reports.first(where: { $0.node == 0 }) else { return out }
            let d0 = dsm(r0)
            // Timed by the plugin from its fault hook, not by the thread: beside the floor, never divided by it.
            func line(_ what: String, _ h: HistogramSummary?) {
                guard let h, h.count > 0 else { return }
                out += "node 0 \(what) (plugin-timed, from its fault hook): n=\(h.count) p50 \(us(h.p50)) us, p99 \(us(h.p99)) us\n"
            }
            line("plugin read_miss", d0.readMissLatency)
            line("plugin write_miss", d0.writeMissLatency)
            line("plugin upgrade", d0.upgradeLatency)
            // Then the plugin's own histograms (its extras prefix), e.g. dsm-tso's release latency.
            if let plugin = r0.plugin {
                let prefix = DSMStatistics.extrasPrefix(plugin: plugin)
                for (name, h) in r0.histograms.sorted(by: { $0.key < $1.key }) where name.hasPrefix(prefix) {
                    line("\(plugin) \(name.dropFirst(prefix.count))", h)
                }
            }
        }
        return out
    }
}

/// A tiny Codable wrapper for heterogeneous JSON.
public struct AnyCodable: Encodable {
    let encodeBody: (Encoder) throws -> Void
    public init<T: Encodable>(_ v: T) { encodeBody = { try v.encode(to: $0) } }
    public func encode(to encoder: Encoder) throws { try encodeBody(encoder) }
}

