// SimCluster: N SimNodes, the simulated network, the simulated threads and the seeded scheduler.
//
// One scheduler step does exactly one of:
//   - deliver the head message of one (sender, receiver, lane) queue (FIFO per queue; queues are
//     chosen at random, so messages from different senders or on different lanes reorder);
//   - hand one queued fault of one node to the plugin (the host's fault-handler thread);
//   - run one step of one runnable thread (at most one memory access).
// Optional per-message delays and "hold" predicates (a held head blocks its queue, keeping FIFO)
// let a test provoke a specific race on purpose.
//
// Checks after every step (on the pages that changed):
//   - single writer / multiple readers: a MODIFIED copy excludes every other present copy;
//   - data values: every present copy holds the latest value written to each word (the golden
//     memory), so a lost update shows the moment it happens;
// and at every thread access, linearizability: a load returns the latest store in the global
// order of the simulation (accesses are atomic steps), which for page-granular SC is exact.
// Both can be turned off for protocols that promise less (multiple-writer, TSO).
//
// Threading: single-threaded by design (see SimNode).

import PluginAPI

public struct SimMessage {
    public var src: UInt32
    public var dst: UInt32
    public var lane: UInt32
    public var bytes: [UInt8]
    public var seq: Int = 0
    public var notBefore: Int = 0
}

struct QueueKey: Hashable, Comparable {
    var src: UInt32, dst: UInt32, lane: UInt32
    static func < (a: QueueKey, b: QueueKey) -> Bool {
        (a.src, a.dst, a.lane) < (b.src, b.dst, b.lane)
    }
}

/// Per-(sender, receiver, lane) FIFO queues with optional random delays.
public final class SimNetwork {
    var queues: [QueueKey: [SimMessage]] = [:]
    var lastNotBefore: [QueueKey: Int] = [:]
    var seq = 0
    /// Maximum random delay in steps added to each message (0 = none).
    public var maxDelay = 0
    public internal(set) var delivered = 0
    public internal(set) var bytesDelivered = 0

    func enqueue(_ m: SimMessage, now: Int, rng: inout SplitMix64) {
        var m = m
        let k = QueueKey(src: m.src, dst: m.dst, lane: m.lane)
        seq += 1
        m.seq = seq
        let delay = maxDelay > 0 ? Int(rng.next(UInt64(maxDelay + 1))) : 0
        m.notBefore = max(lastNotBefore[k] ?? 0, now + delay)
        lastNotBefore[k] = m.notBefore
        queues[k, default: []].append(m)
    }

    public var inFlight: Int { queues.values.reduce(0) { $0 + $1.count } }
}

/// A simulated thread: runs a program one step at a time on one node.
public final class SimThread {
    public let id: Int
    public let node: UInt32
    let program: SimProgram
    public unowned let cluster: SimCluster
    public internal(set) var blockedOn: UInt64?
    public internal(set) var done = false
    public internal(set) var steps = 0
    public internal(set) var faults = 0

    init(id: Int, node: UInt32, program: SimProgram, cluster: SimCluster) {
        self.id = id
        self.node = node
        self.program = program
        self.cluster = cluster
    }

    var n: SimNode { cluster.nodes[Int(node)] }

    func block(_ gfn: UInt64, _ access: UInt32, flags: UInt32 = 0) {
        cluster.trace?("    thread \(id) on node \(node): \(access == GVM_ACCESS_WRITE ? "write" : "read") access to gfn \(gfn) faults, waits")
        blockedOn = gfn
        faults += 1
        n.faultQueue.append((gfn, access, flags))
    }

    /// Loads the 8-byte word at (gfn, offset); nil if the access faulted (retry the same access).
    public func load(_ gfn: UInt64, _ offset: Int) -> UInt64? {
        if n.pageState[Int(gfn)] == GVM_PAGE_INVALID { block(gfn, GVM_ACCESS_READ); return nil }
        let v = n.load64(gfn, offset)
        cluster.trace?("    thread \(id) on node \(node): load gfn \(gfn)+\(offset) = \(hex(v))")
        cluster.checkLoad(self, gfn, offset, v)
        return v
    }

    /// Stores the word; false if the access faulted (retry).
    public func store(_ gfn: UInt64, _ offset: Int, _ v: UInt64) -> Bool {
        if n.pageState[Int(gfn)] != GVM_PAGE_MODIFIED { block(gfn, GVM_ACCESS_WRITE); return false }
        n.store64(gfn, offset, v)
        cluster.trace?("    thread \(id) on node \(node): store gfn \(gfn)+\(offset) := \(hex(v))")
        cluster.recordStore(self, gfn, offset, v)
        return true
    }

