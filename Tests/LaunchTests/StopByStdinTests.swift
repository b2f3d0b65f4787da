import Foundation
import Launch
import XCTest

/// The stop logic of processes started with `stop: .closingStdin` (the ssh of `up --ssh`) and of
/// the node side (`StdinWatch`), with /bin/sh children: no ssh, no giantvm binary.
final class StopByStdinTests: XCTestCase {
    private func piped(_ label: String, _ script: String) -> ProcessSpec {
        ProcessSpec(label: label, arguments: ["-c", script], stop: .closingStdin)
    }

    private func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }

    /// Reads until end of input; a signal would say so instead.
    private let reader = "trap 'echo got-signal; exit 9' TERM INT; echo ready; while read x; do :; done; echo input-closed; exit 5"

    private func whenReady(_ lines: LauncherTests.Lines, count: Int, _ body: @escaping @Sendable () -> Void) {
        DispatchQueue.global().async {
            let deadline = Date().addingTimeInterval(10)
            while lines.lock.withLock({ lines.all.filter { $0.2 == "ready" }.count }) < count && Date() < deadline { usleep(10_000) }
            body()
        }
    }

    func testTerminateClosesStdinInsteadOfSignalling() throws {
        let lines = LauncherTests.Lines()
        let l = Launcher(executable: "/bin/sh", processes: [piped("a", reader), piped("b", reader)],
                         policy: .init(failureGrace: 5)) { i, s, line in lines.add(i, s, line); return false }
        whenReady(lines, count: 2) { l.terminate(signal: SIGTERM) }
        let r = try l.run()
        XCTAssertEqual(r.ends, [.exited(5), .exited(5)])
        XCTAssertEqual(lines.of(0, .stdout), ["ready", "input-closed"])
        XCTAssertEqual(lines.of(1, .stdout), ["ready", "input-closed"])
        XCTAssertEqual(r.interruptedBy, SIGTERM)
    }

    func testOneProcessesInputIsNotHeldOpenByAnother() throws {
        // "deaf" ignores SIGTERM and lives until the grace: had it inherited the launcher's end of
        // "reader"'s pipe, "reader" would see no end of input until "deaf" died.
        let lines = LauncherTests.Lines()
        let times = TimeBox()
        let l = Launcher(executable: "/bin/sh",
                         processes: [piped("reader", reader),
                                     ProcessSpec(label: "deaf", arguments: ["-c", "trap '' TERM; echo ready; while :; do sleep 0.05; done"])],
                         policy: .init(failureGrace: 3)) { i, s, line in
            lines.add(i, s, line)
            if line == "input-closed" { times.set(Double(DispatchTime.now().uptimeNanoseconds) / 1e9) }
            return false
        }
        let asked = TimeBox()
        whenReady(lines, count: 2) { asked.set(Double(DispatchTime.now().uptimeNanoseconds) / 1e9); l.terminate(signal: SIGTERM) }
        let r = try l.run()
        XCTAssertEqual(r.ends[0], .exited(5))
        XCTAssertEqual(r.ends[1], .signaled(SIGKILL), "ignored SIGTERM: killed after the grace")
        let closed = try XCTUnwrap(times.get()), at = try XCTUnwrap(asked.get())
        XCTAssertLessThan(closed - at, 1.5, "the reader saw its input close at once, not when the other process died")
    }

    func testTheDeadlineClosesStdinAndWhatIgnoresItIsKilled() throws {
        let t0 = now()
        let l = Launcher(executable: "/bin/sh",
                         processes: [piped("reader", "while read x; do :; done; exit 4"),
                                     piped("stubborn", "exec 0</dev/null; trap '' TERM; while :; do sleep 0.05; done")],
                         policy: .init(failureGrace: 30, deadline: 0.3)) { _, _, _ in false }
        let r = try l.run()
        XCTAssertTrue(r.timedOut)
        XCTAssertEqual(r.ends[0], .exited(4), "stopped by the end of its input, not by SIGTERM")
        XCTAssertEqual(r.ends[1], .signaled(SIGKILL), "still running 5 s after the deadline")
        XCTAssertLessThan(now() - t0, 15)
    }

    func testAFailureKillsTheOthersAfterTheGraceAsForLocalProcesses() throws {
        let l = Launcher(executable: "/bin/sh",
                         processes: [piped("bad", "sleep 0.1; exit 255"), piped("hung", "exec 0</dev/null; sleep 60")],
                         policy: .init(failureGrace: 0.5)) { _, _, _ in false }
        let r = try l.run()
        XCTAssertEqual(r.ends, [.exited(255), .signaled(SIGKILL)])
        XCTAssertEqual(r.firstFailure, 0)
        XCTAssertEqual(r.killedAfterFailure, [1])
    }

    func testSignalledProcessesStillGetTheSignal() throws {
        let lines = LauncherTests.Lines()
        let l = Launcher(executable: "/bin/sh",
                         processes: [ProcessSpec(label: "local", arguments: ["-c", "trap 'echo got-term; exit 3' TERM; echo ready; while :; do sleep 0.05; done"]),
                                     piped("remote", reader)],
                         policy: .init(failureGrace: 5)) { i, s, line in lines.add(i, s, line); return false }
        whenReady(lines, count: 2) { l.terminate(signal: SIGTERM) }
        let r = try l.run()
        XCTAssertEqual(r.ends, [.exited(3), .exited(5)])
        XCTAssertEqual(lines.of(0, .stdout).last, "got-term")
        XCTAssertEqual(lines.of(1, .stdout).last, "input-closed")
    }

    // MARK: - the node side

    func testStdinWatchStopsOnEndOfInputThenForcesAfterTheGrace() throws {
        var fds: [Int32] = [0, 0]
        XCTAssertEqual(pipe(&fds), 0)
        let eof = TimeBox(), forced = TimeBox()
        StdinWatch.start(fd: fds[0], grace: 0.4, onEOF: { eof.set(Double(DispatchTime.now().uptimeNanoseconds) / 1e9) },
                         onGraceExpired: { forced.set(Double(DispatchTime.now().uptimeNanoseconds) / 1e9) })
        // Input that arrives is read and dropped; it is not an end.
        XCTAssertEqual(write(fds[1], "hello\n", 6), 6)
        usleep(200_000)
        XCTAssertNil(eof.get())
        let closedAt = now()
        close(fds[1])
        let deadline = Date().addingTimeInterval(5)
        while forced.get() == nil && Date() < deadline { usleep(10_000) }
        close(fds[0])
        let e = try XCTUnwrap(eof.get(), "end of input was not noticed")
        let f = try XCTUnwrap(forced.get(), "the grace never expired")
        XCTAssertLessThan(e - closedAt, 1)
        XCTAssertGreaterThanOrEqual(f - e, 0.39)
        XCTAssertTrue(StdinWatch.closedMessage(label: "node 2").hasPrefix("node 2: standard input closed"))
    }
}

/// A time set on one thread and read on another.
final class TimeBox: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Double?
    func set(_ v: Double) { lock.withLock { if value == nil { value = v } } }
    func get() -> Double? { lock.withLock { value } }
}
