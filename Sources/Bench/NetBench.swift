// `giantvm net-bench`'s measurement: round-trip latency and one-way bandwidth between node 0 and
// every other node through the configured transport, beside a raw-TCP floor measured in the same
// run (a plain loopback socket pair in this process).

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

/// Answers benchmark frames on every node, and collects answers for the driver on node 0.
/// Threading: `handle` on receive threads (never blocks); waits on the driver's thread.
public final class NetBenchResponder: @unchecked Sendable {
    let node: Node
    let mon = Monitor()
    var lastPong: UInt64 = 0
    var received: [UInt32: (frames: UInt64, bytes: UInt64)] = [:]
    var done: (frames: UInt64, bytes: UInt64)?

    /// Registers the net-bench types on the control channel: before `node.start()`.
    public init(node: Node) {
        self.node = node
        node.register(channel: .control, types: [bPing, bPong, bData, bEnd, bDone]) { [weak self] from, p in
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
        default:
            break
        }
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
        let floor = try RawTCPFloor(roundTrips: roundTrips, megabytes: megabytes)
        let floorSmall = try floor.roundTrip(size: 64)
        let floorPage = try floor.roundTrip(size: 4096)
        let floorBW = try floor.bandwidth()
        floor.close()

        var lines: [String] = []
        lines.append("net-bench: cluster \(node.config.cluster), transport \(node.transportName), "
                     + "\(node.config.nodes.count) nodes, \(roundTrips) round trips per size, \(megabytes) MiB one way")
        lines.append("floor = the same exchange over a plain TCP loopback socket pair in this process (no giantvm transport)")
        lines.append(pad("pair", 18) + pad("what", 18) + pad("p50 us", 10) + pad("p99 us", 10) + pad("mean us", 10)
                     + pad("floor p50", 11) + pad("floor p99", 11))
        for p in node.peers {
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

/// The floor: a plain TCP socket pair over loopback (kernel-chosen port), an echo thread on one
/// end, TCP_NODELAY on both, the same sizes and counts as the measured run.
public final class RawTCPFloor {
    private let client: Int32
    private let server: Int32
    private var echo: OSThread?
    private let roundTrips: Int
    private let megabytes: Int

    public init(roundTrips: Int, megabytes: Int) throws {
        self.roundTrips = roundTrips
        self.megabytes = megabytes
        let lfd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard lfd >= 0 else { throw ClusterError("floor: socket: \(String(cString: strerror(errno)))") }
        defer { Glibc.close(lfd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(lfd, $0, len) == 0 && listen(lfd, 1) == 0 && getsockname(lfd, $0, &len) == 0
            }
        }
        guard ok else { throw ClusterError("floor: cannot listen on loopback: \(String(cString: strerror(errno)))") }
        let cfd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        let c = withUnsafePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(cfd, $0, len) }
        }
        guard c == 0 else { throw ClusterError("floor: connect: \(String(cString: strerror(errno)))") }
        client = cfd
        server = accept(lfd, nil, nil)
        guard server >= 0 else { throw ClusterError("floor: accept: \(String(cString: strerror(errno)))") }
        var one: Int32 = 1
        setsockopt(client, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(4))
        setsockopt(server, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(4))
        let s = server
        // Echo loop: u32 length + payload; length 0xFFFFFFFF = a bandwidth run of the next u64 bytes.
        echo = try OSThread(name: "floor-echo") {
            var buf = [UInt8](repeating: 0, count: 1 << 20)
            while true {
                guard let hdr = RawTCPFloor.readN(s, 4, &buf) else { return }
                let n = UInt32(hdr[0]) | UInt32(hdr[1]) << 8 | UInt32(hdr[2]) << 16 | UInt32(hdr[3]) << 24
                if n == UInt32.max {
                    guard let t = RawTCPFloor.readN(s, 8, &buf) else { return }
                    var total = t.enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
                    while total > 0 {
                        let r = buf.withUnsafeMutableBytes { read(s, $0.baseAddress!, min(Int(total), $0.count)) }
                        if r <= 0 { return }
                        total -= UInt64(r)
                    }
                    var ack: UInt8 = 1
                    _ = write(s, &ack, 1)
                    continue
                }
                guard let body = RawTCPFloor.readN(s, Int(n), &buf) else { return }
                guard RawTCPFloor.writeAll(s, hdr + body) else { return }
            }
        }
    }

    static func readN(_ fd: Int32, _ n: Int, _ scratch: inout [UInt8]) -> [UInt8]? {
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

    public func roundTrip(size: Int) throws -> NetBenchDriver.Latency {
        var h = Histogram<UInt64>(highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
        let msg = [UInt8(truncatingIfNeeded: size), UInt8(truncatingIfNeeded: size >> 8), 0, 0]
            + [UInt8](repeating: 0x5A, count: size)
        var scratch: [UInt8] = []
        let warmup = min(200, roundTrips)
        for i in 0..<(warmup + roundTrips) {
            let t0 = monotonicNanoseconds()
            guard RawTCPFloor.writeAll(client, msg), RawTCPFloor.readN(client, msg.count, &scratch) != nil else {
                throw ClusterError("floor: loopback echo failed")
            }
            if i >= warmup { _ = h.record(monotonicNanoseconds() - t0) }
        }
        return NetBenchDriver.Latency(p50: Double(h.valueAtPercentile(50)), p99: Double(h.valueAtPercentile(99)), mean: h.mean)
    }

    /// MiB/s for `megabytes` MiB written in 60 KiB writes, until the echo side has read them all.
    public func bandwidth() throws -> Double {
        let total = UInt64(megabytes) << 20
        var hdr: [UInt8] = [0xFF, 0xFF, 0xFF, 0xFF]
        for b in 0..<8 { hdr.append(UInt8(truncatingIfNeeded: total >> (8 * UInt64(b)))) }
        let chunk = [UInt8](repeating: 0xA5, count: 60 * 1024)
        let t0 = monotonicNanoseconds()
        guard RawTCPFloor.writeAll(client, hdr) else { throw ClusterError("floor: write failed") }
        var left = total
        while left > 0 {
            let n = Int(min(left, UInt64(chunk.count)))
            guard RawTCPFloor.writeAll(client, n == chunk.count ? chunk : Array(chunk.prefix(n))) else { throw ClusterError("floor: write failed") }
            left -= UInt64(n)
        }
        var scratch: [UInt8] = []
        guard RawTCPFloor.readN(client, 1, &scratch) != nil else { throw ClusterError("floor: no ack") }
        return Double(total) / 1048576 / (Double(monotonicNanoseconds() - t0) / 1e9)
    }

    public func close() {
        Glibc.shutdown(client, Int32(SHUT_RDWR))
        echo?.join()
        Glibc.close(client)
        Glibc.close(server)
    }
}
