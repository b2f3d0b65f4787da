// DsmWorkloads: thread-driven workloads that act on guest memory as vCPUs would (plain x86 loads
// and stores, LOCK-prefixed read-modify-writes), with results known exactly. One `DsmWorkload`
// runs on each node over that node's view of guest RAM; the nodes meet at barriers built in
// guest memory itself, so every synchronisation also goes through the DSM.
//
// Layout (guest pages):
//   0        barrier (arrivals at word 0, generation at word 8)
//   1        per-thread published results (word = global thread id)
//   8, 9     counter: lock word, counter word
//   10, 11   litmus variables x, y;  12: litmus per-role results
//   13       pingpong word
//   14       falseshare: one word per thread, each incremented by its thread only (declare the
//            page relaxed for dsm-tso: `relaxed: "0xE000:4KiB"`)
//   16..31   random: per-page tallies of CAS-free atomic adds (page 16+p, word tid)
//   32..47   random: per-page last sequence number each thread wrote (page 32+p, word tid)
//   64..79   random working set (word 0: shared counter, word 1+tid: the thread's slot)
//   128..    readmiss and seqread pages
//
// Threading: `run` starts `threadsPerNode` dedicated OS threads (pthreads via Foundation.Thread)
// and joins them; every other method is called on the thread that called `run`.

import CSystem
import Foundation

public enum WorkloadKind: String, CaseIterable, Sendable, Codable {
    case counter, litmus, random, pingpong, readmiss, seqread, falseshare
}

public struct WorkloadParams: Sendable, Codable {
    public var kind: WorkloadKind
    public var nodes: Int
    public var threadsPerNode: Int
    public var seed: UInt64
    /// counter: increments per thread; litmus: trials per test; random: operations per thread;
    /// pingpong: rounds; readmiss, seqread: rounds over the pages.
    public var iterations: Int
    /// random: working-set pages (<= 16); readmiss, seqread: pages read per round.
    public var pages: Int
    /// Give up (and report) after this many seconds of waiting at one point.
    public var timeoutSeconds: Double = 60

    public init(kind: WorkloadKind, nodes: Int, threadsPerNode: Int, seed: UInt64 = 1, iterations: Int? = nil, pages: Int? = nil) {
        self.kind = kind
        self.nodes = nodes
        self.threadsPerNode = threadsPerNode
        self.seed = seed
        switch kind {
        case .counter: self.iterations = iterations ?? 200
        case .litmus: self.iterations = iterations ?? 100
        case .random: self.iterations = iterations ?? 2000
        case .pingpong: self.iterations = iterations ?? 200
        case .readmiss: self.iterations = iterations ?? 10
        case .seqread: self.iterations = iterations ?? 3
        case .falseshare: self.iterations = iterations ?? 100_000
        }
        self.pages = pages ?? (kind == .readmiss ? 32 : kind == .seqread ? 4096 : 8)
    }

    public var totalThreads: Int { nodes * threadsPerNode }

    /// Guest memory the layout needs.
    public var requiredBytes: Int { (128 + max(pages, 1)) * 4096 }
}

/// What one node's threads did and found. `errors` is empty when every check passed.
public struct NodeResult: Codable, Sendable {
    public var node: Int
    public var workload: WorkloadKind
    public var threads: Int
    /// Operations each local thread completed (increments, trials, ops, rounds, pages read).
    public var operations: [Int]
    public var errors: [String]
    /// Exact checks that passed, by name, with the value checked (e.g. "counter" -> 1200).
    public var checks: [String: UInt64]
    /// litmus: test -> outcome -> count (reported by node 0).
    public var litmus: [String: [String: Int]]
    /// pingpong round trips and readmiss faults, in ns (timed on this node); seqread: the time
    /// of each round's whole sequential pass (node 0).
    public var latencies: [UInt64]
    public var seconds: Double
    /// The floor's samples (ns), taken by the reader between its own reads (readmiss: one after
    /// each page; seqread: a series after each pass, outside the timed pass). See `floorSample`.
    public var floorLatencies: [UInt64]? = nil
}

final class ResultBox: @unchecked Sendable {
    let lock = NSLock()
    var errors: [String] = []
    var checks: [String: UInt64] = [:]
    var litmus: [String: [String: Int]] = [:]
    var latencies: [UInt64] = []
    var floorLatencies: [UInt64] = []
    var operations: [Int]
    init(threads: Int) { operations = [Int](repeating: 0, count: threads) }
    func error(_ s: String) { lock.lock(); errors.append(s); lock.unlock() }
    func check(_ name: String, _ v: UInt64) { lock.lock(); checks[name] = v; lock.unlock() }
    func bump(_ local: Int) { lock.lock(); operations[local] += 1; lock.unlock() }
}

