// The conformance suite: standard scenarios every coherence plugin that promises page-granular
// sequential consistency must pass, given only its descriptor (as swift-log's conformance tests
// take only a LogHandler). Each returns a `ScenarioResult` whose `problems` is empty on success;
// the caller (an XCTest) asserts on it. Plugin-specific races (which need to recognise the
// plugin's own messages) are built from the same pieces: SimCluster.hold / onDeliver / inject.
//
// Threading: single-threaded (see SimNode).

import PluginAPI

public struct ScenarioResult: CustomStringConvertible {
    public var report: RunReport
    public var problems: [String]
    /// Messages the network delivered.
    public var messages: Int
    /// Every counter the plugin reported, summed over the nodes (e.g. "dsm.page.sent_data").
    public var totals: [String: UInt64] = [:]
    /// Where the plugin's standard statistics (giantvm_plugin.h, GVM_STAT_*) disagree with what
    /// the kit saw (checked after a clean run; see `Conformance.statisticsProblems`). Not part of
    /// `ok`: a test asserts it is empty for a plugin that promises the standard statistics.
    public var statistics: [String] = []
    /// The scheduler step (over the whole schedule) at which the first problem showed, if any.
    public var failedAtStep: Int?
    /// A litmus scenario's observed outcome (e.g. "r0=1 r1=0"); nil for the others.
    public var outcome: String?
    public var ok: Bool { problems.isEmpty }
    public var description: String {
        problems.isEmpty ? "ok: \(report)" : "FAILED: \(report)\n  " + problems.joined(separator: "\n  ")
    }
}

public struct ConformanceOptions {
    public var settings: [(String, String)] = []
    public var maxDelay = 0
    public var threadBias = 50
    public var maxSteps = 400_000
    /// Check single-writer/multiple-readers and every copy's data after each step (SC protocols).
    public var checkSWMR = true
    /// Check that every load returns the latest store (page-granular SC).
    public var checkLinearizable = true
    /// Receives the schedule step by step (see SimCluster.trace).
    public var trace: ((String) -> Void)?
    /// Pages the plugin keeps relaxed (PageLayout): the per-step checks skip them.
    public var relaxedPages: Set<UInt64> = []
    /// The simulated guest memory holds at least this many pages (every relaxed range).
    public var minimumPages = 0
    public init(settings: [(String, String)] = [], maxDelay: Int = 0, threadBias: Int = 50, maxSteps: Int = 400_000) {
        self.settings = settings
        self.maxDelay = maxDelay
        self.threadBias = threadBias
        self.maxSteps = maxSteps
    }
}

public enum Conformance {
    public static func make(_ d: UnsafeRawPointer, nodes: Int, pages: Int, seed: UInt64, _ o: ConformanceOptions) throws -> SimCluster {
        let c = try SimCluster(descriptor: d, nodes: nodes, pages: max(pages, o.minimumPages), seed: seed, settings: o.settings)
        c.uncheckedPages = o.relaxedPages
        c.network.maxDelay = o.maxDelay
        c.threadBias = o.threadBias
        c.checkSWMR = o.checkSWMR
        c.checkLinearizable = o.checkLinearizable
        c.trace = o.trace
        return c
    }

    public static func finish(_ c: SimCluster, _ r: RunReport, _ extra: [String], verify: Bool = true) -> ScenarioResult {
        var problems = extra
        if let s = r.stuck { problems.append("stuck: \(s)") }
        problems += r.fatals.map { "fatal: \($0)" }
        problems += r.violations
        var final = r
        if problems.isEmpty && verify {
            let v = c.verifyFromEveryNode()
            if let s = v.stuck { problems.append("verification stuck: \(s)") }
            problems += v.fatals.map { "fatal during verification: \($0)" }
            problems += v.violations
            final.steps += v.steps
        }
        var totals: [String: UInt64] = [:]
        for n in c.nodes { for (k, v) in n.counters { totals[k, default: 0] += v } }
        return ScenarioResult(report: final, problems: problems, messages: c.network.delivered, totals: totals,
                              statistics: problems.isEmpty ? statisticsProblems(c) : [],
                              failedAtStep: problems.isEmpty ? nil : (c.firstProblemStep ?? c.totalSteps))
    }

