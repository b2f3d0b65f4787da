// dsm-local: the single-node coherence protocol. Every fault is served on this node: a page is
// zero-filled on first touch, read faults install it SHARED, write faults upgrade it (or install it
// MODIFIED). It exists so that guest memory runs end to end through the coherence ABI on one node
// before any multi-node protocol does, and as the reference for what a fault hook must do.
//
// Protocol table (state as the host holds it; event from the host's fault hook):
//
//   state     | read fault              | write fault
//   ----------+-------------------------+----------------------------------
//   INVALID   | install zeros SHARED    | install zeros MODIFIED
//   SHARED    | (stale) wake            | upgrade -> MODIFIED
//   MODIFIED  | (stale) wake            | (stale) wake
//
// Every transition ends with page_wake. A page dropped behind the plugin's back (dsm-local never
// drops one itself) comes back zero-filled, like a first touch.
//
// Threading: `fault` runs on the host's fault-handler threads and pinning threads, concurrently;
// transitions of one page are serialised by a striped lock so two faults on one page never both
// install it (the second install would drop bytes the first one's thread already wrote).
//
// Statistics: the standard ones (giantvm_plugin.h, "dsm."): a read miss, write miss or upgrade per
// transition, a stale fault per wake without one, the fault latency from fault() to page_wake;
// nothing is ever sent, so the message, page and invalidation counters stay 0. No extras.

import PluginKit
import Synchronization

public final class LocalCoherence: CoherencePlugin {
    let memory: CoherenceHost
    let services: HostServices
    static let stripes = 256
    private let locks: [Stripe]
    final class Stripe: Sendable { let mutex = Mutex<Void>(()) }
    let stats: CoherenceStatistics

    public init(services: HostServices, memory: CoherenceHost, cluster: ClusterInfo, settings: Settings) throws {
        try settings.allowOnly([])
        guard cluster.nodes.count == 1 else {
            throw PluginError("dsm-local serves one node only, but the cluster has \(cluster.nodes.count) nodes; use dsm-ivy across nodes")
        }
        self.memory = memory
        self.services = services
        locks = (0..<Self.stripes).map { _ in Stripe() }
        stats = CoherenceStatistics(services)
    }

    public func fault(gfn: UInt64, access: Access, fromPin: Bool) {
        guard gfn < memory.pageCount else {
            services.log(.error, "fault on page \(gfn) beyond guest RAM (\(memory.pageCount) pages)")
            return
        }
        let start = services.nowNanoseconds()
        let (kind, status): (RequestKind?, PageStatus) = locks[Int(gfn % UInt64(Self.stripes))].mutex.withLock { _ in
            switch (memory.state(gfn), access) {
            case (.invalid, .read):
                return (.readMiss, memory.install(gfn, bytes: nil, state: .shared))
            case (.invalid, .write):
                return (.writeMiss, memory.install(gfn, bytes: nil, state: .modified))
            case (.shared, .write):
                let s = memory.upgrade(gfn)
                // Dropped since the state was read: serve it as a first touch.
                return (.upgrade, s == .notPresent ? memory.install(gfn, bytes: nil, state: .modified) : s)
            case (.shared, .read), (.modified, _):
                return (nil, .ok)
            }
        }
        if status != .ok {
            services.fatal("dsm-local: page \(gfn) \(access) fault: \(status)")
        }
        // Counted before the wake: a woken thread that reads the statistics sees its own fault.
        if let kind {
            stats.requests(kind).add()
            stats.recordLatency(kind, nanoseconds: services.nowNanoseconds() &- start)
        } else {
            stats.stale.add()
        }
        memory.wake(gfn)
    }

    public func receive(from node: UInt32, message: UnsafeRawBufferPointer) {
        stats.messagesReceived.add()
        stats.bytesReceived.add(UInt64(message.count))
        services.log(.warning, "dsm-local: ignoring a \(message.count)-byte message from node \(node) (single-node protocol)")
    }

    public func describe() -> String { Self.stateTable }

    /// No settings; the state table below is its ABI 3 description.
    public static var pluginDescription: String? { stateTable }

    static let stateTable = """
        dsm-local: single node, every fault served locally, zero-filled on first touch
          INVALID  + read  -> install zeros SHARED, wake
          INVALID  + write -> install zeros MODIFIED, wake
          SHARED   + write -> upgrade to MODIFIED, wake
          otherwise        -> stale: wake
        """
}

extension LocalCoherence {
    /// The plugin's descriptor (public so a test bundle can hold it beside another protocol's).
    public static let entry = CoherencePluginEntry(LocalCoherence.self, name: "dsm-local", version: "0.1.0",
                                                   summary: "single-node coherence: every fault served locally, zero-filled on first touch")
}

@_cdecl("giantvm_plugin_entry")
public func giantvm_plugin_entry() -> UnsafeRawPointer { LocalCoherence.entry.pointer }
