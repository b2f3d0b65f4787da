// dsm-ivy over the real guest-memory layer: several nodes in one process, each with its own
// GuestMemory (a userfaultfd-registered mapping, handler threads) and its own dsm-ivy instance,
// joined by an in-process network (per-destination, per-lane FIFO queues, each drained by its own
// delivery thread, so lanes reorder). Real host threads run the DsmWorkloads on each node's
// mapping: every access that needs the DSM takes a real userfaultfd fault.

import XCTest
import Foundation
import Config
import GuestMemory
import IvyCore
import Logging
import Metrics
import PluginAPI
import PluginHost
import DsmWorkloads
import TestSupport

/// One destination's lane: frames in FIFO order, delivered by a dedicated thread.
final class LaneQueue: @unchecked Sendable {
    let cond = NSCondition()
    var frames: [(UInt32, [UInt8])] = []
    var closed = false
    var thread: Thread?
    let finished = DispatchSemaphore(value: 0)

    func push(_ src: UInt32, _ bytes: [UInt8]) {
        cond.lock(); frames.append((src, bytes)); cond.signal(); cond.unlock()
    }

    func start(_ deliver: @escaping (UInt32, [UInt8]) -> Void) {
        let t = Thread { [self] in
            defer { finished.signal() }
            while true {
                cond.lock()
                while frames.isEmpty && !closed { cond.wait() }
                if closed && frames.isEmpty { cond.unlock(); return }
                let f = frames.removeFirst()
                cond.unlock()
                deliver(f.0, f.1)
            }
        }
        thread = t
        t.start()
    }

    func close() { cond.lock(); closed = true; cond.broadcast(); cond.unlock() }

    /// Waits for the delivery thread to drain and exit (after close), so no delivery outlives
    /// the cluster that owns the lane.
    func join() { if thread != nil { finished.wait() } }
}

final class InProcessCluster: @unchecked Sendable {
    let n: Int
    var mems: [GuestMemory] = []
    var plugins: [CoherencePluginInstance] = []
    var metrics: [MetricsRegistry] = []
    var services: [HostServicesTable] = []
    var infos: [ClusterInfoTable] = []
    var settings: [SettingsTable] = []
    var lanes: [[LaneQueue]] = []   // [dst][lane]
    let fatalLock = NSLock()
    var fatals: [String] = []

    init(nodes: Int, memory: String = "2MiB", settings extra: String = "{}") throws {
        n = nodes
        var y = "cluster: inproc\nnodes:\n"
        for i in 0..<nodes { y += "  - {id: \(i), address: 127.0.0.1, port: \(18400 + i), vcpus: 1}\n" }
        y += "memory: \(memory)\ntransport: {plugin: transport-tcp}\ncoherence: {plugin: dsm-ivy, settings: \(extra)}\n"
        let cfg = try ConfigLoader.parse(yaml: y, path: "inproc.yaml")
        lanes = (0..<nodes).map { _ in [LaneQueue(), LaneQueue()] }
        let ivy = IvyPlugin.entry.descriptor
        let ops = ivy.pointee.ops!.assumingMemoryBound(to: gvm_coherence_ops.self)
        var logger = Logger(label: "inproc")
        logger.logLevel = .error
        for i in 0..<nodes {
            let src = UInt32(i)
            let m = MetricsRegistry()
            metrics.append(m)
            let svc = HostServicesTable(pluginName: "dsm-ivy", metrics: m, logger: logger, onFatal: { [weak self] why in
                self?.fatalLock.lock(); self?.fatals.append("node \(i): \(why)"); self?.fatalLock.unlock()
            })
            services.append(svc)
            let send: CoherenceSender = { [unowned self] dst, iov in self.enqueue(src, dst, GVM_LANE_BULK, iov) }
            let urgent: CoherenceSender = { [unowned self] dst, iov in self.enqueue(src, dst, GVM_LANE_URGENT, iov) }
            let mem = try GuestMemory(bytes: cfg.memoryBytes, wakeMode: .poll, handlerThreads: 1, logger: logger,
                                      send: send, sendUrgent: urgent)
            mems.append(mem)
            infos.append(ClusterInfoTable(config: cfg, selfID: src))
            settings.append(SettingsTable(cfg.coherence.settings))
            plugins.append(try CoherencePluginInstance(name: "dsm-ivy", ops: ops, services: svc.pointer, memory: mem,
                                                       cluster: infos[i].pointer, settings: settings[i].pointer,
                                                       settingCount: settings[i].count))
        }
        for i in 0..<nodes {
            for l in 0..<2 { lanes[i][l].start { [unowned self] src, bytes in
                bytes.withUnsafeBytes { self.plugins[i].receive(from: src, $0) }
            } }
            try plugins[i].start()
            try mems[i].start()
        }
    }