    /// Atomic compare-and-swap (a locked cmpxchg: needs write access). nil if it faulted.
    public func cas(_ gfn: UInt64, _ offset: Int, expect: UInt64, new: UInt64) -> Bool? {
        if n.pageState[Int(gfn)] != GVM_PAGE_MODIFIED { block(gfn, GVM_ACCESS_WRITE); return nil }
        let v = n.load64(gfn, offset)
        cluster.checkLoad(self, gfn, offset, v)
        cluster.trace?("    thread \(id) on node \(node): cas gfn \(gfn)+\(offset) \(hex(v)) \(v == expect ? "==" : "!=") \(hex(expect))\(v == expect ? " := \(hex(new))" : "")")
        guard v == expect else { return false }
        n.store64(gfn, offset, new)
        cluster.recordStore(self, gfn, offset, new)
        return true
    }

    /// Pins a page as host code would before touching guest RAM directly; false if the page had
    /// to be brought in first (the thread waits, then retries).
    public func pin(_ gfn: UInt64, write: Bool) -> Bool {
        let st = n.pageState[Int(gfn)]
        let ok = write ? st == GVM_PAGE_MODIFIED : st != GVM_PAGE_INVALID
        if !ok {
            block(gfn, write ? GVM_ACCESS_WRITE : GVM_ACCESS_READ, flags: GVM_FAULT_FROM_PIN)
            return false
        }
        if write { n.pinWrite[Int(gfn)] += 1 } else { n.pinRead[Int(gfn)] += 1 }
        return true
    }

    /// Releases a pin; the last one calls the plugin's page_unpinned.
    public func unpin(_ gfn: UInt64, write: Bool) {
        let g = Int(gfn)
        if write { n.pinWrite[g] -= 1 } else { n.pinRead[g] -= 1 }
        precondition(n.pinWrite[g] >= 0 && n.pinRead[g] >= 0, "unbalanced unpin")
        if n.pinWrite[g] == 0 && n.pinRead[g] == 0 { n.callUnpinned(gfn) }
    }

    /// A host-side (DMA) store into a page this thread pinned for writing.
    public func dmaStore(_ gfn: UInt64, _ offset: Int, _ v: UInt64) {
        precondition(n.pinWrite[Int(gfn)] > 0 && n.pageState[Int(gfn)] == GVM_PAGE_MODIFIED,
                     "dmaStore needs a write pin on a MODIFIED page")
        n.store64(gfn, offset, v)
        cluster.recordStore(self, gfn, offset, v)
    }

    /// The current state of a page on this thread's node (for programs that assert on it).
    public func pageState(_ gfn: UInt64) -> UInt32 { n.pageState[Int(gfn)] }
}

/// A thread's program. `step` does at most one memory access and returns false when finished.
/// If an access returns nil/false because it faulted, the program must retry the same access on
/// its next step (keep its own program counter).
public protocol SimProgram: AnyObject {
    func step(_ t: SimThread) -> Bool
}

/// A program from a closure (for short, test-specific threads).
public final class ClosureProgram: SimProgram {
    let body: (SimThread) -> Bool
    public init(_ body: @escaping (SimThread) -> Bool) { self.body = body }
    public func step(_ t: SimThread) -> Bool { body(t) }
}

public struct RunReport: CustomStringConvertible {
    public var seed: UInt64
    public var steps: Int
    public var messages: Int
    public var bytes: Int
    public var violations: [String]
    public var fatals: [String]
    public var stuck: String?
    /// The run was cut at its step limit with threads still running (a livelock, or a bound too low).
    public var hitStepLimit = false
    public var ok: Bool { violations.isEmpty && fatals.isEmpty && stuck == nil }
    public var description: String {
        var s = "seed \(seed): \(steps) steps, \(messages) messages (\(bytes) bytes)"
        if let stuck { s += "\n  STUCK: \(stuck)" }
        for f in fatals { s += "\n  FATAL: \(f)" }
        for v in violations.prefix(5) { s += "\n  VIOLATION: \(v)" }
        if violations.count > 5 { s += "\n  ... \(violations.count - 5) more" }
        return s
    }
}

