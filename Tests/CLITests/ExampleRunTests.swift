import Foundation
import TestSupport
import XCTest

/// Every example does what its comment says, run the way the comment runs it. (ExamplesTests in
/// ConfigTests validates every file; VMProcessTests runs vm-2node.yaml; SlurmTests runs
/// examples/slurm; vm-2host-ssh.yaml needs two ssh hosts: SSHLaunchTests run the same shape.)
final class ExampleRunTests: XCTestCase {
    override func setUpWithError() throws { try Requirement.builtGiantVM() }

    let examples = Built.packageRoot + "/examples/"

    func testClusterExamplesMeetAndStopCleanly() throws {
        for f in ["cluster-3node.yaml", "cluster-3node-secure.yaml"] {
            let r = try giantvm(["up", examples + f, "--duration", "2"], timeout: 60)
            XCTAssertEqual(r.status, 0, "\(f): \(r.output)")
            XCTAssertTrue(r.stdout.contains("[up] all 3 nodes stopped cleanly"), "\(f): \(r.output)")
            for n in 0..<3 { XCTAssertTrue(r.stdout.contains("[node \(n)] node \(n): test frames exchanged"), "\(f): \(r.output)") }
        }
    }

    /// The fault example: its coherence rules act on dsm-ivy's messages under a workload (and the
    /// count stays exact), its heartbeat rule acts without one.
    func testFaultExampleActsOnWhatItsCommentSays() throws {
        try Requirement.userfaultfd()
        let out = NSTemporaryDirectory() + "faults-\(getpid()).json"
        defer { try? FileManager.default.removeItem(atPath: out) }
        let r = try giantvm(["bench", "dsm", "--config", examples + "cluster-3node-faults.yaml", "--workload", "counter",
                             "--stats-out", out, "--timeout", "90"], timeout: 120)
        XCTAssertEqual(r.status, 0, r.output)
        XCTAssertTrue(r.stdout.contains("(exact)") && r.stdout.contains("PASS"), r.output)
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out))) as? [String: Any]
        let total = json?["total"] as? [String: Int] ?? [:]
        XCTAssertGreaterThan(total["faults.delayed"] ?? 0, 0, "the delay rules touched nothing: \(total)")
        let up = try giantvm(["up", examples + "cluster-3node-faults.yaml", "--duration", "3", "--stats"], timeout: 60)
        XCTAssertEqual(up.status, 0, up.output)
        let dropped = up.stderr.split(separator: "\n").filter { $0.contains("faults.dropped") }
        XCTAssertFalse(dropped.isEmpty, "the heartbeat rule dropped nothing: \(up.output)")
    }

    func testOneNodeVMExamplesBoot() throws {
        try Requirement.kvm()
        try Requirement.userfaultfd()
        for f in ["vm-1node.yaml", "multiboot-1node.yaml"] {
            let r = try giantvm(["run", "--config", examples + f, "--timeout", "60"], timeout: 90)
            if r.status == 1 && r.stderr.contains("guest.image") && r.stderr.contains("Guests/build") {
                throw XCTSkip("the test guest is not built (make -C Guests): \(r.stderr)")
            }
            XCTAssertEqual(r.status, 0, "\(f): \(r.output)")
            XCTAssertTrue(r.stdout.contains("hello from vCPU 0") && r.stdout.contains("hello from vCPU 1"), "\(f): \(r.output)")
        }
    }
}