    func enqueue(_ src: UInt32, _ dst: UInt32, _ lane: UInt32, _ iov: UnsafeBufferPointer<gvm_iovec>) -> Int32 {
        guard Int(dst) < n, dst != src else { return GVM_ERR_INVALID.rawValue }
        var frame: [UInt8] = []
        for v in iov where v.len > 0 { frame.append(contentsOf: UnsafeRawBufferPointer(start: v.base, count: v.len)) }
        lanes[Int(dst)][Int(lane)].push(src, frame)
        return GVM_OK.rawValue
    }

    func counter(_ node: Int, _ name: String) -> UInt64 { metrics[node].value(name) }
    func total(_ name: String) -> UInt64 { (0..<n).reduce(0) { $0 + counter($1, name) } }

    /// Runs the workload on every node at once; returns each node's result.
    func run(_ p: WorkloadParams, timeout: Double = 50) throws -> [NodeResult] {
        final class Box: @unchecked Sendable { var r: [NodeResult?] = [] }
        let box = Box()
        box.r = [NodeResult?](repeating: nil, count: n)
        let lock = NSLock()
        let group = DispatchGroup()
        for i in 0..<n {
            let w = try DsmWorkload(memory: mems[i].base, bytes: Int(mems[i].size), params: p, node: i)
            group.enter()
            Thread {
                let r = w.run()
                lock.lock(); box.r[i] = r; lock.unlock()
                group.leave()
            }.start()
        }
        guard group.wait(timeout: .now() + timeout) == .success else {
            throw WorkloadError("workload \(p.kind) did not finish in \(timeout) s; fatals: \(fatals)")
        }
        return box.r.compactMap { $0 }
    }

    /// Stops every node. Threads still blocked in a fault would stay blocked, so tests only stop
    /// after their workloads finished.
    func shutdown() {
        for m in mems { m.stop() }
        for p in plugins { p.stop() }
        for l in lanes.flatMap({ $0 }) { l.close() }
        for l in lanes.flatMap({ $0 }) { l.join() }
    }
}

final class GuestMemoryIntegrationTests: XCTestCase {
    override func setUpWithError() throws {
        try Requirement.userfaultfd()
    }

    func workload(_ kind: WorkloadKind, nodes: Int, threads: Int, iterations: Int, pages: Int? = nil,
                  settings: String = "{}") throws -> (InProcessCluster, [NodeResult]) {
        let c = try InProcessCluster(nodes: nodes, settings: settings)
        var p = WorkloadParams(kind: kind, nodes: nodes, threadsPerNode: threads, seed: 3, iterations: iterations, pages: pages)
        p.timeoutSeconds = 40
        let rs = try c.run(p)
        XCTAssertEqual(c.fatals, [])
        XCTAssertEqual(rs.flatMap(\.errors), [])
        XCTAssertGreaterThan(c.total("dsm.page.sent_data") + c.total("dsm.page.sent_nodata"), 0, "no page crossed nodes")
        return (c, rs)
    }

    func testCounterExactOverRealUserfaultfd() throws {
        for nodes in [2, 3] {
            let (c, rs) = try workload(.counter, nodes: nodes, threads: 2, iterations: 100)
            defer { c.shutdown() }
            for r in rs { XCTAssertEqual(r.checks["counter"], UInt64(nodes * 2 * 100)) }
            XCTAssertGreaterThan(c.total("dsm.fault.read_miss") + c.total("dsm.fault.upgrade"), 0)
        }
    }

