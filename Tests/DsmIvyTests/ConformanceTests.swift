// dsm-ivy against the CoherenceKit conformance suite: exact results over thousands of seeded
// schedules (random interleavings, random delays, reordering across senders and lanes), on 2, 3
// and 4 nodes, with both manager layouts.

import XCTest
import Foundation
import PluginAPI
import TestSupport
import CoherenceKit
@testable import IvyCore

/// The plugin under test, through its C descriptor (the .so's own entry is tested below).
let ivy = IvyPlugin.entry.pointer

func assertOK(_ r: ScenarioResult, _ what: String, file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertTrue(r.ok, "\(what): \(r)", file: file, line: line)
}

/// IVY_SWEEP_FACTOR=N in the environment multiplies every sweep's seed count (longer hunts).
let sweepFactor = max(1, Int(ProcessInfo.processInfo.environment["IVY_SWEEP_FACTOR"] ?? "1") ?? 1)

/// Runs `body` for `count` seeds (times IVY_SWEEP_FACTOR); stops at the first failure and reports its seed.
func sweep(_ what: String, seeds count: Int, base: UInt64 = 1000, file: StaticString = #filePath, line: UInt = #line,
           _ body: (UInt64) throws -> ScenarioResult) rethrows -> (steps: Int, messages: Int, totals: [String: UInt64]) {
    var steps = 0
    var messages = 0
    var totals: [String: UInt64] = [:]
    for i in 0..<UInt64(count * sweepFactor) {
        let r = try body(base + i)
        if !r.ok {
            XCTFail("\(what), seed \(base + i): \(r)", file: file, line: line)
            break
        }
        if !r.statistics.isEmpty {
            XCTFail("\(what), seed \(base + i): standard statistics: \(r.statistics)", file: file, line: line)
            break
        }
        steps += r.report.steps
        messages += r.messages
        for (k, v) in r.totals { totals[k, default: 0] += v }
    }
    return (steps, messages, totals)
}

final class ConformanceTests: XCTestCase {
    func testLockedCounterExactOnTwoThreeFourNodes() throws {
        for nodes in 2...4 {
            let r = try Conformance.lockedCounter(ivy, nodes: nodes, threadsPerNode: 2, increments: 15, seed: 7)
            assertOK(r, "counter on \(nodes) nodes")
            XCTAssertGreaterThan(r.messages, 50, "pages must have crossed nodes")
        }
    }

    func testLockedCounterManySchedules() throws {
        let (steps, messages, totals) = try sweep("locked counter", seeds: 1000) { seed in
            let nodes = 2 + Int(seed % 3)
            return try Conformance.lockedCounter(ivy, nodes: nodes, threadsPerNode: 1 + Int(seed % 2), increments: 4,
                                                 seed: seed, options: .init(maxDelay: Int(seed % 4) * 3,
                                                                           threadBias: 20 + Int(seed % 7) * 10))
        }
        XCTAssertGreaterThan(messages, 1000 * 20)
        XCTAssertGreaterThan(steps, 0)
        // The sweep must have exercised the protocol's hard paths, not just the easy ones.
        for c in ["dsm.fault.read_miss", "dsm.fault.write_miss", "dsm.fault.upgrade", "dsm.fault.coalesced",
                  "ivy.manager_queued", "dsm.inv.sent", "ivy.upgrade_lost_copy", "ivy.stalled",
                  "ivy.held", "dsm.page.sent_data", "dsm.page.sent_nodata", "ivy.msg.Grant", "ivy.msg.Release"] {
            XCTAssertGreaterThan(totals[c] ?? 0, 0, "\(c) never happened in 1000 schedules")
        }
        print("locked-counter sweep coverage:", totals.filter { !$0.key.hasPrefix("ivy.bytes") }.sorted { $0.key < $1.key }
            .map { "\($0.key)=\($0.value)" }.joined(separator: " "))
    }

