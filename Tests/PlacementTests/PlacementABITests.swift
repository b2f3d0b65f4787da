// The placement plugin through the C ABI: the loader takes libplacement.so as a placement
// plugin (ops size and required hooks checked), the host-side instance passes figures in the C
// layout, the policy's migrate() requests reach the host, and migration_done reaches the policy.
// Also the fault attribution that feeds the figures.

import XCTest
import Logging
import Metrics
import PluginAPI
import CSystem
@testable import PluginHost
import TestSupport
@testable import GuestMemory

final class PlacementABITests: XCTestCase {
    let metrics = MetricsRegistry()

    func make(_ settings: [(key: String, value: String)], initial: [UInt32], nodes: Int,
              migrate: @escaping PlacementPolicyInstance.Migrate) throws -> PlacementPolicyInstance {
        let loader = PluginLoader(searchPath: [Built.productsDirectory])
        let p = try loader.load("placement", kind: .placement)
        XCTAssertEqual(p.kind, .placement)
        XCTAssertNotNil(p.placementOps)
        let svc = HostServicesTable(pluginName: p.name, metrics: metrics, logger: Logger(label: "test")) { XCTFail($0) }
        return try PlacementPolicyInstance(plugin: p, services: svc, nodeCount: nodes, initialNode: initial,
                                           settings: settings, migrate: migrate)
    }

    func testLoadsDescribesAndRefusesOtherKinds() throws {
        let loader = PluginLoader(searchPath: [Built.productsDirectory])
        let p = try loader.load("placement")
        XCTAssertEqual(p.kind, .placement)
        XCTAssertThrowsError(try loader.load("placement", kind: .device))
        XCTAssertThrowsError(try loader.load("dsm-ivy", kind: .placement))
        XCTAssertLessThanOrEqual(PluginLoader.opsLayout(.placement).needed, MemoryLayout<gvm_placement_ops>.size)
    }

    func testCoLocateRequestsAMoveThroughTheHostAndHearsTheOutcome() throws {
        var asked: [(UInt32, UInt32)] = []
        let policy = try make([("policy", "co-locate"), ("min_shared", "10")], initial: [0, 1], nodes: 2) { v, n in
            asked.append((v, n))
            return GVM_OK.rawValue
        }
        defer { policy.destroy() }
        let figures = PlacementFigures(vcpuNode: [0, 1], nodeCount: 2, faults: [5, 40, 40, 5], sharing: [50, 30, 30, 60],
                                       samplePages: 4096, intervalNanoseconds: 1_000_000_000)
        policy.observe(figures)
        XCTAssertEqual(asked.map { "\($0.0)->\($0.1)" }, ["1->0"])
        // In flight: asked again, the same vCPU is not moved twice.
        var moving = figures
        moving.vcpuNode[1] = UInt32.max
        policy.observe(moving)
        XCTAssertEqual(asked.count, 1)
        policy.migrationDone(vcpu: 1, node: 0, status: GVM_OK.rawValue, elapsedNanoseconds: 1000)
        XCTAssertEqual(metrics.snapshot().counters["placement.migrations_requested"], 1)
        XCTAssertEqual(metrics.snapshot().counters["placement.migrations_done"], 1)
        // Figures of the wrong shape are not passed on.
        policy.observe(PlacementFigures(vcpuNode: [0], nodeCount: 2, faults: [1, 2], sharing: [1], samplePages: 1, intervalNanoseconds: 1))
        XCTAssertEqual(metrics.snapshot().counters["placement.intervals"], 2)
    }

    func testARefusedMoveIsCounted() throws {
        let policy = try make([("policy", "follow-memory"), ("persist", "1")], initial: [0], nodes: 2) { _, _ in GVM_ERR_STATE.rawValue }
        defer { policy.destroy() }
        policy.observe(PlacementFigures(vcpuNode: [0], nodeCount: 2, faults: [0, 5000], sharing: [10],
                                        samplePages: 4096, intervalNanoseconds: 1_000_000_000))
        XCTAssertEqual(metrics.snapshot().counters["placement.migrations_refused"], 1)
        XCTAssertEqual(metrics.snapshot().counters["placement.migrations_requested"] ?? 0, 0)
    }

    func testCreateRefusalCarriesThePluginsMessage() {
        XCTAssertThrowsError(try make([("policy", "nearest")], initial: [0, 1], nodes: 2) { _, _ in 0 }) {
            XCTAssertTrue("\($0)".contains("'nearest' is not a policy"), "\($0)")
        }
    }

    func testFaultAttributionByServingNodeAndPages() {
        let a = FaultAttribution(vcpuCount: 2, nodeCount: 3, selfNode: 0, samplePages: 2)
        FaultAttribution.registerCurrentThread(vcpu: 1)
        defer { FaultAttribution.unregisterCurrentThread() }
        let tid = gvm_gettid()
        a.fault(tid: tid, gfn: 7)
        FaultAttribution.setMessageSource(2)   // installed while handling a message from node 2
        a.installed(7)
        FaultAttribution.setMessageSource(nil)
        a.fault(tid: tid, gfn: 8)
        a.installed(8)                          // installed outside a message: this node
        a.fault(tid: tid, gfn: 9)               // never installed: counted when resolved
        a.fault(tid: tid, gfn: 7)               // 9 was resolved in place (local)
        a.fault(tid: 0, gfn: 1)                 // not a vCPU thread: ignored
        let rows = a.take()
        XCTAssertEqual(rows, [FaultAttribution.Row(vcpu: 1, faults: [2, 0, 1], pages: [7, 8])])
        // Fault on 7 still pending: it counts in the next interval, once installed.
        a.installed(7)
        XCTAssertEqual(a.take(), [FaultAttribution.Row(vcpu: 1, faults: [1, 0, 0], pages: [])])
        XCTAssertEqual(a.take(), [])
    }
}
