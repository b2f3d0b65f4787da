// Fuzz target "tcp-wire": arbitrary bytes as a transport-tcp receive stream (frames cut from the
// front as the connection does) and as handshake payloads (hello, proof, verdict), plus duration
// settings text. Whatever decodes must encode to bytes that decode equal.
#if !FUZZING
@testable import TransportTCP
#endif

enum TCPWireFuzz {
    static func exercise(_ bytes: [UInt8]) {
        var rest = bytes[...]
        while !rest.isEmpty {
            let chunk = Array(rest)
            guard case let .frame(kind, payload, end) = parseFrame(chunk, maxPayload: 1 << 16) else { break }
            precondition(end > 0 && end <= chunk.count && payload.upperBound == end, "parseFrame: bad range")
            let p = Array(chunk[payload])
            precondition(encodeFrame(kind: kind, payload: p) == Array(chunk[..<end]), "frame does not round-trip")
            if case let .success(h) = Hello.decode(p) { precondition(Hello.decode(h.encode()) == .success(h), "Hello does not round-trip") }
            if case let .success(proof) = decodeProof(p) { precondition(encodeProof(proof) == p, "proof does not round-trip") }
            _ = decodeVerdict(p)
            rest = rest.dropFirst(end)
        }
        _ = parseDurationNanoseconds(String(decoding: bytes.prefix(64), as: UTF8.self))
    }
}
