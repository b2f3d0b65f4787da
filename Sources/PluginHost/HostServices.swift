// The host side of gvm_host_services, plus the C-array forms of the cluster and of plugin
// settings. Every table here has a stable address for the life of its owner object, which must
// outlive the plugin instance it was given to.

import Foundation
import Logging
import PluginAPI
import Config
import Metrics
import Synchronization

/// Owns one `gvm_host_services` table for one plugin instance. Thread-safe.
public final class HostServicesTable: @unchecked Sendable {
    public let pluginName: String
    public let metrics: MetricsRegistry
    public let logger: Logger
    let onFatal: (String) -> Void
    private let table: UnsafeMutablePointer<gvm_host_services>
    private var retainedSelf: Unmanaged<HostServicesTable>?

    public var pointer: UnsafePointer<gvm_host_services> { UnsafePointer(table) }

    public init(pluginName: String, metrics: MetricsRegistry, logger: Logger,
                onFatal: @escaping (String) -> Void) {
        self.pluginName = pluginName
        self.metrics = metrics
        var l = logger
        l[metadataKey: "plugin"] = .string(pluginName)
        self.logger = l
        self.onFatal = onFatal
        table = .allocate(capacity: 1)
        table.initialize(to: gvm_host_services())
        let ctx = OpaquePointer(Unmanaged.passUnretained(self).toOpaque())
        table.pointee.size = UInt32(MemoryLayout<gvm_host_services>.size)
        table.pointee.abi_version = GVM_ABI_VERSION
        table.pointee.host = ctx
        table.pointee.log = { host, level, message in
            guard let t = HostServicesTable.from(host), let message else { return }
            let text = String(cString: message)
            switch level {
            case GVM_LOG_TRACE: t.logger.trace("\(text)")
            case GVM_LOG_DEBUG: t.logger.debug("\(text)")
            case GVM_LOG_INFO: t.logger.info("\(text)")
            case GVM_LOG_NOTICE: t.logger.notice("\(text)")
            case GVM_LOG_WARNING: t.logger.warning("\(text)")
            default: t.logger.error("\(text)")
            }
        }
        table.pointee.now_ns = { _ in monotonicNanoseconds() }
        table.pointee.counter = { host, name in
            guard let t = HostServicesTable.from(host), let name else { return 0 }
            return t.metrics.counter(String(cString: name))
        }
        table.pointee.counter_add = { host, handle, delta in
            HostServicesTable.from(host)?.metrics.add(handle, delta)
        }
        table.pointee.histogram = { host, name in
            guard let t = HostServicesTable.from(host), let name else { return 0 }
            return t.metrics.histogram(String(cString: name))
        }
        table.pointee.histogram_record = { host, handle, value in
            HostServicesTable.from(host)?.metrics.record(handle, nanoseconds: value)
        }
        table.pointee.timer_start = { _, delay, period, fn, ctx in
            guard let fn else { return 0 }
            let ctxBits = UInt(bitPattern: ctx)
            return TimerThread.shared.start(delay: delay, period: period) {
                fn(UnsafeMutableRawPointer(bitPattern: ctxBits))
            }
        }
        table.pointee.timer_cancel = { _, id in TimerThread.shared.cancel(id) }
        table.pointee.fatal = { host, message in
            guard let t = HostServicesTable.from(host) else { return }
            let text = message.map { String(cString: $0) } ?? "unspecified fatal error"
            t.logger.error("fatal: \(text)")
            t.onFatal("\(t.pluginName): \(text)")
        }
    }

    deinit {
        table.deinitialize(count: 1)
        table.deallocate()
    }

    static func from(_ host: OpaquePointer?) -> HostServicesTable? {
        guard let host else { return nil }
        return Unmanaged<HostServicesTable>.fromOpaque(UnsafeRawPointer(host)).takeUnretainedValue()
    }
}


/// `gvm_cluster_info` for one node, with stable C strings.
public final class ClusterInfoTable: @unchecked Sendable {
    private let info: UnsafeMutablePointer<gvm_cluster_info>
    private let nodes: UnsafeMutablePointer<gvm_node_info>
    private var strings: [UnsafeMutablePointer<CChar>] = []

    public var pointer: UnsafePointer<gvm_cluster_info> { UnsafePointer(info) }

    public init(config: ClusterConfig, selfID: UInt32) {
        nodes = .allocate(capacity: max(config.nodes.count, 1))
        info = .allocate(capacity: 1)
        for (i, n) in config.nodes.enumerated() {
            let addr = strdup(n.address)!
            strings.append(addr)
            (nodes + i).initialize(to: gvm_node_info(id: n.id, port: n.port, reserved: 0, address: addr,
                                                     vcpu_count: n.vcpus, first_vcpu: config.firstVCPU(of: n.id)))
        }
        let name = strdup(config.cluster)!
        strings.append(name)
        info.initialize(to: gvm_cluster_info(cluster_name: name, self_id: selfID, node_count: UInt32(config.nodes.count),
                                             nodes: nodes, guest_memory_bytes: config.memoryBytes,
                                             page_size: GVM_PAGE_SIZE, total_vcpus: UInt32(config.totalVCPUs)))
    }

    deinit {
        for s in strings { free(s) }
        nodes.deallocate()
        info.deallocate()
    }
}

/// A `gvm_setting` array with stable C strings.
public final class SettingsTable: @unchecked Sendable {
    private let array: UnsafeMutablePointer<gvm_setting>
    private var strings: [UnsafeMutablePointer<CChar>] = []
    public let count: UInt32
    public var pointer: UnsafePointer<gvm_setting>? { count == 0 ? nil : UnsafePointer(array) }

    public init(_ settings: [(key: String, value: String)]) {
        array = .allocate(capacity: max(settings.count, 1))
        count = UInt32(settings.count)
        for (i, s) in settings.enumerated() {
            let k = strdup(s.key)!, v = strdup(s.value)!
            strings += [k, v]
            (array + i).initialize(to: gvm_setting(key: k, value: v))
        }
    }

    deinit {
        for s in strings { free(s) }
        array.deallocate()
    }
}

/// Reads the message a plugin wrote into a gvm_error.
public func errorMessage(_ err: inout gvm_error) -> String {
    withUnsafeBytes(of: &err.message) { raw in
        let bytes = raw.prefix { $0 != 0 }
        let s = String(decoding: bytes, as: UTF8.self)
        return s.isEmpty ? "no reason given" : s
    }
}
