import Cluster
import Config
import Foundation
import Logging
import XCTest

/// The registry of message type bytes, and dispatch by type: two components on one channel see
/// only their own messages.
final class MessageTypeTests: XCTestCase {
    func testRegistryRanges() {
        for (t, name) in MessageType.assigned(on: .control) + MessageType.assigned(on: .heartbeat) {
            let runtime = ["stop", "stopAck", "leave", "leaveAck", "beat"].contains(name)
            XCTAssertEqual(t < 0x80, runtime, "control/heartbeat type \(name) 0x\(String(t, radix: 16)): below 0x80 is the runtime's")
        }
        for c in Channel.allCases where c != .coherence {
            let probe = MessageType.assigned(on: c).filter { $0.1.hasPrefix("probe") }.map(\.0)
            XCTAssertEqual(probe, Array(MessageType.probe), "the probe has the same two bytes on \(c)")
        }
        XCTAssertTrue(MessageType.assigned(on: .coherence).isEmpty, "the coherence channel belongs to the plugin")
        for c in [Channel.cpu, .io] {
            XCTAssertTrue(MessageType.assigned(on: c).allSatisfy { $0.0 < 0x80 || MessageType.probe.contains($0.0) })
        }
    }

    func testHandlersSeeOnlyTheirTypesAndTheRestGoesToTheChannelHandler() throws {
        let cfg = try ConfigLoader.parse(yaml: """
            cluster: types
            nodes:
              - {id: 0, address: 127.0.0.1, port: 17990}
              - {id: 1, address: 127.0.0.1, port: 17991}
            memory: 4MiB
            transport: {plugin: transport-tcp}
            coherence: {plugin: dsm-ivy}
            timeouts: {connect: 5s, heartbeat: 100ms, failure: 3s}
            """, path: "types.yaml")
        let net = InMemoryNetwork(nodeCount: 2)
        var logger = Logger(label: "types")
        logger.logLevel = .critical
        let nodes = try (0..<2).map { id in try Node(config: cfg, id: UInt32(id), logger: logger) { net.endpoint(UInt32(id), events: $0) } }
        final class Seen: @unchecked Sendable {
            let lock = NSLock()
            var a: [UInt8] = [], b: [UInt8] = [], rest: [UInt8] = []
        }
        let seen = Seen()
        nodes[1].register(channel: .cpu, types: [0x01, 0x02]) { _, p in seen.lock.withLock { seen.a.append(p[0]) } }
        nodes[1].register(channel: .cpu, types: [0x10]) { _, p in seen.lock.withLock { seen.b.append(p[0]) } }
        nodes[1].register(channel: .cpu) { _, p in seen.lock.withLock { seen.rest.append(p[0]) } }
        let t = Thread { try? nodes[1].start() }
        t.start()
        try nodes[0].start()
        for type: UInt8 in [0x01, 0x10, 0x02, 0x33, 0x10] { _ = nodes[0].send(channel: .cpu, to: 1, [type, 0xAA]) }
        let deadline = Date().addingTimeInterval(5)
        while seen.lock.withLock({ seen.a.count + seen.b.count + seen.rest.count }) < 5 && Date() < deadline { usleep(2000) }
        seen.lock.withLock {
            XCTAssertEqual(seen.a, [0x01, 0x02])
            XCTAssertEqual(seen.b, [0x10, 0x10])
            XCTAssertEqual(seen.rest, [0x33])
        }
        nodes[0].stop(reason: "done")
        for n in nodes { _ = n.waitUntilStopped() }
    }
}
