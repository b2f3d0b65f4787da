import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// Multi-process tests: every node is a `giantvm node` process (or `giantvm up` starts them).
/// Ports 17200-17299 (this area's range), network namespaces gvm-net-*.
final class ClusterProcessTests: XCTestCase {
    static let exchanged = "test frames exchanged with every peer on every channel (control, coherence, cpu, io, heartbeat): 10 sent and answered, 10 received"
    let failureSeconds = 1.5

    override func setUpWithError() throws {
        try Paths.requireBinaries()
    }

    // MARK: meeting

    func testUpStartsThreeNodesThatMeetExchangeOnEveryChannelAndStopCleanly() throws {
        let dir = try TempDir()
        let key = try dir.write("cluster.key", "up-test-key-0123456789abcdef\n")
        let cfg = try dir.write("c.yaml", clusterYAML(addresses: Array(repeating: "127.0.0.1", count: 3),
                                                     ports: [17200, 17201, 17202], keyFile: key))
        let up = try Child(name: "up", executable: Paths.giantvm, arguments: ["up", cfg, "--duration", "2"], dir: dir)
        XCTAssertEqual(up.wait(timeout: 40), 0, up.output)
        let out = up.stdout
        for i in 0..<3 {
            let others = (0..<3).filter { $0 != i }.map { "node \($0)" }.joined(separator: ", ")
            XCTAssertTrue(out.contains("[node \(i)] node \(i): met \(others) over transport-tcp"), out)
            XCTAssertTrue(out.contains("[node \(i)] node \(i): \(Self.exchanged)"), out)
            XCTAssertTrue(out.contains("[node \(i)] node \(i): stopped cleanly:"), out)
        }
        XCTAssertTrue(out.contains("[up] all 3 nodes stopped cleanly"), out)
        XCTAssertFalse(up.stderr.contains("error"), up.stderr)
    }

    func testThreeNodesInTheirOwnNetworkNamespacesMeet() throws {
        let lab = try NamespaceLab(tag: "a", subnet: 41)
        defer { lab.teardown() }
        let dir = try TempDir()
        let cfg = try dir.write("c.yaml", clusterYAML(addresses: (0..<3).map(lab.address), ports: [17210, 17210, 17210]))
        let nodes = try (0..<3).map { try startNode(cfg, id: $0, dir: dir, netns: lab.names[$0], extra: ["--duration", "2"]) }
        for (i, n) in nodes.enumerated() {
            XCTAssertEqual(n.wait(timeout: 30), 0, n.output)
            XCTAssertTrue(n.stdout.contains("node \(i): \(Self.exchanged)"), n.output)
            XCTAssertTrue(n.stdout.contains("node \(i): stopped cleanly"), n.output)
        }
    }

    func testANodeThatNeverStartsIsNamedAfterTheConnectTimeout() throws {
        let dir = try TempDir()
        let cfg = try dir.write("c.yaml", clusterYAML(addresses: Array(repeating: "127.0.0.1", count: 3),
                                                     ports: [17220, 17221, 17222], connect: "2s"))
        let nodes = try (0..<2).map { try startNode(cfg, id: $0, dir: dir) }
        for (i, n) in nodes.enumerated() {
            XCTAssertEqual(n.wait(timeout: 20), 1, n.output)
            XCTAssertTrue(n.stderr.contains("giantvm: error: node \(i): "), n.stderr)
            XCTAssertTrue(n.stderr.contains("node 2 (127.0.0.1:17222)"), n.stderr)
        }
    }

    func testBadTransportSettingsAreAClearError() throws {
        let dir = try TempDir()
        let cfg = try dir.write("c.yaml", clusterYAML(addresses: ["127.0.0.1", "127.0.0.1"], ports: [17287, 17288],
                                                     transportSettings: ["connect_timeout": "soon"]))
        let n = try startNode(cfg, id: 0, dir: dir)
        XCTAssertEqual(n.wait(timeout: 10), 1, n.output)
        XCTAssertTrue(n.stderr.contains("giantvm: error: node 0: \(cfg): transport.settings: transport-tcp refused its settings: setting 'connect_timeout': 'soon' is not a duration (e.g. 500ms, 10s)"), n.stderr)
        let cfg2 = try dir.write("d.yaml", clusterYAML(addresses: ["127.0.0.1", "127.0.0.1"], ports: [17287, 17288],
                                                      transportSettings: ["colour": "red"]))
        let n2 = try startNode(cfg2, id: 1, dir: dir)
        XCTAssertEqual(n2.wait(timeout: 10), 1, n2.output)
        XCTAssertTrue(n2.stderr.contains("unknown setting 'colour' (accepted: connect_timeout, handshake_timeout, listen_address, max_pending_handshakes, nodelay, retry_interval, send_queue_limit)"), n2.stderr)
        XCTAssertFalse(n.output.contains("crashed") || n2.output.contains("crashed"))
    }

