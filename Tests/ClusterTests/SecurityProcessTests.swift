import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// An attacker on the path and a stranger holding connection slots, against real `giantvm node`
/// processes. Ports 17640-17669.
final class SecurityProcessTests: XCTestCase {
    override func setUpWithError() throws {
        try Paths.requireBinaries()
    }

    // MARK: a man in the middle

    /// Two nodes where node 0 reaches node 1 only through `proxy` (node 0's config names the
    /// proxy's port for node 1). Returns both nodes' outputs after they exit.
    private func runThroughProxy(_ attack: ManInTheMiddle.Attack, key: Bool, ports: (Int, Int, Int)) throws -> ProxyRun {
        let dir = try TempDir()
        let keyFile = key ? try dir.write("k", "mitm-test-key-0123456789abcdef\n") : nil
        let addrs = ["127.0.0.1", "127.0.0.1"]
        let cfg1 = try dir.write("n1.yaml", clusterYAML(addresses: addrs, ports: [ports.0, ports.1], keyFile: keyFile,
                                                       connect: "15s", failure: "3s"))
        let cfg0 = try dir.write("n0.yaml", clusterYAML(addresses: addrs, ports: [ports.0, ports.2], keyFile: keyFile,
                                                       connect: "15s", failure: "3s"))
        let proxy = try ManInTheMiddle(listenPort: ports.2, upstreamPort: ports.1, attack: attack)
        let n1 = try startNode(cfg1, id: 1, dir: dir, extra: ["--duration", "4"])
        let n0 = try startNode(cfg0, id: 0, dir: dir, extra: ["--duration", "4"])
        _ = n0.wait(timeout: 30)
        _ = n1.wait(timeout: 30)
        proxy.stop()
        return ProxyRun(dir: dir, proxy: proxy, n0: n0, n1: n1)
    }

    /// Keeps the temporary directory (and so the nodes' output files) alive with the nodes.
    struct ProxyRun {
        let dir: TempDir
        let proxy: ManInTheMiddle
        let n0: Child
        let n1: Child
    }

    /// The attacker injects a STOP (no key: it cannot compute a MAC) into node 0's authenticated
    /// stream to node 1: node 1 must refuse the frame and not stop as told.
    func testInjectedStopIsRefusedWithAKey() throws {
        let r = try runThroughProxy(.inject(ManInTheMiddle.forgedStop(origin: 0)), key: true,
                                ports: (17640, 17641, 17642))
        let (proxy, n0, n1) = (r.proxy, r.n0, r.n1)
        XCTAssertTrue(proxy.attacked, "the proxy never saw enough data frames to attack:\n\(n0.output)\n\(n1.output)")
        XCTAssertFalse(n1.output.contains("INJECTED-BY-PROXY"), "node 1 obeyed a forged STOP:\n\(n1.output)")
        XCTAssertFalse(n0.output.contains("INJECTED-BY-PROXY"), n0.output)
        XCTAssertTrue(n1.stderr.contains("from node 0 (lane 0) failed authentication"), n1.stderr)
        XCTAssertEqual(n1.wait(timeout: 0), 1, n1.output)
    }

    /// A frame recorded from the stream and sent again is refused.
    func testReplayedFrameIsRefusedWithAKey() throws {
        let r = try runThroughProxy(.replay, key: true, ports: (17643, 17644, 17645))
        let (proxy, n0, n1) = (r.proxy, r.n0, r.n1)
        XCTAssertTrue(proxy.attacked, "\(n0.output)\n\(n1.output)")
        XCTAssertTrue(n1.stderr.contains("from node 0 (lane 0) failed authentication"), n1.stderr)
        XCTAssertEqual(n1.wait(timeout: 0), 1, n1.output)
    }

    /// One flipped bit in a frame's payload is detected.
    func testModifiedFrameIsRefusedWithAKey() throws {
        let r = try runThroughProxy(.modify, key: true, ports: (17646, 17647, 17648))
        let (proxy, n0, n1) = (r.proxy, r.n0, r.n1)
        XCTAssertTrue(proxy.attacked, "\(n0.output)\n\(n1.output)")
        XCTAssertTrue(n1.stderr.contains("from node 0 (lane 0) failed authentication"), n1.stderr)
        XCTAssertEqual(n1.wait(timeout: 0), 1, n1.output)
    }

