// The host side of a transport: a Swift protocol the node runtime talks to, the adapter that
// drives a transport plugin through its C ops table, and the gvm_transport_host table the plugin
// calls back into.

import Config
import Foundation
import Logging
import Metrics
import PluginAPI
import PluginHost

/// Something that moves whole frames between nodes, on lanes (GVM_LANE_*).
/// Threading: `start`/`stop` on one controlling thread; `send` from any thread, never waiting for
/// the peer. After `stop` returns, no `TransportEvents` callback runs again.
public protocol FrameTransport: AnyObject {
    func start() throws
    /// Queues the concatenation of `iov` for `node` on `lane`; returns a gvm_status.
    func send(to node: UInt32, lane: UInt32, _ iov: UnsafeBufferPointer<gvm_iovec>) -> Int32
    func stop()
}

/// What a transport reports. Threading: transport threads; implementations never block.
public protocol TransportEvents: AnyObject {
    /// A whole frame from an authenticated peer (borrowed for the call).
    func deliver(from node: UInt32, lane: UInt32, frame: UnsafeRawBufferPointer)
    /// A peer became reachable on every lane, or was lost (never up again after that).
    func peerState(_ node: UInt32, up: Bool, reason: String)
}

/// Drives one transport plugin instance. Owns every table handed to the plugin (stable addresses
/// until `deinit`), so it must outlive the instance: it destroys the instance in `deinit`.
/// Threading: `start`/`stop` on the node's main thread; `send` from any thread.
public final class PluginTransport: FrameTransport, @unchecked Sendable {
    public let plugin: LoadedPlugin
    private let ops: UnsafePointer<gvm_transport_ops>
    private let services: HostServicesTable
    private let clusterTable: ClusterInfoTable
    private let settingsTable: SettingsTable
    private let hostTable: UnsafeMutablePointer<gvm_transport_host>
    private let authenticator: Authenticator
    private weak var events: TransportEvents?
    private var instance: UnsafeMutableRawPointer?
    private var stopped = false

    /// Creates the plugin instance (which validates its settings). `settings` are the
    /// plugin's settings as the config gives them (plus host-supplied defaults).
    public init(plugin: LoadedPlugin, config: ClusterConfig, selfID: UInt32, settings: [(key: String, value: String)],
                authenticator: Authenticator, events: TransportEvents, metrics: MetricsRegistry, logger: Logger,
                onFatal: @escaping (String) -> Void) throws {
        guard let ops = plugin.transportOps else {
            throw ClusterError("plugin '\(plugin.name)' (\(plugin.path)) is not a transport plugin")
        }
        self.plugin = plugin
        self.ops = ops
        self.authenticator = authenticator
        self.events = events
        services = HostServicesTable(pluginName: plugin.name, metrics: metrics, logger: logger, onFatal: onFatal)
        clusterTable = ClusterInfoTable(config: config, selfID: selfID)
        settingsTable = SettingsTable(settings)
        hostTable = .allocate(capacity: 1)
        hostTable.initialize(to: gvm_transport_host())
        hostTable.pointee.size = UInt32(MemoryLayout<gvm_transport_host>.size)
        hostTable.pointee.host = OpaquePointer(Unmanaged.passUnretained(self).toOpaque())
        hostTable.pointee.deliver = { host, src, lane, frame, len in
            guard let t = PluginTransport.from(host), let frame else { return }
            t.events?.deliver(from: src, lane: lane, frame: UnsafeRawBufferPointer(start: frame, count: len))
        }
        hostTable.pointee.peer_state = { host, node, up, reason in
            guard let t = PluginTransport.from(host) else { return }
            t.events?.peerState(node, up: up != 0, reason: reason.map { String(cString: $0) } ?? "no reason given")
        }
        hostTable.pointee.auth_sign = { host, challenge, clen, out, cap in
            guard let t = PluginTransport.from(host) else { return 0 }
            let proof = t.authenticator.sign(UnsafeRawBufferPointer(start: challenge, count: clen))
            guard proof.count <= cap, let out else { return 0 }
            proof.withUnsafeBufferPointer { out.update(from: $0.baseAddress!, count: proof.count) }
            return proof.count
        }
        hostTable.pointee.auth_verify = { host, peer, cluster, challenge, clen, proof, plen in
            guard let t = PluginTransport.from(host) else { return GVM_ERR_INVALID.rawValue }
            let name = cluster.map { String(cString: $0) } ?? ""
            let refusal = t.authenticator.verify(peer: peer, peerCluster: name,
                                                 challenge: UnsafeRawBufferPointer(start: challenge, count: clen),
                                                 proof: UnsafeRawBufferPointer(start: proof, count: plen))
            return refusal == nil ? GVM_OK.rawValue : GVM_ERR_INVALID.rawValue
        }
        hostTable.pointee.auth_session = { host, context, clen in
            guard let t = PluginTransport.from(host), let context,
                  let session = t.authenticator.frameSession(context: UnsafeRawBufferPointer(start: context, count: clen))
            else { return nil }
            return Unmanaged.passRetained(session).toOpaque()
        }
        hostTable.pointee.auth_mac = { _, session, seq, iov, n, out in
            guard let session, let out else { return }
            Unmanaged<FrameSession>.fromOpaque(session).takeUnretainedValue()
                .mac(seq: seq, UnsafeBufferPointer(start: iov, count: Int(n)), into: out)
        }
        hostTable.pointee.auth_session_free = { _, session in
            if let session { Unmanaged<FrameSession>.fromOpaque(session).release() }
        }
        var err = gvm_error()
        guard let inst = ops.pointee.create(services.pointer, UnsafePointer(hostTable), clusterTable.pointer,
                                            settingsTable.pointer, settingsTable.count, &err) else {
            let why = errorMessage(&err)
            // deinit still runs (every stored property is set) and frees the host table.
            throw ClusterError("\(config.sourcePath): transport.settings: \(plugin.name) refused its settings: \(why)")
        }
        instance = inst
    }

    deinit {
        if let instance {
            if !stopped { ops.pointee.stop(instance) }
            ops.pointee.destroy(instance)
        }
        hostTable.deinitialize(count: 1)
        hostTable.deallocate()
    }

    static func from(_ host: OpaquePointer?) -> PluginTransport? {
        guard let host else { return nil }
        return Unmanaged<PluginTransport>.fromOpaque(UnsafeRawPointer(host)).takeUnretainedValue()
    }

    public func start() throws {
        var err = gvm_error()
        let rc = ops.pointee.start(instance, &err)
        guard rc == GVM_OK.rawValue else {
            throw ClusterError("transport \(plugin.name) did not start: \(errorMessage(&err))")
        }
    }

    public func send(to node: UInt32, lane: UInt32, _ iov: UnsafeBufferPointer<gvm_iovec>) -> Int32 {
        ops.pointee.send(instance, node, lane, iov.baseAddress, UInt32(iov.count))
    }

    public func stop() {
        guard !stopped, let instance else { return }
        stopped = true
        ops.pointee.stop(instance)
    }
}
