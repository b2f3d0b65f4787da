// The statistics of `giantvm ab`, on plain arrays of one metric's per-run values: median,
// median absolute deviation and outliers, seeded percentile-bootstrap confidence intervals (of a
// median and of the relative change of two medians), the Mann-Whitney U test (exact without ties
// for small samples, normal approximation with tie and continuity corrections otherwise) and
// Holm's step-down correction over several metrics. No state, no I/O: unit-tested against values
// computed independently (Tests/ABTests/StatisticsTests.swift).

import Foundation

/// SplitMix64: a small, seedable generator, so a report's order of runs and its bootstrap
/// intervals are reproducible from `--seed`.
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    private var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

public enum Stats {
    /// The median (mean of the two middle values for an even count); nil when empty.
    public static func median(_ xs: [Double]) -> Double? {
        guard !xs.isEmpty else { return nil }
        let s = xs.sorted()
        let m = s.count / 2
        return s.count % 2 == 1 ? s[m] : (s[m - 1] + s[m]) / 2
    }

    /// The median absolute deviation from the median (unscaled).
    public static func mad(_ xs: [Double]) -> Double? {
        guard let m = median(xs) else { return nil }
        return median(xs.map { abs($0 - m) })
    }

    /// Indices of the values farther than `k` scaled MADs (1.4826 x MAD, the standard deviation
    /// of a normal sample) from the median. None when the MAD is 0 (most values equal): then no
    /// spread is defined to measure distance by.
    public static func outliers(_ xs: [Double], k: Double = 3) -> [Int] {
        guard let m = median(xs), let d = mad(xs), d > 0 else { return [] }
        let scale = 1.4826 * d
        return xs.indices.filter { abs(xs[$0] - m) > k * scale }
    }

    /// A closed interval.
    public struct Interval: Codable, Sendable, Equatable {
        public var low: Double
        public var high: Double
        public init(_ low: Double, _ high: Double) { self.low = low; self.high = high }
        public func contains(_ x: Double) -> Bool { low <= x && x <= high }
    }

    /// The q-quantile (0...1) of sorted values, linearly interpolated.
    static func quantile(sorted s: [Double], _ q: Double) -> Double {
        guard s.count > 1 else { return s.first ?? .nan }
        let pos = q * Double(s.count - 1)
        let i = Int(pos.rounded(.down))
        let f = pos - Double(i)
        return i + 1 < s.count ? s[i] * (1 - f) + s[i + 1] * f : s[i]
    }

    static func resampleMedian(_ xs: [Double], _ rng: inout SeededGenerator) -> Double {
        var r = [Double](repeating: 0, count: xs.count)
        for i in r.indices { r[i] = xs[Int(rng.next() % UInt64(xs.count))] }
        return median(r)!
    }

    /// The percentile bootstrap interval of the median at `level` (0.95): `resamples` samples
    /// of the same size drawn with replacement. nil when empty.
    public static func bootstrapMedianCI(_ xs: [Double], level: Double = 0.95, resamples: Int = 2000,
                                         rng: inout SeededGenerator) -> Interval? {
        guard !xs.isEmpty, resamples > 0 else { return nil }
        let meds = (0..<resamples).map { _ in resampleMedian(xs, &rng) }.sorted()
        let a = (1 - level) / 2
        return Interval(quantile(sorted: meds, a), quantile(sorted: meds, 1 - a))
    }

    /// The relative change of the median from `base` to `other` (median(other)/median(base) - 1):
    /// nil when base's median is 0 and other's is not (no relative scale), 0 when both are 0.
    public static func relativeChange(base: [Double], other: [Double]) -> Double? {
        guard let a = median(base), let b = median(other) else { return nil }
        if a == 0 { return b == 0 ? 0 : nil }
        return b / a - 1
    }

    /// Percentile bootstrap interval of `relativeChange`, both samples resampled independently;
    /// resamples whose base median is 0 are skipped (nil if more than half are).
    public static func bootstrapChangeCI(base: [Double], other: [Double], level: Double = 0.95, resamples: Int = 2000,
                                         rng: inout SeededGenerator) -> Interval? {
        guard !base.isEmpty, !other.isEmpty, resamples > 0 else { return nil }
        var changes: [Double] = []
        for _ in 0..<resamples {
            let a = resampleMedian(base, &rng), b = resampleMedian(other, &rng)
            if a != 0 { changes.append(b / a - 1) } else if b == 0 { changes.append(0) }
        }
        guard changes.count * 2 >= resamples else { return nil }
        changes.sort()
        let q = (1 - level) / 2
        return Interval(quantile(sorted: changes, q), quantile(sorted: changes, 1 - q))
    }