    func testRandomAndLitmusOverRealUserfaultfd() throws {
        let (c, rs) = try workload(.random, nodes: 3, threads: 2, iterations: 1500, pages: 6, settings: "{manager_chunk: 4KiB}")
        defer { c.shutdown() }
        XCTAssertNotNil(rs[0].checks["random.adds"])
        let (c2, rs2) = try workload(.litmus, nodes: 2, threads: 2, iterations: 30)
        defer { c2.shutdown() }
        XCTAssertEqual(rs2[0].checks["litmus.trials"], 150)
    }

    func testPingPongAndReadMissOverRealUserfaultfd() throws {
        let (c, rs) = try workload(.pingpong, nodes: 2, threads: 1, iterations: 200)
        defer { c.shutdown() }
        XCTAssertEqual(rs[0].checks["pingpong"], 400)
        XCTAssertGreaterThanOrEqual(c.total("dsm.page.sent_data"), 300, "every round moves the page")
        // One page per fault (read-ahead off): every read is a read miss.
        let (c2, rs2) = try workload(.readmiss, nodes: 2, threads: 1, iterations: 3, pages: 16, settings: "{read_ahead: 0}")
        defer { c2.shutdown() }
        XCTAssertEqual(rs2[0].checks["readmiss.pages"], 48)
        XCTAssertGreaterThanOrEqual(c2.counter(0, "dsm.fault.read_miss"), 48)
    }

    /// A sequential remote read over real userfaultfd and TCP: with read-ahead most pages come
    /// prefetched in batches, and every word read is exact.
    func testSequentialReadGetsPagesPrefetchedOverRealUserfaultfd() throws {
        let (c, rs) = try workload(.seqread, nodes: 2, threads: 1, iterations: 2, pages: 360, settings: "{read_ahead: 16}")
        defer { c.shutdown() }
        XCTAssertEqual(rs[0].checks["seqread.pages"], 720)
        XCTAssertGreaterThan(c.counter(0, "ivy.readahead.prefetched"), 360)
        XCTAssertGreaterThan(c.counter(0, "ivy.readahead.used"), 250)
        XCTAssertLessThan(c.counter(0, "dsm.fault.read_miss"), 450, "one read miss per page despite read-ahead")
        XCTAssertGreaterThan(c.counter(1, "ivy.msg.DataBatch"), 0)
        XCTAssertGreaterThan(c.counter(0, "ivy.readahead.batch_installs"), 0, "no run installed with one UFFDIO_COPY")
    }

    /// Node 0 pins a page for writing (host code writing guest RAM); node 1's store must wait
    /// until the unpin, and then see the pinned write.
    func testWritePinOnOneNodeHoldsOffAnotherNodesWrite() throws {
        let c = try InProcessCluster(nodes: 2)
        defer { c.shutdown() }
        let gpa: UInt64 = 40 * 4096
        try c.mems[0].write(gpa: gpa, bytes: [1, 0, 0, 0, 0, 0, 0, 0])
        let pin = try c.mems[0].pin(gpa: gpa, length: 8, for: .write, timeout: 10)
        let done = DispatchSemaphore(value: 0)
        final class Flag: @unchecked Sendable { var value: UInt64 = 0 }
        let seen = Flag()
        Thread {
            // A plain read-modify-write on node 1's mapping, as a vCPU would do it.
            let p = c.mems[1].base + Int(gpa)
            let v = p.load(as: UInt64.self)
            p.storeBytes(of: v + 1, as: UInt64.self)
            seen.value = v
            done.signal()
        }.start()
        XCTAssertEqual(done.wait(timeout: .now() + 0.5), .timedOut, "node 1 accessed the page while node 0 held a write pin")
        XCTAssertGreaterThanOrEqual(c.counter(0, "dsm.pin.deferred"), 1)
        pin.pointer.storeBytes(of: UInt64(0xD), as: UInt64.self)   // the DMA write
        c.mems[0].unpin(pin)
        XCTAssertEqual(done.wait(timeout: .now() + 10), .success, "node 1 still waits after the unpin")
        XCTAssertEqual(seen.value, 0xD)
        let back = try c.mems[0].read(gpa: gpa, count: 8, timeout: 10)
        XCTAssertEqual(back, [0xE, 0, 0, 0, 0, 0, 0, 0])
        XCTAssertEqual(c.fatals, [])
    }
}
