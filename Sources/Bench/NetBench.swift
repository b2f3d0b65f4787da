// `giantvm net-bench`'s measurement: round-trip latency and one-way bandwidth between node 0 and
// every other node through the configured transport, beside a raw-TCP floor measured in the same
// run between the same two node processes: the peer opens a plain TCP echo listener on its own
// configured address (its namespace, its host), node 0 connects to it, and the same exchanges run
// over that socket without giantvm's transport.

import Cluster
import Foundation
import Glibc
import Histogram
import Metrics
import PluginAPI

// The benchmark protocol: control channel, types 0xB0-0xB4 (MessageType.Control.net*).
private let bPing = MessageType.Control.netPing.rawValue, bPong = MessageType.Control.netPong.rawValue
private let bData = MessageType.Control.netData.rawValue, bEnd = MessageType.Control.netEnd.rawValue
private let bDone = MessageType.Control.netDone.rawValue
private let bFloorOpen = MessageType.Control.netFloorOpen.rawValue, bFloorPort = MessageType.Control.netFloorPort.rawValue

/// Answers benchmark frames on every node, and collects answers for the driver on node 0.
/// Threading: `handle` on receive threads (never blocks); waits on the driver's thread.
public final class NetBenchResponder: @unchecked Sendable {
    let node: Node
    let mon = Monitor()
    var lastPong: UInt64 = 0
    var received: [UInt32: (frames: UInt64, bytes: UInt64)] = [:]
    var done: (frames: UInt64, bytes: UInt64)?
    /// The floor listener's answer (port, or 0 and why).
    var floorPort: (port: UInt16, error: String)?
    /// Floor connections this node accepted and served (tests: the floor ran between peers).
    public private(set) var floorConnectionsServed = 0

    /// Registers the net-bench types on the control channel: before `node.start()`.
    public init(node: Node) {
        self.node = node
        node.register(channel: .control, types: [bPing, bPong, bData, bEnd, bDone, bFloorOpen, bFloorPort]) { [weak self] from, p in
            self?.handle(from, p)
        }
    }

    func handle(_ from: UInt32, _ payload: UnsafeRawBufferPointer) {
        guard let type = payload.first else { return }
        var r = MessageReader(payload)
        _ = r.u8()
        switch type {
        case bPing:
            guard let lane = r.u8(), lane < GVM_LANE_COUNT else { return }
            var reply = [UInt8](payload)
            reply[0] = bPong
            node.send(channel: .control, to: from, reply, lane: UInt32(lane))
        case bPong:
            _ = r.u8()
            guard let seq = r.u64() else { return }
            mon.withLock { lastPong = seq; mon.broadcast() }
        case bData:
            mon.withLock {
                let c = received[from] ?? (0, 0)
                received[from] = (c.frames + 1, c.bytes + UInt64(payload.count))
            }
        case bEnd:
            let c = mon.withLock { received.removeValue(forKey: from) ?? (0, 0) }
            var w = MessageWriter(type: bDone)
            w.u64(c.frames)
            w.u64(c.bytes)
            node.send(channel: .control, to: from, w.bytes, lane: GVM_LANE_BULK)
        case bDone:
            guard let frames = r.u64(), let bytes = r.u64() else { return }
            mon.withLock { done = (frames, bytes); mon.broadcast() }
        case bFloorOpen:
            openFloor(for: from)
        case bFloorPort:
            guard let lo = r.u8(), let hi = r.u8() else { return }
            let port = UInt16(lo) | UInt16(hi) << 8
            let why = String(decoding: payload.dropFirst(3), as: UTF8.self)
            mon.withLock { floorPort = (port, why); mon.broadcast() }
        default:
            break
        }
    }
}

extension NetBenchResponder {
    /// The peer's side of the floor: a plain TCP listener on this node's configured address
    /// (kernel-chosen port) whose one connection is echoed on a thread of its own; answers
    /// `from` with the port (or 0 and the reason).
    func openFloor(for from: UInt32) {
        var answer = MessageWriter(type: bFloorPort)
        do {
            let address = node.config.nodes[Int(node.id)].address
            let (fd, port) = try RawTCPEcho.listen(address: address)
            _ = try OSThread(name: "floor-echo") { [weak self] in
                let served = RawTCPEcho.acceptAndServe(fd, timeoutMilliseconds: 10_000)
                Glibc.close(fd)
                if served, let self { self.mon.withLock { self.floorConnectionsServed += 1 } }
            }
            answer.u8(UInt8(truncatingIfNeeded: port))
            answer.u8(UInt8(truncatingIfNeeded: port >> 8))
        } catch {
            answer.u8(0)
            answer.u8(0)
            answer.bytes += Array("node \(node.id): \(error)".utf8)
        }
        node.send(channel: .control, to: from, answer.bytes, lane: GVM_LANE_URGENT)
    }

