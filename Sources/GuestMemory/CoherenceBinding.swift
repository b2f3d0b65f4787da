// Binding a coherence plugin to guest memory: create the instance against this node's
// `gvm_coherence_host` table, attach it as the receiver of fault events, start, stop, destroy.
//
// Threading: create, start, stop and destroy on one controlling thread (the ABI says "main").

import Glibc
import PluginAPI

/// A coherence plugin's `create` failed; `message` is the plugin's own reason.
public struct CoherencePluginError: Error, CustomStringConvertible {
    public var plugin: String
    public var message: String
    public var description: String { "coherence plugin \(plugin): \(message)" }
}

/// One coherence plugin instance bound to one GuestMemory. Destroyed (ops.destroy) on deinit,
/// after `stop`.
public final class CoherencePluginInstance {
    public let name: String
    public let ops: UnsafePointer<gvm_coherence_ops>
    public let instance: UnsafeMutableRawPointer
    private var stopped = false

    /// Calls the plugin's `create` with `memory.coherenceHost` and attaches the instance to
    /// `memory` (before `memory.start()`). `services`, `cluster` and `settings` must outlive this
    /// object.
    public init(name: String, ops: UnsafePointer<gvm_coherence_ops>, services: UnsafePointer<gvm_host_services>,
                memory: GuestMemory, cluster: UnsafePointer<gvm_cluster_info>,
                settings: UnsafePointer<gvm_setting>? = nil, settingCount: UInt32 = 0) throws {
        guard let create = ops.pointee.create, ops.pointee.fault != nil, ops.pointee.receive != nil,
              ops.pointee.destroy != nil else {
            throw CoherencePluginError(plugin: name, message: "a required hook (create, fault, receive, destroy) is NULL")
        }
        var err = gvm_error()
        guard let inst = create(services, memory.coherenceHost, cluster, settings, settingCount, &err) else {
            let msg = withUnsafeBytes(of: &err.message) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            throw CoherencePluginError(plugin: name, message: msg.isEmpty ? "create failed without a reason" : msg)
        }
        self.name = name
        self.ops = ops
        self.instance = inst
        memory.attach(ops: ops, instance: inst)
    }

    /// The plugin's optional `fence` hook as a closure for the VMM's synchronisation points, or nil
    /// when the plugin has none (or its ops table is too short to hold it).
    public var fenceHook: ((_ vcpu: Int, _ kind: UInt32) -> Void)? {
        let fenceEnd = MemoryLayout<gvm_coherence_ops>.offset(of: \.fence)! + MemoryLayout<UnsafeRawPointer>.size
        guard Int(ops.pointee.size) >= fenceEnd, let fence = ops.pointee.fence else { return nil }
        let inst = instance
        return { vcpu, kind in _ = fence(inst, UInt32(vcpu), kind) }
    }

    /// The plugin's optional `hint` hook (ABI 3) as a closure returning a gvm_status, or nil when
    /// the plugin has none (or its ops table is too short to hold it).
    public var hintHook: ((_ kind: UInt32, _ gpa: UInt64, _ length: UInt64) -> Int32)? {
        let end = MemoryLayout<gvm_coherence_ops>.offset(of: \.hint)! + MemoryLayout<UnsafeRawPointer>.size
        guard Int(ops.pointee.size) >= end, let hint = ops.pointee.hint else { return nil }
        let inst = instance
        return { kind, gpa, length in hint(inst, kind, gpa, length) }
    }

    /// Calls the optional `start` hook.
    public func start() throws {
        guard let start = ops.pointee.start else { return }
        var err = gvm_error()
        let rc = start(instance, &err)
        if rc != GVM_OK.rawValue {
            let msg = withUnsafeBytes(of: &err.message) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            throw CoherencePluginError(plugin: name, message: msg.isEmpty ? String(cString: gvm_status_name(rc)) : msg)
        }
    }

    /// Calls the optional `stop` hook once. Stop guest memory's handler threads first.
    public func stop() {
        guard !stopped else { return }
        stopped = true
        ops.pointee.stop?(instance)
    }

    /// Delivers a coherence message from node `src` (the Cluster layer calls this).
    public func receive(from src: UInt32, _ message: UnsafeRawBufferPointer) {
        guard FaultAttribution.isInUse else {
            return ops.pointee.receive(instance, src, message.baseAddress, message.count)
        }
        FaultAttribution.setMessageSource(src)
        ops.pointee.receive(instance, src, message.baseAddress, message.count)
        FaultAttribution.setMessageSource(nil)
    }

    deinit {
        stop()
        ops.pointee.destroy(instance)
    }
}

/// A one-node `gvm_cluster_info` (stable address) for single-node runs, tests and the
/// benchmark, where no YAML cluster exists.
public final class SingleNodeClusterInfo {
    private let info: UnsafeMutablePointer<gvm_cluster_info>
    private let node: UnsafeMutablePointer<gvm_node_info>
    private let name: UnsafeMutablePointer<CChar>
    private let address: UnsafeMutablePointer<CChar>
    public var pointer: UnsafePointer<gvm_cluster_info> { UnsafePointer(info) }

    public init(name clusterName: String = "local", memoryBytes: UInt64, vcpus: UInt32 = 1) {
        name = strdup(clusterName)
        address = strdup("127.0.0.1")
        node = .allocate(capacity: 1)
        node.initialize(to: gvm_node_info(id: 0, port: 0, reserved: 0, address: address, vcpu_count: vcpus, first_vcpu: 0))
        info = .allocate(capacity: 1)
        info.initialize(to: gvm_cluster_info(cluster_name: name, self_id: 0, node_count: 1, nodes: node,
                                             guest_memory_bytes: memoryBytes, page_size: GVM_PAGE_SIZE,
                                             total_vcpus: vcpus))
    }

    deinit {
        info.deallocate(); node.deallocate(); free(name); free(address)
    }
}
