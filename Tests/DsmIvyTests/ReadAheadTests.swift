// Read-ahead (Plugins/dsm-ivy/Core/ReadAhead.swift): the pattern detector on its own; the
// GetSBatch wire format; and simulated clusters where every Ivy check (golden memory, single
// writer, exact totals, the standard statistics) must hold with read-ahead on and off, while a
// sequential reader gets its pages prefetched.

import XCTest
import PluginAPI
import CoherenceKit
@testable import IvyCore

final class ReadAheadDetectorTests: XCTestCase {
    func testSequentialStreamIsConfirmedOnTheSecondFaultAndKeepsItsWindowFull() {
        var d = ReadAheadDetector(window: 4)
        XCTAssertEqual(d.access(10, pageCount: 100).fetch, [])
        XCTAssertEqual(d.access(11, pageCount: 100).fetch, [12, 13, 14, 15])
        // A wait on a page still in flight extends the window by what is not requested yet.
        let inFlight = d.access(12, pageCount: 100)
        XCTAssertEqual(inFlight.fetch, [16])
        XCTAssertEqual(inFlight.passed, [])
        // The next miss one past the window: the pages before it were passed over (used), and
        // the reader outran the window, so it doubles.
        let next = d.access(17, pageCount: 100)
        XCTAssertEqual(next.passed, [13, 14, 15, 16])
        XCTAssertEqual(next.fetch, Array(18...25))
    }

    func testWindowGrowsWhileTheReaderOutrunsItUpToItsCap() {
        var d = ReadAheadDetector(window: 4)
        _ = d.access(0, pageCount: 10_000)
        var g: UInt64 = 1
        var sizes: [Int] = []
        for _ in 0..<5 {
            let r = d.access(g, pageCount: 10_000)
            sizes.append(r.fetch.count)
            g = (r.fetch.last ?? g) + 1      // the reader used everything, then misses just past it
        }
        XCTAssertEqual(sizes, [4, 8, 16, 16, 16], "doubling up to \(ReadAheadDetector.growth)x the setting")
        // A fault on a page still in flight (inside the window) does not grow it.
        var e = ReadAheadDetector(window: 4)
        _ = e.access(0, pageCount: 100)
        XCTAssertEqual(e.access(1, pageCount: 100).fetch, [2, 3, 4, 5])
        XCTAssertEqual(e.access(3, pageCount: 100).fetch, [6, 7])
    }

    func testDescendingAndStridedStreams() {
        var down = ReadAheadDetector(window: 3)
        _ = down.access(50, pageCount: 100)
        XCTAssertEqual(down.access(49, pageCount: 100).fetch, [48, 47, 46])
        // A stride other than 1 must be seen twice before it is trusted.
        var strided = ReadAheadDetector(window: 3)
        _ = strided.access(0, pageCount: 100)
        XCTAssertEqual(strided.access(4, pageCount: 100).fetch, [])
        let d = strided.access(8, pageCount: 100)
        XCTAssertEqual(d.fetch, [12, 16, 20])
        XCTAssertEqual(d.stride, 4)
        // A miss one stride past the window: the window doubles.
        XCTAssertEqual(strided.access(24, pageCount: 100).fetch, [28, 32, 36, 40, 44, 48])
    }

    func testRandomFaultsAndFarJumpsRequestNothing() {
        var d = ReadAheadDetector(window: 8)
        var rng = SplitMix64(seed: 9)
        var fetched = 0
        for _ in 0..<200 { fetched += d.access(rng.next(1_000_000) * 1000, pageCount: 1_000_000_000).fetch.count }
        XCTAssertEqual(fetched, 0)
    }

    func testWindowStaysInsideTheGuestAndZeroTurnsItOff() {
        var d = ReadAheadDetector(window: 8)
        _ = d.access(96, pageCount: 100)
        XCTAssertEqual(d.access(97, pageCount: 100).fetch, [98, 99])
        var down = ReadAheadDetector(window: 8)
        _ = down.access(3, pageCount: 100)
        XCTAssertEqual(down.access(2, pageCount: 100).fetch, [1, 0])
        var off = ReadAheadDetector(window: 0)
        for g in 0..<UInt64(20) { XCTAssertEqual(off.access(g, pageCount: 100), .init()) }
    }

