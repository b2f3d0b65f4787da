import PluginAPI

// Wire format of transport-tcp: every byte on a connection belongs to a length-prefixed frame.
//
//   frame  = header(8) payload(length)
//   header = length:u32le  magic:'G' 'V'  kind:u8  flags:u8(=0)
//   kind   = 0 data (delivered to the host) | 1 hello | 2 proof | 3 verdict (handshake only)
//
// With a cluster key, every data frame also ends with a MAC (its length counts in `length`):
//   data   = payload mac[16]   mac = GMAC(session key, nonce "GVMF" seq:u64le, header payload)
// Each direction of each connection has its own session key (derived by the host from the key and
// `sessionContext(...)`) and numbers its data frames 0, 1, 2, ...; the receiver checks each MAC
// against the number it expects next and closes the connection on a mismatch, so an injected,
// modified, replayed, dropped or reordered frame never reaches the host.
//
// A connection starts with a handshake (both sides send the same three frames, in order):
//   hello   = "GVMT" version:u16le lane:u8 0:u8 sender:u32le receiver:u32le nonce[32]
//             nameLength:u16le name[nameLength]          (cluster name, at most 255 bytes)
//   proof   = proofLength:u16le proof[proofLength]       (HMAC from the host's auth_sign; empty
//                                                          when the cluster has no key)
//   verdict = ok:u8 reasonLength:u16le reason[...]       (1 = accepted; 0 = refused, with why)
// The proof a node S gives node R is over `authMaterial(...)`: a fixed label, the cluster name,
// both ids, the lane and both nonces (R's challenge first), so a proof can be neither replayed
// on another connection nor reflected back to its sender.
//
// Everything here is pure (no sockets, no threads) so it is unit-tested directly.

/// Largest payload a frame may carry: GVM_MAX_FRAME.
public let maxFramePayload = Int(GVM_MAX_FRAME)
public let frameHeaderSize = 8
public let helloMagic: [UInt8] = Array("GVMT".utf8)
public let wireVersion: UInt16 = 1
public let nonceSize = 32
public let maxClusterName = 255
public let maxProof = 64

public enum FrameKind: UInt8, Sendable {
    case data = 0, hello = 1, proof = 2, verdict = 3
}

/// Encodes the 8-byte header of a frame carrying `length` payload bytes.
public func encodeFrameHeader(kind: FrameKind, length: Int) -> [UInt8] {
    let n = UInt32(length)
    return [UInt8(truncatingIfNeeded: n), UInt8(truncatingIfNeeded: n >> 8),
            UInt8(truncatingIfNeeded: n >> 16), UInt8(truncatingIfNeeded: n >> 24),
            0x47, 0x56, kind.rawValue, 0]
}

/// One whole frame: header + payload.
public func encodeFrame(kind: FrameKind, payload: [UInt8]) -> [UInt8] {
    encodeFrameHeader(kind: kind, length: payload.count) + payload
}

/// Result of looking at the start of a receive buffer.
public enum FrameParse: Equatable, Sendable {
    /// A whole frame: its kind and where its payload lies in the buffer; `end` bytes are consumed.
    case frame(kind: FrameKind, payload: Range<Int>, end: Int)
    /// Not enough bytes yet: at least `total` bytes are needed from the start of the buffer.
    case needMore(total: Int)
    /// The stream is corrupt; the connection must be closed.
    case malformed(String)
}

/// Parses the frame at the start of `buf`. Never reads past `buf.count`; rejects a bad magic,
/// an unknown kind, non-zero flags and a length over `maxPayload` as soon as the header is in.
public func parseFrame(_ buf: UnsafeRawBufferPointer, maxPayload: Int = maxFramePayload) -> FrameParse {
    guard buf.count >= frameHeaderSize else { return .needMore(total: frameHeaderSize) }
    let length = Int(buf[0]) | Int(buf[1]) << 8 | Int(buf[2]) << 16 | Int(buf[3]) << 24
    guard buf[4] == 0x47, buf[5] == 0x56 else {
        return .malformed("bad frame magic 0x\(hex(buf[4]))\(hex(buf[5])) (not a giantvm transport-tcp peer?)")
    }
    guard let kind = FrameKind(rawValue: buf[6]) else { return .malformed("unknown frame kind \(buf[6])") }
    guard buf[7] == 0 else { return .malformed("non-zero frame flags 0x\(hex(buf[7]))") }
    guard length <= maxPayload else {
        return .malformed("oversized frame: \(length) bytes (limit \(maxPayload))")
    }
    let end = frameHeaderSize + length
    guard buf.count >= end else { return .needMore(total: end) }
    return .frame(kind: kind, payload: frameHeaderSize..<end, end: end)
}

public func parseFrame(_ bytes: [UInt8], maxPayload: Int = maxFramePayload) -> FrameParse {
    bytes.withUnsafeBytes { parseFrame($0, maxPayload: maxPayload) }
}

private func hex(_ b: UInt8) -> String {
    let s = String(b, radix: 16)
    return s.count == 1 ? "0" + s : s
}

