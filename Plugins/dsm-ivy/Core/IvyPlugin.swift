// IvyPlugin: the adapter from the coherence ABI (through PluginKit's CoherencePlugin) to IvyNode,
// and `IvyPlugin.entry`, its descriptor. The .so's exported entry (Plugins/dsm-ivy/Plugin.swift)
// returns it; tests and tools use the same value in-process, beside other protocols' entries.
//
// Threading: the rules of gvm_coherence_ops; IvyNode serializes everything under its lock.

import PluginKit

public final class IvyPlugin: CoherencePlugin {
    public static let name = "dsm-ivy"
    public static let version = "0.1.0"
    public static let summary = "Ivy sequentially consistent DSM: M/S/I pages, owners with copysets, distributed managers"
    /// The plugin's descriptor (every coherence hook set by PluginKit).
    public static let entry = CoherencePluginEntry(IvyPlugin.self, name: name, version: version, summary: summary)

    public let node: IvyNode

    /// Every setting (IvyConfig.parse, Liveness.swift), for the ABI 3 descriptor.
    public static let settingInfo: [SettingInfo] = [
        SettingInfo("manager_chunk", default: "auto",
                    "pages per manager: auto = one contiguous range per node, or a multiple of 4KiB (up to 1TiB) interleaved over the nodes"),
        SettingInfo("hold_time", default: "20us",
                    "after a fault is resolved, forwards and invalidations for that page wait this long so woken threads use it (0 to 1s; 0 = no hold)"),
        SettingInfo("read_ahead", default: "16",
                    "pages requested ahead of a sequential or strided read stream, batched per manager and owner (0 = off, up to 64)"),
        SettingInfo("replicated", default: "on",
                    "on: guest.modules every node loads itself start as read copies on every node (ABI 4 GVM_HINT_REPLICATED); off: the boot node loads them and the others fault them in"),
        SettingInfo("zero_ahead", default: "512",
                    "when a local fault makes a never-written page present, the other never-written pages of its aligned group of this many pages come with it as zeros, no message; a whole group of 512 may be one huge page (1 = off; a power of two up to 512)"),
        SettingInfo("request_timeout", default: "10s",
                    "a page request unanswered this long stops the cluster naming request, page and peer (0 = off, or 1ms to 1h)"),
        SettingInfo("send_wait", default: "5s",
                    "how long a message may wait for room in a full transport send queue before the cluster stops (1ms to 1h)"),
    ]
    /// The state table (Table.swift), printed by `giantvm plugins describe dsm-ivy`.
    public static var pluginDescription: String? { IvyTable.describe() + IvyTable.describeDrain() }

    public init(services: HostServices, memory: CoherenceHost, cluster: ClusterInfo, settings: Settings) throws {
        let n = UInt32(cluster.nodes.count)
        guard memory.pageCount == cluster.pageCount else {
            throw PluginError("guest memory has \(memory.pageCount) pages but the cluster says \(cluster.pageCount)")
        }
        var config = try IvyConfig.parse(settings.values, pageCount: memory.pageCount, nodeCount: n)
        try config.parseLivenessSettings(settings.values)
        node = try IvyNode(selfID: cluster.selfID, nodeCount: n, config: config, host: memory, services: services)
        services.log(.info, "dsm-ivy: node \(cluster.selfID) of \(n), \(memory.pageCount) pages, manager chunk \(config.managerMap.chunkPages) pages, hold \(config.holdNanoseconds) ns")
    }

    public func fault(gfn: UInt64, access: Access, fromPin: Bool) {
        node.fault(gfn: gfn, access: access)
    }

    public func receive(from src: UInt32, message: UnsafeRawBufferPointer) {
        node.receive(from: src, bytes: message)
    }

    /// Hints (ABI 4): GVM_HINT_REPLICATED only (Replicated.swift); every page is sequentially
    /// consistent already, so fences and class changes are UNSUPPORTED.
    public static var handlesHints: Bool { true }
    public func hint(kind: UInt32, gpa: UInt64, length: UInt64) -> PageStatus {
        guard kind == GVM_HINT_REPLICATED else { return PageStatus(raw: GVM_ERR_UNSUPPORTED.rawValue) }
        guard let pages = IvyNode.pageRange(gpa: gpa, length: length, pageCount: node.pageCount) else {
            node.services.log(.warning, "replicated range 0x\(String(gpa, radix: 16))+0x\(String(length, radix: 16)) is not page aligned inside guest memory")
            return .invalid
        }
        return node.replicate(pages)
    }

    public func pageUnpinned(gfn: UInt64) { node.pageUnpinned(gfn: gfn) }
    public func peerLost(node id: UInt32) { node.peerLost(node: id) }
    public func describe() -> String { IvyTable.describe() + IvyTable.describeDrain() }
    /// Node evacuation (ABI 4): Drain.swift.
    public static var handlesDrain: Bool { true }
    public func drain(to: UInt32, timeoutNanoseconds: UInt64) -> Result<DrainReport, DrainFailure> {
        node.drain(to: to, timeoutNanoseconds: timeoutNanoseconds)
    }
    public func stop() { node.stop() }
}