public final class SimCluster {
    public let nodeCount: Int
    public let pageCount: Int
    public var nodes: [SimNode] = []
    public let network = SimNetwork()
    public internal(set) var threads: [SimThread] = []
    var rng: SplitMix64
    public let seed: UInt64
    public internal(set) var now = 0
    var deadNodes: Set<UInt32> = []
    var nextTimerID: UInt64 = 0

    /// Check single-writer/multiple-readers and data values after every step.
    public var checkSWMR = true
    /// Check that every load returns the latest store (page-granular SC, exact in simulation).
    public var checkLinearizable = true
    /// Pages the two checks above skip: pages a protocol keeps under a weaker model (multiple
    /// writers); a test checks what such a protocol promises for them itself.
    public var uncheckedPages: Set<UInt64> = []
    /// Messages for which this returns true stay at the head of their queue (blocking it).
    public var hold: ((SimMessage) -> Bool)?
    /// Called with one line per scheduler step and per thread access, and with "!! problem" at
    /// each violation, fatal or hang (`giantvm conformance --replay` prints them).
    public var trace: ((String) -> Void)?
    /// Scheduler steps over every `run` of this cluster (the scenario's whole schedule so far).
    public internal(set) var totalSteps = 0
    /// `totalSteps` when the first violation, fatal or hang was seen (nil: none yet).
    public internal(set) var firstProblemStep: Int?
    /// Called with each message as it is delivered (for tests that watch the protocol).
    public var onDeliver: ((SimMessage) -> Void)?
    /// Called with each message as it is sent: return it (possibly changed) to queue it, or nil
    /// to lose it (for tests that redirect a message on purpose).
    public var onSend: ((SimMessage) -> SimMessage?)?
    /// Messages one (sender, receiver, lane) queue holds before send returns GVM_ERR_NOMEM, as a
    /// transport with a full send queue does (nil = unbounded).
    public var queueCapacity: Int?
    /// Sends refused because a queue was full.
    public internal(set) var sendsRefused = 0
    /// Probability weight (0...100) of picking a thread step over a delivery when both exist.
    public var threadBias = 50

    var golden: [UInt64: [Int: UInt64]] = [:]
    /// Every value stored to each word of an unchecked (relaxed) page: a racy word must end with
    /// one of them on every node.
    public internal(set) var everWritten: [UInt64: [Int: Set<UInt64>]] = [:]
    var lastWriter: [UInt64: [Int: Int]] = [:]
    var dirty: Set<UInt64> = []
    public internal(set) var violations: [String] = []
    public internal(set) var wakes = 0

    var nowNanoseconds: UInt64 { UInt64(now) * 1000 }
    /// Consecutive steps in which a thread waited with no message, fault or timer pending.
    var quietSteps = 0
    /// After this many such steps the run is reported stuck (a pin may legitimately hold a waiter
    /// for a while with nothing in flight: keep this above any scenario's hold).
    static let quietLimit = 10_000

    /// Creates `nodes` nodes, each with its own instance of the plugin behind `descriptor`.
    public init(descriptor: UnsafeRawPointer, nodes nodeCount: Int, pages: Int, seed: UInt64,
                settings: [(String, String)] = []) throws {
        let d = descriptor.assumingMemoryBound(to: gvm_plugin_descriptor.self)
        guard d.pointee.kind == GVM_PLUGIN_COHERENCE.rawValue, let ops = d.pointee.ops else {
            throw SimError("descriptor is not a coherence plugin")
        }
        self.nodeCount = nodeCount
        self.pageCount = pages
        self.seed = seed
        rng = SplitMix64(seed: seed)
        let o = ops.assumingMemoryBound(to: gvm_coherence_ops.self)
        for i in 0..<nodeCount { nodes.append(SimNode(id: UInt32(i), cluster: self, pageCount: pages, ops: o)) }
        for n in nodes { try n.create(settings: settings) }
    }

    @discardableResult
    public func addThread(node: UInt32, _ program: SimProgram) -> SimThread {
        let t = SimThread(id: threads.count, node: node, program: program, cluster: self)
        threads.append(t)
        return t
    }

    public func random(_ bound: UInt64) -> UInt64 { rng.next(bound) }

    // MARK: - host callbacks

    func wake(node: UInt32, gfn: UInt64) {
        wakes += 1
        for t in threads where t.node == node && t.blockedOn == gfn { t.blockedOn = nil }
    }

    func pageChanged(node: UInt32, gfn: UInt64) { dirty.insert(gfn) }

    // MARK: - golden memory

