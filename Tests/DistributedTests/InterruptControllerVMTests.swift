// The test guest's interrupt-controller workloads (Guests/src/u_apic.c) on a real VM, on one node
// (`giantvm run`) and across two (`giantvm up`, the device lines on the other node than the
// IOAPIC and the 8259, the level-triggered test on the other node's vCPU): IA32_APIC_BASE and
// x2APIC (`apic`), IOAPIC edge/level semantics (`ioapic`), the 8259 through LINT0 (`extint`), and
// the exit status and closing line after an unterminated guest line (`partial`).

import Foundation
import TestSupport
import XCTest

final class InterruptControllerVMTests: XCTestCase {
    override func setUpWithError() throws {
        try Requirement.testGuestVM()
    }

    /// A VM config with the 8259 on node 0 and the irq-lines device on the last node.
    func config(port: Int, vcpus: [Int]) -> String {
        let image = Built.packageRoot + "/Guests/build/testguest.elf"
        let nodes = vcpus.enumerated().map { "  - {id: \($0.offset), address: 127.0.0.1, port: \(port + $0.offset), vcpus: \($0.element)}" }
        return temporaryFile("""
            cluster: irqtest
            nodes:
            \(nodes.joined(separator: "\n"))
            memory: 32MiB
            transport: {plugin: transport-tcp}
            coherence: {plugin: \(vcpus.count == 1 ? "dsm-local" : "dsm-ivy")}
            devices:
              - {name: com1, model: uart16550, node: 0, base: 0x3f8, irq: 4}
              - {name: exit, model: isa-debug-exit, node: 0, base: 0xf4}
              - {name: results, model: results, node: 0, base: 0xe0}
              - {name: pic, model: i8259, node: 0, base: 0x20}
              - {name: lines, model: irq-lines, node: \(vcpus.count - 1), base: 0x2100}
            ioapic_node: 0
            timeouts: {connect: 10s, heartbeat: 100ms, failure: 2s}
            guest:
              image: \(image)
              cmdline: "hello"
            """)
    }

    func runOne(_ cmdline: String, port: Int) throws -> ProcessResult {
        try giantvm(["run", "--config", config(port: port, vcpus: [2]), "--timeout", "30", "--cmdline", cmdline], timeout: 45)
    }

    func upTwo(_ cmdline: String, port: Int) throws -> ProcessResult {
        try giantvm(["up", config(port: port, vcpus: [1, 1]), "--timeout", "30", "--cmdline", cmdline], timeout: 50)
    }

    /// The one RESULT line passed, with at least `checks` checks.
    func assertPassed(_ r: ProcessResult, _ workload: String, checks: Int, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(r.status, 0, r.output, file: file, line: line)
        let result = r.stdout.split(separator: "\n").first { $0.contains("RESULT {") }.map(String.init) ?? ""
        XCTAssertTrue(result.contains(#"{"workload":"\#(workload)","vcpus":2,"checks":\#(checks),"failed":0,"failures":"","ok":true}"#),
                      result + "\n" + r.output, file: file, line: line)
        XCTAssertFalse(r.stdout.contains("check failed"), r.stdout, file: file, line: line)
    }

    func testAPICBaseAndX2APICOnOneNode() throws {
        assertPassed(try runOne("apic", port: 20800), "apic", checks: 80)
    }

    func testAPICBaseAndX2APICAcrossTwoNodes() throws {
        // Each vCPU's x2APIC ICR IPI and disabled-page stray IPI target the vCPU on the other node.
        let r = try upTwo("apic", port: 20810)
        assertPassed(r, "apic", checks: 80)
        // Disable, re-enable, x2APIC and back: every mode change reached the other node.
        XCTAssertGreaterThanOrEqual(stat(r.stdout, node: 0, "apic_updates_in") ?? 0, 4, r.stdout)
        XCTAssertGreaterThanOrEqual(stat(r.stdout, node: 1, "apic_updates_in") ?? 0, 4, r.stdout)
    }

    func testIOAPICSemanticsOnOneNode() throws {
        assertPassed(try runOne("ioapic", port: 20820), "ioapic", checks: 18)
    }

    func testIOAPICSemanticsAcrossTwoNodes() throws {
        // Lines from node 1 to the IOAPIC on node 0; the level test runs on vCPU 1 (node 1), so its
        // interrupts cross as IPIs and its EOIs come back to node 0.
        let r = try upTwo("ioapic", port: 20830)
        assertPassed(r, "ioapic", checks: 18)
        XCTAssertEqual(stat(r.stdout, node: 1, "irq_lines_out"), 14, "every level change of the guest (8 edge, 6 level), once")
        XCTAssertGreaterThanOrEqual(stat(r.stdout, node: 1, "eoi_out") ?? 0, 3, "level EOIs of vCPU 1 go to node 0")
    }

    func testExtINTThroughLINT0OnOneNode() throws {
        assertPassed(try runOne("extint", port: 20840), "extint", checks: 5)
    }

    func testExtINTThroughLINT0AcrossTwoNodes() throws {
        assertPassed(try upTwo("extint", port: 20850), "extint", checks: 5)
    }

    /// `run` and `up` (1 and 2 nodes) exit with the guest's own status (isa-debug-exit 5 -> 37),
    /// and the VMM's closing line starts on a new line after the guest's unterminated one.
    func testGuestStatusAndClosingLineOnOneNode() throws {
        let r = try runOne("partial status=5", port: 20860)
        XCTAssertEqual(r.status, 37, r.output)
        XCTAssertTrue(r.stdout.hasSuffix("partial line without newline\n"), r.stdout)
        let up = try giantvm(["up", config(port: 20870, vcpus: [2]), "--timeout", "30", "--cmdline", "partial status=5"], timeout: 50)
        XCTAssertEqual(up.status, 37, up.output)
        XCTAssertTrue(up.stdout.contains("\n[node 0] partial line without newline\n"), up.stdout)
    }

    func testGuestStatusAndClosingLineAcrossTwoNodes() throws {
        let r = try upTwo("partial status=5", port: 20880)
        XCTAssertEqual(r.status, 37, r.output)
        XCTAssertTrue(r.stdout.contains("\n[node 0] partial line without newline\n"), r.stdout)
        XCTAssertTrue(r.stderr.contains("[up] failed: node(s) 0, 1 exited non-zero; exit status 37"), r.stderr)
    }
}
