// IvyPlugin: the adapter from the coherence ABI (through PluginKit's CoherencePlugin) to IvyNode,
// and `IvyDescriptor`, a descriptor for in-process use (tests, tools) that does not depend on
// PluginKit's one-type-per-image entry globals, so it can live in a process that also links
// other Swift plugins. The .so's exported entry (Plugins/dsm-ivy/Plugin.swift) uses
// PluginEntry.coherence with the same IvyPlugin type.
//
// Threading: the rules of gvm_coherence_ops; IvyNode serializes everything under its lock.

import PluginKit

public final class IvyPlugin: CoherencePlugin {
    public static let name = "dsm-ivy"
    public static let version = "0.1.0"
    public static let summary = "Ivy sequentially consistent DSM: M/S/I pages, owners with copysets, distributed managers"

    public let node: IvyNode

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

    public func pageUnpinned(gfn: UInt64) { node.pageUnpinned(gfn: gfn) }
    public func peerLost(node id: UInt32) { node.peerLost(node: id) }
    public func describe() -> String { IvyTable.describe() }
    public func stop() { node.stop() }
}

/// A `gvm_plugin_descriptor` for IvyPlugin built without PluginKit's entry globals.
public enum IvyDescriptor {
    nonisolated(unsafe) static var cached: UnsafeRawPointer?

    static func plugin(_ p: UnsafeMutableRawPointer?) -> IvyPlugin {
        Unmanaged<IvyPlugin>.fromOpaque(p!).takeUnretainedValue()
    }

    public static func make() -> UnsafeRawPointer {
        if let cached { return cached }
        let ops = UnsafeMutablePointer<gvm_coherence_ops>.allocate(capacity: 1)
        ops.initialize(to: gvm_coherence_ops())
        ops.pointee.size = UInt32(MemoryLayout<gvm_coherence_ops>.size)
        ops.pointee.create = { svc, mem, cluster, settings, n, err in
            do {
                let p = try IvyPlugin(services: HostServices(svc!), memory: CoherenceHost(mem!),
                                      cluster: ClusterInfo(cluster!), settings: Settings(settings, count: n))
                return Unmanaged.passRetained(p).toOpaque()
            } catch {
                if let err {
                    withUnsafeMutableBytes(of: &err.pointee.message) { buf in
                        let bytes = Array("\(error)".utf8.prefix(buf.count - 1))
                        for (i, b) in bytes.enumerated() { buf[i] = b }
                        buf[bytes.count] = 0
                    }
                }
                return nil
            }
        }
        ops.pointee.fault = { p, gfn, access, _ in IvyDescriptor.plugin(p).fault(gfn: gfn, access: Access(rawValue: access) ?? .write, fromPin: false) }
        ops.pointee.receive = { p, src, msg, len in IvyDescriptor.plugin(p).receive(from: src, message: UnsafeRawBufferPointer(start: msg, count: len)) }
        ops.pointee.page_unpinned = { p, gfn in IvyDescriptor.plugin(p).pageUnpinned(gfn: gfn) }
        ops.pointee.peer_lost = { p, node in IvyDescriptor.plugin(p).peerLost(node: node) }
        ops.pointee.describe = { _, buf, cap in
            let bytes = Array(IvyTable.describe().utf8)
            if let buf, cap > 0 {
                let n = min(bytes.count, cap - 1)
                for i in 0..<n { buf[i] = CChar(bitPattern: bytes[i]) }
                buf[n] = 0
            }
            return bytes.count
        }
        ops.pointee.stop = { p in IvyDescriptor.plugin(p).stop() }
        ops.pointee.destroy = { p in if let p { Unmanaged<IvyPlugin>.fromOpaque(p).release() } }
        let d = UnsafeMutablePointer<gvm_plugin_descriptor>.allocate(capacity: 1)
        d.initialize(to: gvm_plugin_descriptor(abi_version: GVM_ABI_VERSION, kind: GVM_PLUGIN_COHERENCE.rawValue,
                                               name: strdupPermanent(IvyPlugin.name), version: strdupPermanent(IvyPlugin.version),
                                               summary: strdupPermanent(IvyPlugin.summary), ops: UnsafeRawPointer(ops)))
        cached = UnsafeRawPointer(d)
        return cached!
    }

    static func strdupPermanent(_ s: String) -> UnsafePointer<CChar> {
        let u = Array(s.utf8CString)
        let p = UnsafeMutablePointer<CChar>.allocate(capacity: u.count)
        p.initialize(from: u, count: u.count)
        return UnsafePointer(p)
    }
}