struct Deadline: Error, CustomStringConvertible {
    var what: String
    var description: String { "timed out waiting for \(what)" }
}

public final class DsmWorkload: @unchecked Sendable {
    public let base: UnsafeMutableRawPointer
    public let bytes: Int
    public let params: WorkloadParams
    public let node: Int
    /// One sample of the bench's floor (ns, thread-observed), taken by readmiss and seqread
    /// readers between their own reads so both see the same machine; nil: no floor.
    public var floorSample: (() throws -> UInt64)?

    public init(memory: UnsafeMutableRawPointer, bytes: Int, params: WorkloadParams, node: Int) throws {
        guard bytes >= params.requiredBytes else {
            throw WorkloadError("workload \(params.kind) needs \(params.requiredBytes) bytes of guest memory, the cluster has \(bytes)")
        }
        let maxPages = params.kind == .random ? 16 : params.kind == .seqread ? 1 << 20 : 4096
        guard params.pages >= 1, params.pages <= maxPages, params.totalThreads <= 500 else {
            throw WorkloadError("workload \(params.kind): 1 to \(maxPages) pages and at most 500 threads")
        }
        if params.kind == .pingpong || params.kind == .litmus || params.kind == .readmiss || params.kind == .seqread {
            guard params.nodes >= 2 else { throw WorkloadError("workload \(params.kind) needs at least 2 nodes") }
        }
        self.base = memory
        self.bytes = bytes
        self.params = params
        self.node = node
    }

    // MARK: memory helpers (acquire loads, release stores: plain MOVs on x86)

    @inline(__always) func word(_ page: Int, _ index: Int) -> UnsafeMutableRawPointer { base + page * 4096 + index * 8 }
    @inline(__always) func load(_ page: Int, _ i: Int) -> UInt64 { gvm_ivy_load_acquire64(word(page, i)) }
    @inline(__always) func store(_ page: Int, _ i: Int, _ v: UInt64) { gvm_ivy_store_release64(word(page, i), v) }
    @inline(__always) func cas(_ page: Int, _ i: Int, _ e: UInt64, _ n: UInt64) -> Bool { gvm_ivy_cas64(word(page, i), e, n) != 0 }
    @inline(__always) func add(_ page: Int, _ i: Int, _ v: UInt64) -> UInt64 { gvm_ivy_fetch_add64(word(page, i), v) }

    func now() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    /// Waits until `cond` holds; throws after the timeout. Spins briefly, then sleeps between
    /// checks: on a machine with few cores, spinning waiters would steal the CPU from the threads
    /// (and the fault handlers) they wait for, and inflate every latency measured meanwhile.
    func spin(_ what: @autoclosure () -> String, _ cond: () -> Bool) throws {
        var n = 0
        let start = now()
        let limit = UInt64(params.timeoutSeconds * 1e9)
        while !cond() {
            n += 1
            if n < 200 {
                gvm_ivy_pause()
            } else {
                if n & 0xFF == 0 && now() - start > limit { throw Deadline(what: what()) }
                usleep(20)
            }
        }
    }

    /// A sense-reversing barrier in guest memory over every thread of every node.
    func barrier(_ name: String) throws {
        let g = load(0, 1)
        let n = add(0, 0, 1)
        if n == UInt64(params.totalThreads - 1) {
            store(0, 0, 0)
            store(0, 1, g + 1)
        } else {
            try spin("barrier '\(name)' (generation \(g))") { load(0, 1) != g }
        }
    }

    // MARK: run

    /// Runs the workload's threads on this node and returns what they did and found.
    public func run() -> NodeResult {
        let box = ResultBox(threads: params.threadsPerNode)
        let start = now()
        var threads: [Thread] = []
        let done = DispatchGroup()
        for local in 0..<params.threadsPerNode {
            let tid = node * params.threadsPerNode + local
            done.enter()
            let t = Thread { [self] in
                do {
                    try self.body(tid: tid, local: local, box)
                } catch {
                    box.error("node \(node) thread \(tid): \(error)")
                }
                done.leave()
            }
            t.name = "dsm-\(params.kind)-\(tid)"
            t.stackSize = 1 << 20
            threads.append(t)
            t.start()
        }
        done.wait()
        return NodeResult(node: node, workload: params.kind, threads: params.threadsPerNode, operations: box.operations,
                          errors: box.errors, checks: box.checks, litmus: box.litmus, latencies: box.latencies,
                          seconds: Double(now() - start) / 1e9,
                          floorLatencies: box.floorLatencies.isEmpty ? nil : box.floorLatencies)
    }