    /// Without a key nothing is authenticated, but a STOP claiming to have been decided by the
    /// receiver itself is still refused, and the cluster finishes its run.
    func testStopClaimingTheReceiverAsOriginIsRefusedWithoutAKey() throws {
        let r = try runThroughProxy(.inject(ManInTheMiddle.forgedStop(origin: 1)), key: false,
                                ports: (17649, 17650, 17651))
        let (proxy, n0, n1) = (r.proxy, r.n0, r.n1)
        XCTAssertTrue(proxy.attacked, "\(n0.output)\n\(n1.output)")
        XCTAssertTrue(n1.stderr.contains("refused a STOP from node 0 claiming to be decided by this node (node 1)"), n1.stderr)
        XCTAssertFalse(n1.output.contains("INJECTED-BY-PROXY"), n1.output)
        XCTAssertEqual(n1.wait(timeout: 0), 0, n1.output)
        XCTAssertEqual(n0.wait(timeout: 0), 0, n0.output)
    }

    /// Control: the proxy itself is transparent (a keyed cluster runs through it untouched).
    func testTransparentProxyChangesNothing() throws {
        let r = try runThroughProxy(.none, key: true, ports: (17652, 17653, 17654))
        let (proxy, n0, n1) = (r.proxy, r.n0, r.n1)
        XCTAssertGreaterThan(proxy.dataFrames, 10, "\(n0.output)\n\(n1.output)")
        XCTAssertEqual(n1.wait(timeout: 0), 0, n1.output)
        XCTAssertEqual(n0.wait(timeout: 0), 0, n0.output)
    }

    // MARK: pre-authentication slots

    /// Strangers open every handshake slot of every node and reopen each one the moment it is
    /// closed; a keyed three-node cluster still forms (its nodes' connections evict silent
    /// strangers) and finishes cleanly.
    func testStrangersHoldingEveryHandshakeSlotDoNotKeepPeersOut() throws {
        let dir = try TempDir()
        let key = try dir.write("k", "slot-test-key-0123456789abcdef\n")
        let ports = [17660, 17661, 17662]
        let cfg = try dir.write("c.yaml", clusterYAML(addresses: Array(repeating: "127.0.0.1", count: 3), ports: ports,
                                                     keyFile: key, connect: "15s",
                                                     transportSettings: ["max_pending_handshakes": "8"]))
        // Node 1 and 2 first, so the strangers can fill their slots before node 0 arrives.
        let n1 = try startNode(cfg, id: 1, dir: dir, extra: ["--duration", "3"])
        let n2 = try startNode(cfg, id: 2, dir: dir, extra: ["--duration", "3"])
        let squatter = SlotSquatter(ports: [ports[1], ports[2]], perPort: 8)
        defer { squatter.stop() }
        XCTAssertTrue(squatter.waitUntilFull(timeout: 10), "the strangers never held every slot")
        let n0 = try startNode(cfg, id: 0, dir: dir, extra: ["--duration", "3"])
        for (i, n) in [(0, n0), (1, n1), (2, n2)] {
            XCTAssertEqual(n.wait(timeout: 30), 0, "node \(i): \(n.output)")
            XCTAssertTrue(n.stdout.contains("node \(i): stopped cleanly"), n.output)
        }
        XCTAssertGreaterThan(squatter.reopened, 0, "the strangers were never pushed out")
        XCTAssertTrue(n1.stderr.contains("evicted an unauthenticated connection from 127.0.0.1"), n1.stderr)
    }

