// Workloads for the simulation: thread programs whose results are known exactly.
//
// Threading: single-threaded (see SimNode).

import PluginAPI

/// A test-and-test-and-set spinlock at (lockPage, 0) protecting a counter at (counterPage, 0):
/// every thread adds `increments` times. The total is known exactly; mutual exclusion is also
/// checked directly (no two threads inside the critical section at once).
public final class LockedCounterProgram: SimProgram {
    enum PC { case spin, tryLock, readCounter, writeCounter(UInt64), unlock }
    let lockPage: UInt64
    let counterPage: UInt64
    let increments: Int
    let section: CriticalSection
    var pc = PC.spin
    public private(set) var done = 0
    public private(set) var spins = 0

    public final class CriticalSection {
        public var inside: Int? = nil
        public var violations: [String] = []
        public init() {}
    }

    public init(lockPage: UInt64, counterPage: UInt64, increments: Int, section: CriticalSection) {
        self.lockPage = lockPage
        self.counterPage = counterPage
        self.increments = increments
        self.section = section
    }

    public func step(_ t: SimThread) -> Bool {
        if done == increments { return false }
        switch pc {
        case .spin:
            guard let v = t.load(lockPage, 0) else { return true }
            if v == 0 { pc = .tryLock } else { spins += 1 }
        case .tryLock:
            guard let ok = t.cas(lockPage, 0, expect: 0, new: UInt64(t.id + 1)) else { return true }
            if ok {
                if let other = section.inside {
                    section.violations.append("thread \(t.id) entered the critical section while thread \(other) is inside")
                }
                section.inside = t.id
                pc = .readCounter
            } else {
                pc = .spin
            }
        case .readCounter:
            guard let v = t.load(counterPage, 0) else { return true }
            pc = .writeCounter(v)
        case let .writeCounter(v):
            guard t.store(counterPage, 0, v + 1) else { return true }
            pc = .unlock
        case .unlock:
            section.inside = nil
            guard t.store(lockPage, 0, 0) else {
                section.inside = t.id   // still holding it: the release faulted
                return true
            }
            done += 1
            pc = .spin
        }
        return done < increments
    }
}

/// Random reads, writes and atomic increments over a working set. Writes store unique values
/// (thread id, sequence), so the golden-memory checks detect any stale read or lost update;
/// increments go to word 0 of each page with a CAS loop, and their exact total is checked at the end.
public final class RandomProgram: SimProgram {
    let pages: [UInt64]
    /// Pages the atomic increments go to (default: every page).
    let atomicPages: [UInt64]
    let slots: Int
    let ops: Int
    let writePercent: UInt64
    var rng: SplitMix64
    var remaining: Int
    var current: Op?
    var seq: UInt64 = 0
    public private(set) var increments: [UInt64: UInt64] = [:]

    enum Op {
        case read(UInt64, Int)
        case write(UInt64, Int, UInt64)
        case incRead(UInt64)
        case incCAS(UInt64, UInt64)
    }

    /// `atomicPages`: where the CAS increments go (default `pages`): a protocol with relaxed
    /// memory keeps its atomics in sc pages, and plain reads and writes may go anywhere.
    public init(pages: [UInt64], atomicPages: [UInt64]? = nil, slots: Int, ops: Int, writePercent: UInt64, seed: UInt64) {
        self.pages = pages
        self.atomicPages = atomicPages ?? pages
        self.slots = slots
        self.ops = ops
        self.writePercent = writePercent
        rng = SplitMix64(seed: seed)
        remaining = ops
    }

    public func step(_ t: SimThread) -> Bool {
        if current == nil {
            if remaining == 0 { return false }
            remaining -= 1
            let p = pages[Int(rng.next(UInt64(pages.count)))]
            let r = rng.next(100)
            let slot = 1 + Int(rng.next(UInt64(slots)))
            if r < writePercent / 2 {
                current = .incRead(atomicPages.contains(p) ? p : atomicPages[Int(p % UInt64(atomicPages.count))])
            } else if r < writePercent {
                seq += 1
                current = .write(p, slot * 8, UInt64(t.id + 1) << 32 | seq)
            } else {
                current = .read(p, slot * 8)
            }
        }
        switch current! {
        case let .read(p, off):
            guard t.load(p, off) != nil else { return true }
            current = nil
        case let .write(p, off, v):
            guard t.store(p, off, v) else { return true }
            current = nil
        case let .incRead(p):
            guard let v = t.load(p, 0) else { return true }
            current = .incCAS(p, v)
        case let .incCAS(p, v):
            guard let ok = t.cas(p, 0, expect: v, new: v + 1) else { return true }
            if ok {
                increments[p, default: 0] += 1
                current = nil
            } else {
                current = .incRead(p)
            }
        }
        return current != nil || remaining > 0
    }
}

/// Two threads on different nodes alternately increment one word: one when it is even, the other
/// when it is odd, `rounds` times each. The final value is exactly 2 * rounds and every round
/// moves the page between the nodes.
public final class PingPongProgram: SimProgram {
    let page: UInt64
    let parity: UInt64
    let rounds: Int
    var done = 0
    var seen: UInt64?

    public init(page: UInt64, parity: UInt64, rounds: Int) {
        self.page = page
        self.parity = parity
        self.rounds = rounds
    }

    public func step(_ t: SimThread) -> Bool {
        if done == rounds { return false }
        if let v = seen {
            guard t.store(page, 0, v + 1) else { return true }
            seen = nil
            done += 1
            return done < rounds
        }
        guard let v = t.load(page, 0) else { return true }
        if v % 2 == parity { seen = v }
        return true
    }
}

/// Reads every word the golden memory knows on `pages`, checking each (used to verify a cluster
/// at the end of a run through the protocol itself, from every node).
public final class VerifyProgram: SimProgram {
    var work: [(UInt64, Int)]
    public init(words: [(UInt64, Int)]) { work = words }
    public func step(_ t: SimThread) -> Bool {
        guard let (p, off) = work.first else { return false }
        guard t.load(p, off) != nil else { return true }   // checked against golden by the kit
        work.removeFirst()
        return !work.isEmpty
    }
}

extension SimCluster {
    /// Every (gfn, offset) that was ever written.
    public var writtenWords: [(UInt64, Int)] {
        golden.keys.sorted().flatMap { g in golden[g]!.keys.sorted().map { (g, $0) } }
    }

    /// Adds a verifying reader on every node and runs to completion: every node must read the
    /// latest value of every word ever written.
    public func verifyFromEveryNode(maxSteps: Int = 200_000) -> RunReport {
        let words = writtenWords
        for n in 0..<nodeCount { addThread(node: UInt32(n), VerifyProgram(words: words)) }
        return run(maxSteps: maxSteps)
    }
}
