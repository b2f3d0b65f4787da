// Scenarios for relaxed (multiple-writer) memory, run when the plugin settings name relaxed
// ranges (PageLayout). What a protocol with such memory promises (docs/dsm-tso.md), judged here
// without knowing the protocol's messages:
//   - data-race-free programs are exact: data in relaxed pages written only under a lock in an sc
//     page reads, under the lock, exactly what the previous holder wrote, and ends exact on every
//     node (`mw-locked-data`);
//   - disjoint concurrent writes to one relaxed page are never lost (`mw-disjoint`);
//   - racy writes converge: once the writes stop, every node reads one value for each word, each
//     byte of it written by some thread (racing stores may merge byte-wise: see `convergence`)
//     (`mw-racy`);
//   - a relaxed page pinned for host DMA loses nothing: the DMA store reaches another node that
//     synchronises through an sc flag set after it, and the flag's handover waits while the pin
//     defers the release (`mw-pin`).
// Per-step checks stay on for the sc pages (the lock, the flag); the relaxed pages are judged at
// the end, from every node, once the cluster is quiet: a run ends only when no message is in
// flight and no timer is pending, so every flush interval has fired.
//
// Threading: single-threaded (see SimNode).

import PluginAPI

/// Reads words on one node (what that node sees after a quiet run).
public final class ReadWordsProgram: SimProgram {
    var work: [(UInt64, Int)]
    public private(set) var values: [UInt64] = []
    public init(_ words: [(UInt64, Int)]) { work = words }
    public func step(_ t: SimThread) -> Bool {
        guard let (p, off) = work.first else { return false }
        guard let v = t.load(p, off) else { return true }
        values.append(v)
        work.removeFirst()
        return !work.isEmpty
    }
}

/// A spinlock in an sc page (cmpxchg) protecting `words` of relaxed pages: the holder reads every
/// word, which must equal what the previous holder wrote (the section remembers it), then writes
/// each word + 1. `increments` sections per thread.
public final class LockedDataProgram: SimProgram {
    enum PC { case spin, tryLock, read(Int), write(Int), unlock }
    let lockPage: UInt64
    let words: [(UInt64, Int)]
    let increments: Int
    let section: Section
    var pc = PC.spin
    var done = 0

    public final class Section {
        public var inside: Int?
        /// The value every word holds after the last critical section.
        public var value: UInt64 = 0
        public var violations: [String] = []
        public init() {}
    }

    public init(lockPage: UInt64, words: [(UInt64, Int)], increments: Int, section: Section) {
        self.lockPage = lockPage
        self.words = words
        self.increments = increments
        self.section = section
    }

    public func step(_ t: SimThread) -> Bool {
        if done == increments { return false }
        switch pc {
        case .spin:
            guard let v = t.load(lockPage, 0) else { return true }
            if v == 0 { pc = .tryLock }
        case .tryLock:
            guard let ok = t.cas(lockPage, 0, expect: 0, new: UInt64(t.id + 1)) else { return true }
            if ok {
                if let other = section.inside {
                    section.violations.append("thread \(t.id) entered the critical section while thread \(other) is inside")
                }
                section.inside = t.id
                pc = .read(0)
            } else {
                pc = .spin
            }
        case let .read(i):
            let (g, off) = words[i]
            guard let v = t.load(g, off) else { return true }
            if v != section.value {
                section.violations.append("thread \(t.id) on node \(t.node) read \(v) at gfn \(g)+\(off) under the lock; the previous holder wrote \(section.value) (the lock's handover did not carry the data)")
            }
            pc = i + 1 < words.count ? .read(i + 1) : .write(0)
        case let .write(i):
            let (g, off) = words[i]
            guard t.store(g, off, section.value + 1) else { return true }
            pc = i + 1 < words.count ? .write(i + 1) : .unlock
        case .unlock:
            guard t.store(lockPage, 0, 0) else { return true }
            section.value += 1
            section.inside = nil
            done += 1
            pc = .spin
        }
        return done < increments
    }
}