    /// A stranger address over its share of slots is refused with a verdict naming the cause.
    func testRefusedConnectionIsToldWhy() throws {
        let dir = try TempDir()
        let ports = [17663, 17664]
        // Node 0 is never started. Both slots are held by connections from node 0's address
        // that sent a hello and then stall in the handshake (not evictable), so a third
        // connection is refused, and told why.
        let cfg = try dir.write("c.yaml", clusterYAML(addresses: ["127.0.0.1", "127.0.0.1"], ports: ports, connect: "15s",
                                                     transportSettings: ["max_pending_handshakes": "2", "handshake_timeout": "10s"]))
        let n1 = try startNode(cfg, id: 1, dir: dir)
        var fd: Int32 = -1
        let t0 = clusterTestNow()
        while fd < 0 && clusterTestNow() - t0 < 10 { fd = connectLoopback(ports[1]); if fd < 0 { usleep(50_000) } }
        XCTAssertGreaterThanOrEqual(fd, 0, "node 1 never listened")
        close(fd)
        usleep(200_000)
        // Two connections that send a well-formed hello and then stall in the handshake.
        let nonce = [UInt8](repeating: 7, count: nonceSize)
        var stalled: [Int32] = []
        for lane in 0..<2 {
            let s = connectLoopback(ports[1])
            writeBytes(s, encodeFrame(kind: .hello, payload: Hello(lane: UInt8(lane), sender: 0, receiver: 1, nonce: nonce,
                                                                   cluster: "nettest").encode()))
            stalled.append(s)
        }
        defer { stalled.forEach { close($0) } }
        usleep(300_000)
        let third = connectLoopback(ports[1])
        let (reply, closed) = readUntilClosed(third, timeout: 3)
        close(third)
        XCTAssertTrue(closed)
        guard case let .frame(kind, payload, _) = parseFrame(reply), kind == .verdict else {
            return XCTFail("no verdict: \(reply)")
        }
        let (ok, why) = try decodeVerdict(Array(reply[payload])).get()
        XCTAssertFalse(ok)
        XCTAssertTrue(why.contains("node 1 refused the connection: too many unauthenticated connections in progress (max_pending_handshakes 2)"), why)
        XCTAssertTrue(n1.running, n1.output)
        n1.killNow()
    }
}

// MARK: - the attacker

/// A TCP proxy on loopback that forwards node 0's connections to node 1 and, after the handshake,
/// attacks the urgent lane's stream from node 0 once: injects a frame, replays one, or flips a bit.
final class ManInTheMiddle: @unchecked Sendable {
    enum Attack {
        case none
        case inject([UInt8])
        case replay
        case modify
    }

    /// A well-formed STOP (control channel, type 0x01) with a random 16-byte "MAC".
    static func forgedStop(origin: UInt32) -> [UInt8] {
        var p: [UInt8] = [0, 1, 0, 0, 0x01]
        func u32(_ v: UInt32) { for i in 0..<4 { p.append(UInt8(truncatingIfNeeded: v >> (8 * UInt32(i)))) } }
        u32(0)            // status 0: a clean stop
        u32(origin)
        u32(UInt32.max)   // no lost node
        let text = Array("INJECTED-BY-PROXY".utf8)
        u32(UInt32(text.count))
        p += text
        p += (0..<16).map { _ in UInt8.random(in: 0...255) }
        return encodeFrame(kind: .data, payload: p)
    }

    private let attack: Attack
    private let listenFD: Int32
    private let upstreamPort: Int
    private let lock = NSLock()
    private var done = false
    private var fds: [Int32] = []
    private var threads: [Thread] = []
    private var _attacked = false
    private var _dataFrames = 0
    private var lanesSeen = 0

    var attacked: Bool { lock.withLock { _attacked } }
    var dataFrames: Int { lock.withLock { _dataFrames } }

    init(listenPort: Int, upstreamPort: Int, attack: Attack) throws {
        self.attack = attack
        self.upstreamPort = upstreamPort
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = in_port_t(UInt16(listenPort).bigEndian)
        let rc = withUnsafePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0, listen(fd, 16) == 0 else { close(fd); throw XCTSkip("proxy cannot listen on \(listenPort)") }
        listenFD = fd
        spawn { [self] in acceptLoop() }
    }

    private func spawn(_ body: @escaping @Sendable () -> Void) {
        let t = Thread(block: body)
        lock.withLock { threads.append(t) }
        t.start()
    }

