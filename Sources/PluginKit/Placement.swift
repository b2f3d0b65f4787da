// Placement-policy plugins in Swift (ABI 3, gvm_placement_ops): a class conforming to
// `PlacementPlugin`, exported by `PlacementPluginEntry(MyPolicy.self, ...)` (kept in a `let`).
// The host creates one instance on node 0, calls observe() with each interval's figures, and
// the policy asks for moves through `PlacementHost.migrate`. Threading rules are those of
// gvm_placement_ops in giantvm_plugin.h.

/// The figures of one interval (gvm_placement_stats), copied out of the host's borrowed arrays.
public struct PlacementStats: Sendable, Equatable {
    /// A vCPU whose node is this is being migrated.
    public static let migrating = UInt32.max

    public var vcpuCount: Int
    public var nodeCount: Int
    public var samplePages: Int
    public var intervalNanoseconds: UInt64
    /// [V]: each vCPU's node (or `migrating`).
    public var vcpuNode: [UInt32]
    /// [V*N]: faults[v*N + n] = DSM faults vCPU v took that node n served.
    public var faults: [UInt64]
    /// [V*V]: pages both vCPUs faulted on (capped by samplePages); the diagonal: own pages.
    public var sharing: [UInt64]

    public init(vcpuNode: [UInt32], nodeCount: Int, faults: [UInt64], sharing: [UInt64],
                samplePages: Int = 4096, intervalNanoseconds: UInt64 = 1_000_000_000) {
        precondition(faults.count == vcpuNode.count * nodeCount && sharing.count == vcpuNode.count * vcpuNode.count,
                     "PlacementStats: faults must be V*N and sharing V*V")
        self.vcpuCount = vcpuNode.count
        self.nodeCount = nodeCount
        self.samplePages = samplePages
        self.intervalNanoseconds = intervalNanoseconds
        self.vcpuNode = vcpuNode
        self.faults = faults
        self.sharing = sharing
    }

    /// Copies the host's table; nil (the call is ignored) when its counts are out of range.
    public init?(_ s: UnsafePointer<gvm_placement_stats>) {
        let p = s.pointee
        guard Int(p.size) >= MemoryLayout<gvm_placement_stats>.size,
              (1...Int(GVM_PLACEMENT_MAX_VCPUS)).contains(Int(p.vcpu_count)),
              (1...Int(GVM_PLACEMENT_MAX_NODES)).contains(Int(p.node_count)),
              let vn = p.vcpu_node, let f = p.faults, let sh = p.sharing else { return nil }
        let v = Int(p.vcpu_count), n = Int(p.node_count)
        self.init(vcpuNode: Array(UnsafeBufferPointer(start: vn, count: v)), nodeCount: n,
                  faults: Array(UnsafeBufferPointer(start: f, count: v * n)),
                  sharing: Array(UnsafeBufferPointer(start: sh, count: v * v)),
                  samplePages: Int(p.sample_pages), intervalNanoseconds: p.interval_ns)
    }

    public func faults(vcpu: Int, node: Int) -> UInt64 { faults[vcpu * nodeCount + node] }
    public func sharing(_ i: Int, _ j: Int) -> UInt64 { sharing[i * vcpuCount + j] }
    /// Faults of `vcpu` served by a node other than its own.
    public func remoteFaults(vcpu: Int) -> UInt64 {
        let home = Int(vcpuNode[vcpu])
        return (0..<nodeCount).reduce(0) { $0 + ($1 == home ? 0 : faults(vcpu: vcpu, node: $1)) }
    }
}

/// A move a policy asks for.
public struct PlacementMove: Sendable, Equatable, CustomStringConvertible {
    public var vcpu: UInt32
    public var node: UInt32
    public init(vcpu: UInt32, node: UInt32) { self.vcpu = vcpu; self.node = node }
    public var description: String { "vCPU \(vcpu) -> node \(node)" }
}

/// The host's side (gvm_placement_host): request a live migration.
public struct PlacementHost: @unchecked Sendable {
    public let raw: UnsafePointer<gvm_placement_host>
    public init(_ raw: UnsafePointer<gvm_placement_host>) { self.raw = raw }

    /// Returns at once; the outcome arrives through `migrationDone`.
    @discardableResult
    public func migrate(vcpu: UInt32, to node: UInt32) -> PageStatus {
        PageStatus(raw: raw.pointee.migrate(raw.pointee.host, vcpu, node))
    }
}

public protocol PlacementPlugin: AnyObject {
    /// Thread: main (node 0 only). `initialNode[v]` is vCPU v's node from the YAML.
    init(services: HostServices, host: PlacementHost, nodeCount: Int, initialNode: [UInt32], settings: Settings) throws
    /// One interval's figures. Never overlaps another call into the instance but init/shutdown.
    func observe(_ stats: PlacementStats)
    /// The outcome of a migrate() this policy asked for.
    func migrationDone(vcpu: UInt32, node: UInt32, status: PageStatus, elapsedNanoseconds: UInt64)
    /// Called before the instance is released.
    func shutdown()
    /// The settings this policy accepts, with defaults and meanings (ABI 3 descriptor).
    static var settingInfo: [SettingInfo] { get }
    /// Multi-line text for `giantvm plugins describe` (nil = none).
    static var pluginDescription: String? { get }
}

