// The conformance kit run against dsm-tso with relaxed ranges, as `giantvm conformance dsm-tso
// --model tso --setting relaxed=...` runs it: the kit reads the relaxed ranges (PageLayout), keeps
// atomics, locks, flags, pins and litmus variables in sc pages with every SC check, and judges
// the relaxed pages with its mw scenarios (data-race-free exact, disjoint writes never lost, racy
// writes converge, a pinned relaxed page loses nothing).

import XCTest
import PluginAPI
import CoherenceKit
@testable import TSOCore

final class TSOConformanceKitTests: XCTestCase {
    func testPageLayoutReadsTheRelaxedSetting() throws {
        let l = try PageLayout(settings: [("flush_interval", "1ms"), ("relaxed", "0x0:4KiB, 0x2000:8KiB")])
        XCTAssertEqual(l.relaxed, [0, 2, 3])
        XCTAssertEqual(l.sc(count: 3), [1, 4, 5])
        XCTAssertEqual([l.mw(0), l.mw(1), l.mw(3)], [0, 2, 0])
        XCTAssertEqual(l.pageCount([5], atLeast: 2), 6)
    }

    func testPageLayoutErrorsNameTheSetting() {
        for bad in ["0x1000", "0x1001:4KiB", "0x1000:0", "zz:4KiB", "0x1000000:4KiB"] {
            XCTAssertThrowsError(try PageLayout(settings: [("relaxed", bad)]), bad) { e in
                XCTAssertTrue("\(e)".contains("setting 'relaxed'"), "\(bad): \(e)")
            }
        }
        XCTAssertFalse(try PageLayout(settings: [("read_ahead", "4")]).hasRelaxed)
    }

    /// Without relaxed ranges the catalog is the SC one; the mw scenarios need the setting.
    func testRelaxedScenariosRunOnlyWithRelaxedRanges() throws {
        let plain = try ConformancePlan(model: .tso).scenarios().map(\.name)
        XCTAssertFalse(plain.contains { $0.hasPrefix("mw-") }, "\(plain)")
        let relaxed = try ConformancePlan(model: .tso, settings: [("relaxed", "0x1000:8KiB")]).scenarios().map(\.name)
        XCTAssertEqual(relaxed.filter { $0.hasPrefix("mw-") }, ["mw-locked-data", "mw-disjoint", "mw-racy", "mw-pin"])
        XCTAssertThrowsError(try ConformancePlan(model: .tso, only: ["mw-pin"]).scenarios()) { e in
            XCTAssertTrue("\(e)".contains("needs relaxed ranges"), "\(e)")
        }
        XCTAssertThrowsError(try ConformancePlan(model: .tso, settings: [("relaxed", "0x1000")]).scenarios())
    }

    /// The whole catalog, for both models, over seeded schedules and three layouts of the relaxed
    /// pages (after the sc ones, first and between them, a large range).
    func testWholeCatalogPassesWithRelaxedRanges() throws {
        var totals: [String: UInt64] = [:]
        for (i, ranges) in ["0x1000:8KiB", "0x0:4KiB,0x3000:4KiB", "0x2000:64KiB"].enumerated() {
            for model in [MemoryModel.tso, .sc] where i == 0 || model == .tso {
                let plan = ConformancePlan(model: model, nodes: 2...4, seeds: 8, firstSeed: 40 + UInt64(i) * 100,
                                           settings: [("relaxed", ranges)])
                let runner = ConformanceRunner(descriptor: tso, plan: plan)
                let verdicts = try runner.run()
                XCTAssertEqual(verdicts.count, try plan.scenarios().count)
                for v in verdicts {
                    XCTAssertTrue(v.passed, "\(model) relaxed=\(ranges): \(v.name): \(v.failure?.problems ?? []) \(v.skipped ?? "")")
                }
            }
            // What the mw scenarios made the protocol do (one run each, to read its counters).
            for seed in UInt64(7)...8 {
                let p = ScenarioParameters(seed: seed, nodes: 3, size: 6, model: .tso, settings: [("relaxed", ranges)])
                for s in ScenarioCatalog.relaxed {
                    let r = try s.body(tso, p)
                    XCTAssertTrue(r.ok, "\(s.name): \(r)")
                    for (k, v) in r.totals { totals[k, default: 0] += v }
                }
            }
        }
        for name in ["dsm.diff.made", "dsm.diff.applied", "tso.twins", "tso.flush.sc_handover", "tso.update.sent", "dsm.pin.deferred"] {
            XCTAssertGreaterThan(totals[name] ?? 0, 0, "\(name): the relaxed scenarios never made dsm-tso do it")
        }
    }

    /// The SC pin scenario on a relaxed page (what `pin-deferral` did before the kit knew the
    /// relaxed ranges) is a race, not a lost write: the pin holds off nobody on an mw page (several
    /// writers are the point), so the other node may read 0 before the DMA store is released and
    /// store 1 ("final value 1, expected 0xe"). Both stores reach every node and they converge on one.
    func testPinScenarioOnARelaxedPageIsARaceThatConverges() throws {
        var outcomes: [UInt64: Int] = [:]
        for seed in UInt64(1)..<UInt64(40) {
            let nodes = 2 + Int(seed % 3)
            let c = try cluster(nodes: nodes, pages: 2, relaxed: [1], seed: seed, maxDelay: Int(seed % 4) * 2)
            var pinned = false
            var held = 0
            var read: UInt64?
            c.addThread(node: 0, ClosureProgram { t in
                if !pinned {
                    guard t.pin(1, write: true) else { return true }
                    pinned = true
                    t.dmaStore(1, 0, 0xD)
                    return true
                }
                held += 1
                if held < 30 { return true }
                t.unpin(1, write: true)
                return false
            })
            c.addThread(node: UInt32(nodes - 1), ClosureProgram { t in
                if !pinned { return true }
                if read == nil {
                    guard let v = t.load(1, 0) else { return true }
                    read = v
                    return true
                }
                return !t.store(1, 0, read! + 1)
            })
            let r = c.run()
            XCTAssertTrue(r.ok, "seed \(seed): \(r)")
            XCTAssertEqual(Conformance.convergence(c), [], "seed \(seed)")
            let (seen, rep) = Conformance.readEverywhere(c, [(1, 0)])
            XCTAssertTrue(rep.ok)
            XCTAssertTrue([0xD, 0xE, 1].contains(seen[0][0]), "seed \(seed): \(seen)")
            outcomes[seen[0][0], default: 0] += 1
        }
        print("pin on a relaxed page, final values over 39 schedules:", outcomes.sorted { $0.key < $1.key }.map { "\(hexs($0.key)): \($0.value)" })
        XCTAssertGreaterThan(outcomes[1, default: 0] + outcomes[0xD, default: 0], 0, "the race never showed")
    }
}

private func hexs(_ v: UInt64) -> String { "0x" + String(v, radix: 16) }