    func stop() {
        let all: [Int32] = lock.withLock { done = true; return fds }
        shutdown(listenFD, Int32(SHUT_RDWR))
        for fd in all { shutdown(fd, Int32(SHUT_RDWR)) }
        usleep(200_000)
    }

    deinit {
        close(listenFD)
        for fd in fds { close(fd) }
    }

    private func acceptLoop() {
        while !lock.withLock({ done }) {
            let c = accept(listenFD, nil, nil)
            if c < 0 { if lock.withLock({ done }) { return }; continue }
            var u: Int32 = -1
            let t0 = clusterTestNow()
            while u < 0 && clusterTestNow() - t0 < 10 { u = connectLoopback(upstreamPort); if u < 0 { usleep(50_000) } }
            guard u >= 0 else { close(c); continue }
            let up = u
            lock.withLock { fds += [c, up] }
            spawn { [self] in pumpFrames(from: c, to: up) }
            spawn { [self] in pumpBytes(from: up, to: c) }
        }
    }

    private func pumpBytes(from a: Int32, to b: Int32) {
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buf.withUnsafeMutableBytes { read(a, $0.baseAddress, $0.count) }
            if n <= 0 { shutdown(b, Int32(SHUT_WR)); return }
            writeBytes(b, Array(buf[0..<n]))
        }
    }

    /// Forwards whole frames from node 0, attacking the stream once after 5 data frames.
    private func pumpFrames(from a: Int32, to b: Int32) {
        var pending: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        var lane = -1
        var data = 0
        var last: [UInt8] = []
        while true {
            let n = buf.withUnsafeMutableBytes { read(a, $0.baseAddress, $0.count) }
            if n <= 0 { shutdown(b, Int32(SHUT_WR)); return }
            pending += buf[0..<n]
            while case let .frame(kind, payload, end) = parseFrame(pending, maxPayload: 1 << 20) {
                var frame = Array(pending[0..<end])
                pending.removeFirst(end)
                if kind == .hello, case let .success(h) = Hello.decode(Array(frame[payload])) { lane = Int(h.lane) }
                if kind == .data {
                    data += 1
                    lock.withLock { _dataFrames += 1 }
                    if lane == 0 && data == 5 {
                        switch attack {
                        case .none: break
                        case let .inject(forged):
                            writeBytes(b, forged)
                            lock.withLock { _attacked = true }
                        case .replay:
                            writeBytes(b, frame)
                            frame = last.isEmpty ? frame : last
                            lock.withLock { _attacked = true }
                        case .modify:
                            frame[payload.lowerBound + 4] ^= 0x01   // the first byte after the channel header
                            lock.withLock { _attacked = true }
                        }
                    }
                    last = frame
                }
                writeBytes(b, frame)
            }
        }
    }
}

/// Strangers that keep `perPort` silent connections open to each port, reopening each one as
/// soon as the node closes it.
final class SlotSquatter: @unchecked Sendable {
    private let lock = NSLock()
    private var done = false
    private var open = 0
    private var _reopened = 0
    private let total: Int
    var reopened: Int { lock.withLock { _reopened } }

    init(ports: [Int], perPort: Int) {
        total = ports.count * perPort
        for port in ports {
            for _ in 0..<perPort {
                Thread { [self] in hold(port) }.start()
            }
        }
    }

    private func hold(_ port: Int) {
        var first = true
        while !lock.withLock({ done }) {
            let fd = connectLoopback(port)
            if fd < 0 { usleep(20_000); continue }
            lock.withLock { open += 1; if !first { _reopened += 1 } }
            first = false
            // Silent until the node closes it (eviction or handshake timeout), or the test ends.
            while !lock.withLock({ done }) {
                var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                if poll(&p, 1, 50) > 0 { break }
            }
            close(fd)
            lock.withLock { open -= 1 }
        }
    }

    func waitUntilFull(timeout: Double) -> Bool {
        let deadline = clusterTestNow() + timeout
        while clusterTestNow() < deadline {
            if lock.withLock({ open >= total }) { usleep(300_000); return true }
            usleep(20_000)
        }
        return false
    }

    func stop() {
        lock.withLock { done = true }
        usleep(150_000)
    }
}
