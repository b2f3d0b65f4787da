// Placement policies (docs/migration.md, "Placement policies") over real `giantvm` node
// processes: real KVM, dsm-ivy over userfaultfd, TCP on loopback, the test guest. Two vCPUs on
// two nodes increment one counter under one spinlock (they fault on the same pages all the
// time); with `placement: {plugin: placement, settings: {policy: co-locate}}` node 0's policy must
// move one of them so both run on one node, through a live migration, and the count must stay
// exact; with `follow-memory` one follows the other's pages. Without a policy nothing moves.
// Every wait is bounded.

import Foundation
import TestSupport
import XCTest

final class PlacementProcessTests: XCTestCase {
    override func setUpWithError() throws {
        try Requirement.testGuestVM()
    }

    func run(port: Int, placement: String?) throws -> (output: String, status: Int32) {
        let cfg = vmConfig(port: port, vcpus: [1, 1], cmdline: "counter iters=100000000 timeout=60")
        if let placement {
            let text = try String(contentsOfFile: cfg, encoding: .utf8) + "\nplacement: \(placement)\n"
            try text.write(toFile: cfg, atomically: true, encoding: .utf8)
        }
        let up = try Child(Built.giantvm, ["up", cfg, "--timeout", "60", "--stats"])
        defer { up.signal(SIGKILL) }
        let r = up.wait(timeout: 80)
        XCTAssertFalse(r.timedOut, r.output)
        return (r.output, r.status)
    }

    func assertExact(_ output: String, file: StaticString = #filePath, line: UInt = #line) {
        let result = lines(output, "[node 0] RESULT ").first ?? ""
        XCTAssertTrue(result.hasPrefix(#"{"workload":"counter","vcpus":2,"expected":200000000,"total":200000000,"#), output,
                      file: file, line: line)
        XCTAssertTrue(result.hasSuffix(#""ok":true}"#), result, file: file, line: line)
    }

    /// The value of counter `name` in node `node`'s --stats table.
    func counter(_ output: String, node: Int, _ name: String) -> Int? {
        lines(output, "[node \(node)] \(name) ").first.flatMap { Int($0.split(separator: " ").last ?? "") }
    }

    func testCoLocateMovesSharingVCPUsOntoOneNode() throws {
        let r = try run(port: 24610, placement: "{plugin: placement, interval: 200ms, settings: {policy: co-locate, min_shared: 1}}")
        XCTAssertEqual(r.status, 0, r.output)
        assertExact(r.output)
        // Exactly one move (vCPU 1, the higher-numbered, to node 0), then both stay together.
        XCTAssertEqual(counter(r.output, node: 0, "placement.migrations_requested"), 1, r.output)
        XCTAssertEqual(counter(r.output, node: 0, "placement.migrations_done"), 1, r.output)
        XCTAssertEqual(counter(r.output, node: 0, "placement.migrations_failed"), 0, r.output)
        XCTAssertGreaterThan(counter(r.output, node: 0, "placement.figures_rows") ?? 0, 0, "node 1's figures reached node 0: \(r.output)")
        XCTAssertTrue(r.output.contains("[node 0] node 0: migration: departed=0 arrived=1 "), r.output)
        XCTAssertTrue(r.output.contains("resident now: 0,1\n"), r.output)
        XCTAssertEqual(counter(r.output, node: 1, "migrate.departed"), 1, r.output)
    }

    /// follow-memory: each vCPU's faults come from the other's node; one of them (the one with
    /// more remote faults) follows, the other stays (no swap), and the count stays exact.
    func testFollowMemoryBringsOneVCPUToTheOther() throws {
        let r = try run(port: 24640, placement: "{plugin: placement, interval: 200ms, settings: {policy: follow-memory, threshold: 20, persist: 1}}")
        XCTAssertEqual(r.status, 0, r.output)
        assertExact(r.output)
        XCTAssertEqual(counter(r.output, node: 0, "placement.migrations_done"), 1, r.output)
        XCTAssertEqual(counter(r.output, node: 0, "placement.migrations_failed"), 0, r.output)
        XCTAssertTrue(r.output.contains("resident now: 0,1\n"), r.output)
    }

    func testWithoutAPolicyNothingMoves() throws {
        let r = try run(port: 24620, placement: nil)
        XCTAssertEqual(r.status, 0, r.output)
        assertExact(r.output)
        XCTAssertNil(counter(r.output, node: 0, "placement.migrations_requested"), r.output)
        for node in 0...1 {
            XCTAssertEqual(counter(r.output, node: node, "migrate.departed"), 0, r.output)
            XCTAssertEqual(counter(r.output, node: node, "migrate.arrived"), 0, r.output)
        }
    }

    /// A bad policy setting stops the VM before it runs, naming the plugin and the setting.
    func testBadSettingIsNamed() throws {
        let r = try run(port: 24630, placement: "{plugin: placement, settings: {policy: co-locate, persist: 3}}")
        XCTAssertNotEqual(r.status, 0, r.output)
        XCTAssertTrue(r.output.contains("placement") && r.output.contains("setting 'persist' belongs to policy follow-memory"), r.output)
    }
}
