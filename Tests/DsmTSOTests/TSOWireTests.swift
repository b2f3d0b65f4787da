// dsm-tso's wire format, diffs, settings and table shape; receive fuzzing: malformed frames stop
// the node through fatal with a message naming what is wrong, never a crash.

import XCTest
import PluginAPI
import CoherenceKit
@testable import IvyCore
@testable import TSOCore

final class TSOWireTests: XCTestCase {
    let map = ManagerMap(chunkPages: 2, nodeCount: 3)   // gfn 0,1 -> node 0; 2,3 -> node 1; 4,5 -> node 2

    func decode(_ m: TSOMessage, src: UInt32, selfID: UInt32, relaxed: Set<UInt64> = [0, 1, 2, 3, 4, 5],
                patch: ((inout [UInt8]) -> Void)? = nil) -> String? {
        var b = TSOWire.encode(m)
        patch?(&b)
        return b.withUnsafeBytes { buf in
            do {
                _ = try TSOWire.decode(buf, src: src, selfID: selfID, nodeCount: 3, pageCount: 6,
                                       homeOf: map.manager(of:), isRelaxed: { relaxed.contains($0) })
                return nil
            } catch { return "\(error)" }
        }
    }

    func testDiffFindsExactlyTheChangedRuns() {
        var twin = [UInt8](repeating: 0, count: 4096)
        var copy = twin
        copy[0] = 1; copy[1] = 2; copy[9] = 3; copy[4095] = 4
        twin[100] = 5; copy[100] = 5   // equal: not a change
        let runs = twin.withUnsafeBytes { t in copy.withUnsafeBytes { c in TSOWire.diff(twin: t.baseAddress!, copy: c.baseAddress!) } }
        XCTAssertEqual(runs, [DiffRun(offset: 0, bytes: [1, 2]), DiffRun(offset: 9, bytes: [3]), DiffRun(offset: 4095, bytes: [4])])
        twin = copy
        XCTAssertEqual(twin.withUnsafeBytes { t in copy.withUnsafeBytes { c in TSOWire.diff(twin: t.baseAddress!, copy: c.baseAddress!) } }, [])
    }

    func testRoundTripAndValidation() {
        let d = TSOMessage(type: .diff, node: 2, gfn: 3, seq: 9, runs: [DiffRun(offset: 8, bytes: [1, 2, 3])])
        XCTAssertNil(decode(d, src: 2, selfID: 1))
        XCTAssertEqual(TSOWire.encode(d).count, 32 + 4 + 3)
        XCTAssertEqual(decode(d, src: 2, selfID: 0), "Diff for gfn 3 sent to node 0, but its home is node 1")
        XCTAssertEqual(decode(d, src: 0, selfID: 1), "Diff from node 0 claims to be from node 2")
        XCTAssertEqual(decode(d, src: 2, selfID: 1, relaxed: [0]), "Diff: gfn 3 is not a relaxed (mw) page on node 1")
        XCTAssertEqual(decode(d, src: 2, selfID: 1) { $0[1] = 7 }, "Diff: wire version 7, expected 1")
        XCTAssertEqual(decode(d, src: 2, selfID: 1) { $0.removeLast() }, "Diff: run at offset 8 needs 3 bytes, 2 left")
        XCTAssertEqual(decode(d, src: 2, selfID: 1) { $0[34] = 0; $0[35] = 0 }, "Diff: run at offset 8, length 0 leaves the page")
        XCTAssertEqual(decode(d, src: 2, selfID: 1) { $0[32] = 0xFF; $0[33] = 0x0F }, "Diff: run at offset 4095, length 3 leaves the page")
        XCTAssertEqual(decode(d, src: 2, selfID: 1) { $0[24] = 1 }, "Diff: applied field is 1, must be 0")
        XCTAssertEqual(decode(d, src: 2, selfID: 1) { $0[0] = 99 }, "unknown message type 99")
        XCTAssertEqual(decode(TSOMessage(type: .diff, node: 2, gfn: 3, seq: 1), src: 2, selfID: 1), "Diff for gfn 3 has no runs")
        let overlap = TSOMessage(type: .update, node: 0, gfn: 2, seq: 1, runs: [DiffRun(offset: 8, bytes: [1, 2]), DiffRun(offset: 9, bytes: [3])])
        XCTAssertEqual(decode(overlap, src: 1, selfID: 2), "Update: run at offset 9 overlaps or precedes the previous run")
        XCTAssertEqual(decode(overlap, src: 0, selfID: 2), "Update for gfn 2 from node 0, but its home is node 1")
        let data = TSOMessage(type: .mwData, flags: .zero, node: 1, gfn: 2)
        XCTAssertNil(decode(data, src: 1, selfID: 0))
        XCTAssertEqual(decode(data, src: 1, selfID: 0) { $0[2] = 0 }, "MwData: 32 bytes, expected 4128")
        XCTAssertEqual(decode(data, src: 1, selfID: 0) { $0[2] = 4 }, "MwData: flags 0x4 not allowed")
        let done = TSOMessage(type: .diffDone, node: 0, gfn: 2, seq: 4)
        XCTAssertNil(decode(done, src: 1, selfID: 0))
        XCTAssertEqual(decode(done, src: 1, selfID: 2), "DiffDone for node 0's diff reached node 2")
        XCTAssertEqual(decode(TSOMessage(type: .updateAck, node: 2, gfn: 2, seq: 4), src: 2, selfID: 1),
                       "UpdateAck from node 2 for its own diff")
    }

