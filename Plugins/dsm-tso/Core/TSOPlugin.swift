// TSOPlugin: the adapter from the coherence ABI (through PluginKit's CoherencePlugin) to
// TSONode, and `TSOPlugin.entry`, its descriptor. The .so's exported entry
// (Plugins/dsm-tso/Plugin.swift) returns it; tests use the same value in-process.
//
// Threading: the rules of gvm_coherence_ops; TSONode serializes what it must.

import IvyCore
import PluginKit

public final class TSOPlugin: CoherencePlugin {
    public static let name = "dsm-tso"
    public static let version = "0.2.0"
    public static let summary = "hybrid DSM: Ivy (sequential consistency) outside relaxed ranges, home-based multiple writers with diffs inside"
    public static let entry = CoherencePluginEntry(TSOPlugin.self, name: name, version: version, summary: summary)
    /// Every setting, for the ABI 3 descriptor (`giantvm plugins describe dsm-tso`): its own and
    /// dsm-ivy's for the sc pages (Config.swift); read_ahead defaults to 0 here.
    public static let settingInfo: [SettingInfo] = [
        SettingInfo("relaxed", default: "none",
                    "guest-physical ranges of class mw (multiple writers): \"BASE:LENGTH, ...\", page aligned; none = exactly dsm-ivy"),
        SettingInfo("relaxed_start", default: "mw", "mw: relaxed pages start multiple-writer; sc: they start under Ivy and switch when several nodes write them"),
        SettingInfo("switch_after", default: "4", "ownership moves between different writers, each within switch_window, before a relaxed page switches sc -> mw (1 to 1000)"),
        SettingInfo("switch_window", default: "10ms", "longest gap between those moves (1us to 10s)"),
        SettingInfo("switch_back_after", default: "16", "diffs in a row from one writer before an mw page goes back to sc (0 = never, up to 100000)"),
        SettingInfo("flush_interval", default: "1ms", "a dirty mw page's diff is out at most this long after its first write, fence or not (10us to 1s)"),
        SettingInfo("read_ahead", default: "0",
                    "as dsm-ivy's, for sc pages outside every relaxed range only; off by default: a guest hint over a prefetched page is refused (0 = off, up to 64)"),
        SettingInfo("zero_ahead", default: "1",
                    "as dsm-ivy's, for sc pages outside every relaxed range only; off by default for the same reason as read_ahead (1 = off; a power of two up to 512)"),
    ] + IvyPlugin.settingInfo.filter { $0.key != "read_ahead" && $0.key != "zero_ahead" }
    /// Both state tables, printed by `giantvm plugins describe dsm-tso`.
    public static var pluginDescription: String? { TSOTable.describe() }
    public static var handlesFences: Bool { true }
    public static var handlesHints: Bool { true }

    public let node: TSONode

    public init(services: HostServices, memory: CoherenceHost, cluster: ClusterInfo, settings: Settings) throws {
        let n = UInt32(cluster.nodes.count)
        guard memory.pageCount == cluster.pageCount else {
            throw PluginError("guest memory has \(memory.pageCount) pages but the cluster says \(cluster.pageCount)")
        }
        let config = try TSOConfig.parse(settings.values, pageCount: memory.pageCount, nodeCount: n)
        node = try TSONode(selfID: cluster.selfID, nodeCount: n, config: config, host: memory, services: services)
        let pages = config.relaxed.reduce(0) { $0 + $1.count }
        services.log(.info, "dsm-tso: node \(cluster.selfID) of \(n), \(memory.pageCount) pages, \(pages) relaxed (mw) in \(config.relaxed.count) range(s), flush interval \(Units.format(nanoseconds: config.flushIntervalNanoseconds))")
    }

    public func fault(gfn: UInt64, access: Access, fromPin: Bool) { node.fault(gfn: gfn, access: access) }
    public func receive(from src: UInt32, message: UnsafeRawBufferPointer) { node.receive(from: src, bytes: message) }
    public func pageUnpinned(gfn: UInt64) { node.pageUnpinned(gfn: gfn) }
    public func peerLost(node id: UInt32) { node.peerLost(node: id) }
    public func fence(vcpu: UInt32, kind: UInt32) -> PageStatus { node.fence(kind: kind) }
    public func describe() -> String { TSOTable.describe() }

    /// Guest hints (ABI 3): a fence is a release waited for; a range's class changes on every
    /// node before this returns.
    public func hint(kind: UInt32, gpa: UInt64, length: UInt64) -> PageStatus {
        switch kind {
        case GVM_HINT_FENCE:
            return node.releaseAndWait(.hint)
        case GVM_HINT_RELAXED, GVM_HINT_SC:
            let page = UInt64(GVM_PAGE_SIZE)
            guard length > 0, gpa % page == 0, length % page == 0, gpa / page < node.pageCount,
                  length / page <= node.pageCount - gpa / page else {
                node.services.log(.warning, "coherence hint: range 0x\(String(gpa, radix: 16))+0x\(String(length, radix: 16)) is not page aligned inside guest memory")
                return .invalid
            }
            return node.setClass((gpa / page)..<((gpa + length) / page), relaxed: kind == GVM_HINT_RELAXED)
        case GVM_HINT_REPLICATED:   // ABI 4: sc pages only (dsm-ivy's initial read copies)
            guard let pages = IvyNode.pageRange(gpa: gpa, length: length, pageCount: node.pageCount) else { return .invalid }
            return node.replicate(pages)
        default:
            return PageStatus(raw: GVM_ERR_UNSUPPORTED.rawValue)
        }
    }
    public func stop() { node.stop() }
}
