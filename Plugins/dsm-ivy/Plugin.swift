// dsm-ivy: the Ivy coherence protocol as a GiantVM coherence plugin (libdsm-ivy.so).
//
// The protocol lives in IvyNode (Node.swift) and its tables (Table.swift); this file only adapts
// the C ABI (through PluginKit) to it. Settings (YAML `coherence: {plugin: dsm-ivy, settings:}`):
//   manager_chunk: auto | <size>   how pages are spread over the managers (see IvyConfig)
//
// Threading: the rules of gvm_coherence_ops; IvyNode serializes everything under its lock.

import PluginKit

public final class IvyPlugin: CoherencePlugin {
    public let node: IvyNode

    public init(services: HostServices, memory: CoherenceHost, cluster: ClusterInfo, settings: Settings) throws {
        let n = UInt32(cluster.nodes.count)
        guard memory.pageCount == cluster.pageCount || cluster.guestMemoryBytes == 0 else {
            throw PluginError("guest memory has \(memory.pageCount) pages but the cluster says \(cluster.pageCount)")
        }
        let config = try IvyConfig.parse(settings.values, pageCount: memory.pageCount, nodeCount: n)
        node = try IvyNode(selfID: cluster.selfID, nodeCount: n, config: config, host: memory, services: services)
        services.log(.info, "dsm-ivy: node \(cluster.selfID) of \(n), \(memory.pageCount) pages, manager chunk \(config.managerMap.chunkPages) pages")
    }

    public func fault(gfn: UInt64, access: Access, fromPin: Bool) {
        node.fault(gfn: gfn, access: access)
    }

    public func receive(from src: UInt32, message: UnsafeRawBufferPointer) {
        node.receive(from: src, bytes: message)
    }

    public func pageUnpinned(gfn: UInt64) { node.pageUnpinned(gfn: gfn) }
    public func peerLost(node id: UInt32) { node.peerLost(node: id) }
    public func describe() -> String { IvyTable.describe() }
    public func stop() { node.stop() }
}

@_cdecl("giantvm_plugin_entry")
public func giantvm_plugin_entry() -> UnsafeRawPointer {
    PluginEntry.coherence(IvyPlugin.self, name: "dsm-ivy", version: "0.1.0",
                          summary: "Ivy sequentially consistent DSM: M/S/I pages, owners with copysets, distributed managers")
}
