// Channels multiplexed over the one transport.
//
// Every transport frame the host sends starts with a 4-byte channel header:
//
//   channel:u8  version:u8 (=1)  reserved:u16 (=0)  payload...
//
// The first payload byte is the message type (each channel defines its own types; the fault
// injector filters on it). Types 0x00-0x7F of the control and heartbeat channels belong to the
// node runtime; everything else is passed to the handler registered for the channel.

import PluginAPI

/// A logical stream between nodes. The raw value is the byte on the wire.
public enum Channel: UInt8, CaseIterable, Sendable, CustomStringConvertible {
    /// Node runtime control: stop, peer-lost notices; tools (tests, net-bench) use types >= 0x80.
    case control = 0
    /// The coherence (DSM) protocol: page requests, invalidations, page data.
    case coherence = 1
    /// CPU and interrupt forwarding: IPIs, APIC state, EOIs.
    case cpu = 2
    /// I/O forwarding: PIO/MMIO accesses to a device on another node, and their completions.
    case io = 3
    /// Liveness: one small frame per peer every `timeouts.heartbeat`.
    case heartbeat = 4

    public var description: String {
        switch self {
        case .control: return "control"
        case .coherence: return "coherence"
        case .cpu: return "cpu"
        case .io: return "io"
        case .heartbeat: return "heartbeat"
        }
    }

    /// The lane used when the sender does not choose one: urgent for everything small and
    /// latency-critical, bulk for coherence (page data).
    public var defaultLane: UInt32 {
        self == .coherence ? GVM_LANE_BULK : GVM_LANE_URGENT
    }

    /// Parses a channel name or number as written in YAML.
    public init?(name: String) {
        if let c = Channel.allCases.first(where: { $0.description == name }) { self = c; return }
        if let n = UInt8(name), let c = Channel(rawValue: n) { self = c; return }
        return nil
    }
}

public enum ChannelHeader {
    public static let size = 4
    public static let version: UInt8 = 1

    public static func encode(_ channel: Channel) -> [UInt8] { [channel.rawValue, version, 0, 0] }

    public enum Parsed: Equatable {
        /// A well-formed frame: the channel and the payload range in the frame.
        case message(Channel, payload: Range<Int>)
        case malformed(String)
    }

    /// Parses a whole frame as delivered by a transport (untrusted bytes).
    public static func parse(_ frame: UnsafeRawBufferPointer) -> Parsed {
        guard frame.count >= size else { return .malformed("frame of \(frame.count) bytes is shorter than the channel header") }
        guard frame[1] == version else { return .malformed("channel header version \(frame[1]) (expected \(version))") }
        guard frame[2] == 0, frame[3] == 0 else { return .malformed("non-zero reserved bytes in the channel header") }
        guard let ch = Channel(rawValue: frame[0]) else { return .malformed("unknown channel \(frame[0])") }
        return .message(ch, payload: size..<frame.count)
    }

    public static func parse(_ frame: [UInt8]) -> Parsed {
        frame.withUnsafeBytes { parse($0) }
    }
}

/// Little-endian encoding for runtime messages.
public struct MessageWriter {
    public var bytes: [UInt8] = []
    public init(type: UInt8) { bytes = [type] }
    public mutating func u8(_ v: UInt8) { bytes.append(v) }
    public mutating func u32(_ v: UInt32) { for i in 0..<4 { bytes.append(UInt8(truncatingIfNeeded: v >> (8 * UInt32(i)))) } }
    public mutating func i32(_ v: Int32) { u32(UInt32(bitPattern: v)) }
    public mutating func u64(_ v: UInt64) { for i in 0..<8 { bytes.append(UInt8(truncatingIfNeeded: v >> (8 * UInt64(i)))) } }
    public mutating func text(_ s: String) {
        let b = Array(s.utf8.prefix(1000))
        u32(UInt32(b.count)); bytes += b
    }
}

/// Bounds-checked little-endian decoding of untrusted bytes: every read returns nil past the end.
public struct MessageReader {
    public let buf: UnsafeRawBufferPointer
    public private(set) var offset = 0
    public init(_ buf: UnsafeRawBufferPointer) { self.buf = buf }
    public var remaining: Int { buf.count - offset }
    public mutating func u8() -> UInt8? {
        guard offset + 1 <= buf.count else { return nil }
        defer { offset += 1 }
        return buf[offset]
    }
    public mutating func u32() -> UInt32? {
        guard offset + 4 <= buf.count else { return nil }
        var v: UInt32 = 0
        for i in 0..<4 { v |= UInt32(buf[offset + i]) << (8 * UInt32(i)) }
        offset += 4
        return v
    }
    public mutating func i32() -> Int32? { u32().map { Int32(bitPattern: $0) } }
    public mutating func u64() -> UInt64? {
        guard offset + 8 <= buf.count else { return nil }
        var v: UInt64 = 0
        for i in 0..<8 { v |= UInt64(buf[offset + i]) << (8 * UInt64(i)) }
        offset += 8
        return v
    }
    public mutating func text() -> String? {
        guard let n = u32(), n <= 4096, offset + Int(n) <= buf.count else { return nil }
        defer { offset += Int(n) }
        return String(decoding: UnsafeRawBufferPointer(rebasing: buf[offset..<offset + Int(n)]), as: UTF8.self)
    }
}