    /// The result of a two-sided Mann-Whitney U test.
    public struct MannWhitney: Codable, Sendable, Equatable {
        /// U of the first sample: pairs (x, y) with x > y, ties counting one half.
        public var u: Double
        /// Two-sided p-value.
        public var p: Double
        /// "exact" (no ties, n1 x n2 <= 400) or "normal" (tie- and continuity-corrected).
        public var method: String
    }

    /// Two-sided Mann-Whitney U test of `x` against `y`. nil when a sample is empty.
    public static func mannWhitney(_ x: [Double], _ y: [Double]) -> MannWhitney? {
        let n1 = x.count, n2 = y.count
        guard n1 > 0, n2 > 0 else { return nil }
        // Mid-ranks of the pooled sample.
        let pooled = (x.map { ($0, 0) } + y.map { ($0, 1) }).sorted { $0.0 < $1.0 }
        var ranks = [Double](repeating: 0, count: pooled.count)
        var tieTerm = 0.0
        var i = 0
        while i < pooled.count {
            var j = i
            while j + 1 < pooled.count && pooled[j + 1].0 == pooled[i].0 { j += 1 }
            let r = Double(i + j) / 2 + 1
            for k in i...j { ranks[k] = r }
            let t = Double(j - i + 1)
            tieTerm += t * t * t - t
            i = j + 1
        }
        let r1 = zip(pooled, ranks).filter { $0.0.1 == 0 }.reduce(0) { $0 + $1.1 }
        let u1 = r1 - Double(n1 * (n1 + 1)) / 2
        let mean = Double(n1 * n2) / 2
        if tieTerm == 0 && n1 * n2 <= 400 {
            // Exact: the number of arrangements giving each U (Mann & Whitney's recursion).
            let counts = exactUDistribution(n1, n2)
            let total = counts.reduce(0, +)
            let small = Int(min(u1, Double(n1 * n2) - u1).rounded())
            let tail = counts[0...small].reduce(0, +) / total
            return MannWhitney(u: u1, p: min(1, 2 * tail), method: "exact")
        }
        let n = Double(n1 + n2)
        let variance = Double(n1 * n2) / 12 * ((n + 1) - tieTerm / (n * (n - 1)))
        guard variance > 0 else { return MannWhitney(u: u1, p: 1, method: "normal") }
        let z = max(abs(u1 - mean) - 0.5, 0) / variance.squareRoot()
        return MannWhitney(u: u1, p: min(1, erfc(z / 2.0.squareRoot())), method: "normal")
    }

    /// counts[u] = how many of the C(n1+n2, n1) orderings give U = u (as Double: large counts).
    static func exactUDistribution(_ n1: Int, _ n2: Int) -> [Double] {
        // f[m][n] over u, built bottom-up: f(m, n, u) = f(m-1, n, u-n) + f(m, n-1, u).
        var f = [[[Double]]](repeating: [[Double]](repeating: [], count: n2 + 1), count: n1 + 1)
        for m in 0...n1 {
            for n in 0...n2 {
                if m == 0 || n == 0 { f[m][n] = [1]; continue }
                var d = [Double](repeating: 0, count: m * n + 1)
                for (u, c) in f[m - 1][n].enumerated() { d[u + n] += c }
                for (u, c) in f[m][n - 1].enumerated() { d[u] += c }
                f[m][n] = d
            }
        }
        return f[n1][n2]
    }

    /// Holm's step-down adjustment of p-values (same order as given): controls the family-wise
    /// error rate over every metric compared at once.
    public static func holm(_ ps: [Double]) -> [Double] {
        let m = ps.count
        let order = ps.indices.sorted { ps[$0] < ps[$1] }
        var adjusted = [Double](repeating: 1, count: m)
        var running = 0.0
        for (rank, i) in order.enumerated() {
            running = max(running, min(1, Double(m - rank) * ps[i]))
            adjusted[i] = running
        }
        return adjusted
    }
}
