// Zero-fill ahead (Plugins/dsm-ivy/Core/ZeroAhead.swift): a local fault on a never-written page
// brings the other never-written pages of its aligned group with it, as zeros, with no message;
// simulated clusters hold every Ivy check (golden memory, single writer, exact totals, the
// standard statistics) with it on, and a remote reader still reads what was written.

import XCTest
import PluginAPI
import CoherenceKit
@testable import IvyCore

final class ZeroAheadTests: XCTestCase {
    /// Node 0 writes `pages` pages it manages (manager_chunk auto: node 0 manages the first half),
    /// then node 1 reads them; returns the outcome and the cluster.
    func run(zeroAhead: String, pages: Int = 40, seed: UInt64 = 1, delay: Int = 0) throws -> (RunOutcome, SimCluster) {
        let c = try SimCluster(descriptor: ivy, nodes: 2, pages: 128, seed: seed,
                               settings: [("zero_ahead", zeroAhead), ("read_ahead", "0")])
        c.network.maxDelay = delay
        return (writeThenRead(c, writer: 0, (0..<UInt64(pages)).map { $0 }, reader: 1, StreamReader(first: 0, pages: pages)), c)
    }

    func testAWriterOfFreshPagesFaultsOncePerGroupAndTheReaderSeesItsWrites() throws {
        let (off, offCluster) = try run(zeroAhead: "1")
        XCTAssertTrue(off.ok, "\(off)")
        XCTAssertEqual(offCluster.nodes[0].counter("dsm.fault.write_miss"), 40)
        XCTAssertEqual(off.totals["ivy.zero_ahead.pages"] ?? 0, 0)

        let (on, onCluster) = try run(zeroAhead: "16")
        XCTAssertTrue(on.ok, "\(on)")
        let writer = onCluster.nodes[0]
        // Pages 0-15, 16-31 and 32-47: one fault each; the rest of each group came with it.
        XCTAssertEqual(writer.counter("dsm.fault.write_miss"), 3)
        XCTAssertEqual(writer.counter("ivy.zero_ahead.batches"), 3)
        XCTAssertEqual(writer.zeroRuns, 3, "one page_install_zeros per group")
        XCTAssertEqual(writer.counter("ivy.zero_ahead.pages"), 45, "3 groups of 16, less the 3 faulting pages")
        // No message was needed to make them present; the reader's traffic is the same.
        XCTAssertEqual(writer.counter("dsm.msg.sent") + onCluster.nodes[1].counter("dsm.msg.sent"),
                       offCluster.nodes[0].counter("dsm.msg.sent") + offCluster.nodes[1].counter("dsm.msg.sent"))
        // Pages 40-47 were never written: they stay zeros wherever they are read.
        for g in 40..<48 { XCTAssertEqual(writer.pageState[g], GVM_PAGE_MODIFIED, "gfn \(g): present as zeros") }
        XCTAssertEqual(writer.pageState[48], GVM_PAGE_INVALID, "outside every faulting group")
    }

    func testPagesOtherNodesManageOrOwnAreNeverTouched() throws {
        // Node 1 writes pages node 0 manages: those are remote write misses (not OZ here), so
        // nothing is zero-filled ahead on node 1, and node 0's fresh pages stay OZ until touched.
        let c = try SimCluster(descriptor: ivy, nodes: 2, pages: 128, seed: 3, settings: [("zero_ahead", "16")])
        c.addThread(node: 1, PageWriter(pages: [0, 1, 2]))
        let r = c.run(maxSteps: 200_000)
        XCTAssertTrue(r.ok, "\(r)")
        XCTAssertEqual(c.nodes[1].counter("ivy.zero_ahead.pages"), 0)
        XCTAssertEqual(c.nodes[0].counter("ivy.zero_ahead.pages"), 0)
        XCTAssertEqual(c.nodes[0].pageState[3], GVM_PAGE_INVALID)
    }

    func testEveryIvyCheckHoldsWithZeroAheadOnRandomRuns() throws {
        for seed in UInt64(1)...UInt64(30) {
            let (r, _) = try run(zeroAhead: "8", pages: 20 + Int(seed % 20), seed: seed, delay: Int(seed % 4) * 2)
            XCTAssertTrue(r.ok, "seed \(seed): \(r)")
            var opts = ConformanceOptions(maxDelay: Int(seed % 4) * 2, threadBias: 20 + Int(seed % 5) * 15)
            opts.settings = [("zero_ahead", "4")]
            let random = try Conformance.random(ivy, nodes: 2 + Int(seed % 3), threadsPerNode: 2, pages: 12, ops: 30,
                                                seed: seed, options: opts)
            XCTAssertTrue(random.ok, "seed \(seed): \(random)")
            let counter = try Conformance.lockedCounter(ivy, nodes: 3, threadsPerNode: 2, increments: 5, seed: seed, options: opts)
            XCTAssertTrue(counter.ok, "seed \(seed): \(counter)")
        }
    }

    func testTheSettingIsAPowerOfTwoUpToTheBatchLimit() throws {
        for bad in ["0", "3", "65", "1024", "-1", "x"] {
            XCTAssertThrowsError(try IvyConfig.parse(["zero_ahead": bad], pageCount: 64, nodeCount: 2), bad) {
                XCTAssertTrue("\($0)".contains("setting 'zero_ahead': '\(bad)' is not a power of two from 1 (off) to 512 pages"), "\($0)")
            }
        }
        XCTAssertEqual(try IvyConfig.parse(["zero_ahead": "1"], pageCount: 64, nodeCount: 2).zeroAhead, 1)
        XCTAssertEqual(try IvyConfig.parse(["zero_ahead": "128"], pageCount: 64, nodeCount: 2).zeroAhead, 128)
        XCTAssertEqual(try IvyConfig.parse([:], pageCount: 64, nodeCount: 2).zeroAhead, 512, "one 2 MiB huge page")
    }
}