/// Increments its own word of a page `count` times with a plain load and store (false sharing).
public final class OwnWordProgram: SimProgram {
    let page: UInt64
    let offset: Int
    let count: Int
    var done = 0
    var loaded: UInt64?
    public init(page: UInt64, offset: Int, count: Int) {
        self.page = page
        self.offset = offset
        self.count = count
    }
    public func step(_ t: SimThread) -> Bool {
        if done == count { return false }
        if let v = loaded {
            guard t.store(page, offset, v + 1) else { return true }
            loaded = nil
            done += 1
            return done < count
        }
        guard let v = t.load(page, offset) else { return true }
        loaded = v
        return true
    }
}

/// Stores values of its own ((thread + 1) << 32 | k) to one word, `count` times: a data race.
public final class RacyStoreProgram: SimProgram {
    let page: UInt64
    let offset: Int
    let count: Int
    var done = 0
    public init(page: UInt64, offset: Int, count: Int) {
        self.page = page
        self.offset = offset
        self.count = count
    }
    public func step(_ t: SimThread) -> Bool {
        if done == count { return false }
        guard t.store(page, offset, UInt64(t.id + 1) << 32 | UInt64(done + 1)) else { return true }
        done += 1
        return done < count
    }
}

extension Conformance {
    /// What every node reads at `words`, after running the cluster until it is quiet.
    public static func readEverywhere(_ c: SimCluster, _ words: [(UInt64, Int)], maxSteps: Int = 200_000) -> (values: [[UInt64]], report: RunReport) {
        let readers = (0..<c.nodeCount).map { _ in ReadWordsProgram(words) }
        for (i, r) in readers.enumerated() { c.addThread(node: UInt32(i), r) }
        let rep = c.run(maxSteps: maxSteps)
        return (readers.map(\.values), rep)
    }

    /// Racy words of relaxed pages converge: every node reads the same value for each word written
    /// in an unchecked page, and each of its bytes is that byte of a value some thread stored there
    /// (or of the initial zero). Problems, or none.
    ///
    /// Bytes, not whole values: a page-granular protocol cannot see store sizes, so its diffs carry
    /// changed bytes — which keeps disjoint writes to neighbouring bytes of one word (false sharing
    /// below a word) — and two racing 8-byte stores that changed different bytes of one word merge
    /// into a mix of both, one value on every node. x86 would keep an aligned store whole.
    public static func convergence(_ c: SimCluster) -> [String] {
        let words = c.everWritten.keys.sorted().flatMap { g in c.everWritten[g]!.keys.sorted().map { (g, $0) } }
        guard !words.isEmpty else { return [] }
        let (seen, rep) = readEverywhere(c, words)
        guard rep.ok else { return ["reading the relaxed words from every node: \(rep)"] }
        var p: [String] = []
        for (i, (g, off)) in words.enumerated() {
            let values = seen.map { $0[i] }
            if Set(values).count != 1 {
                p.append("gfn \(g)+\(off) (relaxed): nodes disagree once quiet: " + values.enumerated().map { "node \($0.offset) \(hex($0.element))" }.joined(separator: ", "))
            } else if !isByteMix(values[0], of: (c.everWritten[g]?[off] ?? []).union([0])) {
                p.append("gfn \(g)+\(off) (relaxed): every node reads \(hex(values[0])), some byte of which no thread wrote")
            }
        }
        return p
    }

    /// Reads `words` on every node (`readEverywhere`): a problem when the reads fail, and one for
    /// each node whose values are not all `expected` (`mismatch` says it).
    static func expectEverywhere(_ c: SimCluster, _ words: [(UInt64, Int)], equal expected: UInt64, reading what: String,
                                 mismatch: (Int, [UInt64]) -> String) -> [String] {
        let (seen, rep) = readEverywhere(c, words)
        var problems: [String] = rep.ok ? [] : ["reading \(what) from every node: \(rep)"]
        for (i, v) in seen.enumerated() where v != [UInt64](repeating: expected, count: words.count) {
            problems.append(mismatch(i, v))
        }
        return problems
    }

    /// Whether every byte of `v` is the same byte of one of `values`.
    static func isByteMix(_ v: UInt64, of values: Set<UInt64>) -> Bool {
        (0..<8).allSatisfy { b in values.contains { ($0 >> (8 * UInt64(b))) & 0xFF == (v >> (8 * UInt64(b))) & 0xFF } }
    }

