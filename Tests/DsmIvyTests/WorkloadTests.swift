// The thread-driven DSM workloads on plain shared memory (no DSM): several "nodes" in one process
// share one buffer, with real threads. Checks the workloads' own logic and exact checks, and that
// their barriers hold; the multi-process runs over the real DSM use the same code.

import XCTest
import Foundation
import DsmWorkloads

final class WorkloadTests: XCTestCase {
    func runAll(_ params: WorkloadParams) throws -> [NodeResult] {
        let bytes = params.requiredBytes
        let mem = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 4096)
        defer { mem.deallocate() }
        mem.initializeMemory(as: UInt8.self, repeating: 0, count: bytes)
        let workloads = try (0..<params.nodes).map { try DsmWorkload(memory: mem, bytes: bytes, params: params, node: $0) }
        final class Results: @unchecked Sendable { var all: [NodeResult?] = [] }
        let results = Results()
        results.all = [NodeResult?](repeating: nil, count: params.nodes)
        let lock = NSLock()
        let group = DispatchGroup()
        for (i, w) in workloads.enumerated() {
            group.enter()
            Thread {
                let r = w.run()
                lock.lock(); results.all[i] = r; lock.unlock()
                group.leave()
            }.start()
        }
        XCTAssertEqual(group.wait(timeout: .now() + 60), .success)
        return results.all.compactMap { $0 }
    }

    func testCounterIsExact() throws {
        var p = WorkloadParams(kind: .counter, nodes: 2, threadsPerNode: 2, iterations: 500)
        p.timeoutSeconds = 20
        let rs = try runAll(p)
        XCTAssertEqual(rs.flatMap(\.errors), [])
        XCTAssertEqual(rs[0].checks["counter"], 2000)
        XCTAssertEqual(rs.flatMap(\.operations), [500, 500, 500, 500])
    }

    func testRandomFindsNothingOnCoherentMemory() throws {
        let rs = try runAll(WorkloadParams(kind: .random, nodes: 3, threadsPerNode: 1, seed: 5, iterations: 5000))
        XCTAssertEqual(rs.flatMap(\.errors), [])
        XCTAssertGreaterThan(rs[0].checks["random.adds"] ?? 0, 1000)
    }

    func testPingPongAndReadMiss() throws {
        let pp = try runAll(WorkloadParams(kind: .pingpong, nodes: 2, threadsPerNode: 1, iterations: 300))
        XCTAssertEqual(pp.flatMap(\.errors), [])
        XCTAssertEqual(pp[0].checks["pingpong"], 600)
        XCTAssertEqual(pp[0].latencies.count, 299)
        let rm = try runAll(WorkloadParams(kind: .readmiss, nodes: 2, threadsPerNode: 1, iterations: 3, pages: 8))
        XCTAssertEqual(rm.flatMap(\.errors), [])
        XCTAssertEqual(rm[0].checks["readmiss.pages"], 24)
        XCTAssertEqual(rm[0].latencies.count, 24)
    }

    func testLitmusCountsEveryTrialAndNoForbiddenOutcome() throws {
        let rs = try runAll(WorkloadParams(kind: .litmus, nodes: 2, threadsPerNode: 2, iterations: 50))
        XCTAssertEqual(rs.flatMap(\.errors), [])
        XCTAssertEqual(Set(rs[0].litmus.keys), ["MP", "SB", "LB", "2+2W", "IRIW"])
        for (name, outcomes) in rs[0].litmus { XCTAssertEqual(outcomes.values.reduce(0, +), 50, name) }
    }

    func testForbiddenOutcomesAreRecognised() {
        XCTAssertTrue(DsmWorkload.forbidden("MP", [1, 0], 0, 0))
        XCTAssertFalse(DsmWorkload.forbidden("MP", [0, 1], 0, 0))
        XCTAssertFalse(DsmWorkload.forbidden("SB", [0, 0], 0, 0))
        XCTAssertTrue(DsmWorkload.forbidden("LB", [1, 1], 0, 0))
        XCTAssertTrue(DsmWorkload.forbidden("2+2W", [0, 0], 1, 1))
        XCTAssertTrue(DsmWorkload.forbidden("IRIW", [1, 0, 1, 0], 0, 0))
        XCTAssertFalse(DsmWorkload.forbidden("IRIW", [1, 1, 1, 0], 0, 0))
    }

    func testTooLittleMemoryIsRefusedClearly() {
        let mem = UnsafeMutableRawPointer.allocate(byteCount: 4096, alignment: 4096)
        defer { mem.deallocate() }
        XCTAssertThrowsError(try DsmWorkload(memory: mem, bytes: 4096, params: WorkloadParams(kind: .counter, nodes: 2, threadsPerNode: 1), node: 0)) {
            XCTAssertEqual("\($0)", "workload counter needs 557056 bytes of guest memory, the cluster has 4096")
        }
    }
}