    func testInterleavedStreamsAreTrackedSeparately() {
        var d = ReadAheadDetector(window: 2)
        _ = d.access(100, pageCount: 1000)
        _ = d.access(500, pageCount: 1000)
        XCTAssertEqual(d.access(101, pageCount: 1000).fetch, [102, 103])
        XCTAssertEqual(d.access(501, pageCount: 1000).fetch, [502, 503])
        XCTAssertEqual(d.access(104, pageCount: 1000).fetch, [105, 106, 107, 108])
    }

    func testSettingIsParsedAndRangeChecked() throws {
        XCTAssertEqual(try IvyConfig.parse([:], pageCount: 64, nodeCount: 2).readAhead, 16)
        XCTAssertEqual(try IvyConfig.parse(["read_ahead": "0"], pageCount: 64, nodeCount: 2).readAhead, 0)
        XCTAssertEqual(try IvyConfig.parse(["read_ahead": "64"], pageCount: 64, nodeCount: 2).readAhead, 64)
        for bad in ["65", "-1", "lots", "1.5", ""] {
            XCTAssertThrowsError(try IvyConfig.parse(["read_ahead": bad], pageCount: 64, nodeCount: 2)) {
                XCTAssertEqual("\($0)", "setting 'read_ahead': '\(bad)' is not a page count from 0 (off) to 64")
            }
        }
    }
}

final class GetSBatchWireTests: XCTestCase {
    let map = ManagerMap(chunkPages: 4, nodeCount: 2)   // gfn 0-3 -> node 0, 4-7 -> node 1, ...

    func decode(_ b: [UInt8], src: UInt32 = 1, selfID: UInt32 = 0) -> Result<Message, WireError> {
        b.withUnsafeBytes { buf in
            Result { try IvyWire.decode(buf, src: src, selfID: selfID, nodeCount: 2, pageCount: 16, managerOf: map.manager(of:)) }
                .mapError { $0 as! WireError }
        }
    }

    func message(_ r: Result<Message, WireError>) -> String? {
        if case let .failure(e) = r { return e.message }
        return nil
    }

    func testRoundTrip() throws {
        let b = IvyWire.encodeBatch(node: 1, hops: 1, gfns: [1, 2, 3, 8])
        XCTAssertEqual(b.count, 24 + 32)
        let m = try decode(b).get()
        XCTAssertEqual(m.type, .getSBatch)
        XCTAssertEqual(m.batch, [1, 2, 3, 8])
        XCTAssertEqual(m.gfn, 1)
        XCTAssertEqual(m.node, 1)
        XCTAssertEqual(m.hops, 1)
    }

    func testEveryFieldIsValidated() {
        XCTAssertEqual(message(decode(IvyWire.encodeBatch(node: 1, gfns: [1, 4]))),
                       "GetSBatch: gfn 4 sent to node 0, but its manager is node 1")
        XCTAssertEqual(message(decode(IvyWire.encodeBatch(node: 1, gfns: [1, 2, 1]))), "GetSBatch: gfn 1 listed twice")
        XCTAssertEqual(message(decode(IvyWire.encodeBatch(node: 0, gfns: [1]))), "GetSBatch from node 1 claims to be from node 0")
        var long = IvyWire.encodeBatch(node: 1, gfns: [1, 2])
        long.append(0)
        XCTAssertEqual(message(decode(long)), "GetSBatch: 41 bytes, expected 40 for 2 pages")
        var count = IvyWire.encodeBatch(node: 1, gfns: [1])
        count[16] = 65
        XCTAssertEqual(message(decode(count)), "GetSBatch: 65 pages listed, expected 1...64")
        count[16] = 0
        XCTAssertEqual(message(decode(count)), "GetSBatch: 0 pages listed, expected 1...64")
        var range = IvyWire.encodeBatch(node: 1, gfns: [1, 2])
        range[32] = 200
        XCTAssertEqual(message(decode(range)), "GetSBatch: gfn 200 out of range (16 pages)")
        var first = IvyWire.encodeBatch(node: 1, gfns: [1, 2])
        first[8] = 2
        XCTAssertEqual(message(decode(first)), "GetSBatch: header gfn 2 is not the first listed (1)")
        var flags = IvyWire.encodeBatch(node: 1, gfns: [1])
        flags[2] = 1
        XCTAssertEqual(message(decode(flags)), "GetSBatch: flags 0x1 not allowed")
    }
}

