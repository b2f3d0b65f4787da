// The `placement` plugin's instance: parses the settings, runs the chosen decider on each
// interval's figures, requests the moves and counts them (placement.* counters, printed in node
// 0's stop summary).

import PluginKit

public final class PlacementPolicyPlugin: PlacementPlugin {
    public static let entry = PlacementPluginEntry(PlacementPolicyPlugin.self, name: "placement", version: "0.1.0",
                                                   summary: "vCPU placement policies: co-locate (shared pages), follow-memory (fault sources)")

    public static let settingInfo: [SettingInfo] = [
        SettingInfo("policy", default: "co-locate", "co-locate (vCPUs sharing pages move to one node) or follow-memory (a vCPU moves to the node serving its faults)"),
        SettingInfo("max_per_node", default: "0", "most vCPUs one node may hold after a move; 0 = no cap (0 to 256)"),
        SettingInfo("cooldown", default: "4", "intervals a moved (or refused) vCPU stays put (0 to 1000)"),
        SettingInfo("min_shared", default: "64", "co-locate: least pages two vCPUs share in an interval, and least net gain of a move (1 to 1000000)"),
        SettingInfo("threshold", default: "256", "follow-memory: least faults one remote node served for the vCPU in an interval (1 to 100000000)"),
        SettingInfo("margin_percent", default: "50", "follow-memory: how much more the remote node must serve than the vCPU's own node, in percent (0 to 10000)"),
        SettingInfo("persist", default: "2", "follow-memory: consecutive intervals the same node must win before the move (1 to 100)"),
    ]

    public static var pluginDescription: String? {
        """
        Placement policies (one per VM, on node 0; the host calls observe() every `interval`).
          co-locate      pairs of vCPUs on different nodes sharing >= min_shared pages: the vCPU
                         whose move gains most sharing (with the vCPUs at the destination, minus
                         those it leaves; gain >= min_shared) moves; destination under max_per_node.
          follow-memory  a vCPU moves to the remote node that served >= threshold of its faults and
                         margin_percent% more than its own node, `persist` intervals in a row.
        Both: at most one move per vCPU in flight; `cooldown` intervals after a move.
        """
    }

    /// Builds the decider a settings map selects (shared with the unit tests).
    public static func decider(_ settings: Settings, vcpus: Int) throws -> any PlacementDecider {
        try settings.allowOnly(declared: settingInfo)
        let policy = settings.string("policy", default: "co-locate")
        let cap = try settings.int("max_per_node", default: 0, range: 0...Int(GVM_PLACEMENT_MAX_VCPUS))
        switch policy {
        case "co-locate":
            var o = CoLocate.Options()
            o.maxPerNode = cap
            o.cooldown = try settings.int("cooldown", default: o.cooldown, range: 0...1000)
            o.minShared = UInt64(try settings.int("min_shared", default: Int(o.minShared), range: 1...1_000_000))
            for k in ["threshold", "margin_percent", "persist"] where settings.values[k] != nil {
                throw PluginError("setting '\(k)' belongs to policy follow-memory, not co-locate")
            }
            return CoLocate(o)
        case "follow-memory":
            var o = FollowMemory.Options()
            o.maxPerNode = cap
            o.cooldown = try settings.int("cooldown", default: o.cooldown, range: 0...1000)
            o.threshold = UInt64(try settings.int("threshold", default: Int(o.threshold), range: 1...100_000_000))
            o.marginPercent = UInt64(try settings.int("margin_percent", default: Int(o.marginPercent), range: 0...10_000))
            o.persist = try settings.int("persist", default: o.persist, range: 1...100)
            if settings.values["min_shared"] != nil {
                throw PluginError("setting 'min_shared' belongs to policy co-locate, not follow-memory")
            }
            return FollowMemory(o)
        default:
            throw PluginError("setting 'policy': '\(policy)' is not a policy (co-locate, follow-memory)")
        }
    }

    let host: PlacementHost
    let services: HostServices
    let nodeCount: Int
    var decider: any PlacementDecider
    let requested, done, failed, refused, intervals: Counter

    public required init(services: HostServices, host: PlacementHost, nodeCount: Int, initialNode: [UInt32],
                         settings: Settings) throws {
        self.host = host
        self.services = services
        self.nodeCount = nodeCount
        decider = try Self.decider(settings, vcpus: initialNode.count)
        requested = services.counter("placement.migrations_requested")
        done = services.counter("placement.migrations_done")
        failed = services.counter("placement.migrations_failed")
        refused = services.counter("placement.migrations_refused")
        intervals = services.counter("placement.intervals")
        services.log(.info, "placement policy \(settings.string("policy", default: "co-locate")) over \(initialNode.count) vCPUs on \(nodeCount) nodes")
    }

    public func observe(_ stats: PlacementStats) {
        intervals.add()
        for m in decider.decide(stats) {
            let rc = host.migrate(vcpu: m.vcpu, to: m.node)
            if rc == .ok {
                requested.add()
                services.log(.info, "placement: moving \(m)")
            } else {
                refused.add()
                decider.finished(m, ok: false)
                services.log(.warning, "placement: the host refused \(m): \(rc)")
            }
        }
    }

    public func migrationDone(vcpu: UInt32, node: UInt32, status: PageStatus, elapsedNanoseconds: UInt64) {
        let ok = status == .ok
        (ok ? done : failed).add()
        decider.finished(PlacementMove(vcpu: vcpu, node: node), ok: ok)
        services.log(ok ? .info : .warning,
                     "placement: vCPU \(vcpu) -> node \(node) \(ok ? "done" : "failed: \(status)") in \(elapsedNanoseconds / 1000) us")
    }
}