    /// Node 0's side: asks `peer` for its floor listener and connects to it.
    func connectFloor(to peer: UInt32) throws -> RawTCPFloor {
        mon.withLock { floorPort = nil }
        node.send(channel: .control, to: peer, [bFloorOpen], lane: GVM_LANE_URGENT)
        let deadline = monotonicNanoseconds() + 5_000_000_000
        let answer = mon.withLock {
            while floorPort == nil && monotonicNanoseconds() < deadline && node.stopReason == nil { mon.wait(until: deadline) }
            return floorPort
        }
        guard let answer else { throw ClusterError("floor: node \(peer) did not open its TCP echo listener within 5 s") }
        guard answer.port != 0 else { throw ClusterError("floor: node \(peer) cannot listen: \(answer.error)") }
        return try RawTCPFloor(host: node.config.nodes[Int(peer)].address, port: answer.port, peer: peer)
    }
}

/// Runs the measurements on node 0 (its main thread).
public struct NetBenchDriver {
    let node: Node
    let responder: NetBenchResponder
    let roundTrips: Int
    let megabytes: Int

    public struct Latency { public var p50: Double; public var p99: Double; public var mean: Double }

    public init(node: Node, responder: NetBenchResponder, roundTrips: Int, megabytes: Int) {
        self.node = node; self.responder = responder; self.roundTrips = roundTrips; self.megabytes = megabytes
    }

    /// Measures against every peer; returns the report (a table).
    public func run() throws -> String {
        var lines: [String] = []
        lines.append("net-bench: cluster \(node.config.cluster), transport \(node.transportName), "
                     + "\(node.config.nodes.count) nodes, \(roundTrips) round trips per size, \(megabytes) MiB one way")
        lines.append("floor = the same exchange over a plain TCP socket between the same two node processes "
                     + "(node 0 connects to the peer's own listener on its configured address; no giantvm transport)")
        lines.append(pad("pair", 18) + pad("what", 18) + pad("p50 us", 10) + pad("p99 us", 10) + pad("mean us", 10)
                     + pad("floor p50", 11) + pad("floor p99", 11))
        for p in node.peers {
            let floor = try responder.connectFloor(to: p)
            defer { floor.close() }
            let floorSmall = try floor.roundTrip(size: 64, count: roundTrips)
            let floorPage = try floor.roundTrip(size: 4096, count: roundTrips)
            let floorBW = try floor.bandwidth(megabytes: megabytes)
            lines.append(pad("node 0 <-> \(p)", 18) + "floor over TCP to \(floor.endpoint) (node \(p)'s process)")
            let small = try roundTrip(to: p, size: 64, lane: GVM_LANE_URGENT)
            let page = try roundTrip(to: p, size: 4096, lane: GVM_LANE_BULK)
            for (what, l, f) in [("64 B, urgent", small, floorSmall), ("4 KiB, bulk", page, floorPage)] {
                lines.append(pad("node 0 <-> \(p)", 18) + pad(what, 18) + pad(us(l.p50), 10) + pad(us(l.p99), 10)
                             + pad(us(l.mean), 10) + pad(us(f.p50), 11) + pad(us(f.p99), 11))
            }
            let bw = try bandwidth(to: p)
            lines.append(pad("node 0 -> \(p)", 18) + "bandwidth \(String(format: "%.1f", bw)) MiB/s"
                         + " (floor \(String(format: "%.1f", floorBW)) MiB/s)")
        }
        return lines.joined(separator: "\n")
    }

