// PluginKit's entry builders are values: this one test bundle links two real protocols (Ivy and
// dsm-local) and a third test protocol, and each gets its own complete descriptor whose create
// builds its own type. Both real protocols report the standard statistics.

import XCTest
import PluginAPI
import PluginKit
import CoherenceKit
import DsmLocal
@testable import IvyCore

/// A third protocol, local like dsm-local, that handles fences: its descriptor must carry `fence`.
final class FenceCountingProtocol: CoherencePlugin {
    static var handlesFences: Bool { true }
    let memory: CoherenceHost
    var fences: [UInt32] = []

    init(services: HostServices, memory: CoherenceHost, cluster: ClusterInfo, settings: Settings) throws {
        self.memory = memory
        _ = CoherenceStatistics(services)
    }

    func fault(gfn: UInt64, access: Access, fromPin: Bool) {
        if memory.state(gfn) == .shared && access == .write { memory.upgrade(gfn) }
        else if memory.state(gfn) == .invalid { memory.install(gfn, bytes: nil, state: access == .write ? .modified : .shared) }
        memory.wake(gfn)
    }

    func receive(from node: UInt32, message: UnsafeRawBufferPointer) {}
    func describe() -> String { "fence-counting test protocol" }
    func fence(vcpu: UInt32, kind: UInt32) -> PageStatus {
        fences.append(kind)
        return vcpu == 0 ? .ok : .invalid
    }
}

let fenceCounting = CoherencePluginEntry(FenceCountingProtocol.self, name: "test-fences", version: "0.0.1",
                                         summary: "test protocol with a fence hook")

final class EntryTests: XCTestCase {
    func functionAddress<F>(_ f: F?) -> UnsafeRawPointer? { f.map { unsafeBitCast($0, to: UnsafeRawPointer.self) } }

    func assertComplete(_ e: CoherencePluginEntry, name: String, fence: Bool, file: StaticString = #filePath, line: UInt = #line) {
        let d = e.descriptor.pointee
        XCTAssertEqual(String(cString: d.name), name, file: file, line: line)
        XCTAssertEqual(d.kind, GVM_PLUGIN_COHERENCE.rawValue, file: file, line: line)
        XCTAssertEqual(d.abi_version, GVM_ABI_VERSION, file: file, line: line)
        XCTAssertEqual(d.ops, UnsafeRawPointer(e.ops), file: file, line: line)
        let o = e.ops.pointee
        XCTAssertEqual(Int(o.size), MemoryLayout<gvm_coherence_ops>.size, file: file, line: line)
        let hooks: [(String, UnsafeRawPointer?)] = [
            ("create", functionAddress(o.create)), ("start", functionAddress(o.start)), ("fault", functionAddress(o.fault)),
            ("receive", functionAddress(o.receive)), ("page_unpinned", functionAddress(o.page_unpinned)),
            ("peer_lost", functionAddress(o.peer_lost)), ("describe", functionAddress(o.describe)),
            ("stop", functionAddress(o.stop)), ("destroy", functionAddress(o.destroy))]
        for (hook, f) in hooks { XCTAssertNotNil(f, "\(name): \(hook) is not set", file: file, line: line) }
        XCTAssertEqual(o.fence != nil, fence, "\(name): fence", file: file, line: line)
    }

    func testTwoProtocolsInOneBundleGetDistinctCompleteDescriptors() throws {
        let ivy = IvyPlugin.entry, local = LocalCoherence.entry
        assertComplete(ivy, name: "dsm-ivy", fence: false)
        assertComplete(local, name: "dsm-local", fence: false)
        assertComplete(fenceCounting, name: "test-fences", fence: true)
        XCTAssertNotEqual(ivy.descriptor, local.descriptor)
        XCTAssertNotEqual(UnsafeRawPointer(ivy.ops), UnsafeRawPointer(local.ops))
        // Each create builds its own type: three different C functions.
        let creates = Set([ivy, local, fenceCounting].map { functionAddress($0.ops.pointee.create)! })
        XCTAssertEqual(creates.count, 3)
        // An entry built again for a type reuses that type's create.
        let again = CoherencePluginEntry(IvyPlugin.self, name: "dsm-ivy-again", version: "0", summary: "")
        XCTAssertEqual(functionAddress(again.ops.pointee.create), functionAddress(ivy.ops.pointee.create))

        // Driven through their descriptors, each is itself: its own description, its own behaviour.
        let ivyCluster = try SimCluster(descriptor: ivy.pointer, nodes: 2, pages: 2, seed: 1)
        let localCluster = try SimCluster(descriptor: local.pointer, nodes: 1, pages: 2, seed: 1)
        XCTAssertEqual(ivyCluster.nodes[0].describe(), IvyTable.describe() + IvyTable.describeDrain())
        XCTAssertTrue(localCluster.nodes[0].describe().hasPrefix("dsm-local: single node"))
        XCTAssertThrowsError(try SimCluster(descriptor: local.pointer, nodes: 2, pages: 2, seed: 1)) { e in
            XCTAssertTrue("\(e)".contains("dsm-local serves one node only"), "\(e)")
        }
        let r = try Conformance.lockedCounter(local.pointer, nodes: 1, threadsPerNode: 3, increments: 20, seed: 5)
        XCTAssertTrue(r.ok, "\(r)")
        XCTAssertEqual(r.statistics, [], "dsm-local's standard statistics")
        XCTAssertGreaterThan(r.totals[GVM_STAT_FAULT_READ_MISS] ?? 0, 0)
        XCTAssertGreaterThan(r.totals[GVM_STAT_FAULT_UPGRADE] ?? 0, 0)
        XCTAssertTrue(r.totals.keys.allSatisfy { $0.hasPrefix("dsm.") }, "dsm-local has no extras: \(r.totals.keys.sorted())")
    }

    func testFenceReachesTheInstanceThroughItsDescriptor() throws {
        let c = try SimCluster(descriptor: fenceCounting.pointer, nodes: 1, pages: 1, seed: 1)
        let fence = try XCTUnwrap(fenceCounting.ops.pointee.fence)
        let instance = try XCTUnwrap(c.nodes[0].pluginInstance)
        XCTAssertEqual(fence(instance, 0, GVM_FENCE_RELEASE), GVM_OK.rawValue)
        XCTAssertEqual(fence(instance, 1, GVM_FENCE_ACQUIRE), GVM_ERR_INVALID.rawValue)
    }

    /// Ivy reports every standard name, and what it reports matches what the kit saw.
    func testIvyReportsTheStandardStatistics() throws {
        let r = try Conformance.lockedCounter(IvyPlugin.entry.pointer, nodes: 3, threadsPerNode: 2, increments: 10, seed: 11)
        XCTAssertTrue(r.ok, "\(r)")
        XCTAssertEqual(r.statistics, [])
        for name in StandardStatistic.counters where !name.hasPrefix("dsm.diff.") && name != GVM_STAT_PIN_DEFERRED
            && name != GVM_STAT_FAULT_STALE {
            XCTAssertGreaterThan(r.totals[name] ?? 0, 0, "\(name) never counted")
        }
        XCTAssertEqual(r.totals[GVM_STAT_DIFF_MADE], nil, "reported as 0 (never added to)")
        // Ivy's own extras stay under its prefix.
        XCTAssertTrue(r.totals.keys.allSatisfy { $0.hasPrefix("dsm.") || $0.hasPrefix("ivy.") }, "\(r.totals.keys.sorted())")
        XCTAssertGreaterThan(r.totals["ivy.msg.GetX"] ?? 0, 0)
    }
}
