import Foundation
import TestSupport
import XCTest

/// `giantvm node --id auto` through the binary, with a launcher's variables set by the test (no
/// Slurm, no KVM: a plain cluster node without `guest:`).
final class IdAutoCLITests: XCTestCase {
    private func clusterConfig(port: Int) -> String {
        temporaryFile("""
            cluster: idauto
            nodes:
              - {id: 0, address: 127.0.0.1, port: \(port)}
              - {id: 1, address: 127.0.0.1, port: \(port + 1)}
            transport: {plugin: transport-tcp}
            coherence: {plugin: dsm-ivy}
            timeouts: {connect: 10s, heartbeat: 100ms, failure: 2s}
            """)
    }

    func testTwoNodesFindTheirIdsInAnMPILaunchersVariables() throws {
        try Requirement.builtGiantVM()
        let cfg = clusterConfig(port: 23730)
        let args = ["node", "--config", cfg, "--id", "auto", "--duration", "1"]
        let n1 = try Child(Built.giantvm, args, environment: ["OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2"])
        let n0 = try Child(Built.giantvm, args, environment: ["OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_SIZE": "2"])
        let r0 = n0.wait(timeout: 30), r1 = n1.wait(timeout: 30)
        XCTAssertEqual(r0.status, 0, r0.output)
        XCTAssertEqual(r1.status, 0, r1.output)
        XCTAssertTrue(r0.stdout.contains("node 0: this is node 0 (--id auto: OMPI_COMM_WORLD_RANK=0 from Open MPI, process 0 of 2)"), r0.output)
        XCTAssertTrue(r1.stdout.contains("node 1: this is node 1 (--id auto: OMPI_COMM_WORLD_RANK=1 from Open MPI, process 1 of 2)"), r1.output)
        XCTAssertTrue(r0.stdout.contains("node 0: met node 1"), r0.output)
        XCTAssertTrue(r1.stdout.contains("node 1: stopped cleanly"), r1.output)
    }

    func testWithoutALauncherTwoLoopbackNodesAreAmbiguous() throws {
        try Requirement.builtGiantVM()
        let cfg = clusterConfig(port: 23732)
        // The test itself may run under a launcher: clear every variable --id auto reads.
        let cleared = ["OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID"].map { "-u\($0)" }
        let r = try TestSupport.run("/usr/bin/env", cleared + [Built.giantvm, "node", "--config", cfg, "--id", "auto"], timeout: 20)
        XCTAssertEqual(r.status, 1, r.output)
        XCTAssertTrue(r.stderr.contains("--id auto: no launcher rank in the environment"), r.stderr)
        XCTAssertTrue(r.stderr.contains("node 0 (127.0.0.1 on lo), node 1 (127.0.0.1 on lo)"), r.stderr)
        XCTAssertTrue(r.stderr.contains("ambiguous"), r.stderr)
        let bad = try giantvm(["node", "--config", cfg, "--id", "2"], timeout: 20)
        XCTAssertTrue(bad.stderr.contains("\(cfg): there is no node 2 (nodes: 0-1)"), bad.output)
        let junk = try giantvm(["node", "--config", cfg, "--id", "one"], timeout: 20)
        XCTAssertNotEqual(junk.status, 0)
        XCTAssertTrue(junk.stderr.contains("'one' is invalid for '--id <n|auto>'"), junk.stderr)
    }
}