    private func roundTrip(to peer: UInt32, size: Int, lane: UInt32) throws -> Latency {
        var h = Histogram<UInt64>(highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
        var frame = [UInt8](repeating: 0x5A, count: size)
        frame[0] = bPing
        frame[1] = UInt8(lane)
        let warmup = min(200, roundTrips)
        for i in 0..<(warmup + roundTrips) {
            let seq = UInt64(i + 1) | (UInt64(peer) << 48) | (UInt64(size) << 32)
            for b in 0..<8 { frame[2 + b] = UInt8(truncatingIfNeeded: seq >> (8 * UInt64(b))) }
            let t0 = monotonicNanoseconds()
            let rc = node.send(channel: .control, to: peer, frame, lane: lane)
            guard rc == GVM_OK.rawValue else { throw ClusterError("send to node \(peer): \(String(cString: gvm_status_name(rc)))") }
            let deadline = t0 + 5_000_000_000
            let ok: Bool = responder.mon.withLock {
                while responder.lastPong != seq && monotonicNanoseconds() < deadline && node.stopReason == nil {
                    responder.mon.wait(until: deadline)
                }
                return responder.lastPong == seq
            }
            guard ok else { throw ClusterError("no answer from node \(peer) within 5 s (round trip \(i))") }
            if i >= warmup { _ = h.record(monotonicNanoseconds() - t0) }
        }
        return Latency(p50: Double(h.valueAtPercentile(50)), p99: Double(h.valueAtPercentile(99)), mean: h.mean)
    }

    private func bandwidth(to peer: UInt32) throws -> Double {
        let frameSize = 60 * 1024
        var frame = [UInt8](repeating: 0xA5, count: frameSize)
        frame[0] = bData
        let frames = (megabytes << 20) / frameSize
        responder.mon.withLock { responder.done = nil }
        let t0 = monotonicNanoseconds()
        for _ in 0..<frames {
            while true {
                let rc = node.send(channel: .control, to: peer, frame, lane: GVM_LANE_BULK)
                if rc == GVM_OK.rawValue { break }
                guard rc == GVM_ERR_NOMEM.rawValue, node.stopReason == nil else {
                    throw ClusterError("send to node \(peer): \(String(cString: gvm_status_name(rc)))")
                }
                usleep(50)  // the transport's queue is full: let its writer drain
            }
        }
        var w = MessageWriter(type: bEnd)
        w.u64(UInt64(frames))
        node.send(channel: .control, to: peer, w.bytes, lane: GVM_LANE_BULK)
        let deadline = monotonicNanoseconds() + 60_000_000_000
        let done: (frames: UInt64, bytes: UInt64)? = responder.mon.withLock {
            while responder.done == nil && monotonicNanoseconds() < deadline && node.stopReason == nil {
                responder.mon.wait(until: deadline)
            }
            return responder.done
        }
        let t1 = monotonicNanoseconds()
        guard let done else { throw ClusterError("node \(peer) did not confirm the bandwidth run") }
        guard done.frames == UInt64(frames) else {
            throw ClusterError("node \(peer) received \(done.frames) of \(frames) frames")
        }
        return Double(done.bytes) / 1048576 / (Double(t1 - t0) / 1e9)
    }
}

private func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s + " " : s + String(repeating: " ", count: n - s.count) }
private func us(_ ns: Double) -> String { String(format: "%.1f", ns / 1000) }

/// The peer's end of the floor: a listener on the node's configured address and the echo loop.
public enum RawTCPEcho {
    /// A TCP listener on `address` (IPv4 or IPv6 literal, or a host name), kernel-chosen port.
    public static func listen(address: String) throws -> (fd: Int32, port: UInt16) {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = AI_PASSIVE
        var res: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(address, "0", &hints, &res)
        guard rc == 0, let ai = res else { throw ClusterError("floor: address '\(address)': \(String(cString: gai_strerror(rc)))") }
        defer { freeaddrinfo(res) }
        let fd = socket(ai.pointee.ai_family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw ClusterError("floor: socket: \(String(cString: strerror(errno)))") }
        guard bind(fd, ai.pointee.ai_addr, ai.pointee.ai_addrlen) == 0, Glibc.listen(fd, 1) == 0 else {
            let e = errno
            Glibc.close(fd)
            throw ClusterError("floor: cannot listen on \(address): \(String(cString: strerror(e)))")
        }
        var ss = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &ss) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        let port: UInt16 = withUnsafePointer(to: &ss) { p in
            p.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { UInt16(bigEndian: $0.pointee.sin_port) }
        }
        return (fd, port)
    }

    /// Accepts one connection within the timeout and echoes it until it closes: u32 length +
    /// payload; length 0xFFFFFFFF = a bandwidth run of the next u64 bytes, acked with one byte.
    /// Returns whether a connection was served.
    public static func acceptAndServe(_ lfd: Int32, timeoutMilliseconds: Int32) -> Bool {
        var pfd = pollfd(fd: lfd, events: Int16(POLLIN), revents: 0)
        guard poll(&pfd, 1, timeoutMilliseconds) == 1 else { return false }
        let s = accept(lfd, nil, nil)
        guard s >= 0 else { return false }
        defer { Glibc.close(s) }
        var one: Int32 = 1
        setsockopt(s, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(4))
        var buf = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            guard let hdr = RawTCPFloor.readN(s, 4) else { return true }
            let n = UInt32(hdr[0]) | UInt32(hdr[1]) << 8 | UInt32(hdr[2]) << 16 | UInt32(hdr[3]) << 24
            if n == UInt32.max {
                guard let t = RawTCPFloor.readN(s, 8) else { return true }
                var total = t.enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
                while total > 0 {
                    let r = buf.withUnsafeMutableBytes { read(s, $0.baseAddress!, min(Int(total), $0.count)) }
                    if r <= 0 { return true }
                    total -= UInt64(r)
                }
                var ack: UInt8 = 1
                _ = write(s, &ack, 1)
                continue
            }
            guard n <= 1 << 20, let body = RawTCPFloor.readN(s, Int(n)) else { return true }
            guard RawTCPFloor.writeAll(s, hdr + body) else { return true }
        }
    }
}

