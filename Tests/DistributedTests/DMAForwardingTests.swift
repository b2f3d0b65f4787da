// DMA forwarding between two Nodes on the in-memory transport (no plugin, no KVM): a "device" on
// node 1, serving an access forwarded from node 0, writes and reads node 0's guest RAM through
// DMAForwarder (pipelined 60 KiB chunks); DMA outside RAM fails with a clear error; DMA not made
// inside a forwarded access, or below the threshold, stays local (target nil).

import Cluster
import Config
import Foundation
import Logging
import Metrics
import PluginAPI
@testable import Distributed
@testable import Machine
import TestSupport
import XCTest

final class DMAForwardingTests: XCTestCase {
    var wire: MemoryWire!
    var nodes: [Node] = []
    var io: [IOForwarder] = []
    var dma: [DMAForwarder] = []
    var rams: [AnonymousGuestRAM] = []
    let outcome = LockedValue<String>()

    override func setUpWithError() throws {
        let cfg = try ConfigLoader.parse(yaml: """
            cluster: dma
            nodes:
              - {id: 0, address: 127.0.0.1, port: 20560, vcpus: 1}
              - {id: 1, address: 127.0.0.1, port: 20561, vcpus: 1}
            memory: 8MiB
            transport: {plugin: transport-tcp}
            coherence: {plugin: dsm-ivy}
            timeouts: {connect: 5s, heartbeat: 100ms, failure: 2s}
            """, path: "dma.yaml")
        wire = MemoryWire()
        var logger = Logger(label: "dma")
        logger.logLevel = .critical
        for id in 0..<2 {
            let n = try Node(config: cfg, id: UInt32(id), logger: logger, metrics: MetricsRegistry()) { [wire] _ in MemoryWire.End(wire!, id) }
            wire.nodes[id] = n
            let ram = try AnonymousGuestRAM(size: 8 << 20)
            let f = IOForwarder(node: n, metrics: MetricsRegistry(), timeout: 2, logger: logger)
            let d = DMAForwarder(node: n, ram: ram, io: f, metrics: MetricsRegistry(), timeout: 2, logger: logger)
            nodes.append(n); io.append(f); dma.append(d); rams.append(ram)
        }
        // Node 1's "device" at port 0x100: a write of v DMA-writes 200 KiB of pattern v at
        // 0x10000, then reads it back and checks it; port 0x101 DMAs outside RAM.
        io[1].serve = { [self] _, address, _, data, isWrite in
            guard isWrite else { return .ok }
            let d = dma[1]
            let n = 200 * 1024
            guard let target = d.target(length: n) else { outcome.set("no target inside a forwarded access"); return .ok }
            if address == 0x101 {
                let bytes = [UInt8](repeating: 1, count: n)
                do { try bytes.withUnsafeBytes { try d.transfer(on: target, gpa: 0x7F_0000, read: nil, write: $0) }; outcome.set("no error") } catch {
                    outcome.set("\(error)")
                }
                return .ok
            }
            let v = data[0]
            let bytes = (0..<n).map { UInt8(truncatingIfNeeded: $0 &* 7) ^ v }
            var back = [UInt8](repeating: 0, count: n)
            do {
                try bytes.withUnsafeBytes { try d.transfer(on: target, gpa: 0x10000, read: nil, write: $0) }
                try back.withUnsafeMutableBytes { try d.transfer(on: target, gpa: 0x10000, read: $0, write: nil) }
                outcome.set(back == bytes ? "ok target \(target) small \(String(describing: d.target(length: 100)))" : "read back differs")
            } catch { outcome.set("\(error)") }
            return .ok
        }
        for i in 0..<2 { io[i].startServer(); dma[i].startServer() }
        let t = Thread { [nodes] in try? nodes[1].start() }
        t.start()
        try nodes[0].start()
    }

    override func tearDown() {
        for f in io { f.failAll("test finished") }
        for d in dma { d.failAll("test finished") }
        for n in nodes { n.stop(reason: "test finished") }
        wire?.stop()
        nodes = []; io = []; dma = []; rams = []
    }

    func testBulkDMARunsOnTheRequestingNode() throws {
        var v: [UInt8] = [0x5A]
        try v.withUnsafeMutableBytes { try io[0].call(home: 1, space: .pio, address: 0x100, itemSize: 1, data: $0, isWrite: true) }
        XCTAssertEqual(outcome.get(), "ok target 0 small nil")
        // the bytes are in node 0's RAM, not node 1's
        let mine = try rams[0].read(0x10000, count: 200 * 1024)
        XCTAssertEqual(mine, (0..<(200 * 1024)).map { UInt8(truncatingIfNeeded: $0 &* 7) ^ 0x5A })
        XCTAssertEqual(try rams[1].read(0x10000, count: 16), [UInt8](repeating: 0, count: 16))
        // outside guest RAM: an error naming the address and node
        try v.withUnsafeMutableBytes { try io[0].call(home: 1, space: .pio, address: 0x101, itemSize: 1, data: $0, isWrite: true) }
        XCTAssertTrue(outcome.get()?.contains("on node 0 failed (status 1)") == true, outcome.get() ?? "")
        // not inside a forwarded access: no target
        XCTAssertNil(dma[1].target(length: 1 << 20))
    }
}
