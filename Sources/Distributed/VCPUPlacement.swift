// The vCPU-to-node map, as cluster state: every node holds one, each entry with a version. The
// node a vCPU leaves issues the next version (only the node running a vCPU migrates it, so a
// vCPU's versions are issued in sequence along its path); every node keeps the highest version it
// has heard of, so PLACEMENT messages arriving out of order across links never move an entry back.
//
// Threading: any thread (one lock).
import Synchronization

public final class VCPUPlacement: Sendable {
    private let table: Mutex<[(node: UInt32, version: UInt64)]>
    public let count: Int

    /// The initial placement (version 0 for every vCPU).
    public init(_ nodes: [UInt32]) {
        count = nodes.count
        table = Mutex(nodes.map { ($0, 0) })
    }

    /// The node that runs vCPU `index` as far as this node knows.
    public func node(of index: Int) -> UInt32 { table.withLock { $0[index].node } }

    public func entry(of index: Int) -> (node: UInt32, version: UInt64) { table.withLock { $0[index] } }

    /// Every vCPU's node.
    public var nodes: [UInt32] { table.withLock { $0.map(\.node) } }

    /// Moves vCPU `index` to `node` with the next version (on the node it leaves); returns it.
    public func advance(_ index: Int, to node: UInt32) -> UInt64 {
        table.withLock { t in
            t[index] = (node, t[index].version &+ 1)
            return t[index].version
        }
    }

    /// Applies a placement heard from the cluster when it is newer than what this node has.
    /// Returns true when it changed the entry.
    @discardableResult
    public func update(_ index: Int, node: UInt32, version: UInt64) -> Bool {
        table.withLock { t in
            guard version > t[index].version else { return false }
            t[index] = (node, version)
            return true
        }
    }
}
