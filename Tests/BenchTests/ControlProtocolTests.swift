// The control protocols of the cluster tools, over real `Node`s joined by the in-memory transport:
// no binary, no sockets (except net-bench's own loopback floor), no KVM.

import Bench
import Cluster
import Config
import DsmWorkloads
import Foundation
import Logging
import Metrics
import XCTest

final class ControlProtocolTests: XCTestCase {
    /// Endpoints hold their network weakly: the test keeps it.
    var network: InMemoryNetwork?
    func config(nodes: Int) throws -> ClusterConfig {
        var yaml = "cluster: benchtest\nnodes:\n"
        for i in 0..<nodes { yaml += "  - {id: \(i), address: 127.0.0.1, port: \(21900 + i)}\n" }
        yaml += "memory: 4MiB\ntransport: {plugin: transport-tcp}\ncoherence: {plugin: dsm-ivy}\n"
        yaml += "timeouts: {connect: 5s, heartbeat: 100ms, failure: 3s}\n"
        return try ConfigLoader.parse(yaml: yaml, path: "benchtest.yaml")
    }

    /// Builds `count` nodes over one in-memory network; `wire` registers handlers before start.
    func cluster<T>(_ count: Int, wire: (Node) -> T) throws -> (nodes: [Node], parts: [T]) {
        let cfg = try config(nodes: count)
        let net = InMemoryNetwork(nodeCount: count)
        network = net
        var logger = Logger(label: "benchtest")
        logger.logLevel = .error
        let nodes = try (0..<count).map { id in
            try Node(config: cfg, id: UInt32(id), logger: logger) { net.endpoint(UInt32(id), events: $0) }
        }
        let parts = nodes.map(wire)
        let group = DispatchGroup()
        let errors = LockedErrors()
        for n in nodes {
            group.enter()
            Thread { do { try n.start() } catch { errors.add(error) }; group.leave() }.start()
        }
        XCTAssertEqual(group.wait(timeout: .now() + 10), .success)
        XCTAssertTrue(errors.all.isEmpty, "\(errors.all)")
        return (nodes, parts)
    }

    func stopAll(_ nodes: [Node]) {
        nodes[0].stop(reason: "test finished")
        for n in nodes { _ = n.waitUntilStopped() }
    }

    func testChannelProbeExchangesOnEveryChannelWithEveryPeer() throws {
        let (nodes, probes) = try cluster(3) { ChannelProbe(node: $0) }
        defer { stopAll(nodes) }
        let results = LockedErrors()
        let group = DispatchGroup()
        for p in probes {
            group.enter()
            Thread {
                switch p.exchange(timeout: 5) {
                case .success(let s): results.addText(s)
                case .failure(let e): results.add(e)
                }
                group.leave()
            }.start()
        }
        XCTAssertEqual(group.wait(timeout: .now() + 10), .success)
        XCTAssertTrue(results.all.isEmpty, "\(results.all)")
        // 5 channels x 2 peers each way.
        XCTAssertEqual(results.texts.count, 3)
        XCTAssertTrue(results.texts.allSatisfy { $0.contains("10 sent and answered, 10 received") }, "\(results.texts)")
    }

    func testChannelProbeFailsNamingTheSilentChannelAndPeer() throws {
        // Node 1 has no probe: node 0's pings go unanswered.
        let (nodes, probes) = try cluster(2) { $0.id == 0 ? ChannelProbe(node: $0) : nil }
        defer { stopAll(nodes) }
        guard case let .failure(e) = probes[0]!.exchange(timeout: 0.5) else { return XCTFail("the exchange should fail") }
        XCTAssertTrue("\(e)".contains("control with node 1"), "\(e)")
    }

    func testBenchControlRoundTripsAndFinishedAgreement() throws {
        let (nodes, controls) = try cluster(3) { BenchControl(node: $0, nodes: 3) }
        defer { stopAll(nodes) }
        let rtt = try controls[0].roundTrips(to: 1, count: 50, size: 4096)
        XCTAssertEqual(rtt.count, 50)
        XCTAssertGreaterThan(rtt.p50, 0)
        // Nobody passes `finished` before every node arrived.
        let passed = LockedErrors()
        let group = DispatchGroup()
        for (i, c) in controls.enumerated() where i > 0 {
            group.enter()
            Thread { c.finished(10); passed.addText("\(i)"); group.leave() }.start()
        }
        usleep(200_000)
        XCTAssertTrue(passed.texts.isEmpty, "nodes 1 and 2 must wait for node 0")
        controls[0].finished(10)
        XCTAssertEqual(group.wait(timeout: .now() + 10), .success)
        XCTAssertEqual(Set(passed.texts), ["1", "2"])
    }

    func testFinishedReturnsWhenTheNodeStops() throws {
        let (nodes, controls) = try cluster(2) { BenchControl(node: $0, nodes: 2) }
        let t0 = Date()
        Thread { usleep(200_000); nodes[1].stop(reason: "peer gone") }.start()
        controls[0].finished(30)
        XCTAssertLessThan(Date().timeIntervalSince(t0), 10)
        stopAll(nodes)
    }

    func testNetBenchMeasuresEveryPeerBesideTheFloor() throws {
        let (nodes, responders) = try cluster(2) { NetBenchResponder(node: $0) }
        defer { stopAll(nodes) }
        let report = try NetBenchDriver(node: nodes[0], responder: responders[0], roundTrips: 20, megabytes: 1).run()
        XCTAssertTrue(report.contains("node 0 <-> 1"), report)
        XCTAssertTrue(report.contains("64 B, urgent") && report.contains("4 KiB, bulk"), report)
        XCTAssertTrue(report.contains("bandwidth") && report.contains("floor"), report)
    }
}

final class LockedErrors: @unchecked Sendable {
    private let lock = NSLock()
    private var errors: [Error] = []
    private var strings: [String] = []
    func add(_ e: Error) { lock.withLock { errors.append(e) } }
    func addText(_ s: String) { lock.withLock { strings.append(s) } }
    var all: [Error] { lock.withLock { errors } }
    var texts: [String] { lock.withLock { strings } }
}