    func checkLoad(_ t: SimThread, _ gfn: UInt64, _ off: Int, _ v: UInt64) {
        guard checkLinearizable, !uncheckedPages.contains(gfn) else { return }
        let expect = golden[gfn]?[off] ?? 0
        if v != expect {
            let w = lastWriter[gfn]?[off].map { "thread \($0)" } ?? "nobody (zero)"
            violation("step \(now): stale read: thread \(t.id) on node \(t.node) read \(hex(v)) at gfn \(gfn)+\(off); the latest write is \(hex(expect)) by \(w)")
        }
    }

    func recordStore(_ t: SimThread, _ gfn: UInt64, _ off: Int, _ v: UInt64) {
        if uncheckedPages.contains(gfn) { everWritten[gfn, default: [:]][off, default: []].insert(v) }
        golden[gfn, default: [:]][off] = v
        lastWriter[gfn, default: [:]][off] = t.id
        dirty.insert(gfn)
    }

    /// The latest value stored at (gfn, offset) in the simulation's global order.
    public func latest(_ gfn: UInt64, _ off: Int) -> UInt64 { golden[gfn]?[off] ?? 0 }

    func violation(_ text: String) {
        violations.append(text)
        noteProblem(text)
    }

    /// Remembers the step of the first problem and traces it.
    func noteProblem(_ text: String) {
        if firstProblemStep == nil { firstProblemStep = totalSteps }
        trace?("!! " + text)
    }

    func traceChoice(_ choice: Choice) {
        let at = "step \(totalSteps):"
        switch choice {
        case let .deliver(k):
            guard let m = network.queues[k]?.first else { return }
            let head = m.bytes.prefix(24).map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined(separator: " ")
            trace?("\(at) deliver node \(k.src) -> node \(k.dst) (\(k.lane == GVM_LANE_URGENT ? "urgent" : "bulk"), \(m.bytes.count) bytes): \(head)\(m.bytes.count > 24 ? " ..." : "")")
        case let .fault(i):
            guard let f = nodes[i].faultQueue.first else { return }
            trace?("\(at) node \(i) fault gfn \(f.gfn) \(f.access == GVM_ACCESS_WRITE ? "write" : "read")\(f.flags & GVM_FAULT_FROM_PIN != 0 ? " (pin)" : "")")
        case let .thread(i):
            trace?("\(at) thread \(i) on node \(threads[i].node) runs")
        case let .timer(i, id):
            trace?("\(at) node \(i) timer \(id) fires")
        }
    }

    func checkInvariants() {
        guard checkSWMR, !dirty.isEmpty else { dirty.removeAll(); return }
        for gfn in dirty.sorted() where !uncheckedPages.contains(gfn) {
            let g = Int(gfn)
            let present = nodes.filter { $0.pageState[g] != GVM_PAGE_INVALID }
            let writers = present.filter { $0.pageState[g] == GVM_PAGE_MODIFIED }
            if !writers.isEmpty && present.count > 1 {
                violation("step \(now): gfn \(gfn) MODIFIED on node \(writers.map(\.id)) while present on \(present.map(\.id)) (single-writer violated)")
            }
            if let words = golden[gfn] {
                for n in present {
                    for (off, v) in words where n.load64(gfn, off) != v {
                        violation("step \(now): gfn \(gfn)+\(off) on node \(n.id) holds \(hex(n.load64(gfn, off))), latest write is \(hex(v)) (lost update)")
                    }
                }
            }
        }
        dirty.removeAll()
    }

    // MARK: - running

    enum Choice {
        case deliver(QueueKey)
        case fault(Int)
        case thread(Int)
        case timer(Int, UInt64)
    }