    /// Checks a plugin's standard statistics against what the kit itself saw, after a run that
    /// ended cleanly (every thread done, no fatal):
    ///   - every node looked up every standard counter and histogram name;
    ///   - per node, dsm.msg.sent / dsm.bytes.sent equal the send calls the plugin made and their
    ///     bytes, and dsm.msg.received / dsm.bytes.received the receive calls it was given;
    ///   - per node, each kind of request has one latency sample per request (read_miss +
    ///     write_miss + upgrade samples in dsm.fault_latency), since every request completed;
    ///   - with nothing left in flight, invalidations sent equal invalidations received, over the
    ///     cluster, and page data sent fits in the bytes sent.
    public static func statisticsProblems(_ c: SimCluster) -> [String] {
        var p: [String] = []
        let counters = (0..<GVM_STAT_COUNTER_COUNT).map { String(cString: gvm_stat_counter_name($0)) }
        let histograms = (0..<GVM_STAT_HISTOGRAM_COUNT).map { String(cString: gvm_stat_histogram_name($0)) }
        for n in c.nodes {
            let at = "node \(n.id)"
            for name in counters where !n.registeredCounters.contains(name) { p.append("\(at): does not report counter \(name)") }
            for name in histograms where !n.registeredHistograms.contains(name) { p.append("\(at): does not report histogram \(name)") }
            func expect(_ name: String, _ seen: UInt64, _ what: String) {
                if n.counter(name) != seen { p.append("\(at): \(name) = \(n.counter(name)), but \(what) \(seen)") }
            }
            expect(GVM_STAT_MSG_SENT, n.sentMessages, "the plugin called send")
            expect(GVM_STAT_BYTES_SENT, n.sentBytes, "it sent bytes:")
            expect(GVM_STAT_MSG_RECEIVED, n.receivedMessages, "receive was called")
            expect(GVM_STAT_BYTES_RECEIVED, n.receivedBytes, "it received bytes:")
            let kinds: [(String, String)] = [(GVM_STAT_FAULT_READ_MISS, GVM_STAT_FAULT_LATENCY_READ_MISS),
                                             (GVM_STAT_FAULT_WRITE_MISS, GVM_STAT_FAULT_LATENCY_WRITE_MISS),
                                             (GVM_STAT_FAULT_UPGRADE, GVM_STAT_FAULT_LATENCY_UPGRADE)]
            var requests: UInt64 = 0
            for (counter, histogram) in kinds {
                let samples = UInt64(n.histograms[histogram]?.count ?? 0)
                requests += n.counter(counter)
                if samples != n.counter(counter) {
                    p.append("\(at): \(counter) = \(n.counter(counter)) requests, but \(histogram) has \(samples) samples")
                }
            }
            let all = UInt64(n.histograms[GVM_STAT_FAULT_LATENCY]?.count ?? 0)
            if all != requests { p.append("\(at): \(GVM_STAT_FAULT_LATENCY) has \(all) samples for \(requests) requests") }
            if n.counter(GVM_STAT_PAGES_SENT_DATA) * UInt64(GVM_PAGE_SIZE) > n.counter(GVM_STAT_BYTES_SENT) {
                p.append("\(at): \(n.counter(GVM_STAT_PAGES_SENT_DATA)) pages sent with data in \(n.counter(GVM_STAT_BYTES_SENT)) bytes")
            }
        }
        if c.network.inFlight == 0 && c.total(GVM_STAT_INV_SENT) != c.total(GVM_STAT_INV_RECEIVED) {
            p.append("\(c.total(GVM_STAT_INV_SENT)) invalidations sent, \(c.total(GVM_STAT_INV_RECEIVED)) received")
        }
        return p
    }

    /// Threads on every node add to one counter under a spinlock in shared memory.
    public static func lockedCounter(_ d: UnsafeRawPointer, nodes: Int, threadsPerNode: Int, increments: Int,
                                     seed: UInt64, options: ConformanceOptions = .init(),
                                     lockPage: UInt64 = 0, counterPage: UInt64 = 1, pages: Int = 4) throws -> ScenarioResult {
        let c = try make(d, nodes: nodes, pages: pages, seed: seed, options)
        let cs = LockedCounterProgram.CriticalSection()
        for n in 0..<nodes {
            for _ in 0..<threadsPerNode {
                c.addThread(node: UInt32(n), LockedCounterProgram(lockPage: lockPage, counterPage: counterPage,
                                                                  increments: increments, section: cs))
            }
        }
        let r = c.run(maxSteps: options.maxSteps)
        var extra = cs.violations
        let expected = UInt64(nodes * threadsPerNode * increments)
        if r.ok && c.latest(counterPage, 0) != expected {
            extra.append("counter is \(c.latest(counterPage, 0)), expected \(expected)")
        }
        return finish(c, r, extra)
    }

