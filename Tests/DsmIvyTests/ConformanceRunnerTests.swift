// The conformance runner as a library: the litmus judge's allowed outcomes per model, the catalog
// run against dsm-ivy in process, and shrinking on a broken protocol.

import XCTest
import PluginAPI
import CoherenceKit
@testable import IvyCore

final class ConformanceRunnerTests: XCTestCase {
    func litmus(_ name: String) -> LitmusTest { LitmusTest.classic.first { $0.name == name }! }

    func testLitmusJudgeKnowsSCAndTSO() {
        // SB: SC forbids both loads reading 0; TSO allows it (each store waits in its buffer).
        let sb = litmus("SB")
        XCTAssertEqual(sb.allowedOutcomes(.sc), [[0, 1], [1, 0], [1, 1]])
        XCTAssertEqual(sb.allowedOutcomes(.tso), [[0, 0], [0, 1], [1, 0], [1, 1]])
        // MP, LB, 2+2W and IRIW: the relaxed outcome is forbidden by both models.
        for model in MemoryModel.allCases {
            XCTAssertFalse(litmus("MP").allowedOutcomes(model).contains([1, 0]), "MP \(model)")
            XCTAssertTrue(litmus("MP").allowedOutcomes(model).contains([1, 1]))
            XCTAssertFalse(litmus("LB").allowedOutcomes(model).contains([1, 1]), "LB \(model)")
            XCTAssertFalse(litmus("2+2W").allowedOutcomes(model).contains([1, 1]), "2+2W \(model)")
            XCTAssertEqual(litmus("2+2W").allowedOutcomes(model), [[1, 2], [2, 1], [2, 2]])
            XCTAssertFalse(litmus("IRIW").allowedOutcomes(model).contains([1, 0, 1, 0]), "IRIW \(model)")
        }
        XCTAssertEqual(litmus("IRIW").allowedOutcomes(.sc).count, 15)
        XCTAssertEqual(sb.describe([0, 1]), "r0=0 r1=1")
        XCTAssertEqual(sb.program, "T0: x=1; r0=y | T1: y=1; r1=x")
    }

    func testCatalogPassesDsmIvyInProcess() throws {
        let runner = ConformanceRunner(descriptor: ivy, plan: ConformancePlan(model: .sc, nodes: 2...4, seeds: 6))
        let verdicts = try runner.run()
        XCTAssertEqual(verdicts.map(\.name), ScenarioCatalog.scenarios(for: .sc).map(\.name))
        for v in verdicts { XCTAssertTrue(v.passed, "\(v.name): \(String(describing: v.failure))") }
        XCTAssertEqual(verdicts.first { $0.name == "litmus-MP" }?.outcomes?.values.reduce(0, +), 6)
    }

    /// A protocol that never talks: every node writes its own private copy. The runner must fail
    /// it, and the shrunk schedule must still fail when rerun, in no more steps than first found.
    func testShrinkKeepsAFailingShorterSchedule() throws {
        let ops = UnsafeMutablePointer<gvm_coherence_ops>.allocate(capacity: 1)
        ops.initialize(to: gvm_coherence_ops())
        ops.pointee.size = UInt32(MemoryLayout<gvm_coherence_ops>.size)
        ops.pointee.create = { _, mem, _, _, _, _ in UnsafeMutableRawPointer(mutating: mem) }
        ops.pointee.fault = { inst, gfn, _, _ in
            let mem = inst!.assumingMemoryBound(to: gvm_coherence_host.self)
            if mem.pointee.page_state(mem.pointee.host, gfn) != GVM_PAGE_MODIFIED {
                _ = mem.pointee.page_install(mem.pointee.host, gfn, nil, GVM_PAGE_MODIFIED)
            }
            mem.pointee.page_wake(mem.pointee.host, gfn)
        }
        ops.pointee.receive = { _, _, _, _ in }
        ops.pointee.destroy = { _ in }
        let d = UnsafeMutablePointer<gvm_plugin_descriptor>.allocate(capacity: 1)
        d.initialize(to: gvm_plugin_descriptor(abi_version: GVM_ABI_VERSION, kind: GVM_PLUGIN_COHERENCE.rawValue,
                                               name: nil, version: nil, summary: nil, ops: UnsafeRawPointer(ops),
                                               description: nil, setting_count: 0, settings: nil))
        let runner = ConformanceRunner(descriptor: UnsafeRawPointer(d),
                                       plan: ConformancePlan(model: .sc, nodes: 2...4, seeds: 4, only: ["random-rw", "litmus-MP"]))
        for v in try runner.run() {
            let f = try XCTUnwrap(v.failure, "\(v.name) must fail")
            XCTAssertFalse(v.passed)
            XCTAssertLessThanOrEqual(f.steps, f.foundSteps)
            XCTAssertLessThanOrEqual(f.size, f.foundSize)
            XCTAssertLessThanOrEqual(f.nodes, f.foundNodes)
            let s = try XCTUnwrap(ScenarioCatalog.named(v.name))
            var lines: [String] = []
            let again = runner.runOnce(s, seed: f.seed, nodes: f.nodes, size: f.size) { lines.append($0) }
            XCTAssertFalse(again.ok, "the shrunk schedule still fails")
            XCTAssertEqual(again.failedAtStep, f.steps)
            XCTAssertTrue(lines.contains { $0.hasPrefix("!! ") })
            XCTAssertEqual(f.replayArguments, ["--scenario", v.name, "--nodes", "\(f.nodes)", "--size", "\(f.size)",
                                               "--replay", "\(f.seed)"])
        }
    }
}
