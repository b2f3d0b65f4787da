import Foundation
import Launch
import XCTest

/// `LaunchResult.commandStatus`: what `giantvm up` exits with — the first failed process's own
/// status (as `giantvm run` would exit), not a flat 1.
final class CommandStatusTests: XCTestCase {
    private func result(_ script: [String]) throws -> LaunchResult {
        let specs = script.enumerated().map { i, s in ProcessSpec(label: "p\(i)", arguments: ["-c", s]) }
        return try Launcher(executable: "/bin/sh", processes: specs, policy: .init(failureGrace: 5)).run()
    }

    func testEveryProcessSucceedingGivesZero() throws {
        XCTAssertEqual(try result(["exit 0", "exit 0"]).commandStatus, 0)
    }

    func testAGuestStatusThatEveryNodeEchoesIsKept() throws {
        // isa-debug-exit value 1 -> 33 on every node, as a distributed VM's stop reason travels.
        XCTAssertEqual(try result(["exit 33", "sleep 0.3; exit 33"]).commandStatus, 33)
        // a vCPU failure (2) and a reset request (3) stay distinct from a set-up failure (1)
        XCTAssertEqual(try result(["exit 2", "sleep 0.3; exit 2"]).commandStatus, 2)
        XCTAssertEqual(try result(["exit 3"]).commandStatus, 3)
    }

    func testTheFirstFailureWinsOverLaterOnes() throws {
        XCTAssertEqual(try result(["sleep 0.5; exit 1", "exit 34"]).commandStatus, 34)
    }

    /// A killed node has no status of its own; its peers' "lost node" (1) is the VM's status.
    func testAProcessKilledBySignalGivesThePeersStatusOrOne() throws {
        XCTAssertEqual(try result(["kill -9 $$"]).commandStatus, 1)
        XCTAssertEqual(try result(["kill -9 $$", "sleep 0.3; exit 1"]).commandStatus, 1)
        XCTAssertEqual(try result(["kill -9 $$", "sleep 0.3; exit 2"]).commandStatus, 2)
    }
}