    /// Random reads, writes and CAS increments; checks every read, every copy and the totals.
    /// `pageList` (default gfns 0..<pages): the pages accessed; `atomicPages` (default all of
    /// them): where the CAS increments go. Words of relaxed pages (options.relaxedPages) are not
    /// checked per access; at the end every node must read one value for each, one that was written.
    public static func random(_ d: UnsafeRawPointer, nodes: Int, threadsPerNode: Int, pages: Int, ops: Int,
                              writePercent: UInt64 = 50, seed: UInt64, options: ConformanceOptions = .init(),
                              pageList: [UInt64]? = nil, atomicPages: [UInt64]? = nil) throws -> ScenarioResult {
        let list = pageList ?? (0..<UInt64(pages)).map { $0 }
        let c = try make(d, nodes: nodes, pages: max(pages, Int(list.max() ?? 0) + 1), seed: seed, options)
        var programs: [RandomProgram] = []
        for n in 0..<nodes {
            for i in 0..<threadsPerNode {
                let p = RandomProgram(pages: list, atomicPages: atomicPages, slots: 3, ops: ops, writePercent: writePercent,
                                      seed: seed &* 31 &+ UInt64(n * 7 + i))
                programs.append(p)
                c.addThread(node: UInt32(n), p)
            }
        }
        let r = c.run(maxSteps: options.maxSteps)
        var extra: [String] = []
        if r.ok {
            for g in Set(atomicPages ?? list).sorted() {
                let expected = programs.reduce(0) { $0 + ($1.increments[g] ?? 0) }
                if c.latest(g, 0) != expected { extra.append("gfn \(g): increments total \(c.latest(g, 0)), expected \(expected) (lost update)") }
            }
            extra += convergence(c)
        }
        return finish(c, r, extra)
    }

    /// Two nodes alternately write one page.
    public static func pingPong(_ d: UnsafeRawPointer, nodes: Int = 2, rounds: Int, seed: UInt64,
                                options: ConformanceOptions = .init(), page: UInt64 = 1) throws -> ScenarioResult {
        let c = try make(d, nodes: nodes, pages: Int(page) + 1, seed: seed, options)
        c.addThread(node: 0, PingPongProgram(page: page, parity: 0, rounds: rounds))
        c.addThread(node: UInt32(nodes - 1), PingPongProgram(page: page, parity: 1, rounds: rounds))
        let r = c.run(maxSteps: options.maxSteps)
        var extra: [String] = []
        if r.ok && c.latest(page, 0) != UInt64(2 * rounds) { extra.append("final \(c.latest(page, 0)), expected \(2 * rounds)") }
        return finish(c, r, extra)
    }

    /// Node `pinner` pins a page for writing (host DMA), holds it while node `writer` tries to
    /// write it, stores through the pin, and unpins. The writer's store must land after the DMA
    /// store (the pin held it off), so the final value is the writer's and the writer read the
    /// DMA value first.
    /// `gfn` must be an sc page: on a relaxed (multiple-writer) page another node may write while
    /// the pin holds (see Conformance.pinnedRelaxedWrite).
    public static func pinHoldsOffWrites(_ d: UnsafeRawPointer, nodes: Int = 2, holdSteps: Int = 40, seed: UInt64,
                                         options: ConformanceOptions = .init(), gfn: UInt64 = 1) throws -> ScenarioResult {
        let c = try make(d, nodes: nodes, pages: Int(gfn) + 1, seed: seed, options)
        var pinned = false
        var unpinned = false
        var held = 0
        var writerSawDuringPin: [String] = []
        // The pinner: pin (bringing the page in), DMA-store 0xD, hold, unpin.
        c.addThread(node: 0, ClosureProgram { t in
            if !pinned {
                guard t.pin(gfn, write: true) else { return true }
                pinned = true
                t.dmaStore(gfn, 0, 0xD)
                return true
            }
            if held < holdSteps {
                held += 1
                if t.pageState(gfn) != GVM_PAGE_MODIFIED {
                    writerSawDuringPin.append("pinned page left MODIFIED while pinned")
                }
                return true
            }
            t.unpin(gfn, write: true)
            unpinned = true
            return false
        })
        // The writer: wait until the pin is taken, then read-modify-write.
        var phase = 0
        var readValue: UInt64 = 0
        c.addThread(node: UInt32(nodes - 1), ClosureProgram { t in
            switch phase {
            case 0:
                if pinned { phase = 1 }
                return true
            case 1:
                guard let v = t.load(gfn, 0) else { return true }
                if !unpinned && v != 0xD { writerSawDuringPin.append("writer read \(v) while pinned") }
                readValue = v
                phase = 2
                return true
            default:
                guard t.store(gfn, 0, readValue + 1) else { return true }
                if !unpinned { writerSawDuringPin.append("writer's store completed while the page was pinned on node 0") }
                return false
            }
        })
        let r = c.run(maxSteps: options.maxSteps)
        var extra = writerSawDuringPin
        if r.ok && c.latest(gfn, 0) != 0xE { extra.append("final value \(c.latest(gfn, 0)), expected 0xe") }
        return finish(c, r, extra)
    }