    /// Runs until every thread is done and nothing is in flight, or `maxSteps`.
    @discardableResult
    public func run(maxSteps: Int = 200_000) -> RunReport {
        var steps = 0
        var stuck: String?
        while steps < maxSteps {
            if nodes.contains(where: { !$0.fatals.isEmpty }) { break }
            var deliveries: [Choice] = []
            var others: [Choice] = []
            var delayed = false
            var held = 0
            for k in network.queues.keys.sorted() {
                guard let head = network.queues[k]?.first else { continue }
                if let hold, hold(head) { held += 1; continue }
                if head.notBefore > now { delayed = true; continue }
                deliveries.append(.deliver(k))
            }
            for (i, n) in nodes.enumerated() where !n.faultQueue.isEmpty { others.append(.fault(i)) }
            var nextTimer = Int.max
            for (i, n) in nodes.enumerated() {
                for t in n.timers {
                    if t.deadline <= now { others.append(.timer(i, t.id)) } else { nextTimer = min(nextTimer, t.deadline) }
                }
            }
            for t in threads where !t.done && t.blockedOn == nil { others.append(.thread(t.id)) }
            // A thread waits while nothing that could wake it is pending (no message, fault or
            // timer): its wake was lost, whatever the other threads keep doing.
            if deliveries.isEmpty && network.inFlight == 0 && nextTimer == .max && others.allSatisfy({ if case .thread = $0 { return true } else { return false } })
                && threads.contains(where: { !$0.done && $0.blockedOn != nil }) {
                quietSteps += 1
                if quietSteps > Self.quietLimit {
                    stuck = "nothing pending for \(Self.quietLimit) steps while a thread waits: " + stuckReport(held: held)
                    noteProblem("stuck: " + stuck!)
                    break
                }
            } else {
                quietSteps = 0
            }
            if deliveries.isEmpty && others.isEmpty {
                if delayed || nextTimer != .max { now += 1; continue }
                if threads.allSatisfy(\.done) && held == 0 { break }
                stuck = stuckReport(held: held)
                noteProblem("stuck: " + stuck!)
                break
            }
            let choice: Choice
            if deliveries.isEmpty { choice = others[Int(rng.next(UInt64(others.count)))] }
            else if others.isEmpty { choice = deliveries[Int(rng.next(UInt64(deliveries.count)))] }
            else if rng.next(100) < UInt64(threadBias) { choice = others[Int(rng.next(UInt64(others.count)))] }
            else { choice = deliveries[Int(rng.next(UInt64(deliveries.count)))] }
            now += 1
            steps += 1
            totalSteps += 1
            if trace != nil { traceChoice(choice) }
            switch choice {
            case let .deliver(k):
                let m = network.queues[k]!.removeFirst()
                if network.queues[k]!.isEmpty { network.queues[k] = nil }
                network.delivered += 1
                network.bytesDelivered += m.bytes.count
                onDeliver?(m)
                nodes[Int(m.dst)].callReceive(from: m.src, m.bytes)
            case let .fault(i):
                let f = nodes[i].faultQueue.removeFirst()
                nodes[i].callFault(f.gfn, f.access, f.flags)
            case let .timer(i, id):
                let n = nodes[i]
                guard let k = n.timers.firstIndex(where: { $0.id == id }) else { break }
                let t = n.timers[k]
                if t.period > 0 { n.timers[k].deadline = now + t.period } else { n.timers.remove(at: k) }
                t.fn?(t.ctx)
            case let .thread(i):
                let t = threads[i]
                t.steps += 1
                if !t.program.step(t) { t.done = true }
            }
            checkInvariants()
        }
        if steps >= maxSteps && stuck == nil && !threads.allSatisfy(\.done) {
            stuck = "no completion within \(maxSteps) steps (livelock?): " + stuckReport(held: 0)
            noteProblem("stuck: " + stuck!)
        }
        return RunReport(seed: seed, steps: steps, messages: network.delivered, bytes: network.bytesDelivered,
                         violations: violations, fatals: nodes.flatMap { n in n.fatals.map { "node \(n.id): \($0)" } },
                         stuck: stuck, hitStepLimit: steps >= maxSteps && !threads.allSatisfy(\.done))
    }

    func stuckReport(held: Int) -> String {
        var parts: [String] = []
        for t in threads where !t.done {
            parts.append("thread \(t.id) on node \(t.node) " + (t.blockedOn.map { "waits on gfn \($0)" } ?? "runnable"))
        }
        if held > 0 { parts.append("\(held) queue(s) held") }
        parts.append("\(network.inFlight) message(s) in flight")
        return parts.joined(separator: "; ")
    }

    /// Injects raw bytes as a message from `src` to `dst` (fuzzing).
    public func inject(from src: UInt32, to dst: UInt32, _ bytes: [UInt8]) {
        nodes[Int(dst)].callReceive(from: src, bytes)
    }

    /// Sum of a counter over every node.
    public func total(_ counter: String) -> UInt64 { nodes.reduce(0) { $0 + $1.counter(counter) } }
}

func hex(_ v: UInt64) -> String { "0x" + String(v, radix: 16) }

/// A small, fast, seedable PRNG (SplitMix64): every schedule is reproducible from its seed.
public struct SplitMix64 {
    var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// Uniform in 0..<bound (bound > 0).
    public mutating func next(_ bound: UInt64) -> UInt64 { bound <= 1 ? 0 : next() % bound }
}