    func body(tid: Int, local: Int, _ box: ResultBox) throws {
        try barrier("start")
        switch params.kind {
        case .counter: try counter(tid: tid, local: local, box)
        case .random: try random(tid: tid, local: local, box)
        case .pingpong: try pingpong(tid: tid, local: local, box)
        case .readmiss: try readmiss(tid: tid, local: local, box)
        case .seqread: try seqread(tid: tid, local: local, box)
        case .litmus: try litmus(tid: tid, local: local, box)
        case .falseshare: try falseshare(tid: tid, local: local, box)
        }
        try barrier("end")
    }

    // MARK: counter

    func counter(tid: Int, local: Int, _ box: ResultBox) throws {
        for _ in 0..<params.iterations {
            // test-and-test-and-set spinlock at page 8
            while true {
                try spin("the counter lock") { load(8, 0) == 0 }
                if cas(8, 0, 0, UInt64(tid + 1)) { break }
            }
            let v = load(9, 0)
            store(9, 0, v + 1)
            store(8, 0, 0)
            box.bump(local)
        }
        try barrier("counter done")
        let expected = UInt64(params.totalThreads * params.iterations)
        let got = load(9, 0)
        if got != expected { box.error("node \(node) thread \(tid): counter is \(got), expected \(expected)") }
        else if local == 0 { box.check("counter", got) }
    }

    // MARK: falseshare

    /// Every thread increments its own word of page 14 with a plain load and store: the page is
    /// written by every node at once (false sharing). Exact: every word ends at `iterations`.
    /// Each thread's loop time (from leaving the start barrier to its last store) goes to
    /// `latencies`: the report's rate is all increments over the longest loop, never a time that
    /// includes start-up.
    func falseshare(tid: Int, local: Int, _ box: ResultBox) throws {
        let t0 = now()
        for _ in 0..<params.iterations {
            store(14, tid, load(14, tid) + 1)
        }
        let t1 = now()
        box.lock.lock(); box.operations[local] += params.iterations; box.latencies.append(t1 - t0); box.lock.unlock()
        try barrier("falseshare done")
        guard local == 0 else { return }
        var total: UInt64 = 0
        for t in 0..<params.totalThreads {
            let v = load(14, t)
            if v != UInt64(params.iterations) { box.error("node \(node): thread \(t)'s counter is \(v), expected \(params.iterations) (lost update)") }
            total += v
        }
        box.check("falseshare", total)
    }

    // MARK: random

    func random(tid: Int, local: Int, _ box: ResultBox) throws {
        var rng = SplitMix(seed: params.seed &* 1_000_003 &+ UInt64(tid))
        let pages = params.pages
        let threads = params.totalThreads
        var seen = [UInt64](repeating: 0, count: pages * threads)    // last value read per (page, slot)
        var mine = [UInt64](repeating: 0, count: pages)               // last value written per page
        var adds = [UInt64](repeating: 0, count: pages)
        var seq: UInt64 = 0
        for _ in 0..<params.iterations {
            let p = Int(rng.next() % UInt64(pages))
            let r = rng.next() % 100
            if r < 25 {
                _ = add(64 + p, 0, 1)
                adds[p] += 1
            } else if r < 55 {
                seq += 1
                store(64 + p, 1 + tid, seq)
                mine[p] = seq
            } else {
                let other = Int(rng.next() % UInt64(threads))
                let v = load(64 + p, 1 + other)
                if other == tid {
                    if v != mine[p] { box.error("thread \(tid): read its own slot on page \(p) as \(v), wrote \(mine[p]) (stale read)") }
                } else if v < seen[p * threads + other] {
                    box.error("thread \(tid): slot of thread \(other) on page \(p) went back from \(seen[p * threads + other]) to \(v) (stale read)")
                }
                seen[p * threads + other] = max(seen[p * threads + other], v)
            }
            box.bump(local)
        }
        for p in 0..<pages {
            store(16 + p, tid, adds[p])
            store(32 + p, tid, mine[p])
        }
        try barrier("random published")
        // Every node checks every page: the shared counter and every thread's last write.
        if local == 0 {
            var total: UInt64 = 0
            for p in 0..<pages {
                var sum: UInt64 = 0
                for t in 0..<threads { sum += load(16 + p, t) }
                let c = load(64 + p, 0)
                if c != sum { box.error("node \(node): page \(p) counter \(c), the threads added \(sum) (lost update)") }
                total += c
                for t in 0..<threads where load(64 + p, 1 + t) != load(32 + p, t) {
                    box.error("node \(node): page \(p) slot of thread \(t) is \(load(64 + p, 1 + t)), its last write was \(load(32 + p, t)) (lost update)")
                }
            }
            box.check("random.adds", total)
        }
    }