    /// Threads on every node run critical sections under a lock in sc page `lockPage` over `words`
    /// in relaxed pages: every read under the lock is exact, and every node ends with the total.
    public static func lockedRelaxedData(_ d: UnsafeRawPointer, nodes: Int, threadsPerNode: Int, increments: Int, seed: UInt64,
                                         options: ConformanceOptions, lockPage: UInt64, words: [(UInt64, Int)]) throws -> ScenarioResult {
        let c = try make(d, nodes: nodes, pages: Int(max(lockPage, words.map(\.0).max() ?? 0)) + 1, seed: seed, options)
        let s = LockedDataProgram.Section()
        for n in 0..<nodes {
            for _ in 0..<threadsPerNode {
                c.addThread(node: UInt32(n), LockedDataProgram(lockPage: lockPage, words: words, increments: increments, section: s))
            }
        }
        let r = c.run(maxSteps: options.maxSteps)
        var extra = Array(s.violations.prefix(8))
        if r.ok && extra.isEmpty {
            let expected = UInt64(nodes * threadsPerNode * increments)
            extra += expectEverywhere(c, words, equal: expected, reading: "the data") { i, v in
                "node \(i) reads \(v) at \(words.map { "gfn \($0.0)+\($0.1)" }), expected \(expected) in each"
            }
        }
        return finish(c, r, extra)
    }

    /// Threads on every node each increment their own word of relaxed page `page` (false sharing):
    /// every node ends with every word exact.
    public static func disjointRelaxedWrites(_ d: UnsafeRawPointer, nodes: Int, threadsPerNode: Int, count: Int, seed: UInt64,
                                             options: ConformanceOptions, page: UInt64) throws -> ScenarioResult {
        let c = try make(d, nodes: nodes, pages: Int(page) + 1, seed: seed, options)
        var words: [(UInt64, Int)] = []
        for n in 0..<nodes {
            for _ in 0..<threadsPerNode {
                // spread over the page: neighbours in one word group and at the ends
                let off = (words.count * 8 + (words.count % 2) * 2048) % Int(GVM_PAGE_SIZE)
                words.append((page, off))
                c.addThread(node: UInt32(n), OwnWordProgram(page: page, offset: off, count: count))
            }
        }
        let r = c.run(maxSteps: options.maxSteps)
        var extra: [String] = []
        if r.ok {
            extra += expectEverywhere(c, words, equal: UInt64(count), reading: "the words") { i, v in
                "node \(i) reads \(v) at offsets \(words.map(\.1)) of gfn \(page), expected \(count) in each (a lost write)"
            }
        }
        return finish(c, r, extra)
    }

    /// Threads on every node store their own values to one word of relaxed page `page` (a race),
    /// beside a word each increments alone: the racy word converges, the others are exact.
    public static func racyRelaxedWrites(_ d: UnsafeRawPointer, nodes: Int, threadsPerNode: Int, count: Int, seed: UInt64,
                                         options: ConformanceOptions, page: UInt64) throws -> ScenarioResult {
        let c = try make(d, nodes: nodes, pages: Int(page) + 1, seed: seed, options)
        var own: [(UInt64, Int)] = []
        for n in 0..<nodes {
            for _ in 0..<threadsPerNode {
                c.addThread(node: UInt32(n), RacyStoreProgram(page: page, offset: 16, count: count))
                own.append((page, 64 + own.count * 8))
                c.addThread(node: UInt32(n), OwnWordProgram(page: page, offset: own.last!.1, count: count))
            }
        }
        let r = c.run(maxSteps: options.maxSteps)
        var extra: [String] = []
        if r.ok {
            extra += convergence(c)
            extra += expectEverywhere(c, own, equal: UInt64(count), reading: "the own words") { i, v in
                "node \(i) reads \(v) in the threads' own words, expected \(count) in each (a lost write beside a race)"
            }
        }
        return finish(c, r, extra)
    }

