// The host side of a placement-policy plugin (gvm_placement_ops / gvm_placement_host): one
// instance, its host table (migrate requests go to a Swift closure), and the figures of one
// interval in the C layout. The caller serialises observe() and migrationDone() (one placement
// thread), as giantvm_plugin.h promises the plugin.

import Foundation
import PluginAPI

/// One interval's figures on the host side (what gvm_placement_stats points into).
public struct PlacementFigures: Sendable, Equatable {
    public var vcpuNode: [UInt32]
    public var nodeCount: Int
    /// [V*N] faults served, by vCPU then serving node.
    public var faults: [UInt64]
    /// [V*V] pages both vCPUs faulted on (capped by samplePages).
    public var sharing: [UInt64]
    public var samplePages: Int
    public var intervalNanoseconds: UInt64

    public init(vcpuNode: [UInt32], nodeCount: Int, faults: [UInt64], sharing: [UInt64],
                samplePages: Int, intervalNanoseconds: UInt64) {
        self.vcpuNode = vcpuNode
        self.nodeCount = nodeCount
        self.faults = faults
        self.sharing = sharing
        self.samplePages = samplePages
        self.intervalNanoseconds = intervalNanoseconds
    }
}

public struct PlacementPolicyError: Error, CustomStringConvertible {
    public var description: String
}

public final class PlacementPolicyInstance: @unchecked Sendable {
    /// Answers a migrate request at once (a gvm_status); the outcome goes to `migrationDone` later.
    public typealias Migrate = (_ vcpu: UInt32, _ node: UInt32) -> Int32

    public let plugin: LoadedPlugin
    let ops: UnsafePointer<gvm_placement_ops>
    let services: HostServicesTable
    let migrate: Migrate
    private let table: UnsafeMutablePointer<gvm_placement_host>
    private var instance: UnsafeMutableRawPointer?
    public let vcpuCount: Int
    public let nodeCount: Int

    /// Creates the policy. Throws with the plugin's own message when create() refuses.
    public init(plugin: LoadedPlugin, services: HostServicesTable, nodeCount: Int, initialNode: [UInt32],
                settings: [(key: String, value: String)], migrate: @escaping Migrate) throws {
        guard let ops = plugin.placementOps else {
            throw PlacementPolicyError(description: "plugin '\(plugin.name)' is a \(plugin.kind) plugin, not a placement policy")
        }
        guard (1...Int(GVM_PLACEMENT_MAX_NODES)).contains(nodeCount),
              (1...Int(GVM_PLACEMENT_MAX_VCPUS)).contains(initialNode.count) else {
            throw PlacementPolicyError(description: "placement: \(initialNode.count) vCPUs on \(nodeCount) nodes is outside 1..\(GVM_PLACEMENT_MAX_VCPUS) vCPUs, 1..\(GVM_PLACEMENT_MAX_NODES) nodes")
        }
        self.plugin = plugin
        self.ops = ops
        self.services = services
        self.migrate = migrate
        self.vcpuCount = initialNode.count
        self.nodeCount = nodeCount
        table = .allocate(capacity: 1)
        table.initialize(to: gvm_placement_host())
        table.pointee.size = UInt32(MemoryLayout<gvm_placement_host>.size)
        table.pointee.host = OpaquePointer(Unmanaged.passUnretained(self).toOpaque())
        table.pointee.migrate = { host, vcpu, node in
            guard let host else { return GVM_ERR_INVALID.rawValue }
            let me = Unmanaged<PlacementPolicyInstance>.fromOpaque(UnsafeRawPointer(host)).takeUnretainedValue()
            guard Int(vcpu) < me.vcpuCount, Int(node) < me.nodeCount else { return GVM_ERR_INVALID.rawValue }
            return me.migrate(vcpu, node)
        }
        let st = SettingsTable(settings)
        var err = gvm_error()
        instance = initialNode.withUnsafeBufferPointer { nodes in
            ops.pointee.create(services.pointer, UnsafePointer(table), UInt32(nodeCount), UInt32(initialNode.count),
                               nodes.baseAddress, st.pointer, st.count, &err)
        }
        if instance == nil {
            table.deallocate()
            throw PlacementPolicyError(description: "placement plugin '\(plugin.name)' refused to start: \(errorMessage(&err))")
        }
    }

    /// Passes one interval's figures (dimensions checked against the VM's).
    public func observe(_ f: PlacementFigures) {
        guard let instance, f.vcpuNode.count == vcpuCount, f.nodeCount == nodeCount,
              f.faults.count == vcpuCount * nodeCount, f.sharing.count == vcpuCount * vcpuCount else { return }
        f.vcpuNode.withUnsafeBufferPointer { vn in
            f.faults.withUnsafeBufferPointer { fa in
                f.sharing.withUnsafeBufferPointer { sh in
                    var s = gvm_placement_stats(size: UInt32(MemoryLayout<gvm_placement_stats>.size),
                                                vcpu_count: UInt32(vcpuCount), node_count: UInt32(nodeCount),
                                                sample_pages: UInt32(clamping: f.samplePages),
                                                interval_ns: f.intervalNanoseconds,
                                                vcpu_node: vn.baseAddress, faults: fa.baseAddress, sharing: sh.baseAddress)
                    ops.pointee.observe(instance, &s)
                }
            }
        }
    }

    /// Reports the outcome of a move the policy requested.
    public func migrationDone(vcpu: UInt32, node: UInt32, status: Int32, elapsedNanoseconds: UInt64) {
        guard let instance, let fn = ops.pointee.migration_done else { return }
        fn(instance, vcpu, node, status, elapsedNanoseconds)
    }

    /// Destroys the instance (idempotent). No call may be in progress.
    public func destroy() {
        guard let i = instance else { return }
        instance = nil
        ops.pointee.destroy(i)
        table.deallocate()
    }

    deinit { destroy() }
}