    // MARK: failure detection

    /// Starts 3 nodes (no duration) and waits until each has exchanged test frames.
    private func startMetCluster(_ dir: TempDir, ports: [Int], lab: NamespaceLab? = nil) throws -> [Child] {
        let addresses = lab.map { l in (0..<3).map(l.address) } ?? Array(repeating: "127.0.0.1", count: 3)
        let cfg = try dir.write("c.yaml", clusterYAML(addresses: addresses, ports: ports))
        let nodes = try (0..<3).map { try startNode(cfg, id: $0, dir: dir, netns: lab?.names[$0]) }
        for (i, n) in nodes.enumerated() {
            XCTAssertTrue(n.waitForOutput("node \(i): \(Self.exchanged)", timeout: 20), n.output)
        }
        return nodes
    }

    /// Every node but `lost` must exit non-zero, naming `lost`, within failure + slack seconds.
    private func assertOthersStopNaming(_ lost: Int, _ nodes: [Child], since t0: Double, slack: Double = 1.5,
                                        file: StaticString = #filePath, line: UInt = #line) {
        for (i, n) in nodes.enumerated() where i != lost {
            let status = n.wait(timeout: failureSeconds + 10)
            let elapsed = clusterTestNow() - t0
            XCTAssertEqual(status, 1, "node \(i): \(n.output)", file: file, line: line)
            XCTAssertTrue(n.stderr.contains("giantvm: error: node \(i): "), n.stderr, file: file, line: line)
            XCTAssertTrue(n.stderr.contains("lost node \(lost)"), "node \(i) does not name node \(lost): \(n.stderr)",
                          file: file, line: line)
            XCTAssertLessThanOrEqual(elapsed, failureSeconds + slack, "node \(i) took \(elapsed) s: \(n.stderr)", file: file, line: line)
            XCTAssertFalse(n.output.contains("Fatal error"), n.output, file: file, line: line)
        }
    }

    func testKilledNodeStopsEveryOtherNodeNamingIt() throws {
        let dir = try TempDir()
        let nodes = try startMetCluster(dir, ports: [17230, 17231, 17232])
        kill(nodes[2].pid, SIGKILL)
        let t0 = clusterTestNow()
        assertOthersStopNaming(2, nodes, since: t0)
    }

    func testStoppedNodeIsDetectedByHeartbeatsAndNamed() throws {
        let dir = try TempDir()
        let nodes = try startMetCluster(dir, ports: [17240, 17241, 17242])
        kill(nodes[1].pid, SIGSTOP)
        let t0 = clusterTestNow()
        assertOthersStopNaming(1, nodes, since: t0)
        for i in [0, 2] { XCTAssertTrue(nodes[i].stderr.contains("no heartbeat") || nodes[i].stderr.contains("node 1"), nodes[i].stderr) }
        nodes[1].killNow()
    }

    func testLinkDownInANamespaceStopsEveryOtherNodeNamingIt() throws {
        let lab = try NamespaceLab(tag: "b", subnet: 42)
        defer { lab.teardown() }
        let dir = try TempDir()
        let nodes = try startMetCluster(dir, ports: [17250, 17250, 17250], lab: lab)
        let (rc, out) = lab.linkDown(2)
        XCTAssertEqual(rc, 0, out)
        let t0 = clusterTestNow()
        assertOthersStopNaming(2, nodes, since: t0)
        // The cut-off node stops too, naming a node it lost.
        XCTAssertEqual(nodes[2].wait(timeout: failureSeconds + 10), 1, nodes[2].output)
        XCTAssertTrue(nodes[2].stderr.contains("lost node 0") || nodes[2].stderr.contains("lost node 1"), nodes[2].stderr)
    }

    func testUpExitsNonZeroWhenANodeIsKilled() throws {
        let dir = try TempDir()
        let cfg = try dir.write("c.yaml", clusterYAML(addresses: Array(repeating: "127.0.0.1", count: 3),
                                                     ports: [17260, 17261, 17262]))
        let up = try Child(name: "up", executable: Paths.giantvm, arguments: ["up", cfg], dir: dir)
        XCTAssertTrue(up.waitForOutput("[node 2] node 2: \(Self.exchanged)", timeout: 20), up.output)
        // Find node 1's process: a child of `up` whose command line says --id 1.
        guard let pid = childProcess(of: up.pid, argumentsContain: ["node", "--id", "1"]) else {
            return XCTFail("no node 1 process under up (pid \(up.pid))")
        }
        kill(pid, SIGKILL)
        XCTAssertEqual(up.wait(timeout: 20), 1, up.output)
        XCTAssertTrue(up.stderr.contains("[up] node 1 was killed by signal 9"), up.stderr)
        XCTAssertTrue(up.stderr.contains("[node 0] giantvm: error: node 0: "), up.stderr)
        XCTAssertTrue(up.stderr.contains("lost node 1"), up.stderr)
    }

