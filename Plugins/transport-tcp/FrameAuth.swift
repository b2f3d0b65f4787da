import PluginKit

/// The per-frame MAC of one connection (both directions), computed by the host's auth_mac so the
/// plugin links no crypto library and never sees the cluster key. See Wire.swift for the format.
///
/// Threading: immutable; `seal` and `check` from any thread. The sequence numbers are kept by the
/// Connection (under its lock for sending, on its reader thread for receiving).
final class FrameAuth {
    private let host: UnsafePointer<gvm_transport_host>
    private let tx: UnsafeMutableRawPointer
    private let rx: UnsafeMutableRawPointer

    /// True when the host offers per-frame authentication (a host built before it lacks the hooks).
    static func hostSupports(_ host: TransportHost) -> Bool {
        let end = MemoryLayout<gvm_transport_host>.offset(of: \gvm_transport_host.auth_session_free)!
            + MemoryLayout<UnsafeRawPointer>.size
        return Int(host.raw.pointee.size) >= end && host.raw.pointee.auth_session != nil
            && host.raw.pointee.auth_mac != nil && host.raw.pointee.auth_session_free != nil
    }

    /// The sessions for a connection whose handshake just succeeded, or nil when the cluster has
    /// no key. Throws when the host cannot authenticate frames though the cluster has a key.
    static func make(host: TransportHost, keyed: Bool, cluster: String, selfID: UInt32, peer: UInt32, lane: UInt8,
                     ownNonce: [UInt8], peerNonce: [UInt8]) throws -> FrameAuth? {
        guard hostSupports(host) else {
            if keyed { throw HandshakeError("the host offers no per-frame authentication (auth_session): rebuild giantvm", final: true) }
            return nil
        }
        let raw = host.raw
        func session(_ ctx: [UInt8]) -> UnsafeMutableRawPointer? {
            ctx.withUnsafeBufferPointer { raw.pointee.auth_session(raw.pointee.host, $0.baseAddress, $0.count) }
        }
        let tx = session(sessionContext(cluster: cluster, sender: selfID, receiver: peer, lane: lane,
                                        senderNonce: ownNonce, receiverNonce: peerNonce))
        let rx = session(sessionContext(cluster: cluster, sender: peer, receiver: selfID, lane: lane,
                                        senderNonce: peerNonce, receiverNonce: ownNonce))
        guard let tx, let rx else {
            if let tx { raw.pointee.auth_session_free(raw.pointee.host, tx) }
            if let rx { raw.pointee.auth_session_free(raw.pointee.host, rx) }
            if keyed { throw HandshakeError("the host derived no session key though the cluster has a key", final: true) }
            return nil
        }
        return FrameAuth(host: raw, tx: tx, rx: rx)
    }

    private init(host: UnsafePointer<gvm_transport_host>, tx: UnsafeMutableRawPointer, rx: UnsafeMutableRawPointer) {
        self.host = host; self.tx = tx; self.rx = rx
    }

    deinit {
        host.pointee.auth_session_free(host.pointee.host, tx)
        host.pointee.auth_session_free(host.pointee.host, rx)
    }

    /// Writes the MAC of an outgoing frame (header + payload parts) numbered `seq`.
    func seal(seq: UInt64, _ iov: UnsafeBufferPointer<gvm_iovec>, into out: UnsafeMutableRawPointer) {
        host.pointee.auth_mac(host.pointee.host, tx, seq, iov.baseAddress, UInt32(iov.count), out.assumingMemoryBound(to: UInt8.self))
    }

    /// Checks the MAC at the end of a received frame numbered `seq` (header + payload + mac).
    func check(seq: UInt64, header: UnsafeRawBufferPointer, payload: UnsafeRawBufferPointer,
               mac: UnsafeRawBufferPointer) -> Bool {
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: frameMacSize) { expected in
            let parts = [gvm_iovec(base: header.baseAddress, len: header.count),
                         gvm_iovec(base: payload.baseAddress, len: payload.count)]
            parts.withUnsafeBufferPointer {
                host.pointee.auth_mac(host.pointee.host, rx, seq, $0.baseAddress, 2, expected.baseAddress)
            }
            return macEqual(UnsafeRawBufferPointer(expected), mac)
        }
    }
}