/// Reads `pages` pages (word 0 and a word in the middle) from `first` with `stride`, `rounds`
/// times; every load is checked against golden memory by the simulation.
final class StreamReader: SimProgram {
    let first: UInt64, pages: Int, stride: Int64, rounds: Int
    var round = 0, i = 0, word = 0
    init(first: UInt64, pages: Int, stride: Int64 = 1, rounds: Int = 1) {
        self.first = first; self.pages = pages; self.stride = stride; self.rounds = rounds
    }
    func step(_ t: SimThread) -> Bool {
        guard round < rounds else { return false }
        let g = UInt64(Int64(first) + Int64(i) * stride)
        guard t.load(g, word == 0 ? 0 : 256) != nil else { return true }
        word += 1
        if word == 2 { word = 0; i += 1 }
        if i == pages { i = 0; round += 1 }
        return round < rounds
    }
}

/// Writes a unique value to word 0 and 256 of each of `pages` (its own sequence), `rounds` times.
final class PageWriter: SimProgram {
    let pages: [UInt64], rounds: Int
    var round = 0, i = 0, word = 0
    init(pages: [UInt64], rounds: Int = 1) { self.pages = pages; self.rounds = rounds }
    func step(_ t: SimThread) -> Bool {
        guard round < rounds else { return false }
        let v = UInt64(t.id) << 48 | UInt64(round) << 32 | UInt64(i) << 1 | UInt64(word)
        guard t.store(pages[i], word == 0 ? 0 : 256, v) else { return true }
        word += 1
        if word == 2 { word = 0; i += 1 }
        if i == pages.count { i = 0; round += 1 }
        return round < rounds
    }
}

/// Node `writer` writes `pages` (PageWriter), then node `reader` runs `read`: every check of the
/// simulation (golden memory, single writer, exact totals) and the standard statistics, with the
/// counters summed over the nodes.
func writeThenRead(_ c: SimCluster, writer: UInt32, _ pages: [UInt64], reader: UInt32, _ read: SimProgram) -> RunOutcome {
    c.addThread(node: writer, PageWriter(pages: pages))
    var r = c.run(maxSteps: 400_000)
    guard r.ok else { return RunOutcome(problems: ["writer: \(r)"], totals: [:]) }
    c.addThread(node: reader, read)
    r = c.run(maxSteps: 400_000)
    var problems = r.violations + r.fatals
    if let s = r.stuck { problems.append("stuck: \(s)") }
    var totals: [String: UInt64] = [:]
    for n in c.nodes { for (k, v) in n.counters { totals[k, default: 0] += v } }
    let stats = problems.isEmpty ? Conformance.statisticsProblems(c) : []
    return RunOutcome(problems: problems + stats, totals: totals)
}

/// One run's problems (empty = every check held) and counter totals over the nodes.
struct RunOutcome: CustomStringConvertible {
    var problems: [String]
    var totals: [String: UInt64]
    var ok: Bool { problems.isEmpty }
    var description: String { ok ? "ok" : problems.joined(separator: "\n  ") }
}

