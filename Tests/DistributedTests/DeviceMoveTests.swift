// Moving a device's home (DeviceMove.swift) between three Nodes on the in-memory transport (no
// plugin, no KVM): node 2 homes a one-byte register at port 0x500 and moves it to node 0; the new
// instance has the state, node 1 reroutes and reaches it there, node 0 answers locally, an access
// still reaching node 2 is passed on, and a refused load leaves every route as it was.

import Cluster
import Config
import Foundation
import Logging
import Metrics
@testable import Distributed
@testable import Machine
import XCTest

/// A one-byte register; counts its accesses.
final class ByteRegister: IODevice, @unchecked Sendable {
    let name: String
    let lock = NSLock()
    var value: UInt8
    var accesses = 0
    init(_ name: String, _ value: UInt8 = 0) { self.name = name; self.value = value }
    func io(space: IOSpaceKind, offset: UInt64, data: UnsafeMutableRawBufferPointer, isWrite: Bool) {
        lock.withLock {
            accesses += 1
            if isWrite { value = data[0] } else { data[0] = value; for i in 1..<data.count { data[i] = 0 } }
        }
    }
}

final class DeviceMoveTests: XCTestCase {
    var net: InMemoryNetwork!
    var nodes: [Node] = []
    var buses: [IOBus] = []
    var forwarders: [IOForwarder] = []
    var movers: [DeviceMover] = []
    let original = ByteRegister("reg")
    let movedIn = Mutex2<ByteRegister?>(nil)
    var refuseLoad = false

    override func setUpWithError() throws {
        let cfg = try ConfigLoader.parse(yaml: """
            cluster: move
            nodes:
              - {id: 0, address: 127.0.0.1, port: 20600, vcpus: 1}
              - {id: 1, address: 127.0.0.1, port: 20601, vcpus: 1}
              - {id: 2, address: 127.0.0.1, port: 20602, vcpus: 0}
            memory: 8MiB
            transport: {plugin: transport-tcp}
            coherence: {plugin: dsm-ivy}
            timeouts: {connect: 5s, heartbeat: 100ms, failure: 2s}
            """, path: "move.yaml")
        var logger = Logger(label: "move")
        logger.logLevel = .critical
        net = InMemoryNetwork(nodeCount: 3)
        var barriers: [StartupBarrier] = []
        for id in 0..<3 {
            let n = try Node(config: cfg, id: UInt32(id), logger: logger) { [net] node in net!.endpoint(UInt32(id), events: node) }
            let bus = IOBus()
            let f = IOForwarder(node: n, metrics: MetricsRegistry(), timeout: 5, logger: logger)
            f.serve(bus: bus)
            let m = DeviceMover(node: n, bus: bus, forwarder: f, logger: logger) { [self] name, state in
                XCTAssertEqual(name, "reg")
                if refuseLoad { throw WireError("load refused by the test") }
                guard state.count == 1 else { throw WireError("bad state") }
                let r = ByteRegister(name, state[0])
                movedIn.set(r)
                return [ClaimedRange(space: .pio, base: 0x500, length: 1, device: r)]
            }
            barriers.append(StartupBarrier(node: n, logger: logger))
            nodes.append(n); buses.append(bus); forwarders.append(f); movers.append(m)
        }
        try buses[2].map(.pio, base: 0x500, length: 1, device: original)
        for f in forwarders { f.startServer() }
        let group = DispatchGroup()
        let allBarriers = barriers
        let failures = Mutex2<[String]>([])
        for id in 0..<3 {
            DispatchQueue.global().async(group: group) { [self] in
                do {
                    try nodes[id].start()
                    try allBarriers[id].exchangeDeviceMaps(bus: buses[id], forwarder: forwarders[id], timeout: 5) { _ in }
                } catch { failures.set((failures.get() ?? []) + ["node \(id): \(error)"]) }
            }
        }
        XCTAssertEqual(group.wait(timeout: .now() + 20), .success)
        XCTAssertEqual(failures.get() ?? [], [])
        for b in buses { b.seal() }
    }

    override func tearDown() {
        for f in forwarders { f.failAll("test finished") }
        for n in nodes { n.stop(reason: "test finished") }
        nodes = []; forwarders = []; movers = []; buses = []
    }

    func access(_ node: Int, write: UInt8? = nil) -> UInt8 {
        var b: [UInt8] = [write ?? 0]
        let r = buses[node].lookup(.pio, 0x500)!
        b.withUnsafeMutableBytes { r.device.io(space: .pio, offset: 0x500 - r.base, data: $0, isWrite: write != nil) }
        return b[0]
    }

    func stub(_ node: Int) -> RemoteDevice? { buses[node].lookup(.pio, 0x500)?.device as? RemoteDevice }

    func moveRegister() throws -> (devices: Int, stateBytes: Int) {
        try movers[2].move(to: 0, timeout: 5) { [original] in
            [MovingDevice(name: "reg", ranges: [DeviceRange(space: 1, base: 0x500, length: 1, name: "reg")],
                          state: [original.lock.withLock { original.value }])]
        }
    }

    func testTheRegisterMovesWithItsStateAndEveryNodeReachesItAtItsNewHome() throws {
        XCTAssertEqual(access(1, write: 0x42), 0x42)   // forwarded to node 2
        XCTAssertEqual(original.value, 0x42)
        XCTAssertEqual(stub(1)?.home, 2)
        let r = try moveRegister()
        XCTAssertEqual(r.devices, 1)
        XCTAssertEqual(r.stateBytes, 1)
        let fresh = try XCTUnwrap(movedIn.get() ?? nil)
        XCTAssertEqual(fresh.value, 0x42)
        // Node 1 now goes to node 0; node 0 answers itself; the old instance is left alone.
        XCTAssertEqual(stub(1)?.home, 0)
        XCTAssertTrue(stub(0)?.localTarget === fresh)
        let before = original.accesses
        XCTAssertEqual(access(1), 0x42)
        _ = access(1, write: 0x55)
        XCTAssertEqual(access(0), 0x55)
        XCTAssertEqual(fresh.value, 0x55)
        XCTAssertEqual(original.accesses, before)
        // An access already on its way to node 2 is passed on to node 0.
        var b: [UInt8] = [0]
        try b.withUnsafeMutableBytes { try forwarders[1].call(home: 2, space: .pio, address: 0x500, itemSize: 1, data: $0, isWrite: false) }
        XCTAssertEqual(b, [0x55])
        XCTAssertEqual(original.accesses, before)
        XCTAssertEqual(fresh.accesses, 4)
    }

    func testARefusedLoadChangesNoRoute() throws {
        refuseLoad = true
        XCTAssertThrowsError(try moveRegister()) {
            XCTAssertTrue("\($0)".contains("node 0 did not take the devices in: load refused by the test"), "\($0)")
        }
        XCTAssertEqual(stub(1)?.home, 2)
        XCTAssertNil(stub(0)?.localTarget)
        XCTAssertEqual(stub(0)?.home, 2)
        XCTAssertEqual(access(0, write: 7), 7)
        XCTAssertEqual(original.value, 7)
    }
}

/// A value behind a lock (tests only).
final class Mutex2<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: T
    init(_ v: T) { value = v }
    func set(_ v: T) { lock.withLock { value = v } }
    func get() -> T? { lock.withLock { value } }
}
