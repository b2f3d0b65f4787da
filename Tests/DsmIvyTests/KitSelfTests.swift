// The conformance kit must catch broken protocols, or its green runs mean nothing. Two
// deliberately broken coherence plugins, built as bare C ops tables here, must fail.

import XCTest
import PluginAPI
import CoherenceKit

/// "No coherence": every fault installs a private zero page, writable. Nodes never talk.
private func brokenDescriptor(wake: Bool) -> UnsafeRawPointer {
    let ops = UnsafeMutablePointer<gvm_coherence_ops>.allocate(capacity: 1)
    ops.initialize(to: gvm_coherence_ops())
    ops.pointee.size = UInt32(MemoryLayout<gvm_coherence_ops>.size)
    ops.pointee.create = { _, mem, _, _, _, _ in UnsafeMutableRawPointer(mutating: mem) }
    if wake {
        ops.pointee.fault = { inst, gfn, _, _ in
            let mem = inst!.assumingMemoryBound(to: gvm_coherence_host.self)
            if mem.pointee.page_state(mem.pointee.host, gfn) != GVM_PAGE_MODIFIED {
                _ = mem.pointee.page_upgrade(mem.pointee.host, gfn)
                _ = mem.pointee.page_install(mem.pointee.host, gfn, nil, GVM_PAGE_MODIFIED)
            }
            mem.pointee.page_wake(mem.pointee.host, gfn)
        }
    } else {
        ops.pointee.fault = { _, _, _, _ in }   // forgets to resolve and wake
    }
    ops.pointee.receive = { _, _, _, _ in }
    ops.pointee.destroy = { _ in }
    let d = UnsafeMutablePointer<gvm_plugin_descriptor>.allocate(capacity: 1)
    d.initialize(to: gvm_plugin_descriptor(abi_version: GVM_ABI_VERSION, kind: GVM_PLUGIN_COHERENCE.rawValue,
                                           name: nil, version: nil, summary: nil, ops: UnsafeRawPointer(ops), description: nil,
                                           setting_count: 0, settings: nil))
    return UnsafeRawPointer(d)
}

final class KitSelfTests: XCTestCase {
    func testKitCatchesANonCoherentPlugin() throws {
        let broken = brokenDescriptor(wake: true)
        let counter = try Conformance.lockedCounter(broken, nodes: 2, threadsPerNode: 2, increments: 5, seed: 1)
        XCTAssertFalse(counter.ok)
        XCTAssertTrue(counter.problems.contains { $0.contains("single-writer") || $0.contains("stale read") }, "\(counter)")
        let random = try Conformance.random(broken, nodes: 2, threadsPerNode: 2, pages: 2, ops: 30, seed: 2)
        XCTAssertFalse(random.ok, "\(random)")
    }

    func testKitCatchesALostWakeup() throws {
        let broken = brokenDescriptor(wake: false)
        let r = try Conformance.pingPong(broken, rounds: 3, seed: 1)
        XCTAssertFalse(r.ok)
        XCTAssertTrue(r.problems.contains { $0.contains("stuck") && $0.contains("waits on gfn 1") }, "\(r)")
    }
}
