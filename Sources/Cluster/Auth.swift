// Authentication of peers: the transport's handshake calls auth_sign / auth_verify, which land
// here, so every transport authenticates the same way.
//
// Without `key_file`, a peer is accepted if it claims this cluster's name and a valid node id
// (no secrets: fine on a private network, logged at start). With `key_file`, each side proves it
// knows the key with HMAC-SHA256 over a challenge the other side chose (the transport builds the
// challenge material from both random nonces, both ids, the lane and the cluster name).
//
// With a key, every frame after the handshake is authenticated too: each direction of each
// connection gets its own session key, derived with HKDF-SHA256 from the cluster key and the
// transport's handshake transcript (both nonces, both ids, the lane), and every frame carries a
// MAC over its bytes keyed by its sequence number: the AES-256-GCM tag with the frame as
// associated data (GMAC) and the number in the nonce (gvm_transport_host.auth_mac).

import Crypto
import PluginAPI
import Foundation
import Logging

/// Signs and verifies handshake proofs. Threading: immutable after init; any thread.
public final class Authenticator: @unchecked Sendable {
    public let cluster: String
    public let selfID: UInt32
    public let nodeCount: Int
    private let key: SymmetricKey?
    private let logger: Logger

    public var hasKey: Bool { key != nil }

    /// Reads the key file (its bytes, trailing whitespace removed) when a path is given.
    public init(cluster: String, selfID: UInt32, nodeCount: Int, keyFile: String?, logger: Logger) throws {
        self.cluster = cluster
        self.selfID = selfID
        self.nodeCount = nodeCount
        self.logger = logger
        if let keyFile {
            guard let data = FileManager.default.contents(atPath: keyFile) else {
                throw ClusterError("key_file '\(keyFile)': cannot read it")
            }
            var bytes = [UInt8](data)
            while let last = bytes.last, last == 0x0A || last == 0x0D || last == 0x20 || last == 0x09 { bytes.removeLast() }
            guard bytes.count >= 16 else {
                throw ClusterError("key_file '\(keyFile)': the key has \(bytes.count) bytes; use at least 16 (e.g. head -c 32 /dev/urandom | base64 > key)")
            }
            key = SymmetricKey(data: bytes)
            if let mode = (try? FileManager.default.attributesOfItem(atPath: keyFile))?[.posixPermissions] as? Int,
               mode & 0o077 != 0 {
                logger.warning("key_file '\(keyFile)' is readable by other users (mode \(String(mode & 0o777, radix: 8))): anyone who reads it can join or forge frames; chmod 600 it")
            }
        } else {
            key = nil
        }
    }

    /// The session of one direction of one connection, or nil without a key. `context` is the
    /// transport's handshake transcript (nonces, ids, direction, lane): HKDF-SHA256 with the
    /// cluster key as input keying material, a fixed salt and the transcript as info.
    public func frameSession(context: UnsafeRawBufferPointer) -> FrameSession? {
        guard let key else { return nil }
        let sessionKey = HKDF<SHA256>.deriveKey(inputKeyMaterial: key, salt: Array("giantvm-frame-session-v1".utf8),
                                                info: Array(context), outputByteCount: 32)
        return FrameSession(key: sessionKey)
    }

    /// This node's proof over `challenge`: HMAC-SHA256 (32 bytes), or empty without a key.
    public func sign(_ challenge: UnsafeRawBufferPointer) -> [UInt8] {
        guard let key else { return [] }
        return Array(HMAC<SHA256>.authenticationCode(for: challenge, using: key))
    }