    func testTableIsExhaustiveAndPinnableActionsComeFirst() {
        let pinnable: Set<MwAction> = [.p_installFetched, .p_protectAndDiff, .p_applyRuns]
        for s in MwState.allCases {
            for e in MwEvent.allCases {
                if case let .go(_, actions) = TSOTable.mw(s, e) {
                    for (i, a) in actions.enumerated() where pinnable.contains(a) {
                        XCTAssertEqual(i, 0, "\(s)/\(e.rawValue): \(a.rawValue) must be first")
                    }
                }
            }
        }
        let d = TSOTable.describe()
        for s in MwState.allCases { XCTAssertTrue(d.contains("  \(s) "), "\(s) missing from describe()") }
        XCTAssertTrue(d.contains("Cache controller transitions"), "the sc pages' Ivy tables must follow")
    }

    func testSettings() throws {
        let c = try TSOConfig.parse(["relaxed": "0x3000:8KiB, 0x1000:4KiB", "flush_interval": "250us"], pageCount: 16, nodeCount: 2)
        XCTAssertEqual(c.relaxed, [1..<2, 3..<5])
        XCTAssertEqual(c.flushIntervalNanoseconds, 250_000)
        XCTAssertEqual(try TSOConfig.parse([:], pageCount: 16, nodeCount: 2).relaxed, [])
        func err(_ s: [String: String]) -> String {
            do { _ = try TSOConfig.parse(s, pageCount: 16, nodeCount: 2); return "accepted" } catch { return "\(error)" }
        }
        XCTAssertEqual(err(["relaxed": "0x1001:4KiB"]), "setting 'relaxed': '0x1001:4KiB' is not page aligned (base and length multiples of 4KiB)")
        XCTAssertEqual(err(["relaxed": "0xF000:8KiB"]), "setting 'relaxed': '0xF000:8KiB' ends beyond guest memory (64KiB)")
        XCTAssertEqual(err(["relaxed": "0x1000"]), "setting 'relaxed': '0x1000' is not BASE:LENGTH (e.g. 0x200000:64KiB)")
        XCTAssertEqual(err(["relaxed": "zz:4KiB"]), "setting 'relaxed': base 'zz' is not a decimal or 0x hex address")
        XCTAssertTrue(err(["flush_interval": "1us"]).hasPrefix("setting 'flush_interval':"), err(["flush_interval": "1us"]))
        XCTAssertTrue(err(["promote": "2"]).hasPrefix("unknown setting 'promote'"))
        XCTAssertEqual(try TSOConfig.parse(["hold_time": "0"], pageCount: 16, nodeCount: 2).ivy.holdNanoseconds, 0)
        // read-ahead: off unless asked for; when asked for, dsm-ivy's range check applies
        XCTAssertEqual(try TSOConfig.parse([:], pageCount: 16, nodeCount: 2).ivy.readAhead, 0)
        XCTAssertEqual(try TSOConfig.parse(["read_ahead": "16"], pageCount: 16, nodeCount: 2).ivy.readAhead, 16)
        XCTAssertTrue(err(["read_ahead": "65"]).contains("read_ahead"), err(["read_ahead": "65"]))
        let auto = try TSOConfig.parse(["relaxed_start": "sc", "switch_after": "3", "switch_window": "5ms", "switch_back_after": "0"],
                                       pageCount: 16, nodeCount: 2)
        XCTAssertEqual([auto.startSc ? 1 : 0, auto.switchAfter, Int(auto.switchWindowNanoseconds), auto.switchBackAfter], [1, 3, 5_000_000, 0])
        XCTAssertEqual(try TSOConfig.parse([:], pageCount: 16, nodeCount: 2).switchBackAfter, 16)
        XCTAssertEqual(err(["relaxed_start": "auto"]), "setting 'relaxed_start': 'auto' is not mw or sc")
        XCTAssertEqual(err(["switch_after": "0"]), "setting 'switch_after': 0 is out of range 1...1000")
    }

    func testFuzzedFramesStopTheNodeWithAMessageNeverACrash() throws {
        // Realistic shapes: every message a short multiple-writer run delivers.
        let c = try cluster(nodes: 3, relaxed: [1, 3], seed: 77, maxDelay: 3)
        var samples: [SimMessage] = []
        c.onDeliver = { samples.append($0) }
        for n in 0..<3 {
            c.addThread(node: UInt32(n), FalseShareProgram(page: 1, slot: n, count: 20, fenceEvery: 5))
            c.addThread(node: UInt32(n), RacyProgram(page: 3, count: 5))
            c.addThread(node: UInt32(n), RandomProgram(pages: [0, 2], slots: 2, ops: 10, writePercent: 50, seed: UInt64(n)))
        }
        XCTAssertTrue(c.run().ok)
        XCTAssertGreaterThan(samples.filter { $0.bytes[0] >= TSOWire.firstType }.count, 20)
        let opts = ConformanceOptions(settings: [("relaxed", "0x1000:4KiB,0x3000:4KiB")])
        let r = try Conformance.fuzzReceive(tso, nodes: 3, seed: 5, iterations: 3000, samples: samples, options: opts)
        XCTAssertGreaterThan(r.fatal, 1000)
        // Every fatal names the node and a reason.
        let c2 = try cluster(nodes: 2, relaxed: [1], seed: 1)
        c2.inject(from: 1, to: 0, [34, 1, 0, 0, 1, 0, 0, 0, 1] + [UInt8](repeating: 0, count: 23) + [0, 0, 9, 0])
        XCTAssertEqual(c2.nodes[0].fatals, ["dsm-tso node 0: malformed message from node 1: Diff: run at offset 0 needs 9 bytes, 0 left"])
    }
}
