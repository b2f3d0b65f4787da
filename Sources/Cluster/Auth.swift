// Authentication of peers: the transport's handshake calls auth_sign / auth_verify, which land
// here, so every transport authenticates the same way.
//
// Without `key_file`, a peer is accepted if it claims this cluster's name and a valid node id
// (no secrets: fine on a private network, logged at start). With `key_file`, each side proves it
// knows the key with HMAC-SHA256 over a challenge the other side chose (the transport builds the
// challenge material from both random nonces, both ids, the lane and the cluster name).

import Crypto
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
        } else {
            key = nil
        }
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