    /// Checks a peer's claimed cluster and id, and its proof over a challenge this node chose.
    /// Returns nil when accepted, else why it was refused (also logged as an error).
    public func verify(peer: UInt32, peerCluster: String, challenge: UnsafeRawBufferPointer,
                       proof: UnsafeRawBufferPointer) -> String? {
        let refusal: String?
        if peerCluster != cluster {
            refusal = "refused a peer claiming node \(peer): it belongs to cluster '\(peerCluster)', this is cluster '\(cluster)'"
        } else if Int(peer) >= nodeCount || peer == selfID {
            refusal = "refused a peer claiming node \(peer): not a peer id of cluster '\(cluster)' (\(nodeCount) nodes, this is node \(selfID))"
        } else if let key {
            if proof.count == 0 {
                refusal = "refused node \(peer): unauthenticated (it proved no key; key_file must be set on every node)"
            } else if !HMAC<SHA256>.isValidAuthenticationCode(proof, authenticating: challenge, using: key) {
                refusal = "refused node \(peer): wrong key (its HMAC proof does not match this node's key_file)"
            } else {
                refusal = nil
            }
        } else if proof.count != 0 {
            refusal = "refused node \(peer): it proves a key but this node has no key_file"
        } else {
            refusal = nil
        }
        if let refusal { logger.error("\(refusal)") }
        return refusal
    }
}

/// One direction's per-frame MAC key. The MAC is AES-256-GCM's tag over an empty message with
/// the frame as associated data (GMAC, RFC 4543) under the session key, the 12-byte nonce being
/// "GVMF" + the frame's sequence number (u64le): each session key numbers its frames once, so a
/// nonce never repeats under a key. (GMAC runs on AES-NI/PCLMUL: a 4 KiB frame costs about half,
/// a 60 KiB frame a ninth, of HMAC-SHA256.)
/// Threading: immutable; any thread, concurrently.
public final class FrameSession: @unchecked Sendable {
    public static let macSize = Int(GVM_FRAME_MAC_SIZE)
    private let key: SymmetricKey

    init(key: SymmetricKey) { self.key = key }

    /// Writes `macSize` bytes: the GMAC of the concatenation of iov, numbered `seq`.
    public func mac(seq: UInt64, _ iov: UnsafeBufferPointer<gvm_iovec>, into out: UnsafeMutableRawPointer) {
        var nonce: [UInt8] = [0x47, 0x56, 0x4D, 0x46]
        withUnsafeBytes(of: seq.littleEndian) { nonce += $0 }
        // One contiguous run of bytes: the pieces as given when they are adjacent in memory (a
        // received frame), else a copy.
        var total = 0
        var adjacent = true
        var end: UnsafeRawPointer? = nil
        var first: UnsafeRawPointer? = nil
        for v in iov where v.len > 0 {
            guard let base = v.base else { continue }
            if first == nil { first = base } else if base != end { adjacent = false }
            end = base + v.len
            total += v.len
        }
        func tag(_ aad: UnsafeRawBufferPointer) {
            guard let n = try? AES.GCM.Nonce(data: nonce),
                  let box = try? AES.GCM.seal([UInt8](), using: key, nonce: n, authenticating: aad) else {
                // Cannot happen (valid nonce size, no plaintext); a zero MAC is refused by the peer.
                out.initializeMemory(as: UInt8.self, repeating: 0, count: FrameSession.macSize)
                return
            }
            let t = [UInt8](box.tag)
            out.copyMemory(from: t, byteCount: min(t.count, FrameSession.macSize))
        }
        if adjacent {
            tag(UnsafeRawBufferPointer(start: first, count: total))
        } else {
            let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: total, alignment: 16)
            defer { buf.deallocate() }
            var at = 0
            for v in iov where v.len > 0 {
                if let base = v.base { (buf.baseAddress! + at).copyMemory(from: base, byteCount: v.len); at += v.len }
            }
            tag(UnsafeRawBufferPointer(buf))
        }
    }

    /// The MAC as bytes (tests).
    public func mac(seq: UInt64, _ parts: [[UInt8]]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: FrameSession.macSize)
        func go(_ i: Int, _ iov: inout [gvm_iovec]) {
            if i == parts.count {
                iov.withUnsafeBufferPointer { v in out.withUnsafeMutableBytes { mac(seq: seq, v, into: $0.baseAddress!) } }
                return
            }
            parts[i].withUnsafeBytes { p in
                iov.append(gvm_iovec(base: p.baseAddress, len: p.count))
                go(i + 1, &iov)
            }
        }
        var iov: [gvm_iovec] = []
        go(0, &iov)
        return out
    }
}
