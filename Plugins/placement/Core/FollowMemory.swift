// follow-memory: a vCPU that keeps faulting on pages another node serves is moved to that node
// (one vCPU's registers cross the network once, instead of its working set page by page).
// A vCPU is a candidate for node n when, in one interval, n served at least `threshold` of its
// faults and at least `margin_percent`% more than its own node served (local faults). The same
// node must win `persist` intervals in a row (hysteresis), the destination must have fewer than
// `max_per_node` vCPUs, and a vCPU that moved stays put for `cooldown` intervals, so a page set
// that moves with the vCPU does not make it ping-pong. Two vCPUs chasing each other's pages are
// not swapped in one interval: the one with more remote faults moves, the other stays.

import PluginKit

public struct FollowMemory: PlacementDecider {
    public struct Options: Sendable, Equatable {
        /// Least faults served by one remote node in an interval.
        public var threshold: UInt64 = 256
        /// How much the remote node must beat the local one by, in percent.
        public var marginPercent: UInt64 = 50
        /// Consecutive intervals the same node must win.
        public var persist: Int = 2
        /// Most vCPUs on one node after a move (0: no cap).
        public var maxPerNode: Int = 0
        /// Intervals a moved vCPU stays put.
        public var cooldown: Int = 4
        public init() {}
    }

    public let options: Options
    public var book: MoveBook
    /// Per vCPU: the node that won the last intervals, and how many in a row.
    var streak: [Int: (node: Int, count: Int)] = [:]

    public init(_ options: Options) {
        self.options = options
        book = MoveBook(cooldown: options.cooldown)
    }

    /// The remote node that wins vCPU `v`'s faults this interval, if any.
    func winner(_ v: Int, _ stats: PlacementStats) -> Int? {
        let home = Int(stats.vcpuNode[v])
        guard home < stats.nodeCount else { return nil }
        var best: (node: Int, faults: UInt64)?
        for n in 0..<stats.nodeCount where n != home {
            let f = stats.faults(vcpu: v, node: n)
            if f > (best?.faults ?? 0) { best = (n, f) }
        }
        guard let b = best, b.faults >= options.threshold else { return nil }
        let local = stats.faults(vcpu: v, node: home)
        // b > local * (1 + margin/100), in integers without overflow.
        let (scaled, overflow) = local.multipliedReportingOverflow(by: 100 + options.marginPercent)
        guard !overflow, b.faults.multipliedReportingOverflow(by: 100).partialValue > scaled,
              b.faults <= UInt64.max / 100 else { return nil }
        return b.node
    }

    public mutating func decide(_ stats: PlacementStats) -> [PlacementMove] {
        book.tick()
        var count = occupancy(stats)
        var moves: [PlacementMove] = []
        // Planned (from, to) node pairs: a move from b to a is skipped when one from a to b is
        // planned (two vCPUs chasing each other's pages would only swap nodes). The vCPU with the
        // most remote faults is considered first.
        var planned = Set<[Int]>()
        let order = (0..<stats.vcpuCount).sorted {
            let a = stats.remoteFaults(vcpu: $0), b = stats.remoteFaults(vcpu: $1)
            return a != b ? a > b : $0 < $1
        }
        for v in order {
            guard book.movable(v, stats), let n = winner(v, stats) else {
                streak[v] = nil
                continue
            }
            let s: (node: Int, count: Int) = streak[v].map { $0.node == n ? ($0.node, $0.count + 1) : (n, 1) } ?? (n, 1)
            streak[v] = s
            let home = Int(stats.vcpuNode[v])
            guard s.count >= options.persist, options.maxPerNode == 0 || count[n] < options.maxPerNode,
                  !planned.contains([n, home]) else { continue }
            planned.insert([home, n])
            count[home] -= 1
            count[n] += 1
            streak[v] = nil
            let m = PlacementMove(vcpu: UInt32(v), node: UInt32(n))
            book.requested(m)
            moves.append(m)
        }
        return moves
    }

    public mutating func finished(_ move: PlacementMove, ok: Bool) { book.finished(move) }
}