final class ReadAheadClusterTests: XCTestCase {
    /// Node 1 writes 48 pages, then (after its writes, by program order of the run) node 0 reads
    /// them in order; with `read_ahead` the reader's misses shrink and its pages come prefetched.
    func sequential(readAhead: String, seed: UInt64, stride: Int64 = 1, chunk: String = "auto", nodes: Int = 2,
                    delay: Int = 0) throws -> (RunOutcome, SimCluster) {
        let pages = 48
        let c = try SimCluster(descriptor: ivy, nodes: nodes, pages: 96, seed: seed,
                               settings: [("read_ahead", readAhead), ("manager_chunk", chunk)])
        c.network.maxDelay = delay
        let span = (0..<pages).map { UInt64(Int64($0) * stride) }
        // Phase 1: the last node writes (becomes owner of every page); phase 2: node 0 reads.
        let outcome = writeThenRead(c, writer: UInt32(nodes - 1), span,
                                    reader: 0, StreamReader(first: 0, pages: pages, stride: stride, rounds: 2))
        return (outcome, c)
    }

    func testSequentialRemoteReadGetsPagesPrefetchedAndStaysExact() throws {
        let (off, offCluster) = try sequential(readAhead: "0", seed: 1)
        XCTAssertTrue(off.ok, "\(off)")
        XCTAssertEqual(offCluster.nodes[0].counter("dsm.fault.read_miss"), 48)
        XCTAssertEqual(off.totals["ivy.readahead.prefetched"] ?? 0, 0)
        XCTAssertEqual(off.totals["ivy.msg.GetSBatch"] ?? 0, 0)

        let (on, onCluster) = try sequential(readAhead: "8", seed: 1)
        XCTAssertTrue(on.ok, "\(on)")
        let reader = onCluster.nodes[0]
        let misses = reader.counter("dsm.fault.read_miss")
        let prefetched = reader.counter("ivy.readahead.prefetched")
        XCTAssertLessThanOrEqual(misses, 12, "one miss per page despite read-ahead")
        XCTAssertGreaterThanOrEqual(prefetched + misses, 48, "every page was requested, one way or the other")
        XCTAssertGreaterThan(reader.counter("ivy.msg.GetSBatch"), 0)
        XCTAssertEqual(reader.counter("ivy.readahead.batches"), reader.counter("ivy.msg.GetSBatch"))
        // `used` counts a prefetched page once a later fault of its stream lies past it: with the
        // window grown to 32 pages, the last window of the 48-page stream is never passed.
        XCTAssertGreaterThanOrEqual(reader.counter("ivy.readahead.used"), 16)
        XCTAssertEqual(reader.counter("ivy.readahead.wasted"), 0)
        XCTAssertLessThanOrEqual(reader.counter("ivy.readahead.used"), prefetched)
        // The replies came batched: forwards gathered by the manager, read copies by the owner,
        // which write-protected each run of its modified pages with one call (ABI 5).
        XCTAssertGreaterThan(on.totals["ivy.msg.DataBatch"] ?? 0, 0)
        XCTAssertGreaterThan(onCluster.nodes[1].batchDowngrades, 0)
        XCTAssertEqual(onCluster.nodes[1].counter("ivy.readahead.batch_downgrades"), UInt64(onCluster.nodes[1].batchDowngrades))
        XCTAssertEqual(offCluster.nodes[1].batchDowngrades, 0, "a single FwdGetS downgrades its page alone")
        XCTAssertGreaterThan(on.totals["ivy.msg.FwdGetSBatch"] ?? 0, 0)
        // ... and contiguous runs of them were installed with one page_install_batch each.
        XCTAssertGreaterThan(reader.counter("ivy.readahead.batch_installs"), 0)
        XCTAssertEqual(UInt64(reader.batchInstalls), reader.counter("ivy.readahead.batch_installs"))
    }

    func testStridedAndDescendingAndInterleavedManagersStayExact() throws {
        for seed in UInt64(1)...30 {
            let stride: Int64 = seed % 3 == 0 ? 2 : 1
            let chunk = seed % 2 == 0 ? "4KiB" : "auto"
            let (r, c) = try sequential(readAhead: "\(1 + seed % 16)", seed: seed, stride: stride, chunk: chunk,
                                        nodes: 2 + Int(seed % 3), delay: Int(seed % 4) * 2)
            XCTAssertTrue(r.ok, "seed \(seed): \(r)")
            XCTAssertGreaterThan(c.nodes[0].counter("ivy.readahead.prefetched"), 0, "seed \(seed)")
            if !r.ok { break }
        }
    }