    /// Records every message a short random run delivers, for fuzzing with realistic shapes.
    /// `options`: the plugin's settings (with relaxed pages, `pageList` should include some, so
    /// that the protocol's multiple-writer messages are sampled too).
    public static func sampleMessages(_ d: UnsafeRawPointer, nodes: Int, seed: UInt64, options: ConformanceOptions = .init(),
                                      pageList: [UInt64] = [0, 1, 2, 3]) throws -> [SimMessage] {
        var o = ConformanceOptions(settings: options.settings)
        o.relaxedPages = options.relaxedPages
        o.minimumPages = options.minimumPages
        o.checkSWMR = false
        o.checkLinearizable = false
        let c = try make(d, nodes: nodes, pages: Int(pageList.max() ?? 3) + 1, seed: seed, o)
        var seen: [SimMessage] = []
        c.onDeliver = { seen.append($0) }
        for n in 0..<nodes {
            c.addThread(node: UInt32(n), RandomProgram(pages: pageList, slots: 2, ops: 20, writePercent: 50, seed: seed + UInt64(n)))
        }
        _ = c.run()
        return seen
    }

    /// Hands `iterations` hostile messages (random bytes, truncations, bit flips and field changes
    /// of real messages) to fresh clusters. The plugin must neither crash nor hang; it may call
    /// fatal. Returns how many were reported through fatal and how many were accepted silently.
    public static func fuzzReceive(_ d: UnsafeRawPointer, nodes: Int, seed: UInt64, iterations: Int,
                                   samples: [SimMessage], options: ConformanceOptions = .init()) throws -> (fatal: Int, silent: Int) {
        var rng = SplitMix64(seed: seed)
        var fatal = 0
        var silent = 0
        var c = try make(d, nodes: nodes, pages: 4, seed: seed, options)
        for i in 0..<iterations {
            if c.nodes.contains(where: { !$0.fatals.isEmpty }) || i % 50 == 0 {
                c = try make(d, nodes: nodes, pages: 4, seed: seed &+ UInt64(i), options)
            }
            var bytes: [UInt8]
            var src = UInt32(rng.next(UInt64(nodes)))
            var dst = UInt32(rng.next(UInt64(nodes)))
            if dst == src { dst = (src + 1) % UInt32(nodes) }
            switch rng.next(5) {
            case 0:
                bytes = (0..<Int(rng.next(64))).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            case 1 where !samples.isEmpty:
                let s = samples[Int(rng.next(UInt64(samples.count)))]
                bytes = Array(s.bytes.prefix(Int(rng.next(UInt64(s.bytes.count + 1)))))
                src = s.src; dst = s.dst
            case 2 where !samples.isEmpty:
                let s = samples[Int(rng.next(UInt64(samples.count)))]
                bytes = s.bytes
                for _ in 0..<(1 + Int(rng.next(4))) {
                    guard !bytes.isEmpty else { break }
                    let at = Int(rng.next(UInt64(min(bytes.count, 24))))
                    bytes[at] ^= UInt8(1) << UInt8(rng.next(8))
                }
                src = s.src; dst = s.dst
            case 3 where !samples.isEmpty:
                // a real message, replayed out of context
                let s = samples[Int(rng.next(UInt64(samples.count)))]
                bytes = s.bytes
                src = s.src; dst = s.dst
            default:
                bytes = (0..<(24 + Int(rng.next(4200)))).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
                if bytes.count > 1 { bytes[1] = 1 }   // a plausible version byte (Ivy's layout)
            }
            let before = c.nodes[Int(dst)].fatals.count
            c.inject(from: src, to: dst, bytes)
            if c.nodes[Int(dst)].fatals.count > before { fatal += 1 } else { silent += 1 }
        }
        return (fatal, silent)
    }
}
