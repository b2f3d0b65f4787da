// The control protocols of the cluster tools, over real `Node`s joined by the in-memory transport:
// no binary, no KVM; sockets only for net-bench's raw-TCP floor (to the peer's listener) and
// userfaultfd for bench dsm's read-miss floor.

import Bench
import Cluster
import Config
import DsmWorkloads
import Foundation
import Logging
import Metrics
import TestSupport
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
        // The floor ran over a plain TCP connection to node 1's own listener (its configured
        // address), not a socket pair inside node 0.
        XCTAssertTrue(report.contains("node 0 <-> 1      floor over TCP to 127.0.0.1:"), report)
        let deadline = Date().addingTimeInterval(5)
        while responders[1].floorConnectionsServed == 0 && Date() < deadline { usleep(10_000) }
        XCTAssertEqual(responders[1].floorConnectionsServed, 1)
        XCTAssertEqual(responders[0].floorConnectionsServed, 0)
    }

    func testNetBenchFloorFailsNamingAPeerThatCannotListen() throws {
        // Node 1's configured address is not one of this machine's: its listener cannot bind.
        var yaml = "cluster: benchtest\nnodes:\n  - {id: 0, address: 127.0.0.1, port: 21950}\n"
        yaml += "  - {id: 1, address: 192.0.2.1, port: 21951}\n"
        yaml += "memory: 4MiB\ntransport: {plugin: transport-tcp}\ncoherence: {plugin: dsm-ivy}\n"
        let cfg = try ConfigLoader.parse(yaml: yaml, path: "benchtest.yaml")
        let net = InMemoryNetwork(nodeCount: 2)
        network = net
        var logger = Logger(label: "benchtest")
        logger.logLevel = .error
        let nodes = try (0..<2).map { id in try Node(config: cfg, id: UInt32(id), logger: logger) { net.endpoint(UInt32(id), events: $0) } }
        let responders = nodes.map { NetBenchResponder(node: $0) }
        let group = DispatchGroup()
        for n in nodes { group.enter(); Thread { try? n.start(); group.leave() }.start() }
        XCTAssertEqual(group.wait(timeout: .now() + 10), .success)
        defer { stopAll(nodes) }
        XCTAssertThrowsError(try NetBenchDriver(node: nodes[0], responder: responders[0], roundTrips: 10, megabytes: 1).run()) {
            XCTAssertTrue("\($0)".contains("floor: node 1 cannot listen: node 1: floor: cannot listen on 192.0.2.1"), "\($0)")
        }
    }

    /// bench dsm's floor between two nodes: a userfaultfd read fault answered by the peer's 4 KiB
    /// reply, timed by the faulting thread; a peer that does not answer fails the sample (the
    /// thread is released, never left stopped on the page).
    func testReadMissFloorRoundTripsToThePeerAndFailsWithoutIt() throws {
        try Requirement.userfaultfd()
        let (nodes, floors) = try cluster(3) { $0.id == 2 ? nil : ReadMissFloor(node: $0) }
        defer { stopAll(nodes) }
        defer { for f in floors { f?.close() } }
        try floors[0]!.prepare(peer: 1, wakeMode: .poll)
        let samples = try floors[0]!.samples(50, warmup: 5)
        XCTAssertEqual(samples.count, 50)
        XCTAssertTrue(samples.allSatisfy { $0 > 0 })
        let silent = try XCTUnwrap(floors[1])
        try silent.prepare(peer: 2, wakeMode: .spin(nanoseconds: 50_000))
        let t0 = Date()
        XCTAssertThrowsError(try silent.sample()) { XCTAssertEqual("\($0)", "no floor reply from node 2 within 5 s") }
        XCTAssertLessThan(Date().timeIntervalSince(t0), 8)
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
