// Transport plugins in Swift: conform one class to `TransportPlugin` and return
// `TransportPluginEntry(MyTransport.self, ...).pointer` (kept in a `let`) from `giantvm_plugin_entry`.
// Threading rules are those of gvm_transport_ops in giantvm_plugin.h.

/// The services the host gives a transport (`gvm_transport_host`). Any thread.
public struct TransportHost: @unchecked Sendable {
    public let raw: UnsafePointer<gvm_transport_host>
    public init(_ raw: UnsafePointer<gvm_transport_host>) { self.raw = raw }
    var host: OpaquePointer? { raw.pointee.host }

    /// Hands a whole frame from an authenticated peer to the host. Never blocks.
    public func deliver(from node: UInt32, lane: UInt32, frame: UnsafeRawBufferPointer) {
        raw.pointee.deliver(host, node, lane, frame.baseAddress, frame.count)
    }

    public func peerUp(_ node: UInt32) { raw.pointee.peer_state(host, node, 1, "connected") }
    public func peerDown(_ node: UInt32, reason: String) { raw.pointee.peer_state(host, node, 0, reason) }

    /// This node's proof over a peer's challenge (empty when the cluster has no key).
    public func sign(challenge: [UInt8]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 64)
        let n = challenge.withUnsafeBufferPointer { c in
            out.withUnsafeMutableBufferPointer { o in
                raw.pointee.auth_sign(host, c.baseAddress, c.count, o.baseAddress, o.count)
            }
        }
        return Array(out.prefix(n))
    }

    /// Checks a peer's claimed identity and proof over a challenge this node chose.
    public func verify(peer: UInt32, cluster: String, challenge: [UInt8], proof: [UInt8]) -> Bool {
        challenge.withUnsafeBufferPointer { c in
            proof.withUnsafeBufferPointer { p in
                raw.pointee.auth_verify(host, peer, cluster, c.baseAddress, c.count, p.baseAddress, p.count)
            }
        } == GVM_OK.rawValue
    }
}

public protocol TransportPlugin: AnyObject {
    /// Validate settings, allocate; open nothing yet. Thread: main.
    init(services: HostServices, host: TransportHost, cluster: ClusterInfo, settings: Settings) throws
    /// Listen and connect to every peer; return at once. Thread: main.
    func start() throws
    /// Queue one frame (copy it) to `node` on `lane`. Any thread; never waits for the peer.
    func send(to node: UInt32, lane: UInt32, _ iov: UnsafeBufferPointer<gvm_iovec>) -> PageStatus
    /// Close everything and join threads; no callbacks after return. Thread: main.
    func stop()
    /// RDMA-style registration (optional): return nil when unsupported.
    func registerRegion(_ base: UnsafeMutableRawPointer, length: Int) -> UInt64?
    /// The settings the transport accepts, with defaults and meanings (ABI 3 descriptor).
    static var settingInfo: [SettingInfo] { get }
    /// Its description beyond the summary (ABI 3 descriptor).
    static var pluginDescription: String? { get }
}

public extension TransportPlugin {
    func registerRegion(_ base: UnsafeMutableRawPointer, length: Int) -> UInt64? { nil }
    static var settingInfo: [SettingInfo] { [] }
    static var pluginDescription: String? { nil }
}

final class TransportBox {
    let plugin: any TransportPlugin
    init(_ p: any TransportPlugin) { plugin = p }
}

@inline(__always)
private func transportInstance(_ p: UnsafeMutableRawPointer?) -> any TransportPlugin {
    Unmanaged<TransportBox>.fromOpaque(p!).takeUnretainedValue().plugin
}

typealias TransportFactory = (HostServices, TransportHost, ClusterInfo, Settings) throws -> any TransportPlugin
typealias TransportCreateFn = @convention(c) (UnsafePointer<gvm_host_services>?, UnsafePointer<gvm_transport_host>?,
                                              UnsafePointer<gvm_cluster_info>?, UnsafePointer<gvm_setting>?,
                                              UInt32, UnsafeMutablePointer<gvm_error>?) -> UnsafeMutableRawPointer?

private let transportSlots = FactorySlots<TransportFactory>(kind: "transport", capacity: 8)

