import XCTest
@testable import ABTest

/// The statistics of `giantvm ab` against values computed independently (exact enumeration of
/// every ordering, the normal formula worked by hand), and the A/A property: identical samples
/// never produce a winner.
final class StatisticsTests: XCTestCase {
    func testMedianMADAndOutliers() {
        XCTAssertEqual(Stats.median([3, 1, 2]), 2)
        XCTAssertEqual(Stats.median([4, 1, 3, 2]), 2.5)
        XCTAssertNil(Stats.median([]))
        XCTAssertEqual(Stats.mad([1, 2, 3, 4, 100]), 1)
        // 100 is 97 from the median 3; 3 x 1.4826 x 1 = 4.45: an outlier; the rest are not.
        XCTAssertEqual(Stats.outliers([1, 2, 3, 4, 100]), [4])
        XCTAssertEqual(Stats.outliers([5, 5, 5, 5, 9]), [], "MAD 0: no scale, no outliers")
    }

    func testMannWhitneyExactAgainstEnumeration() throws {
        // Fully separated samples of 5 and 5: U = 0, P(U <= 0) = 1 / C(10,5) = 1/252, two-sided 2/252.
        let sep = try XCTUnwrap(Stats.mannWhitney([1, 2, 3, 4, 5], [6, 7, 8, 9, 10]))
        XCTAssertEqual(sep.u, 0)
        XCTAssertEqual(sep.method, "exact")
        XCTAssertEqual(sep.p, 2.0 / 252, accuracy: 1e-12)
        // 3 vs 3 separated: 2 / C(6,3) = 0.1 — the smallest p three runs per arm can give.
        XCTAssertEqual(try XCTUnwrap(Stats.mannWhitney([1, 2, 3], [4, 5, 6])).p, 0.1, accuracy: 1e-12)
        // x = [1.1, 2.5, 3.3, 6.0], y = [2.0, 4.1, 5.2, 7.7, 8.4]: U_x = pairs x > y = 0+1+1+3 = 5.
        // Enumerating all C(9,4) = 126 ways to pick x's values from the pooled nine (itertools):
        // U = 0..5 occur 1, 1, 2, 3, 5, 6 times, so P(U <= 5) = 18/126, two-sided 36/126.
        let r = try XCTUnwrap(Stats.mannWhitney([1.1, 2.5, 3.3, 6.0], [2.0, 4.1, 5.2, 7.7, 8.4]))
        XCTAssertEqual(r.u, 5)
        XCTAssertEqual(r.p, 36.0 / 126, accuracy: 1e-12)
        // The distribution sums to C(n1+n2, n1) and is symmetric.
        let d = Stats.exactUDistribution(4, 5)
        XCTAssertEqual(d.reduce(0, +), 126)
        XCTAssertEqual(d, d.reversed())
        XCTAssertEqual(Array(d.prefix(6)), [1, 1, 2, 3, 5, 6])
    }

    func testMannWhitneyNormalApproximationWithTies() throws {
        // x = [1, 2, 2, 3], y = [2, 3, 4, 5]. Pooled ranks: 1 -> 1; 2,2,2 -> 3; 3,3 -> 5.5; 4 -> 7; 5 -> 8.
        // R_x = 1 + 3 + 3 + 5.5 = 12.5, U_x = 12.5 - 10 = 2.5. Ties: (27-3) + (8-2) = 30.
        // var = 16/12 * (9 - 30/56) = 11.2857..., z = (|2.5 - 8| - 0.5) / sqrt(var) = 1.48835,
        // p = erfc(z / sqrt 2) = 0.13666.
        let r = try XCTUnwrap(Stats.mannWhitney([1, 2, 2, 3], [2, 3, 4, 5]))
        XCTAssertEqual(r.method, "normal")
        XCTAssertEqual(r.u, 2.5)
        let z = 5.0 / (16.0 / 12 * (9 - 30.0 / 56)).squareRoot()
        XCTAssertEqual(z, 1.48835, accuracy: 1e-5)
        XCTAssertEqual(r.p, erfc(z / 2.0.squareRoot()), accuracy: 1e-12)
        XCTAssertEqual(r.p, 0.13666, accuracy: 1e-4)
        // Large samples without ties use the normal approximation too.
        let big = try XCTUnwrap(Stats.mannWhitney((0..<30).map(Double.init), (0..<30).map { Double($0) + 0.5 }))
        XCTAssertEqual(big.method, "normal")
        XCTAssertGreaterThan(big.p, 0.5)
    }

    func testIdenticalSamplesGiveP1AndNoWinner() throws {
        let same = [10.0, 12, 11, 13, 10.5, 12.5, 11.5, 9.5, 10.2, 12.2]
        let r = try XCTUnwrap(Stats.mannWhitney(same, same))
        XCTAssertEqual(r.p, 1)
        XCTAssertEqual(try XCTUnwrap(Stats.mannWhitney([7, 7, 7], [7, 7, 7])).p, 1, "all tied: no variance, p = 1")
        // An A/A comparison through the analysis: every metric identical in both arms.
        var runs: [RunRecord] = []
        for (i, v) in same.enumerated() {
            for c in 0..<2 {
                runs.append(RunRecord(index: 2 * i + c, config: c, warmup: false,
                                      metrics: ["ops_per_s": v * 1000, "wall_time": v / 10, "messages": 500], faultLatency: [], result: nil))
            }
        }
        let cmp = Analysis.compare(base: 0, other: 1, runs: runs, labels: ["A", "B"], settings: AnalysisSettings())
        XCTAssertEqual(cmp.metrics.count, 3)
        XCTAssertTrue(cmp.metrics.allSatisfy { !$0.significant && $0.verdict == "no significant difference" }, "\(cmp.metrics)")
        XCTAssertTrue(cmp.summary.hasPrefix("B vs A: no significant difference on any of 3 metrics"), cmp.summary)
    }