    // MARK: hostile input

    func testGarbageTruncatedOversizedAndHalfOpenConnectionsDoNotHurtTheCluster() throws {
        let dir = try TempDir()
        let ports = [17270, 17271, 17272]
        let cfg = try dir.write("c.yaml", clusterYAML(addresses: Array(repeating: "127.0.0.1", count: 3), ports: ports,
                                                     connect: "20s", transportSettings: ["handshake_timeout": "1s"]))
        let n1 = try startNode(cfg, id: 1, dir: dir, extra: ["--duration", "6"])
        var fd: Int32 = -1
        let t0 = clusterTestNow()
        while fd < 0 && clusterTestNow() - t0 < 10 { fd = connectLoopback(ports[1]); if fd < 0 { usleep(50_000) } }
        XCTAssertGreaterThanOrEqual(fd, 0, "node 1 never listened")
        close(fd)

        // Half-open connections: connect and say nothing (one stays open while the cluster meets).
        let halfOpen = (0..<3).map { _ in connectLoopback(ports[1]) }
        defer { halfOpen.forEach { close($0) } }

        // Garbage.
        let g = connectLoopback(ports[1])
        writeBytes(g, Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
        XCTAssertTrue(readUntilClosed(g, timeout: 3).closed, "garbage connection not closed")
        close(g)
        // Oversized frame header.
        let o = connectLoopback(ports[1])
        writeBytes(o, encodeFrameHeader(kind: .hello, length: 1 << 20))
        XCTAssertTrue(readUntilClosed(o, timeout: 3).closed, "oversized connection not closed")
        close(o)
        // Truncated hello: header promises 60 bytes, 10 arrive, then the sender half-closes.
        let t = connectLoopback(ports[1])
        writeBytes(t, encodeFrameHeader(kind: .hello, length: 60) + [UInt8](repeating: 0x41, count: 10))
        shutdown(t, Int32(SHUT_WR))
        XCTAssertTrue(readUntilClosed(t, timeout: 3).closed, "truncated connection not closed")
        close(t)
        // A well-formed hello from the wrong cluster, and one claiming a higher node id.
        let nonce = [UInt8](repeating: 1, count: nonceSize)
        let w = connectLoopback(ports[1])
        writeBytes(w, encodeFrame(kind: .hello, payload: Hello(lane: 0, sender: 0, receiver: 1, nonce: nonce, cluster: "evil").encode())
                   + encodeFrame(kind: .proof, payload: encodeProof([])))
        let (reply, closed) = readUntilClosed(w, timeout: 3)
        XCTAssertTrue(closed)
        // Node 1 answered with its hello, then a refusing verdict, then closed.
        guard case let .frame(k1, _, end1) = parseFrame(reply), k1 == .hello,
              case let .frame(k2, p2, _) = parseFrame(Array(reply[end1...])), k2 == .verdict else {
            return XCTFail("unexpected reply \(reply)")
        }
        let rest = Array(reply[end1...])
        let verdict = try decodeVerdict(Array(rest[p2])).get()
        XCTAssertFalse(verdict.0)
        close(w)
        let h = connectLoopback(ports[1])
        writeBytes(h, encodeFrame(kind: .hello, payload: Hello(lane: 0, sender: 2, receiver: 1, nonce: nonce, cluster: "nettest").encode()))
        XCTAssertTrue(readUntilClosed(h, timeout: 3).closed)
        close(h)

        // A burst of 60 connections of random bytes (a port scan): each is closed, none sticks.
        var rng = SystemRandomNumberGenerator()
        let burst = (0..<60).map { _ in connectLoopback(ports[1]) }
        for fd in burst { writeBytes(fd, (0..<64).map { _ in UInt8.random(in: 0...255, using: &rng) }) }
        for fd in burst { XCTAssertTrue(readUntilClosed(fd, timeout: 5).closed); close(fd) }

        XCTAssertTrue(n1.running, "node 1 died: \(n1.output)")
        let err = n1.stderr
        XCTAssertTrue(err.contains("bad frame magic"), err)
        XCTAssertTrue(err.contains("oversized frame: 1048576 bytes (limit 1024)"), err)
        XCTAssertTrue(err.contains("truncated hello frame"), err)
        XCTAssertTrue(err.contains("claimed node id 2 is not a lower-numbered node of this cluster"), err)
        XCTAssertTrue(err.contains("it belongs to cluster 'evil', this is cluster 'nettest'"), err)

        // The cluster still forms and works, with one half-open connection still open.
        let n0 = try startNode(cfg, id: 0, dir: dir, extra: ["--duration", "6"])
        let n2 = try startNode(cfg, id: 2, dir: dir, extra: ["--duration", "6"])
        for (i, n) in [(0, n0), (1, n1), (2, n2)] {
            XCTAssertTrue(n.waitForOutput("node \(i): \(Self.exchanged)", timeout: 20), n.output)
        }
        // More garbage while it runs, and a duplicate claim of node 0's urgent lane.
        let g2 = connectLoopback(ports[2])
        writeBytes(g2, [UInt8](repeating: 0xFF, count: 4096))
        XCTAssertTrue(readUntilClosed(g2, timeout: 3).closed)
        close(g2)
        for (i, n) in [(0, n0), (1, n1), (2, n2)] {
            XCTAssertEqual(n.wait(timeout: 25), 0, "node \(i): \(n.output)")
            XCTAssertTrue(n.stdout.contains("node \(i): stopped cleanly"), n.output)
            XCTAssertFalse(n.output.contains("Fatal error"), n.output)
        }
    }

    // MARK: fault injection through the config

    func testConfiguredFaultInjectionDropsTheChosenMessages() throws {
        let dir = try TempDir()
        // Drop node 0's test ping (type 0xE0) on the io channel to node 1, nothing else.
        let faults = "rules:\n  - {channel: io, type: 0xE0, from: 0, to: 1, action: drop}"
        let cfg = try dir.write("c.yaml", clusterYAML(addresses: ["127.0.0.1", "127.0.0.1"], ports: [17285, 17286],
                                                     faults: faults))
        let nodes = try (0..<2).map { try startNode(cfg, id: $0, dir: dir) }
        for n in nodes { XCTAssertEqual(n.wait(timeout: 20), 1, n.output) }
        XCTAssertTrue(nodes[0].stderr.contains("fault injection on: 1 rule(s), seed 1"), nodes[0].stderr)
        // Node 0 got no answer on io; node 1 got no ping on io; every other channel worked.
        XCTAssertTrue(nodes[0].stderr.contains("giantvm: error: node 0: test exchange failed: no test exchange on io with node 1")
                      || nodes[0].stderr.contains("node 1 failed: test exchange failed: no test exchange on io with node 0"),
                      nodes[0].stderr)
        XCTAssertTrue(nodes[1].stderr.contains("no test exchange on io with node 0")
                      || nodes[1].stderr.contains("node 0 failed: test exchange failed: no test exchange on io with node 1"),
                      nodes[1].stderr)
    }

    // MARK: authentication

    func testUnauthenticatedWrongKeyAndWrongClusterPeersAreRefused() throws {
        let dir = try TempDir()
        let key = try dir.write("k1", "the-right-key-0123456789abcdef\n")
        let otherKey = try dir.write("k2", "the-wrong-key-0123456789abcdef\n")
        let addrs = ["127.0.0.1", "127.0.0.1"]
        let ports = [17280, 17281]
        let good = try dir.write("good.yaml", clusterYAML(addresses: addrs, ports: ports, keyFile: key, connect: "20s"))
        let cases: [(String, String, String)] = [
            ("nokey.yaml", clusterYAML(addresses: addrs, ports: ports, connect: "3s"),
             "refused node 0: unauthenticated"),
            ("wrongkey.yaml", clusterYAML(addresses: addrs, ports: ports, keyFile: otherKey, connect: "3s"),
             "refused node 0: wrong key"),
            ("wrongcluster.yaml", clusterYAML(name: "other", addresses: addrs, ports: ports, keyFile: key, connect: "3s"),
             "it belongs to cluster 'other', this is cluster 'nettest'"),
        ]
        let n1 = try startNode(good, id: 1, dir: dir)
        for (name, yaml, logged) in cases {
            let cfg = try dir.write(name, yaml)
            let intruder = try startNode(cfg, id: 0, dir: dir)
            XCTAssertEqual(intruder.wait(timeout: 15), 1, "\(name): \(intruder.output)")
            XCTAssertTrue(intruder.stderr.contains("node 1 refused this node"), "\(name): \(intruder.stderr)")
            XCTAssertTrue(intruder.stderr.contains("giantvm: error: node 0: node 1 (127.0.0.1:17281)"), "\(name): \(intruder.stderr)")
            XCTAssertTrue(n1.waitForOutput(logged, timeout: 5), "\(name): \(n1.stderr)")
            XCTAssertTrue(n1.running, "\(name): node 1 died: \(n1.output)")
        }
        // The real node 0 with the key is still accepted afterwards.
        let n0 = try startNode(good, id: 0, dir: dir, extra: ["--duration", "1"])
        XCTAssertEqual(n0.wait(timeout: 20), 0, n0.output)
        XCTAssertEqual(n1.wait(timeout: 10), 0, n1.output)
        XCTAssertTrue(n1.stdout.contains("node 1: \(Self.exchanged.replacingOccurrences(of: "10", with: "5"))"), n1.output)
    }
}