    func testRandomCheckerManySchedules() throws {
        let (_, messages, totals) = try sweep("random", seeds: 1500, base: 5000) { seed in
            let nodes = 2 + Int(seed % 3)
            let settings: [(String, String)] = seed % 2 == 0 ? [] : [("manager_chunk", "4KiB")]
            return try Conformance.random(ivy, nodes: nodes, threadsPerNode: 2, pages: 3, ops: 12,
                                          writePercent: 30 + seed % 50, seed: seed,
                                          options: .init(settings: settings, maxDelay: Int(seed % 5) * 2,
                                                         threadBias: 10 + Int(seed % 9) * 10))
        }
        XCTAssertGreaterThan(messages, 1500 * 10)
        for c in ["dsm.fault.read_miss", "dsm.fault.write_miss", "dsm.fault.upgrade", "dsm.fault.stale",
                  "ivy.manager_queued", "dsm.inv.sent", "ivy.upgrade_lost_copy", "ivy.stalled", "ivy.msg.Grant"] {
            XCTAssertGreaterThan(totals[c] ?? 0, 0, "\(c) never happened in 1500 schedules")
        }
        print("random sweep coverage:", totals.filter { !$0.key.hasPrefix("ivy.bytes") }.sorted { $0.key < $1.key }
            .map { "\($0.key)=\($0.value)" }.joined(separator: " "))
    }

    func testRandomCheckerLargerRuns() throws {
        _ = try sweep("random large", seeds: 20, base: 90_000) { seed in
            try Conformance.random(ivy, nodes: 4, threadsPerNode: 3, pages: 6, ops: 150, writePercent: 40, seed: seed,
                                   options: .init(settings: [("manager_chunk", "8KiB")], maxDelay: 5))
        }
    }

    func testPingPongMovesThePageEveryRound() throws {
        let r = try Conformance.pingPong(ivy, rounds: 50, seed: 3)
        assertOK(r, "pingpong")
        _ = try sweep("pingpong", seeds: 200, base: 300) { seed in
            try Conformance.pingPong(ivy, nodes: 2 + Int(seed % 3), rounds: 6, seed: seed,
                                     options: .init(maxDelay: Int(seed % 3) * 4))
        }
    }

    func testPinHoldsOffAnotherNodesWrite() throws {
        let (_, _, totals) = try sweep("pin", seeds: 200, base: 700) { seed in
            try Conformance.pinHoldsOffWrites(ivy, nodes: 2 + Int(seed % 3), holdSteps: 10 + Int(seed % 30), seed: seed,
                                              options: .init(maxDelay: Int(seed % 3) * 3))
        }
        XCTAssertGreaterThan(totals["dsm.pin.deferred"] ?? 0, 0, "no request was ever deferred by a pin")
    }

    /// The built libdsm-ivy.so, loaded as the host loads it (dlopen + giantvm_plugin_entry), runs
    /// the same scenarios.
    func testTheBuiltSharedObjectPassesToo() throws {
        let path = Built.plugin("dsm-ivy")
        guard FileManager.default.fileExists(atPath: path) else {
            throw XCTSkip("\(path) is not built (run `swift build` first)")
        }
        guard let handle = dlopen(path, RTLD_NOW | RTLD_LOCAL) else {
            return XCTFail("dlopen \(path): \(String(cString: dlerror()))")
        }
        guard let sym = dlsym(handle, GVM_PLUGIN_ENTRY_SYMBOL) else { return XCTFail("no entry symbol in \(path)") }
        let entry = unsafeBitCast(sym, to: (@convention(c) () -> UnsafeRawPointer).self)
        let d = entry()
        let desc = d.assumingMemoryBound(to: gvm_plugin_descriptor.self).pointee
        XCTAssertEqual(String(cString: desc.name), "dsm-ivy")
        XCTAssertEqual(desc.abi_version, GVM_ABI_VERSION)
        _ = try sweep("shared object", seeds: 100, base: 40_000) { seed in
            try Conformance.random(d, nodes: 3, threadsPerNode: 2, pages: 3, ops: 15, seed: seed,
                                   options: .init(maxDelay: Int(seed % 4)))
        }
        assertOK(try Conformance.lockedCounter(d, nodes: 3, threadsPerNode: 2, increments: 10, seed: 77), "counter via .so")
    }
}