    // MARK: pingpong

    func pingpong(tid: Int, local: Int, _ box: ResultBox) throws {
        let rounds = params.iterations
        let parity: UInt64
        if node == 0 && local == 0 { parity = 0 }
        else if node == params.nodes - 1 && local == 0 { parity = 1 }
        else { return }
        var last = now()
        for _ in 0..<rounds {
            var v: UInt64 = 0
            try spin("pingpong parity \(parity)") { v = load(13, 0); return v % 2 == parity }
            store(13, 0, v + 1)
            if parity == 0 {
                let t = now()
                box.lock.lock(); box.latencies.append(t - last); box.lock.unlock()
                last = t
            }
            box.bump(local)
        }
        try spin("the final pingpong round") { load(13, 0) >= UInt64(2 * rounds) }
        let v = load(13, 0)
        if v != UInt64(2 * rounds) { box.error("pingpong final value \(v), expected \(2 * rounds)") }
        else { box.check("pingpong", v) }
        if parity == 0, !box.latencies.isEmpty { box.latencies.removeFirst() }   // the first includes start-up
    }

    // MARK: readmiss

    static func pattern(_ round: Int, _ page: Int, _ i: Int) -> UInt64 {
        UInt64(round + 1) << 48 | UInt64(page) << 16 | UInt64(i)
    }

    /// The writer's half of readmiss and seqread: every word of every page its own pattern.
    func writePatterns(round: Int) {
        for p in 0..<params.pages {
            for i in 0..<512 { store(128 + p, i, Self.pattern(round, p, i)) }
        }
    }

    func readmiss(tid: Int, local: Int, _ box: ResultBox) throws {
        let writer = node == params.nodes - 1 && local == 0
        let reader = node == 0 && local == 0
        for round in 0..<params.iterations {
            if writer { writePatterns(round: round) }
            try barrier("readmiss written \(round)")
            if reader {
                for p in 0..<params.pages {
                    let t0 = now()
                    let v = load(128 + p, 0)
                    let t1 = now()
                    box.lock.lock(); box.latencies.append(t1 - t0); box.lock.unlock()
                    if v != Self.pattern(round, p, 0) { box.error("readmiss round \(round) page \(p): word 0 is \(v)") }
                    for i in 1..<512 where load(128 + p, i) != Self.pattern(round, p, i) {
                        box.error("readmiss round \(round) page \(p) word \(i): \(load(128 + p, i))")
                        break
                    }
                    box.bump(local)
                    if let f = floorSample {
                        let ns = try f()
                        box.lock.lock(); box.floorLatencies.append(ns); box.lock.unlock()
                    }
                }
            }
            try barrier("readmiss read \(round)")
        }
        if reader { box.check("readmiss.pages", UInt64(params.iterations * params.pages)) }
    }

    // MARK: seqread

    /// The last node's first thread writes every page (each word its own pattern); after a
    /// barrier node 0's first thread reads them all in order, every word checked, and times the
    /// pass: the sequential remote read throughput of one thread.
    func seqread(tid: Int, local: Int, _ box: ResultBox) throws {
        let writer = node == params.nodes - 1 && local == 0
        let reader = node == 0 && local == 0
        for round in 0..<params.iterations {
            if writer { writePatterns(round: round) }
            try barrier("seqread written \(round)")
            if reader {
                let t0 = now()
                var bad: String?
                for p in 0..<params.pages {
                    for i in 0..<512 where load(128 + p, i) != Self.pattern(round, p, i) {
                        bad = bad ?? "seqread round \(round) page \(p) word \(i): \(load(128 + p, i))"
                        break
                    }
                }
                let t1 = now()
                if let bad { box.error(bad) }
                box.lock.lock(); box.latencies.append(t1 - t0); box.operations[local] += params.pages; box.lock.unlock()
                if let f = floorSample {
                    let ns = try (0..<min(params.pages, 200)).map { _ in try f() }
                    box.lock.lock(); box.floorLatencies += ns; box.lock.unlock()
                }
            }
            try barrier("seqread read \(round)")
        }
        if reader { box.check("seqread.pages", UInt64(params.iterations * params.pages)) }
    }

