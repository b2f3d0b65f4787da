// Nodes whose hosts could offer different CPUID: at start every node announces what its probe hid
// and whether it runs kvmclock, and every node applies the merge (the union of the hidden
// features; kvmclock only if all run it) before any vCPU runs. Two nodes on this machine are made
// to differ through the diagnosis switches of one node (GIANTVM_INSTRUCTION_PROBE=0, or
// GIANTVM_KVMCLOCK=0) — as a host with other capabilities would.
import XCTest
import Foundation
import Glibc
@testable import KVM
import TestSupport

final class CPUFeatureMergeTests: XCTestCase {
    let elf = Built.packageRoot + "/Guests/build/testguest.elf"

    override func setUpWithError() throws {
        try Requirement.testGuestVM()
    }

    func config(port: Int, cmdline: String) -> String {
        multibootTestConfig(cluster: "merge", port: port, vcpus: [1, 1], cmdline: cmdline)
    }

    /// Node 0 and node 1 (with `env1` in its environment); returns both results.
    func run(port: Int, cmdline: String, env1: [String: String]) throws -> (ProcessResult, ProcessResult) {
        let cfg = config(port: port, cmdline: cmdline)
        let n0 = try Child(Built.giantvm, ["node", "--config", cfg, "--id", "0", "--timeout", "30", "--log-level", "info"])
        let n1 = try Child(Built.giantvm, ["node", "--config", cfg, "--id", "1", "--timeout", "30", "--log-level", "info"], environment: env1)
        defer { n0.signal(SIGKILL); n1.signal(SIGKILL) }
        let r0 = n0.wait(timeout: 60), r1 = n1.wait(timeout: 20)
        return (r0, r1)
    }

    func testANodeWithoutTheProbeHidesWhatTheOthersHostLacks() throws {
        let kvm = try KVMSystem()
        let report = try InstructionProbe.report(kvm: kvm, supported: try kvm.supportedCPUID())
        guard !report.hidden.isEmpty else { throw XCTSkip("the probe hides nothing on this host: both nodes offer the same either way") }
        // node 1 does not probe (it offers all KVM supports) and runs the last vCPU, which reports its CPUID
        let (r0, r1) = try run(port: 19910, cmdline: "cpuid", env1: ["GIANTVM_INSTRUCTION_PROBE": "0"])
        XCTAssertEqual(r0.status, 0, r0.output.suffix(2000).description)
        let names = report.hidden.map(\.name).joined(separator: ", ")
        XCTAssertTrue(r1.output.contains("CPUID merged across nodes: hidden (another node's host lacks them): \(names) (node 0 hides [\(names)])"),
                      r1.output.suffix(2000).description)
        XCTAssertFalse(r0.output.contains("CPUID merged across nodes"), "node 0 already hid them: nothing changes there")
        if report.hidden.contains(.cx16) {   // leaf 1 follows the VMM's table even on PVM (docs/vmm.md)
            guard let r = r0.stdout.range(of: "\"leaf1_ecx\":"), let ecx = UInt32(r0.stdout[r.upperBound...].prefix { $0.isNumber }) else {
                return XCTFail(r0.stdout)
            }
            XCTAssertEqual(ecx & (1 << 13), 0, "cx16 hidden on node 1 too (its own view would offer it)")
        }
    }

    func testKVMClockIsOfferedOnlyWhenEveryNodeRunsIt() throws {
        let kvm = try KVMSystem()
        guard KVMClockProbe.support(kvm: kvm, supported: try kvm.supportedCPUID()).works else { throw XCTSkip("kvmclock does not work on this KVM") }
        let (r0, r1) = try run(port: 19914, cmdline: "kvmclock ops=10", env1: ["GIANTVM_KVMCLOCK": "0"])
        XCTAssertEqual(r0.status, 33, "vCPU 0 on node 0 is not offered kvmclock either: " + r0.output.suffix(2000))
        XCTAssertTrue(r0.output.contains("CPUID merged across nodes: kvmclock not offered (another node cannot offer it)"), r0.output.suffix(2000).description)
        XCTAssertTrue(r0.stdout.contains("kvmclock not offered: no KVM signature leaf"), r0.stdout.suffix(2000).description)
        XCTAssertFalse(r1.stdout.contains("kvmclock minus node 0's"), "no kvmclock to align")
    }
}