    /// Node 0 pins relaxed page `page` for writing (host DMA), stores 0xD through the pin, and sets
    /// a flag in sc page `flagPage` — before unpinning or after, by seed; it holds the pin
    /// `holdSteps` steps. A thread on the last node waits for the flag, reads the word (it must be
    /// 0xD: the flag's handover carries the release, which the pin defers), stores 0xE. Every node
    /// ends with 0xE.
    public static func pinnedRelaxedWrite(_ d: UnsafeRawPointer, nodes: Int, holdSteps: Int, seed: UInt64,
                                          options: ConformanceOptions, page: UInt64, flagPage: UInt64) throws -> ScenarioResult {
        let c = try make(d, nodes: nodes, pages: Int(max(page, flagPage)) + 1, seed: seed, options)
        let flagFirst = seed % 2 == 0
        var phase = 0
        var held = 0
        var problems: [String] = []
        c.addThread(node: 0, ClosureProgram { t in
            switch phase {
            case 0:
                guard t.pin(page, write: true) else { return true }
                t.dmaStore(page, 0, 0xD)
                phase = flagFirst ? 1 : 2
            case 1, 3:
                guard t.store(flagPage, 0, 1) else { return true }
                if phase == 3 { return false }
                phase = 2
            default:
                held += 1
                if held < holdSteps { return true }
                t.unpin(page, write: true)
                if flagFirst { return false }
                phase = 3
            }
            return true
        })
        var wphase = 0
        c.addThread(node: UInt32(nodes - 1), ClosureProgram { t in
            switch wphase {
            case 0:
                guard let f = t.load(flagPage, 0) else { return true }
                if f == 1 { wphase = 1 }
            case 1:
                guard let v = t.load(page, 0) else { return true }
                if v != 0xD { problems.append("node \(t.node) read \(hex(v)) after the flag, expected the DMA store 0xd (a pinned relaxed page lost it)") }
                wphase = 2
            default:
                guard t.store(page, 0, 0xE) else { return true }
                return false
            }
            return true
        })
        let r = c.run(maxSteps: options.maxSteps)
        var extra = problems
        if r.ok && extra.isEmpty {
            let (seen, rep) = readEverywhere(c, [(page, 0)])
            if !rep.ok { extra.append("reading the word from every node: \(rep)") }
            for (i, v) in seen.enumerated() where v != [0xE] { extra.append("node \(i) reads \(v.map(hex)), expected 0xe") }
        }
        return finish(c, r, extra)
    }
}

extension ScenarioCatalog {
    /// Relaxed (multiple-writer) memory: run only when the settings name relaxed ranges.
    public static let relaxed: [ConformanceScenario] = [
        ConformanceScenario(name: "mw-locked-data", summary: "lock in an sc page, data in relaxed pages: every read under the lock sees the previous holder's writes, every node ends exact",
                            defaultSize: 5, needsRelaxed: true) { d, p in
            let l = p.layout
            let words = [(l.mw(0)!, 0), (l.mw(1)!, 8), (l.mw(0)!, 4088)]
            return try Conformance.lockedRelaxedData(d, nodes: p.nodes, threadsPerNode: 1 + Int(p.seed % 2), increments: p.size,
                                                     seed: p.seed, options: p.options, lockPage: l.sc(0), words: words)
        },
        ConformanceScenario(name: "mw-disjoint", summary: "threads on every node increment their own words of one relaxed page at once: no write lost on any node",
                            defaultSize: 6, needsRelaxed: true) { d, p in
            try Conformance.disjointRelaxedWrites(d, nodes: p.nodes, threadsPerNode: 1 + Int(p.seed % 2), count: 4 * p.size,
                                                  seed: p.seed, options: p.options, page: p.layout.mw(Int(p.seed % 2))!)
        },
        ConformanceScenario(name: "mw-racy", summary: "threads on every node store to one relaxed word at once: every node ends with one value, every byte of it written; own words beside it exact",
                            defaultSize: 6, needsRelaxed: true) { d, p in
            try Conformance.racyRelaxedWrites(d, nodes: p.nodes, threadsPerNode: 1 + Int(p.seed % 2), count: p.size,
                                              seed: p.seed, options: p.options, page: p.layout.mw(0)!)
        },
        ConformanceScenario(name: "mw-pin", summary: "a relaxed page pinned for host DMA: the DMA store reaches a node that synchronises through an sc flag (the pin defers the release), nothing lost",
                            defaultSize: 6, needsRelaxed: true) { d, p in
            try Conformance.pinnedRelaxedWrite(d, nodes: p.nodes, holdSteps: 5 * p.size, seed: p.seed, options: p.options,
                                               page: p.layout.mw(0)!, flagPage: p.layout.sc(0))
        },
    ]
}