/// A cursor over untrusted bytes: every read is bounds-checked.
struct ByteReader {
    let bytes: [UInt8]
    var offset = 0
    init(_ bytes: [UInt8]) { self.bytes = bytes }
    var remaining: Int { bytes.count - offset }
    mutating func u8() -> UInt8? {
        guard remaining >= 1 else { return nil }
        defer { offset += 1 }
        return bytes[offset]
    }
    mutating func u16() -> UInt16? {
        guard remaining >= 2 else { return nil }
        defer { offset += 2 }
        return UInt16(bytes[offset]) | UInt16(bytes[offset + 1]) << 8
    }
    mutating func u32() -> UInt32? {
        guard remaining >= 4 else { return nil }
        defer { offset += 4 }
        return (0..<4).reduce(UInt32(0)) { $0 | UInt32(bytes[offset + $1]) << (8 * UInt32($1)) }
    }
    mutating func take(_ n: Int) -> [UInt8]? {
        guard n >= 0, remaining >= n else { return nil }
        defer { offset += n }
        return Array(bytes[offset..<offset + n])
    }
}

func appendU16(_ out: inout [UInt8], _ v: UInt16) { out += [UInt8(v & 0xff), UInt8(v >> 8)] }
func appendU32(_ out: inout [UInt8], _ v: UInt32) {
    out += [UInt8(v & 0xff), UInt8((v >> 8) & 0xff), UInt8((v >> 16) & 0xff), UInt8(v >> 24)]
}

/// The first handshake frame.
public struct Hello: Equatable, Sendable {
    public var lane: UInt8
    public var sender: UInt32
    public var receiver: UInt32
    public var nonce: [UInt8]
    public var cluster: String

    public init(lane: UInt8, sender: UInt32, receiver: UInt32, nonce: [UInt8], cluster: String) {
        self.lane = lane; self.sender = sender; self.receiver = receiver; self.nonce = nonce
        self.cluster = cluster
    }

    public func encode() -> [UInt8] {
        var p = helloMagic
        appendU16(&p, wireVersion)
        p += [lane, 0]
        appendU32(&p, sender)
        appendU32(&p, receiver)
        p += nonce
        let name = Array(cluster.utf8.prefix(maxClusterName))
        appendU16(&p, UInt16(name.count))
        p += name
        return p
    }

    /// Decodes a hello payload; the error says exactly what is wrong.
    public static func decode(_ payload: [UInt8]) -> Result<Hello, HandshakeError> {
        var r = ByteReader(payload)
        guard r.take(4) == helloMagic else { return .failure(HandshakeError("bad hello magic")) }
        guard let version = r.u16() else { return .failure(HandshakeError("truncated hello")) }
        guard version == wireVersion else {
            return .failure(HandshakeError("protocol version \(version) (this node speaks \(wireVersion))"))
        }
        guard let lane = r.u8(), let _ = r.u8(), let sender = r.u32(), let receiver = r.u32(),
              let nonce = r.take(nonceSize), let nameLength = r.u16()
        else { return .failure(HandshakeError("truncated hello")) }
        guard Int(nameLength) <= maxClusterName else {
            return .failure(HandshakeError("cluster name of \(nameLength) bytes (limit \(maxClusterName))"))
        }
        guard let name = r.take(Int(nameLength)), r.remaining == 0 else {
            return .failure(HandshakeError("hello of wrong length \(payload.count)"))
        }
        guard let cluster = String(validating: name, as: UTF8.self) else {
            return .failure(HandshakeError("cluster name is not UTF-8"))
        }
        return .success(Hello(lane: lane, sender: sender, receiver: receiver, nonce: nonce, cluster: cluster))
    }
}

public struct HandshakeError: Error, CustomStringConvertible, Equatable, Sendable {
    public var message: String
    /// A decision (refused verdict, failed proof) rather than a transport accident: retrying
    /// the same peer cannot succeed.
    public var final: Bool
    public init(_ message: String, final: Bool = false) { self.message = message; self.final = final }
    public var description: String { message }
}

public func encodeProof(_ proof: [UInt8]) -> [UInt8] {
    var p: [UInt8] = []
    appendU16(&p, UInt16(proof.count))
    return p + proof
}

public func decodeProof(_ payload: [UInt8]) -> Result<[UInt8], HandshakeError> {
    var r = ByteReader(payload)
    guard let n = r.u16(), Int(n) <= maxProof, let proof = r.take(Int(n)), r.remaining == 0 else {
        return .failure(HandshakeError("malformed proof frame (\(payload.count) bytes)"))
    }
    return .success(proof)
}

public func encodeVerdict(ok: Bool, reason: String) -> [UInt8] {
    let text = Array(reason.utf8.prefix(400))
    var p: [UInt8] = [ok ? 1 : 0]
    appendU16(&p, UInt16(text.count))
    return p + text
}