    /// A reader streams over pages a writer keeps rewriting: prefetched copies get invalidated
    /// (wasted), every read still sees the latest write, and single writer holds throughout.
    func testPrefetchedCopiesInvalidatedByAWriterAreWastedAndReadsStayExact() throws {
        var wasted: UInt64 = 0
        for seed in UInt64(1)...40 {
            let c = try SimCluster(descriptor: ivy, nodes: 2 + Int(seed % 2), pages: 64, seed: seed,
                                   settings: [("read_ahead", "8")])
            c.network.maxDelay = Int(seed % 3) * 2
            c.addThread(node: 0, StreamReader(first: 0, pages: 32, rounds: 3))
            c.addThread(node: 1, PageWriter(pages: (0..<32).map { UInt64(31 - $0) }, rounds: 3))
            let r = c.run(maxSteps: 600_000)
            XCTAssertTrue(r.ok, "seed \(seed): \(r)")
            XCTAssertEqual(Conformance.statisticsProblems(c), [], "seed \(seed)")
            let n0 = c.nodes[0]
            XCTAssertLessThanOrEqual(n0.counter("ivy.readahead.used") + n0.counter("ivy.readahead.wasted"),
                                     n0.counter("ivy.readahead.prefetched"), "seed \(seed)")
            wasted += n0.counter("ivy.readahead.wasted")
            if !r.ok { break }
        }
        XCTAssertGreaterThan(wasted, 0, "no prefetched copy was ever invalidated unused")
    }

    /// The conformance scenarios with read-ahead off and at its largest window (the default
    /// window runs in ConformanceTests).
    func testConformanceScenariosWithReadAheadOffAndMax() throws {
        for setting in ["0", "64"] {
            let s: [(String, String)] = [("read_ahead", setting)]
            _ = try sweep("locked counter read_ahead \(setting)", seeds: 150, base: 20_000) { seed in
                try Conformance.lockedCounter(ivy, nodes: 2 + Int(seed % 3), threadsPerNode: 1 + Int(seed % 2), increments: 4,
                                              seed: seed, options: .init(settings: s, maxDelay: Int(seed % 4) * 3))
            }
            let (_, _, totals) = try sweep("random read_ahead \(setting)", seeds: 200, base: 30_000) { seed in
                try Conformance.random(ivy, nodes: 2 + Int(seed % 3), threadsPerNode: 2, pages: 8, ops: 16,
                                       writePercent: 20 + seed % 50, seed: seed,
                                       options: .init(settings: s + (seed % 2 == 0 ? [] : [("manager_chunk", "4KiB")]),
                                                      maxDelay: Int(seed % 5) * 2))
            }
            if setting == "0" {
                XCTAssertEqual(totals["ivy.readahead.prefetched"] ?? 0, 0)
            } else {
                XCTAssertGreaterThan(totals["ivy.readahead.prefetched"] ?? 0, 0, "random accesses over 8 pages never read ahead")
            }
            _ = try sweep("pingpong read_ahead \(setting)", seeds: 60, base: 40_000) { seed in
                try Conformance.pingPong(ivy, nodes: 2 + Int(seed % 3), rounds: 6, seed: seed,
                                         options: .init(settings: s, maxDelay: Int(seed % 3) * 4))
            }
            let (_, _, pins) = try sweep("pin read_ahead \(setting)", seeds: 80, base: 50_000) { seed in
                try Conformance.pinHoldsOffWrites(ivy, nodes: 2 + Int(seed % 3), holdSteps: 10 + Int(seed % 30), seed: seed,
                                                  options: .init(settings: s, maxDelay: Int(seed % 3) * 3))
            }
            XCTAssertGreaterThan(pins["dsm.pin.deferred"] ?? 0, 0)
        }
    }
}
