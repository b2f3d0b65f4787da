// Transport plugins in Swift: conform one class to `TransportPlugin` and export
// `PluginEntry.transport(MyTransport.self, ...)` from `giantvm_plugin_entry`.
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
}

public extension TransportPlugin {
    func registerRegion(_ base: UnsafeMutableRawPointer, length: Int) -> UInt64? { nil }
}

final class TransportBox {
    let plugin: any TransportPlugin
    init(_ p: any TransportPlugin) { plugin = p }
}

nonisolated(unsafe) private var transportType: (any TransportPlugin.Type)?

@inline(__always)
private func transportInstance(_ p: UnsafeMutableRawPointer?) -> any TransportPlugin {
    Unmanaged<TransportBox>.fromOpaque(p!).takeUnretainedValue().plugin
}

extension PluginEntry {
    public static func transport<T: TransportPlugin>(_ type: T.Type, name: String, version: String,
                                                     summary: String) -> UnsafeRawPointer {
        once(name) {
            transportType = type
            let ops = UnsafeMutablePointer<gvm_transport_ops>.allocate(capacity: 1)
            ops.initialize(to: gvm_transport_ops())
            ops.pointee.size = UInt32(MemoryLayout<gvm_transport_ops>.size)
            ops.pointee.create = { svc, th, cluster, settings, n, err in
                do {
                    let t = try transportType!.init(services: HostServices(svc!), host: TransportHost(th!),
                                                    cluster: ClusterInfo(cluster!), settings: Settings(settings, count: n))
                    return Unmanaged.passRetained(TransportBox(t)).toOpaque()
                } catch {
                    fill(err, "\(error)")
                    return nil
                }
            }
            ops.pointee.start = { inst, err in
                do { try transportInstance(inst).start(); return GVM_OK.rawValue } catch {
                    fill(err, "\(error)")
                    return GVM_ERR_IO.rawValue
                }
            }
            ops.pointee.send = { inst, dst, lane, iov, n in
                transportInstance(inst).send(to: dst, lane: lane, UnsafeBufferPointer(start: iov, count: Int(n))).raw
            }
            ops.pointee.register_region = { inst, addr, len, key in
                guard let addr, let k = transportInstance(inst).registerRegion(addr, length: len) else {
                    return GVM_ERR_UNSUPPORTED.rawValue
                }
                key?.pointee = k
                return GVM_OK.rawValue
            }
            ops.pointee.stop = { inst in transportInstance(inst).stop() }
            ops.pointee.destroy = { inst in
                guard let inst else { return }
                Unmanaged<TransportBox>.fromOpaque(inst).release()
            }
            return makeDescriptor(kind: GVM_PLUGIN_TRANSPORT, name: name, version: version, summary: summary,
                                  ops: UnsafeRawPointer(ops))
        }
    }
}
