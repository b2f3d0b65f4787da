// PluginKit: the thin Swift layer over giantvm_plugin.h that lets a Swift plugin be one type plus
// one `@_cdecl("giantvm_plugin_entry")` function. It is linked statically into each plugin .so and
// never into the host, so no Swift type crosses the plugin boundary: only the C tables do.

@_exported import PluginAPI

/// An error a plugin throws from `init` or `start`; its message reaches the user through the
/// host (prefixed with the plugin, node and config file).
public struct PluginError: Error, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Log levels, mirroring `gvm_log_level`.
public enum LogLevel: UInt32 {
    case trace = 0, debug, info, notice, warning, error
}

/// The common host services (`gvm_host_services`): logging, clock, counters, histograms, timers,
/// and `fatal`. Safe to copy and to use from any thread.
public struct HostServices: @unchecked Sendable {
    public let raw: UnsafePointer<gvm_host_services>

    public init(_ raw: UnsafePointer<gvm_host_services>) { self.raw = raw }

    var host: OpaquePointer? { raw.pointee.host }

    public func log(_ level: LogLevel, _ message: String) {
        raw.pointee.log(host, gvm_log_level(rawValue: level.rawValue), message)
    }

    /// CLOCK_MONOTONIC in nanoseconds.
    public func nowNanoseconds() -> UInt64 { raw.pointee.now_ns(host) }

    public func counter(_ name: String) -> Counter {
        Counter(services: self, handle: raw.pointee.counter(host, name))
    }

    public func histogram(_ name: String) -> LatencyHistogram {
        LatencyHistogram(services: self, handle: raw.pointee.histogram(host, name))
    }

    /// Starts a timer; `body` runs on the host timer thread. Returns an id for `cancelTimer`.
    @discardableResult
    public func startTimer(afterNanoseconds delay: UInt64, periodNanoseconds period: UInt64 = 0,
                           _ body: @escaping () -> Void) -> UInt64 {
        let box = Unmanaged.passRetained(TimerBox(body)).toOpaque()
        let id = raw.pointee.timer_start(host, delay, period, { ctx in
            guard let ctx else { return }
            Unmanaged<TimerBox>.fromOpaque(ctx).takeUnretainedValue().body()
        }, box)
        // The box lives as long as the plugin instance: timers are few and long-lived.
        return id
    }

    public func cancelTimer(_ id: UInt64) { raw.pointee.timer_cancel(host, id) }

    /// Reports an unrecoverable error; the host stops every node. Returns.
    public func fatal(_ message: String) { raw.pointee.fatal(host, message) }
}

final class TimerBox {
    let body: () -> Void
    init(_ body: @escaping () -> Void) { self.body = body }
}

public struct Counter: @unchecked Sendable {
    let services: HostServices
    let handle: UInt32
    public func add(_ delta: UInt64 = 1) {
        services.raw.pointee.counter_add(services.host, handle, delta)
    }
}

public struct LatencyHistogram: @unchecked Sendable {
    let services: HostServices
    let handle: UInt32
    public func record(nanoseconds: UInt64) {
        services.raw.pointee.histogram_record(services.host, handle, nanoseconds)
    }
}

/// One node of the cluster.
public struct NodeInfo: Sendable, Equatable {
    public var id: UInt32
    public var address: String
    public var port: UInt16
    public var vcpuCount: UInt32
    public var firstVCPU: UInt32
}

/// The cluster as this node sees it (`gvm_cluster_info`), copied into Swift values.
public struct ClusterInfo: Sendable {
    public var name: String
    public var selfID: UInt32
    public var nodes: [NodeInfo]
    public var guestMemoryBytes: UInt64
    public var pageSize: UInt32
    public var totalVCPUs: UInt32
    public var pageCount: UInt64 { guestMemoryBytes / UInt64(pageSize) }
    public var peers: [NodeInfo] { nodes.filter { $0.id != selfID } }

    public init(_ c: UnsafePointer<gvm_cluster_info>) {
        let p = c.pointee
        name = String(cString: p.cluster_name)
        selfID = p.self_id
        nodes = (0..<Int(p.node_count)).map { i in
            let n = p.nodes[i]
            return NodeInfo(id: n.id, address: String(cString: n.address), port: n.port,
                            vcpuCount: n.vcpu_count, firstVCPU: n.first_vcpu)
        }
        guestMemoryBytes = p.guest_memory_bytes
        pageSize = p.page_size
        totalVCPUs = p.total_vcpus
    }