public extension PlacementPlugin {
    static var settingInfo: [SettingInfo] { [] }
    static var pluginDescription: String? { nil }
    func migrationDone(vcpu: UInt32, node: UInt32, status: PageStatus, elapsedNanoseconds: UInt64) {}
    func shutdown() {}
}

final class PlacementBox {
    let policy: any PlacementPlugin
    init(_ p: any PlacementPlugin) { policy = p }
}

@inline(__always)
private func placementInstance(_ p: UnsafeMutableRawPointer?) -> any PlacementPlugin {
    Unmanaged<PlacementBox>.fromOpaque(p!).takeUnretainedValue().policy
}

typealias PlacementFactory = (HostServices, PlacementHost, Int, [UInt32], Settings) throws -> any PlacementPlugin

private let placementSlots = FactorySlots<PlacementFactory>(kind: "placement policy", capacity: 4)

private func createPlacement(_ slot: Int, _ svc: UnsafePointer<gvm_host_services>?, _ ph: UnsafePointer<gvm_placement_host>?,
                             _ nodes: UInt32, _ vcpus: UInt32, _ initial: UnsafePointer<UInt32>?,
                             _ settings: UnsafePointer<gvm_setting>?, _ n: UInt32,
                             _ err: UnsafeMutablePointer<gvm_error>?) -> UnsafeMutableRawPointer? {
    guard let svc, let ph, let initial else {
        fill(err, "create called without its host tables")
        return nil
    }
    guard hostTableFits(svc.pointee.size, gvm_host_services.self, needed: MemoryLayout<gvm_host_services>.size, err),
          hostTableFits(ph.pointee.size, gvm_placement_host.self, needed: MemoryLayout<gvm_placement_host>.size, err)
    else { return nil }
    guard (1...GVM_PLACEMENT_MAX_NODES).contains(nodes), (1...GVM_PLACEMENT_MAX_VCPUS).contains(vcpus) else {
        fill(err, "create called with \(nodes) nodes and \(vcpus) vCPUs (1..\(GVM_PLACEMENT_MAX_NODES), 1..\(GVM_PLACEMENT_MAX_VCPUS))")
        return nil
    }
    do {
        let p = try placementSlots.factory(slot)(HostServices(svc), PlacementHost(ph), Int(nodes),
                                                 Array(UnsafeBufferPointer(start: initial, count: Int(vcpus))),
                                                 Settings(settings, count: n))
        return Unmanaged.passRetained(PlacementBox(p)).toOpaque()
    } catch {
        fill(err, "\(error)")
        return nil
    }
}

typealias PlacementCreateFn = @convention(c) (UnsafePointer<gvm_host_services>?, UnsafePointer<gvm_placement_host>?,
                                              UInt32, UInt32, UnsafePointer<UInt32>?, UnsafePointer<gvm_setting>?,
                                              UInt32, UnsafeMutablePointer<gvm_error>?) -> UnsafeMutableRawPointer?

private let placementThunks: [PlacementCreateFn] = [
    { createPlacement(0, $0, $1, $2, $3, $4, $5, $6, $7) }, { createPlacement(1, $0, $1, $2, $3, $4, $5, $6, $7) },
    { createPlacement(2, $0, $1, $2, $3, $4, $5, $6, $7) }, { createPlacement(3, $0, $1, $2, $3, $4, $5, $6, $7) },
]

/// The descriptor of one placement plugin: a complete `gvm_placement_ops`. Build it once.
public struct PlacementPluginEntry: @unchecked Sendable {
    public let descriptor: UnsafePointer<gvm_plugin_descriptor>
    public let ops: UnsafePointer<gvm_placement_ops>
    public var pointer: UnsafeRawPointer { UnsafeRawPointer(descriptor) }

    public init<P: PlacementPlugin>(_ type: P.Type, name: String, version: String, summary: String) {
        let slot = placementSlots.claim(type) { svc, host, nodes, initial, settings in
            try P(services: svc, host: host, nodeCount: nodes, initialNode: initial, settings: settings)
        }
        let o = UnsafeMutablePointer<gvm_placement_ops>.allocate(capacity: 1)
        var ops = gvm_placement_ops()
        ops.size = UInt32(MemoryLayout<gvm_placement_ops>.size)
        ops.create = placementThunks[slot]
        ops.observe = { inst, stats in
            guard let stats, let s = PlacementStats(stats) else { return }
            placementInstance(inst).observe(s)
        }
        ops.migration_done = { inst, vcpu, node, status, elapsed in
            placementInstance(inst).migrationDone(vcpu: vcpu, node: node, status: PageStatus(raw: status),
                                                  elapsedNanoseconds: elapsed)
        }
        ops.destroy = { inst in
            guard let inst else { return }
            placementInstance(inst).shutdown()
            Unmanaged<PlacementBox>.fromOpaque(inst).release()
        }
        o.initialize(to: ops)
        self.ops = UnsafePointer(o)
        descriptor = PluginEntry.makeDescriptor(kind: GVM_PLUGIN_PLACEMENT, name: name, version: version,
                                                summary: summary, ops: UnsafeRawPointer(o),
                                                description: P.pluginDescription,
                                                settings: P.settingInfo.map { ($0, model: nil) })
    }
}
