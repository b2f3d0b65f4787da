// Replicated read-only ranges (ABI 4, GVM_HINT_REPLICATED; Plugins/dsm-ivy/Core/Replicated.swift)
// in simulated clusters: pages start as read copies on every node (no read miss anywhere), a
// later write invalidates the other copies as usual, and every Ivy check (golden memory, single
// writer, exact statistics) holds under races; a range already touched is refused unchanged.

import XCTest
import PluginAPI
import PluginKit
import CoherenceKit
@testable import IvyCore

/// Page g's initial words: a value at offsets 0 and 256 that names the page.
func moduleWords(_ g: UInt64) -> [Int: UInt64] { [0: 0x0D0D_0000_0000 | g, 256: 0x0E0E_0000_0000 | g] }

/// dsm-ivy's setting that accepts the hint (the default, spelled out).
let on = [("replicated", "on")]

final class ReplicatedTests: XCTestCase {
    func engine(_ c: SimCluster, _ i: Int) -> IvyNode {
        (CoherencePluginEntry.plugin(of: c.nodes[i].pluginInstance!) as! IvyPlugin).node
    }

    /// The initial state: the manager is OS with every other node in its copyset, every other
    /// node S, every copy SHARED with the bytes; reads on every node then cost no message.
    func testEveryNodeStartsWithAReadCopyAndReadsWithoutAMiss() throws {
        let c = try SimCluster(descriptor: ivy, nodes: 3, pages: 48, seed: 1, settings: on)
        XCTAssertEqual(c.replicate(pages: 8..<40, words: moduleWords), [GVM_OK.rawValue, GVM_OK.rawValue, GVM_OK.rawValue])
        for i in 0..<3 {
            let e = engine(c, i)
            for g in UInt64(8)..<40 {
                XCTAssertEqual(c.nodes[i].pageState[Int(g)], GVM_PAGE_SHARED, "node \(i) gfn \(g)")
                XCTAssertEqual(e.cacheState(g), e.managerOf(g) == UInt32(i) ? .OS : .S, "node \(i) gfn \(g)")
            }
            // Outside the range nothing changed.
            XCTAssertEqual(e.cacheState(0), e.managerOf(0) == UInt32(i) ? .OZ : .I)
            XCTAssertEqual(c.nodes[i].counter("ivy.replicated"), 32)
        }
        for n in 0..<3 { c.addThread(node: UInt32(n), StreamReader(first: 8, pages: 32, rounds: 2)) }
        let r = c.run(maxSteps: 200_000)
        XCTAssertTrue(r.ok, "\(r)")
        XCTAssertEqual(r.messages, 0, "a read of a replicated page sent a message")
        for n in c.nodes {
            XCTAssertEqual(n.counter("dsm.fault.read_miss"), 0, "node \(n.id)")
            XCTAssertEqual(n.counter("dsm.fault.write_miss"), 0, "node \(n.id)")
        }
        XCTAssertEqual(Conformance.statisticsProblems(c), [])
    }

    /// A write on one node (sharer or owner) invalidates every other copy; readers on the other
    /// nodes then read the new value (the simulation checks each load against the latest write).
    func testAWriteInvalidatesTheOtherCopiesAndIsSeenEverywhere() throws {
        for writer in 0..<3 {
            let c = try SimCluster(descriptor: ivy, nodes: 3, pages: 30, seed: UInt64(10 + writer), settings: on)
            c.replicate(pages: 0..<30, words: moduleWords)
            // Pages 0..<10 are managed (and owned) by node 0, 10..<20 by node 1, 20..<30 by node 2:
            // the writer writes pages of every manager, as owner and as sharer.
            c.addThread(node: UInt32(writer), PageWriter(pages: [1, 11, 21, 2, 12, 22]))
            var r = c.run(maxSteps: 200_000)
            XCTAssertTrue(r.ok, "writer \(writer): \(r)")
            XCTAssertGreaterThan(c.total("dsm.inv.sent"), 0, "writer \(writer)")
            for n in c.nodes where n.id != UInt32(writer) {
                for g in [1, 11, 21, 2, 12, 22] { XCTAssertEqual(n.pageState[g], GVM_PAGE_INVALID, "node \(n.id) gfn \(g)") }
                XCTAssertEqual(n.pageState[5], GVM_PAGE_SHARED, "an unwritten replicated page stays shared")
            }
            for n in 0..<3 { c.addThread(node: UInt32(n), StreamReader(first: 0, pages: 30)) }
            r = c.run(maxSteps: 400_000)
            XCTAssertTrue(r.ok, "writer \(writer): \(r)")
            XCTAssertEqual(Conformance.statisticsProblems(c), [], "writer \(writer)")
        }
    }