/// Node 0's end of the floor: a plain TCP connection (TCP_NODELAY) to a peer's echo listener,
/// the same sizes and counts as the measured run.
public final class RawTCPFloor {
    private let client: Int32
    /// "host:port" of the peer's listener.
    public let endpoint: String

    public init(host: String, port: UInt16, peer: UInt32) throws {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var res: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, "\(port)", &hints, &res)
        guard rc == 0, let ai = res else { throw ClusterError("floor: node \(peer) address '\(host)': \(String(cString: gai_strerror(rc)))") }
        defer { freeaddrinfo(res) }
        let fd = socket(ai.pointee.ai_family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw ClusterError("floor: socket: \(String(cString: strerror(errno)))") }
        guard connect(fd, ai.pointee.ai_addr, ai.pointee.ai_addrlen) == 0 else {
            let e = errno
            Glibc.close(fd)
            throw ClusterError("floor: connect to node \(peer) at \(host):\(port): \(String(cString: strerror(e)))")
        }
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(4))
        client = fd
        endpoint = "\(host):\(port)"
    }

    static func readN(_ fd: Int32, _ n: Int) -> [UInt8]? {
        var out = [UInt8](repeating: 0, count: n)
        var got = 0
        while got < n {
            let r = out.withUnsafeMutableBytes { read(fd, $0.baseAddress! + got, n - got) }
            if r <= 0 { return nil }
            got += r
        }
        return out
    }

    static func writeAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        var off = 0
        while off < bytes.count {
            let w = bytes.withUnsafeBytes { send(fd, $0.baseAddress! + off, bytes.count - off, Int32(MSG_NOSIGNAL)) }
            if w <= 0 { return false }
            off += w
        }
        return true
    }

    public func roundTrip(size: Int, count: Int) throws -> NetBenchDriver.Latency {
        var h = Histogram<UInt64>(highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
        let msg = [UInt8(truncatingIfNeeded: size), UInt8(truncatingIfNeeded: size >> 8), 0, 0]
            + [UInt8](repeating: 0x5A, count: size)
        let warmup = min(200, count)
        for i in 0..<(warmup + count) {
            let t0 = monotonicNanoseconds()
            guard RawTCPFloor.writeAll(client, msg), RawTCPFloor.readN(client, msg.count) != nil else {
                throw ClusterError("floor: the echo to \(endpoint) failed")
            }
            if i >= warmup { _ = h.record(monotonicNanoseconds() - t0) }
        }
        return NetBenchDriver.Latency(p50: Double(h.valueAtPercentile(50)), p99: Double(h.valueAtPercentile(99)), mean: h.mean)
    }

    /// MiB/s for `megabytes` MiB written in 60 KiB writes, until the echo side has read them all.
    public func bandwidth(megabytes: Int) throws -> Double {
        let total = UInt64(megabytes) << 20
        var hdr: [UInt8] = [0xFF, 0xFF, 0xFF, 0xFF]
        for b in 0..<8 { hdr.append(UInt8(truncatingIfNeeded: total >> (8 * UInt64(b)))) }
        let chunk = [UInt8](repeating: 0xA5, count: 60 * 1024)
        let t0 = monotonicNanoseconds()
        guard RawTCPFloor.writeAll(client, hdr) else { throw ClusterError("floor: write to \(endpoint) failed") }
        var left = total
        while left > 0 {
            let n = Int(min(left, UInt64(chunk.count)))
            guard RawTCPFloor.writeAll(client, n == chunk.count ? chunk : Array(chunk.prefix(n))) else {
                throw ClusterError("floor: write to \(endpoint) failed")
            }
            left -= UInt64(n)
        }
        guard RawTCPFloor.readN(client, 1) != nil else { throw ClusterError("floor: no ack from \(endpoint)") }
        return Double(total) / 1048576 / (Double(monotonicNanoseconds() - t0) / 1e9)
    }

    public func close() {
        Glibc.shutdown(client, Int32(SHUT_RDWR))
        Glibc.close(client)
    }
}
