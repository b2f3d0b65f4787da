// co-locate: vCPUs that fault on the same pages are moved to one node, so the pages they share
// stop crossing the network. Each interval, for every pair of vCPUs on different nodes whose
// sharing (pages both faulted on) is at least `min_shared`, the policy weighs both directions:
// moving j to i's node gains j's sharing with every vCPU there and loses its sharing with every
// vCPU it leaves; the better direction is taken when its gain is at least `min_shared` and the
// destination has fewer than `max_per_node` vCPUs. Pairs are taken by decreasing sharing, each
// vCPU moves at most once per interval, and a moved vCPU stays put for `cooldown` intervals.

import PluginKit

public struct CoLocate: PlacementDecider {
    public struct Options: Sendable, Equatable {
        /// Least pages two vCPUs must share in an interval, and least net gain of a move.
        public var minShared: UInt64 = 64
        /// Most vCPUs on one node after a move (0: no cap).
        public var maxPerNode: Int = 0
        /// Intervals a moved vCPU stays put.
        public var cooldown: Int = 4
        public init() {}
    }

    public let options: Options
    public var book: MoveBook

    public init(_ options: Options) {
        self.options = options
        book = MoveBook(cooldown: options.cooldown)
    }

    /// Sharing of `v` with the vCPUs placed on `node` (excluding itself).
    private func affinity(_ v: Int, node: Int, _ stats: PlacementStats, _ place: [Int]) -> UInt64 {
        var sum: UInt64 = 0
        for u in 0..<stats.vcpuCount where u != v && place[u] == node { sum += stats.sharing(v, u) }
        return sum
    }

    public mutating func decide(_ stats: PlacementStats) -> [PlacementMove] {
        book.tick()
        let v = stats.vcpuCount
        // The planned placement: updated as moves are chosen; -1 = in flight.
        var place = stats.vcpuNode.map { Int($0) < stats.nodeCount ? Int($0) : -1 }
        var count = occupancy(stats)
        var pairs: [(i: Int, j: Int, shared: UInt64)] = []
        for i in 0..<v {
            for j in (i + 1)..<max(v, i + 1) {
                let s = stats.sharing(i, j)
                if s >= options.minShared, place[i] >= 0, place[j] >= 0, place[i] != place[j] {
                    pairs.append((i, j, s))
                }
            }
        }
        pairs.sort { $0.shared != $1.shared ? $0.shared > $1.shared : ($0.i, $0.j) < ($1.i, $1.j) }
        var moved = Set<Int>()
        var moves: [PlacementMove] = []
        for p in pairs where place[p.i] != place[p.j] && !moved.contains(p.i) && !moved.contains(p.j) {
            // Candidate: (who moves, where to), with its net gain.
            var best: (who: Int, to: Int, gain: Int64)?
            for (who, to) in [(p.j, place[p.i]), (p.i, place[p.j])] {
                guard book.movable(who, stats), options.maxPerNode == 0 || count[to] < options.maxPerNode else { continue }
                let gain = Int64(clamping: affinity(who, node: to, stats, place))
                    - Int64(clamping: affinity(who, node: place[who], stats, place))
                // Ties: move the higher-numbered vCPU (the first candidate).
                if gain >= Int64(clamping: options.minShared), best.map({ gain > $0.gain }) ?? true {
                    best = (who, to, gain)
                }
            }
            guard let b = best else { continue }
            count[place[b.who]] -= 1
            count[b.to] += 1
            place[b.who] = b.to
            moved.insert(b.who)
            let m = PlacementMove(vcpu: UInt32(b.who), node: UInt32(b.to))
            book.requested(m)
            moves.append(m)
        }
        return moves
    }

    public mutating func finished(_ move: PlacementMove, ok: Bool) { book.finished(move) }
}