private func createTransport(_ slot: Int, _ svc: UnsafePointer<gvm_host_services>?, _ th: UnsafePointer<gvm_transport_host>?,
                             _ cluster: UnsafePointer<gvm_cluster_info>?, _ settings: UnsafePointer<gvm_setting>?,
                             _ n: UInt32, _ err: UnsafeMutablePointer<gvm_error>?) -> UnsafeMutableRawPointer? {
    guard let svc, let th, let cluster else {
        fill(err, "create called without its host tables")
        return nil
    }
    guard hostTableFits(svc.pointee.size, gvm_host_services.self, needed: MemoryLayout<gvm_host_services>.size, err),
          hostTableFits(th.pointee.size, gvm_transport_host.self, needed: MemoryLayout<gvm_transport_host>.size, err)
    else { return nil }
    do {
        let t = try transportSlots.factory(slot)(HostServices(svc), TransportHost(th), ClusterInfo(cluster),
                                                 Settings(settings, count: n))
        return Unmanaged.passRetained(TransportBox(t)).toOpaque()
    } catch {
        fill(err, "\(error)")
        return nil
    }
}

// One C create function per slot: a C function pointer cannot carry the slot number.
private let transportCreateThunks: [TransportCreateFn] = [
    { createTransport(0, $0, $1, $2, $3, $4, $5) }, { createTransport(1, $0, $1, $2, $3, $4, $5) },
    { createTransport(2, $0, $1, $2, $3, $4, $5) }, { createTransport(3, $0, $1, $2, $3, $4, $5) },
    { createTransport(4, $0, $1, $2, $3, $4, $5) }, { createTransport(5, $0, $1, $2, $3, $4, $5) },
    { createTransport(6, $0, $1, $2, $3, $4, $5) }, { createTransport(7, $0, $1, $2, $3, $4, $5) },
]

/// The descriptor of one transport plugin, built from its type: a complete `gvm_transport_ops`.
/// A value, like `CoherencePluginEntry` (several per image are fine); build it once.
public struct TransportPluginEntry: @unchecked Sendable {
    public let descriptor: UnsafePointer<gvm_plugin_descriptor>
    public let ops: UnsafePointer<gvm_transport_ops>
    public var pointer: UnsafeRawPointer { UnsafeRawPointer(descriptor) }

    public init<T: TransportPlugin>(_ type: T.Type, name: String, version: String, summary: String) {
        let slot = transportSlots.claim(type) { svc, th, cluster, settings in
            try T(services: svc, host: th, cluster: cluster, settings: settings)
        }
        let o = UnsafeMutablePointer<gvm_transport_ops>.allocate(capacity: 1)
        o.initialize(to: gvm_transport_ops())
        o.pointee.size = UInt32(MemoryLayout<gvm_transport_ops>.size)
        o.pointee.create = transportCreateThunks[slot]
        o.pointee.start = { inst, err in
            do { try transportInstance(inst).start(); return GVM_OK.rawValue } catch {
                fill(err, "\(error)")
                return GVM_ERR_IO.rawValue
            }
        }
        o.pointee.send = { inst, dst, lane, iov, n in
            transportInstance(inst).send(to: dst, lane: lane, UnsafeBufferPointer(start: iov, count: Int(n))).raw
        }
        o.pointee.register_region = { inst, addr, len, key in
            guard let addr, let k = transportInstance(inst).registerRegion(addr, length: len) else {
                return GVM_ERR_UNSUPPORTED.rawValue
            }
            key?.pointee = k
            return GVM_OK.rawValue
        }
        o.pointee.stop = { inst in transportInstance(inst).stop() }
        o.pointee.destroy = { inst in
            guard let inst else { return }
            Unmanaged<TransportBox>.fromOpaque(inst).release()
        }
        ops = UnsafePointer(o)
        descriptor = PluginEntry.makeDescriptor(kind: GVM_PLUGIN_TRANSPORT, name: name, version: version,
                                                summary: summary, ops: UnsafeRawPointer(o), description: type.pluginDescription,
                                                settings: type.settingInfo.map { ($0, nil) })
    }
}

