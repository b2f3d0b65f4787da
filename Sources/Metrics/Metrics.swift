// Metrics: named counters and latency histograms shared by the host and its plugins (plugins reach
// them through gvm_host_services.counter/histogram). Thread-safe: counters are atomics, histograms
// take a short lock per record.

import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Histogram
import Synchronization

/// CLOCK_MONOTONIC in nanoseconds: the one clock every latency, timeout and deadline in the host
/// is measured with.
@inlinable
public func monotonicNanoseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

/// Percentiles of one latency histogram, in nanoseconds.
public struct HistogramSummary: Codable, Sendable, Equatable {
    public var count: UInt64
    public var min: UInt64
    public var p50: UInt64
    public var p90: UInt64
    public var p99: UInt64
    public var max: UInt64
    public var mean: Double

    public init(_ h: Histogram<UInt64>) {
        count = h.totalCount
        min = h.totalCount == 0 ? 0 : h.min
        p50 = h.valueAtPercentile(50)
        p90 = h.valueAtPercentile(90)
        p99 = h.valueAtPercentile(99)
        max = h.max
        mean = h.totalCount == 0 ? 0 : h.mean
    }

    /// Summary of raw samples (for benchmarks that keep their own arrays).
    public init(samples: [UInt64]) {
        var h = Histogram<UInt64>(numberOfSignificantValueDigits: .three)
        for s in samples { _ = h.record(s) }
        self.init(h)
    }
}

/// A point-in-time copy of every metric.
public struct MetricsSnapshot: Codable, Sendable {
    public var counters: [String: UInt64]
    public var histograms: [String: HistogramSummary]

    /// A fixed-width table for the node's stop summary.
    public func table(title: String) -> String {
        var lines = ["== \(title) =="]
        if counters.isEmpty && histograms.isEmpty { lines.append("(no metrics recorded)") }
        if !counters.isEmpty {
            let width = counters.keys.map(\.count).max() ?? 0
            for name in counters.keys.sorted() {
                lines.append(name.padding(toLength: width + 2, withPad: " ", startingAt: 0) + String(counters[name]!))
            }
        }
        if !histograms.isEmpty {
            let width = max(histograms.keys.map(\.count).max() ?? 0, 9)
            lines.append("latency".padding(toLength: width + 2, withPad: " ", startingAt: 0)
                         + "   count      p50      p90      p99      max  (µs)")
            for name in histograms.keys.sorted() {
                let h = histograms[name]!
                func us(_ v: UInt64) -> String { String(format: "%8.1f", Double(v) / 1000) }
                lines.append(name.padding(toLength: width + 2, withPad: " ", startingAt: 0)
                             + String(format: "%8llu", h.count) + " " + us(h.p50) + " " + us(h.p90) + " "
                             + us(h.p99) + " " + us(h.max))
            }
        }
        return lines.joined(separator: "\n")
    }

    public func json() -> String {
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        return (try? String(data: enc.encode(self), encoding: .utf8)) ?? "{}"
    }
}

/// Registry of named counters and histograms. Handles are small integers, stable for the life of
/// the registry. Any thread.
public final class MetricsRegistry: @unchecked Sendable {
    private struct Names {
        var counters: [String: UInt32] = [:]
        var counterNames: [String] = []
        var histograms: [String: UInt32] = [:]
        var histogramNames: [String] = []
    }

    /// Fixed capacity so that `add` is a lock-free index into stable storage.
    public static let capacity = 4096
    private let names = Mutex(Names())
    private let counterValues: UnsafeMutablePointer<Atomic<UInt64>>
    private let histogramLocks = Mutex<[Histogram<UInt64>]>([])

    public init() {
        counterValues = .allocate(capacity: Self.capacity)
        for i in 0..<Self.capacity { (counterValues + i).initialize(to: Atomic<UInt64>(0)) }
    }

    deinit { counterValues.deallocate() }

    /// Looks up or creates a counter. Past `capacity` counters, every new name shares the last slot.
    public func counter(_ name: String) -> UInt32 {
        names.withLock { n in
            if let h = n.counters[name] { return h }
            let h = UInt32(min(n.counterNames.count, Self.capacity - 1))
            n.counters[name] = h
            if n.counterNames.count < Self.capacity { n.counterNames.append(name) }
            return h
        }
    }

    public func add(_ handle: UInt32, _ delta: UInt64 = 1) {
        guard Int(handle) < Self.capacity else { return }
        // The storage never moves, so the atomic cell is stable.
        counterValues[Int(handle)].wrappingAdd(delta, ordering: .relaxed)
    }

    public func value(_ name: String) -> UInt64 {
        let h = names.withLock { $0.counters[name] }
        guard let h else { return 0 }
        return counterValues[Int(h)].load(ordering: .relaxed)
    }

    public func histogram(_ name: String) -> UInt32 {
        let (h, created) = names.withLock { n -> (UInt32, Bool) in
            if let h = n.histograms[name] { return (h, false) }
            let h = UInt32(n.histogramNames.count)
            n.histograms[name] = h
            n.histogramNames.append(name)
            return (h, true)
        }
        if created {
            histogramLocks.withLock { hs in
                while hs.count <= Int(h) { hs.append(Histogram<UInt64>(numberOfSignificantValueDigits: .three)) }
            }
        }
        return h
    }

    public func record(_ handle: UInt32, nanoseconds: UInt64) {
        histogramLocks.withLock { hs in
            guard Int(handle) < hs.count else { return }
            _ = hs[Int(handle)].record(nanoseconds)
        }
    }

    /// The samples of histogram `name` so far, as (value, count) per distinct recorded value (the
    /// highest value equivalent to it at the histogram's 3 significant digits), lowest first; nil
    /// when there is no such histogram. Copies the histogram under its lock: for readers such as
    /// a metrics exporter, never the paths that record.
    public func recordedValues(_ name: String) -> [(value: UInt64, count: UInt64)]? {
        guard let h = names.withLock({ $0.histograms[name] }) else { return nil }
        guard let copy = histogramLocks.withLock({ Int(h) < $0.count ? $0[Int(h)] : nil }) else { return nil }
        return copy.recordedValues().map { ($0.value, UInt64($0.count)) }
    }

    /// Names of every histogram (in creation order).
    public var histogramNames: [String] { names.withLock { $0.histogramNames } }

    public func snapshot() -> MetricsSnapshot {
        let n = names.withLock { $0 }
        var counters: [String: UInt64] = [:]
        for (i, name) in n.counterNames.enumerated() {
            counters[name] = counterValues[i].load(ordering: .relaxed)
        }
        let hs = histogramLocks.withLock { $0 }
        var histograms: [String: HistogramSummary] = [:]
        for (i, name) in n.histogramNames.enumerated() where i < hs.count {
            histograms[name] = HistogramSummary(hs[i])
        }
        return MetricsSnapshot(counters: counters, histograms: histograms)
    }
}