    /// Readers and writers race over a replicated range with reordering delays: every check holds.
    func testRacingReadersAndWritersStayExact() throws {
        for seed in UInt64(1)...30 {
            let nodes = 2 + Int(seed % 3)
            let c = try SimCluster(descriptor: ivy, nodes: nodes, pages: 24, seed: seed,
                                   settings: on + [("read_ahead", seed % 2 == 0 ? "0" : "8"),
                                              ("manager_chunk", seed % 3 == 0 ? "4KiB" : "auto")])
            c.network.maxDelay = Int(seed % 4) * 2
            c.replicate(pages: 0..<24, words: moduleWords)
            c.addThread(node: 0, StreamReader(first: 0, pages: 24, rounds: 2))
            c.addThread(node: UInt32(nodes - 1), PageWriter(pages: [3, 17, 9, 23, 0], rounds: 2))
            c.addThread(node: 1, StreamReader(first: 23, pages: 24, stride: -1))
            let r = c.run(maxSteps: 600_000)
            XCTAssertTrue(r.ok, "seed \(seed): \(r)")
            XCTAssertEqual(Conformance.statisticsProblems(c), [], "seed \(seed)")
            if !r.ok { break }
        }
    }

    /// A range with a page already in use is refused on that node without any change; a bad
    /// range is INVALID; other hint kinds stay UNSUPPORTED for dsm-ivy.
    func testTouchedRangesAndBadRangesAreRefused() throws {
        let c = try SimCluster(descriptor: ivy, nodes: 2, pages: 16, seed: 3, settings: on)
        c.addThread(node: 1, PageWriter(pages: [5]))
        XCTAssertTrue(c.run().ok)
        let statuses = c.replicate(pages: 4..<8, words: moduleWords)
        XCTAssertEqual(statuses[1], GVM_ERR_STATE.rawValue, "node 1 wrote gfn 5")
        XCTAssertEqual(statuses[0], GVM_ERR_STATE.rawValue, "node 0 (manager) handed gfn 5 over")
        XCTAssertTrue(c.nodes[1].logs.contains { $0.contains("gfn 5 is in use") }, "\(c.nodes[1].logs)")
        for i in 0..<2 {
            for g in [4, 6, 7] {
                XCTAssertEqual(c.nodes[i].pageState[g], GVM_PAGE_INVALID, "nothing installed on a refusal")
                XCTAssertEqual(engine(c, i).cacheState(UInt64(g)), engine(c, i).managerOf(UInt64(g)) == UInt32(i) ? .OZ : .I)
            }
        }
        let plugin = CoherencePluginEntry.plugin(of: c.nodes[0].pluginInstance!) as! IvyPlugin
        XCTAssertEqual(plugin.hint(kind: GVM_HINT_REPLICATED, gpa: 4096 + 8, length: 4096), .invalid)
        XCTAssertEqual(plugin.hint(kind: GVM_HINT_REPLICATED, gpa: 15 * 4096, length: 2 * 4096), .invalid)
        XCTAssertEqual(plugin.hint(kind: GVM_HINT_REPLICATED, gpa: 0, length: 0), .invalid)
        XCTAssertEqual(plugin.hint(kind: GVM_HINT_FENCE, gpa: 0, length: 0).raw, GVM_ERR_UNSUPPORTED.rawValue)
        XCTAssertEqual(plugin.hint(kind: GVM_HINT_RELAXED, gpa: 0, length: 4096).raw, GVM_ERR_UNSUPPORTED.rawValue)
    }

    /// `replicated: off`: every node answers UNSUPPORTED (the host loads on one node); the
    /// setting takes on (the default) or off only.
    func testSettingOffAnswersUnsupported() throws {
        let c = try SimCluster(descriptor: ivy, nodes: 2, pages: 8, seed: 2, settings: [("replicated", "off")])
        XCTAssertEqual(c.replicate(pages: 0..<4, words: moduleWords), [GVM_ERR_UNSUPPORTED.rawValue, GVM_ERR_UNSUPPORTED.rawValue])
        for n in c.nodes { for g in 0..<4 { XCTAssertEqual(n.pageState[g], GVM_PAGE_INVALID) } }
        XCTAssertTrue(try IvyConfig.parse([:], pageCount: 8, nodeCount: 2).replicated)
        XCTAssertTrue(try IvyConfig.parse(["replicated": "on"], pageCount: 8, nodeCount: 2).replicated)
        XCTAssertFalse(try IvyConfig.parse(["replicated": "off"], pageCount: 8, nodeCount: 2).replicated)
        XCTAssertThrowsError(try IvyConfig.parse(["replicated": "yes"], pageCount: 8, nodeCount: 2)) {
            XCTAssertEqual("\($0)", "setting 'replicated': 'yes' is not on or off")
        }
    }

    func testRangeCheck() {
        XCTAssertEqual(IvyNode.pageRange(gpa: 8192, length: 8192, pageCount: 4), 2..<4)
        XCTAssertNil(IvyNode.pageRange(gpa: 8192, length: 12288, pageCount: 4))
        XCTAssertNil(IvyNode.pageRange(gpa: 1, length: 4096, pageCount: 4))
        XCTAssertNil(IvyNode.pageRange(gpa: 0, length: 4095, pageCount: 4))
        XCTAssertNil(IvyNode.pageRange(gpa: UInt64.max - 4095, length: 4096, pageCount: 4))
    }
}