    public init(name: String, selfID: UInt32, nodes: [NodeInfo], guestMemoryBytes: UInt64,
                pageSize: UInt32 = UInt32(GVM_PAGE_SIZE)) {
        self.name = name
        self.selfID = selfID
        self.nodes = nodes
        self.guestMemoryBytes = guestMemoryBytes
        self.pageSize = pageSize
        self.totalVCPUs = nodes.reduce(0) { $0 + $1.vcpuCount }
    }
}

/// The plugin's `settings:` map from the YAML. Values arrive as YAML scalar text; the typed
/// accessors throw a `PluginError` naming the key and the expected form.
public struct Settings: Sendable {
    public private(set) var values: [String: String]

    public init(_ values: [String: String] = [:]) { self.values = values }

    public init(_ settings: UnsafePointer<gvm_setting>?, count: UInt32) {
        var v: [String: String] = [:]
        if let settings {
            for i in 0..<Int(count) {
                v[String(cString: settings[i].key)] = String(cString: settings[i].value)
            }
        }
        values = v
    }

    /// Throws if a key is not in `known`, listing the keys this plugin accepts.
    public func allowOnly(_ known: [String]) throws {
        for key in values.keys.sorted() where !known.contains(key) {
            let list = known.isEmpty ? "none" : known.sorted().joined(separator: ", ")
            throw PluginError("unknown setting '\(key)' (accepted: \(list))")
        }
    }

    public func string(_ key: String, default def: String) -> String { values[key] ?? def }

    public func int(_ key: String, default def: Int, range: ClosedRange<Int>? = nil) throws -> Int {
        guard let text = values[key] else { return def }
        guard let v = Int(text.trimmingCharacters(in: " ")) else {
            throw PluginError("setting '\(key)': '\(text)' is not an integer")
        }
        if let range, !range.contains(v) {
            throw PluginError("setting '\(key)': \(v) is out of range \(range.lowerBound)...\(range.upperBound)")
        }
        return v
    }

    public func double(_ key: String, default def: Double, range: ClosedRange<Double>? = nil) throws -> Double {
        guard let text = values[key] else { return def }
        guard let v = Double(text.trimmingCharacters(in: " ")) else {
            throw PluginError("setting '\(key)': '\(text)' is not a number")
        }
        if let range, !range.contains(v) {
            throw PluginError("setting '\(key)': \(v) is out of range \(range.lowerBound)...\(range.upperBound)")
        }
        return v
    }

    public func bool(_ key: String, default def: Bool) throws -> Bool {
        guard let text = values[key] else { return def }
        switch text.lowercased() {
        case "true", "yes", "on", "1": return true
        case "false", "no", "off", "0": return false
        default: throw PluginError("setting '\(key)': '\(text)' is not a boolean (true/false)")
        }
    }

    /// One of a fixed set of words.
    public func choice(_ key: String, _ choices: [String], default def: String) throws -> String {
        guard let text = values[key] else { return def }
        guard choices.contains(text) else {
            throw PluginError("setting '\(key)': '\(text)' is not one of \(choices.joined(separator: ", "))")
        }
        return text
    }
}

private extension String {
    func trimmingCharacters(in set: Character) -> String {
        var s = Substring(self)
        while s.first == set { s.removeFirst() }
        while s.last == set { s.removeLast() }
        return String(s)
    }
}

/// Writes `message` into a `gvm_error` (truncated, NUL-terminated).
func fill(_ err: UnsafeMutablePointer<gvm_error>?, _ message: String) {
    guard let err else { return }
    withUnsafeMutableBytes(of: &err.pointee.message) { buf in
        let bytes = Array(message.utf8.prefix(buf.count - 1))
        for (i, b) in bytes.enumerated() { buf[i] = b }
        buf[bytes.count] = 0
    }
}

/// Duplicates a Swift string into C memory that lives for the life of the process (descriptor
/// strings must outlive every use of the plugin).
func permanentCString(_ s: String) -> UnsafePointer<CChar> {
    let bytes = Array(s.utf8CString)
    let p = UnsafeMutablePointer<CChar>.allocate(capacity: bytes.count)
    p.initialize(from: bytes, count: bytes.count)
    return UnsafePointer(p)
}