/// (accepted, reason)
public func decodeVerdict(_ payload: [UInt8]) -> Result<(Bool, String), HandshakeError> {
    var r = ByteReader(payload)
    guard let ok = r.u8(), ok <= 1, let n = r.u16(), let text = r.take(Int(n)), r.remaining == 0 else {
        return .failure(HandshakeError("malformed verdict frame (\(payload.count) bytes)"))
    }
    return .success((ok == 1, String(decoding: text, as: UTF8.self)))
}

/// Bytes of the MAC every data frame carries after its payload when the cluster has a key.
public let frameMacSize = Int(GVM_FRAME_MAC_SIZE)

/// The handshake transcript one direction's session key is derived from (the host's auth_session
/// runs HKDF over it): a fixed label, the cluster name, the direction (sender, receiver), the lane
/// and both nonces, the sender's first. Both ends compute the same bytes for one direction and
/// different bytes for the two directions, and fresh nonces give every connection fresh keys, so a
/// frame recorded on one connection or direction never verifies on another.
public func sessionContext(cluster: String, sender: UInt32, receiver: UInt32, lane: UInt8,
                           senderNonce: [UInt8], receiverNonce: [UInt8]) -> [UInt8] {
    transcript("giantvm-transport-tcp-frames-v1", cluster: cluster, first: sender, second: receiver, lane: lane,
               nonces: senderNonce, receiverNonce)
}

/// label, cluster name (u16 length + bytes), two node ids, the lane, two nonces: the byte layout
/// of every transcript the handshake signs or derives a key from.
func transcript(_ label: String, cluster: String, first: UInt32, second: UInt32, lane: UInt8,
                nonces a: [UInt8], _ b: [UInt8]) -> [UInt8] {
    var m = Array(label.utf8)
    let name = Array(cluster.utf8)
    appendU16(&m, UInt16(truncatingIfNeeded: name.count))
    m += name
    appendU32(&m, first)
    appendU32(&m, second)
    m.append(lane)
    m += a
    m += b
    return m
}

/// Constant-time comparison of two MACs of equal length.
public func macEqual(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Bool {
    guard a.count == b.count else { return false }
    var diff: UInt8 = 0
    for i in 0..<a.count { diff |= a[i] ^ b[i] }
    return diff == 0
}

/// The bytes node `signer` signs to prove the cluster key to node `verifier` on one connection.
/// `verifierNonce` is the challenge the verifier chose.
public func authMaterial(cluster: String, signer: UInt32, verifier: UInt32, lane: UInt8,
                         verifierNonce: [UInt8], signerNonce: [UInt8]) -> [UInt8] {
    transcript("giantvm-transport-tcp-auth-v1", cluster: cluster, first: signer, second: verifier, lane: lane,
               nonces: verifierNonce, signerNonce)
}

/// transport-tcp's duration settings: name, default and accepted range, in nanoseconds. Values
/// use the one grammar of giantvm_units.h (a bare number is seconds, like every duration field).
public enum TCPDurationSetting: String, CaseIterable, Sendable {
    case connectTimeout = "connect_timeout"
    case handshakeTimeout = "handshake_timeout"
    case retryInterval = "retry_interval"

    public var defaultNanoseconds: UInt64 {
        switch self {
        case .connectTimeout: return 10 * GVM_NS_PER_S
        case .handshakeTimeout: return 5 * GVM_NS_PER_S
        case .retryInterval: return 100 * GVM_NS_PER_MS
        }
    }

    public var range: ClosedRange<UInt64> {
        switch self {
        case .connectTimeout, .handshakeTimeout: return GVM_NS_PER_MS...GVM_NS_PER_DAY
        case .retryInterval: return GVM_NS_PER_MS...(3600 * GVM_NS_PER_S)
        }
    }

    /// The setting's value in nanoseconds, or the shared grammar's message naming the setting,
    /// the value and the range.
    public func parse(_ text: String) -> Result<UInt64, TCPSettingError> {
        let r = range
        var ns: UInt64 = 0
        let rc = text.withCString { gvm_parse_duration($0, r.lowerBound, r.upperBound, &ns) }
        if rc == GVM_UNIT_OK.rawValue { return .success(ns) }
        var buf = [CChar](repeating: 0, count: 256)
        _ = text.withCString { t in
            buf.withUnsafeMutableBufferPointer { gvm_unit_message(rc, GVM_UNIT_DURATION, t, r.lowerBound, r.upperBound, $0.baseAddress, $0.count) }
        }
        let message = String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return .failure(TCPSettingError(message: "setting '\(rawValue)': \(message)"))
    }
}

public struct TCPSettingError: Error, CustomStringConvertible, Equatable {
    public var message: String
    public var description: String { message }
}

/// A duration in the shared grammar (bare number = seconds), without a range: nanoseconds, or
/// nil when the text is not a duration.
public func parseDurationNanoseconds(_ text: String) -> UInt64? {
    var ns: UInt64 = 0
    return text.withCString { gvm_parse_duration($0, 0, UInt64.max, &ns) } == GVM_UNIT_OK.rawValue ? ns : nil
}