    // MARK: litmus

    /// The five tests: name, number of roles, and the forbidden-outcome predicate over the
    /// roles' results (and final x, y).
    static let litmusTests: [(name: String, roles: Int)] = [("MP", 2), ("SB", 2), ("LB", 2), ("2+2W", 2), ("IRIW", 4)]

    func litmus(tid: Int, local: Int, _ box: ResultBox) throws {
        let leader = tid == 0
        // Each role waits a random few microseconds before acting, so every interleaving of the
        // roles' accesses (and every ordering of their page faults) gets its chance.
        var jitter = SplitMix(seed: params.seed &* 7_919 &+ UInt64(tid))
        for (name, roles) in Self.litmusTests {
            var outcomes: [String: Int] = [:]
            for _ in 0..<params.iterations {
                if leader {
                    store(10, 0, 0); store(11, 0, 0)
                    for i in 0..<8 { store(12, i, 0xFF) }
                }
                try barrier("\(name) reset")
                // Role r runs on node r % nodes, local thread (r / nodes) % threadsPerNode.
                for r in 0..<roles where node == r % params.nodes && local == (r / params.nodes) % params.threadsPerNode {
                    for _ in 0..<(jitter.next() % 4000) { gvm_ivy_pause() }
                    try role(name, r)
                }
                try barrier("\(name) run")
                if leader {
                    let rs = (0..<(roles == 4 ? 4 : 2)).map { load(12, $0) }
                    let x = load(10, 0), y = load(11, 0)
                    let key: String
                    switch name {
                    case "2+2W": key = "x=\(x) y=\(y)"
                    case "IRIW": key = "r1=\(rs[0]) r2=\(rs[1]) r3=\(rs[2]) r4=\(rs[3])"
                    default: key = "r1=\(rs[0]) r2=\(rs[1])"
                    }
                    outcomes[key, default: 0] += 1
                    if Self.forbidden(name, rs, x, y) {
                        box.error("litmus \(name): forbidden outcome \(key) observed")
                    }
                }
                if local == 0 { box.bump(local) }
            }
            if leader {
                box.lock.lock(); box.litmus[name] = outcomes; box.lock.unlock()
            }
        }
        if leader { box.check("litmus.trials", UInt64(params.iterations * Self.litmusTests.count)) }
    }

    /// Runs role `r` of a test. Results go to page 12 (word = result index).
    func role(_ name: String, _ r: Int) throws {
        switch (name, r) {
        case ("MP", 0): store(10, 0, 1); store(11, 0, 1)
        case ("MP", 1): let a = load(11, 0); let b = load(10, 0); store(12, 0, a); store(12, 1, b)
        case ("SB", 0): store(10, 0, 1); store(12, 0, load(11, 0))
        case ("SB", 1): store(11, 0, 1); store(12, 1, load(10, 0))
        case ("LB", 0): let a = load(10, 0); store(11, 0, 1); store(12, 0, a)
        case ("LB", 1): let a = load(11, 0); store(10, 0, 1); store(12, 1, a)
        case ("2+2W", 0): store(10, 0, 1); store(11, 0, 2)
        case ("2+2W", 1): store(11, 0, 1); store(10, 0, 2)
        case ("IRIW", 0): store(10, 0, 1)
        case ("IRIW", 1): store(11, 0, 1)
        case ("IRIW", 2): let a = load(10, 0); let b = load(11, 0); store(12, 0, a); store(12, 1, b)
        case ("IRIW", 3): let a = load(11, 0); let b = load(10, 0); store(12, 2, a); store(12, 3, b)
        default: break
        }
    }

    /// What x86-TSO forbids. SB's r1 = r2 = 0 is allowed (store buffering) and only counted.
    public static func forbidden(_ name: String, _ rs: [UInt64], _ x: UInt64, _ y: UInt64) -> Bool {
        switch name {
        case "MP": return rs[0] == 1 && rs[1] == 0
        case "LB": return rs[0] == 1 && rs[1] == 1
        case "2+2W": return x == 1 && y == 1
        case "IRIW": return rs[0] == 1 && rs[1] == 0 && rs[2] == 1 && rs[3] == 0
        default: return false
        }
    }
}

public struct WorkloadError: Error, CustomStringConvertible {
    public var message: String
    public init(_ m: String) { message = m }
    public var description: String { message }
}

struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
