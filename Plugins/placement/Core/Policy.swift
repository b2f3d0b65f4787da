// What both in-tree placement policies share: the decision interface (figures in, moves out, pure
// so tests drive it with synthetic figures), per-vCPU cool-down and in-flight bookkeeping, and the
// per-node vCPU cap.

import PluginKit

/// A placement decision procedure: one interval's figures in, the moves to request out.
public protocol PlacementDecider {
    /// Called once per interval; `node` of a vCPU in `stats` is UInt32.max while it migrates.
    mutating func decide(_ stats: PlacementStats) -> [PlacementMove]
    /// The outcome of a move this decider returned.
    mutating func finished(_ move: PlacementMove, ok: Bool)
}

/// Per-vCPU state both policies keep: moves in flight and the cool-down after a move.
public struct MoveBook: Sendable {
    /// Intervals a vCPU stays put after a move (or a failed attempt).
    public let cooldown: Int
    var inFlight: Set<UInt32> = []
    var coolingUntil: [UInt32: Int] = [:]
    public private(set) var interval = 0

    public init(cooldown: Int) { self.cooldown = cooldown }

    /// Starts a new interval.
    public mutating func tick() { interval += 1 }

    /// Whether vCPU `v` may be moved now.
    public func movable(_ v: Int, _ stats: PlacementStats) -> Bool {
        let id = UInt32(v)
        return stats.vcpuNode[v] != PlacementStats.migrating && !inFlight.contains(id)
            && (coolingUntil[id].map { interval > $0 } ?? true)
    }

    public mutating func requested(_ m: PlacementMove) { inFlight.insert(m.vcpu) }

    public mutating func finished(_ m: PlacementMove) {
        inFlight.remove(m.vcpu)
        coolingUntil[m.vcpu] = interval + cooldown
    }
}

/// vCPUs per node at the end of the interval (vCPUs in flight are counted on neither node).
func occupancy(_ stats: PlacementStats) -> [Int] {
    var count = [Int](repeating: 0, count: stats.nodeCount)
    for n in stats.vcpuNode where Int(n) < stats.nodeCount { count[Int(n)] += 1 }
    return count
}