    func testRealDifferenceIsCalledOnlyPastTheThreshold() throws {
        func runs(_ a: [Double], _ b: [Double]) -> [RunRecord] {
            a.enumerated().map { RunRecord(index: $0.offset, config: 0, warmup: false, metrics: ["ops_per_s": $0.element], faultLatency: [], result: nil) }
                + b.enumerated().map { RunRecord(index: 100 + $0.offset, config: 1, warmup: false, metrics: ["ops_per_s": $0.element], faultLatency: [], result: nil) }
        }
        let a = (0..<10).map { 1000 + Double($0) }
        // +30 %: separated samples, p = 2/C(20,10) ~ 1.1e-5, change 30 % > 5 %: B better.
        let big = Analysis.compare(base: 0, other: 1, runs: runs(a, a.map { $0 * 1.3 }), labels: ["A", "B"], settings: AnalysisSettings())
        let m = try XCTUnwrap(big.metrics.first)
        XCTAssertTrue(m.significant)
        XCTAssertEqual(m.verdict, "B better (+30.0%)")
        XCTAssertEqual(try XCTUnwrap(m.change), 0.3, accuracy: 1e-9)
        XCTAssertTrue(try XCTUnwrap(m.changeCI).contains(0.3))
        // +2 %: just as separated (p tiny) but below the 5 % threshold: not called.
        let small = Analysis.compare(base: 0, other: 1, runs: runs(a, a.map { $0 + 20 }), labels: ["A", "B"], settings: AnalysisSettings())
        XCTAssertFalse(try XCTUnwrap(small.metrics.first).significant)
        XCTAssertTrue(try XCTUnwrap(small.metrics.first).verdict.contains("within the noise threshold 5.0%"))
    }

    func testBootstrapIsSeededAndCoversTheMedian() throws {
        let xs = [5.0, 7, 6, 9, 8, 6.5, 7.5, 30]
        var r1 = SeededGenerator(seed: 42), r2 = SeededGenerator(seed: 42)
        let a = try XCTUnwrap(Stats.bootstrapMedianCI(xs, rng: &r1)), b = try XCTUnwrap(Stats.bootstrapMedianCI(xs, rng: &r2))
        XCTAssertEqual(a, b, "same seed, same interval")
        XCTAssertTrue(a.contains(try XCTUnwrap(Stats.median(xs))))
        XCTAssertGreaterThanOrEqual(a.low, 5)
        XCTAssertLessThanOrEqual(a.high, 9, "the outlier 30 cannot drag a median's interval")
        // A constant sample has a zero-width interval; the change of equal samples is 0 with a 0-wide interval.
        var r3 = SeededGenerator(seed: 1)
        XCTAssertEqual(Stats.bootstrapMedianCI([4, 4, 4], rng: &r3), Stats.Interval(4, 4))
        XCTAssertEqual(Stats.bootstrapChangeCI(base: [2, 2], other: [2, 2], rng: &r3), Stats.Interval(0, 0))
        XCTAssertNil(Stats.relativeChange(base: [0, 0], other: [1, 1]))
    }

    func testHolmAdjustment() {
        // p = [0.01, 0.04, 0.03, 0.005], m = 4: sorted 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 -> max so far 0.06.
        let adj = Stats.holm([0.01, 0.04, 0.03, 0.005])
        for (x, y) in zip(adj, [0.03, 0.06, 0.06, 0.02]) { XCTAssertEqual(x, y, accuracy: 1e-12) }
        XCTAssertEqual(Stats.holm([0.9, 0.8]), [1, 1], "0.8 x 2 caps at 1, and adjusted p never decrease")
        XCTAssertEqual(Stats.holm([0.3, 0.2]), [0.4, 0.4])
    }

    func testScheduleInterleavesEveryConfigEachRound() {
        let s = Schedule.make(configs: 3, runs: 4, warmup: 1, seed: 7)
        XCTAssertEqual(s.count, 15)
        for round in 0..<5 {
            XCTAssertEqual(Set(s[(round * 3)..<(round * 3 + 3)].map(\.config)), [0, 1, 2], "round \(round) runs each config once")
        }
        XCTAssertEqual(s.filter(\.warmup).count, 3)
        XCTAssertTrue(s.prefix(3).allSatisfy(\.warmup))
        XCTAssertEqual(s.map(\.config), Schedule.make(configs: 3, runs: 4, warmup: 1, seed: 7).map(\.config), "seeded")
        XCTAssertNotEqual(s.map(\.config), (0..<15).map { $0 % 3 }, "shuffled, not a fixed rotation")
    }
}
