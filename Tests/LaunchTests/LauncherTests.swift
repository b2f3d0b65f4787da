import Foundation
import Launch
import XCTest

/// The launcher with /bin/sh children: no giantvm binary, no KVM.
final class LauncherTests: XCTestCase {
    final class Lines: @unchecked Sendable {
        let lock = NSLock()
        var all: [(Int, ProcessOutput, String)] = []
        func add(_ i: Int, _ s: ProcessOutput, _ l: String) { lock.withLock { all.append((i, s, l)) } }
        func of(_ i: Int, _ s: ProcessOutput) -> [String] { lock.withLock { all.filter { $0.0 == i && $0.1 == s }.map(\.2) } }
    }

    private func sh(_ label: String, _ script: String, env: [String: String] = [:]) -> ProcessSpec {
        ProcessSpec(label: label, arguments: ["-c", script], environment: env, stdoutPrefix: "[\(label)] ", stderrPrefix: "[\(label)] ")
    }

    private func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }

    func testEveryLineOfEveryProcessReachesTheHandlerInOrderWithItsStream() throws {
        let lines = Lines()
        let l = Launcher(executable: "/bin/sh",
                         processes: [sh("a", "for i in 1 2 3; do echo out$i; done; echo err1 >&2; printf tail"),
                                     sh("b", "echo \"$GIANTVM_TEST_VALUE\"; echo \"$GIANTVM_LAUNCHER_PID\"", env: ["GIANTVM_TEST_VALUE": "v42"])],
                         policy: .init(failureGrace: 5)) { i, s, line in lines.add(i, s, line); return false }
        let r = try l.run()
        XCTAssertTrue(r.allSucceeded)
        XCTAssertEqual(r.ends, [.exited(0), .exited(0)])
        XCTAssertEqual(lines.of(0, .stdout), ["out1", "out2", "out3", "tail"])
        XCTAssertEqual(lines.of(0, .stderr), ["err1"])
        XCTAssertEqual(lines.of(1, .stdout), ["v42", "\(getpid())"])
    }

    func testAFailureIsReportedAndStragglersAreKilledAfterTheGrace() throws {
        let t0 = now()
        let l = Launcher(executable: "/bin/sh",
                         processes: [sh("ok", "exit 0"), sh("bad", "sleep 0.2; exit 7"), sh("hung", "sleep 60")],
                         policy: .init(failureGrace: 0.5)) { _, _, _ in false }
        let r = try l.run()
        XCTAssertLessThan(now() - t0, 10, "the hung process must be killed after the grace, not waited for")
        XCTAssertEqual(r.ends[0], .exited(0))
        XCTAssertEqual(r.ends[1], .exited(7))
        XCTAssertEqual(r.ends[2], .signaled(SIGKILL))
        XCTAssertEqual(r.firstFailure, 1)
        XCTAssertEqual(r.killedAfterFailure, [2])
        XCTAssertEqual(r.failed, [1, 2])
        XCTAssertFalse(r.allSucceeded)
    }

    func testTheDeadlineStopsEverythingWithSIGTERM() throws {
        let t0 = now()
        let l = Launcher(executable: "/bin/sh", processes: [sh("a", "sleep 60"), sh("b", "sleep 60")],
                         policy: .init(failureGrace: 30, deadline: 0.3)) { _, _, _ in false }
        let r = try l.run()
        XCTAssertLessThan(now() - t0, 10)
        XCTAssertTrue(r.timedOut)
        XCTAssertEqual(r.ends, [.signaled(SIGTERM), .signaled(SIGTERM)])
    }

    func testTerminateForwardsTheSignalAndKillsWhatIgnoresIt() throws {
        let lines = Lines()
        let l = Launcher(executable: "/bin/sh",
                         processes: [sh("polite", "trap 'echo got-term; exit 3' TERM; echo ready; while :; do sleep 0.05; done"),
                                     sh("deaf", "trap '' TERM; echo ready; while :; do sleep 0.05; done")],
                         policy: .init(failureGrace: 0.5)) { i, s, line in lines.add(i, s, line); return false }
        DispatchQueue.global().async {
            let deadline = Date().addingTimeInterval(10)
            while lines.lock.withLock({ lines.all.filter { $0.2 == "ready" }.count }) < 2 && Date() < deadline { usleep(10_000) }
            l.terminate(signal: SIGTERM)
        }
        let r = try l.run()
        XCTAssertEqual(r.interruptedBy, SIGTERM)
        XCTAssertEqual(r.ends[0], .exited(3))
        XCTAssertEqual(lines.of(0, .stdout).last, "got-term")
        XCTAssertEqual(r.ends[1], .signaled(SIGKILL))
    }

    func testAMissingExecutableIsAClearErrorNamingTheProcess() {
        let l = Launcher(executable: "/nonexistent/giantvm", processes: [ProcessSpec(label: "node 0", arguments: [])],
                         policy: .init(failureGrace: 1))
        XCTAssertThrowsError(try l.run()) { e in
            XCTAssertTrue("\(e)".contains("node 0") && "\(e)".contains("/nonexistent/giantvm"), "\(e)")
        }
    }

    func testRelayedLinesCarryTheirPrefix() throws {
        // Relayed output goes to this process's stdout: run a launcher in a child shell pipeline
        // would need the binary, so check the line split and prefix through a handler instead.
        let lines = Lines()
        let l = Launcher(executable: "/bin/sh", processes: [sh("n", "printf 'a\\nb\\n'")], policy: .init(failureGrace: 1)) { i, s, line in
            lines.add(i, s, "[n] " + line); return false
        }
        _ = try l.run()
        XCTAssertEqual(lines.of(0, .stdout), ["[n] a", "[n] b"])
    }

    func testProcessEndDecodesWaitStatuses() {
        XCTAssertEqual(ProcessEnd(waitStatus: 0), .exited(0))
        XCTAssertEqual(ProcessEnd(waitStatus: 3 << 8), .exited(3))
        XCTAssertEqual(ProcessEnd(waitStatus: 9), .signaled(9))
        XCTAssertEqual(ProcessEnd.signaled(15).status, 143)
    }
}
