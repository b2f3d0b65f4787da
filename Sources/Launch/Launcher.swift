// The one launcher: starts a set of processes (the nodes of a cluster, usually `giantvm node` or
// `giantvm bench dsm --node I`), relays or hands over their output line by line, and stops them
// together.
//
// Policy, the same for every command that starts node processes (`up`, `net-bench`, `bench dsm`):
//   - a process that fails (non-zero exit or a signal) is the first failure; the others are
//     expected to stop by themselves (the cluster tells them); those still running
//     `failureGrace` seconds later are killed (SIGKILL);
//   - at `deadline` every process still running gets SIGTERM, and SIGKILL 5 s later;
//   - `terminate(signal:)` (Ctrl-C on the launcher) forwards the signal, then SIGKILL after the
//     grace;
//   - every child gets PR_SET_PDEATHSIG through `Launcher.adoptParentDeath()` (called first thing
//     by a child that was started with the environment variable below), so killing the launcher
//     with SIGKILL leaves nothing behind;
//   - a process started with `stop: .closingStdin` (a node on another host, through ssh: SSH.swift)
//     is asked to stop by closing the pipe the launcher keeps to its standard input, never by a
//     signal, which would end the local ssh and not the remote node; SIGKILL stays SIGKILL (the
//     remote side then sees its input close when the connection drops). The write end is the
//     launcher's alone (close-on-exec), so the launcher dying closes it too.
//
// Threading: `run` on the caller's thread (it blocks until every process ended and every output
// pipe is drained); one relay thread per pipe; `terminate` from any thread (a signal thread).

import CSystem
import Foundation
import Glibc

/// One process to start.
public struct ProcessSpec: Sendable {
    /// Names the process in messages ("node 2").
    public var label: String
    /// Arguments after the executable.
    public var arguments: [String]
    /// Added to (or replacing in) the launcher's own environment.
    public var environment: [String: String]
    /// Prefixes of relayed lines (nil: relayed as they are).
    public var stdoutPrefix: String?
    public var stderrPrefix: String?
    /// The program to run instead of the launcher's `executable` (e.g. ssh).
    public var executable: String?
    /// How the launcher asks this process to stop.
    public var stop: StopRequest

    /// How a process is asked to stop (Ctrl-C on the launcher, its deadline).
    public enum StopRequest: Sendable, Equatable {
        /// The signal is sent to the process group (standard input is inherited).
        case signal
        /// Standard input is a pipe the launcher keeps open and closes to ask for a stop.
        case closingStdin
    }

    public init(label: String, arguments: [String], environment: [String: String] = [:],
                stdoutPrefix: String? = nil, stderrPrefix: String? = nil, executable: String? = nil,
                stop: StopRequest = .signal) {
        self.label = label
        self.arguments = arguments
        self.environment = environment
        self.stdoutPrefix = stdoutPrefix
        self.stderrPrefix = stderrPrefix
        self.executable = executable
        self.stop = stop
    }
}

/// How a process ended.
public enum ProcessEnd: Equatable, Sendable, CustomStringConvertible {
    case exited(Int32)
    case signaled(Int32)

    /// A shell-style status: the exit code, or 128 + the signal.
    public var status: Int32 {
        switch self {
        case let .exited(c): return c
        case let .signaled(s): return 128 + s
        }
    }
    public var succeeded: Bool { self == .exited(0) }
    public var description: String {
        switch self {
        case let .exited(c): return "exited with status \(c)"
        case let .signaled(s): return "was killed by signal \(s)"
        }
    }

    /// Decodes a `waitpid` status word.
    public init(waitStatus st: Int32) {
        if st & 0x7f == 0 { self = .exited((st >> 8) & 0xff) } else { self = .signaled(st & 0x7f) }
    }
}

/// What happened to the set of processes.
public struct LaunchResult: Sendable {
    /// By process index.
    public var ends: [ProcessEnd]
    /// The index of the first process that failed, if any.
    public var firstFailure: Int?
    /// The deadline passed with processes still running (they were stopped).
    public var timedOut = false
    /// Processes still running `failureGrace` after the first failure were killed.
    public var killedAfterFailure: [Int] = []
    /// `terminate(signal:)` was called with this signal.
    public var interruptedBy: Int32?

    public var allSucceeded: Bool { ends.allSatisfy(\.succeeded) && !timedOut && interruptedBy == nil }
    public var failed: [Int] { ends.indices.filter { !ends[$0].succeeded } }
}

public struct LaunchError: Error, CustomStringConvertible {
    public var message: String
    public init(_ m: String) { message = m }
    public var description: String { message }
}

/// Which stream a line came from.
public enum ProcessOutput: Sendable { case stdout, stderr }

public final class Launcher: @unchecked Sendable {
    /// The environment variable a child finds its launcher's pid in.
    public static let parentVariable = "GIANTVM_LAUNCHER_PID"

    public struct Policy: Sendable {
        /// Seconds after the first failure before the processes still running are killed.
        public var failureGrace: Double
        /// Seconds after the start at which everything still running is stopped (nil: never).
        public var deadline: Double?
        public init(failureGrace: Double, deadline: Double? = nil) {
            self.failureGrace = failureGrace
            self.deadline = deadline
        }
    }

    /// Gets every output line (without its newline). Return true to have it relayed too.
    public typealias LineHandler = @Sendable (_ index: Int, _ stream: ProcessOutput, _ line: String) -> Bool

    public let executable: String
    public let processes: [ProcessSpec]
    public let policy: Policy
    private let onLine: LineHandler?
    private let outLock = NSLock()
    private let stateLock = NSLock()
    private var pids: [pid_t] = []
    private var ended: [ProcessEnd?] = []
    /// Write ends of the standard-input pipes of `.closingStdin` processes (-1: none or closed).
    private var stdinWriters: [Int32] = []
    private var interruptSignal: Int32?
    private var interruptedAt: UInt64?

    public init(executable: String, processes: [ProcessSpec], policy: Policy, onLine: LineHandler? = nil) {
        self.executable = executable
        self.processes = processes
        self.policy = policy
        self.onLine = onLine
    }

    /// The running executable (to start more of the same binary).
    public static var currentExecutable: String {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    }

    /// In a child: asks for SIGTERM when the launcher dies, and returns false if it is already
    /// gone. Returns true when this process was not started by a launcher.
    @discardableResult
    public static func adoptParentDeath() -> Bool {
        guard let text = ProcessInfo.processInfo.environment[parentVariable], let ppid = Int32(text) else { return true }
        _ = gvm_net_parent_death_signal(SIGTERM)
        return getppid() == ppid
    }

    /// Forwards `signal` to every process still running (any thread); the grace then applies.
    /// A `.closingStdin` process has its standard input closed instead.
    public func terminate(signal: Int32) {
        let running: [Int] = stateLock.withLock {
            if interruptSignal == nil { interruptSignal = signal; interruptedAt = Self.now() }
            return pids.indices.filter { ended[$0] == nil }
        }
        requestStop(signal, running)
    }

    /// Starts every process, waits for all of them and for their output. Throws if one cannot be
    /// started (those already started are killed first).
    public func run() throws -> LaunchResult {
        var relays: [Thread] = []
        let done = DispatchGroup()
        for (i, spec) in processes.enumerated() {
            var outPipe: [Int32] = [-1, -1], errPipe: [Int32] = [-1, -1]
            guard gvm_net_pipe_cloexec(&outPipe) == 0, gvm_net_pipe_cloexec(&errPipe) == 0 else {
                killStarted()
                throw LaunchError("cannot create pipes for \(spec.label): \(String(cString: strerror(errno)))")
            }
            var inPipe: [Int32] = [-1, -1]
            if spec.stop == .closingStdin && gvm_net_pipe_cloexec(&inPipe) != 0 {
                Glibc.close(outPipe[0]); Glibc.close(outPipe[1]); Glibc.close(errPipe[0]); Glibc.close(errPipe[1])
                killStarted()
                throw LaunchError("cannot create pipes for \(spec.label): \(String(cString: strerror(errno)))")
            }
            let pid: pid_t
            do {
                pid = try spawn(spec, stdin: inPipe[0], stdout: outPipe[1], stderr: errPipe[1], closing: [outPipe[0], errPipe[0]])
            } catch {
                for fd in outPipe + errPipe + inPipe where fd >= 0 { Glibc.close(fd) }
                killStarted()
                throw error
            }
            Glibc.close(outPipe[1]); Glibc.close(errPipe[1])
            if inPipe[0] >= 0 { Glibc.close(inPipe[0]) }
            stateLock.withLock { pids.append(pid); ended.append(nil); stdinWriters.append(inPipe[1]) }
            for (fd, stream, prefix) in [(outPipe[0], ProcessOutput.stdout, spec.stdoutPrefix),
                                         (errPipe[0], ProcessOutput.stderr, spec.stderrPrefix)] {
                done.enter()
                let t = Thread { [self] in
                    relay(fd, index: i, stream: stream, prefix: prefix ?? "")
                    done.leave()
                }
                t.name = "relay-\(i)-\(stream)"
                relays.append(t)
                t.start()
            }
        }
        var result = LaunchResult(ends: [])
        let started = Self.now()
        var firstFailureAt: UInt64?
        var termSentAt: UInt64?
        var killedAll = false
        while true {
            // Reap our own children only (the caller may have others).
            for (i, pid) in stateLock.withLock({ Array(pids.enumerated()).filter { ended[$0.offset] == nil } }) {
                var st: Int32 = 0
                let r = waitpid(pid, &st, WNOHANG)
                guard r == pid || (r < 0 && errno == ECHILD) else { continue }
                let end = r == pid ? ProcessEnd(waitStatus: st) : .signaled(SIGKILL)
                stateLock.withLock { ended[i] = end }
                if !end.succeeded, result.firstFailure == nil {
                    result.firstFailure = i
                    firstFailureAt = Self.now()
                }
            }
            let running: [Int] = stateLock.withLock { ended.indices.filter { ended[$0] == nil } }
            if running.isEmpty { break }
            let now = Self.now()
            // The first failure, or an interrupt: the others get `failureGrace` to stop by themselves.
            let since = [firstFailureAt, stateLock.withLock { interruptedAt }].compactMap { $0 }.min()
            if let since, !killedAll, now - since > Self.ns(policy.failureGrace) {
                result.killedAfterFailure = firstFailureAt != nil ? running : []
                killAll(SIGKILL, running)
                killedAll = true
            }
            if let deadline = policy.deadline, now - started > Self.ns(deadline) {
                if termSentAt == nil {
                    result.timedOut = true
                    termSentAt = now
                    requestStop(SIGTERM, running)
                } else if let t = termSentAt, now - t > 5_000_000_000, !killedAll {
                    killAll(SIGKILL, running)
                    killedAll = true
                }
            }
            usleep(10_000)
        }
        // Output still buffered is drained; a pipe kept open by something the child left behind
        // is given up after 5 s.
        _ = done.wait(timeout: .now() + 5)
        _ = relays
        closeStdin(stateLock.withLock { Array(stdinWriters.indices) })
        stateLock.withLock {
            result.ends = ended.map { $0 ?? .signaled(SIGKILL) }
            result.interruptedBy = interruptSignal
        }
        return result
    }

    // MARK: - internals
    // Signals go to the child's process group (-pid): it and everything it started.

    static func now() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    /// Seconds to nanoseconds, saturating (a policy value is a user's number).
    static func ns(_ seconds: Double) -> UInt64 {
        guard seconds.isFinite, seconds > 0 else { return 0 }
        return seconds >= 1e9 ? UInt64.max / 2 : UInt64(seconds * 1e9)
    }

    private func killStarted() {
        let all = stateLock.withLock { Array(pids.indices) }
        closeStdin(all)
        killAll(SIGKILL, all)
    }

    /// Asks processes to stop: `signal` to the group, or their standard input closed.
    private func requestStop(_ sig: Int32, _ indices: [Int]) {
        let (piped, signaled): ([Int], [Int]) = stateLock.withLock {
            let running = indices.filter { ended[$0] == nil }
            return (running.filter { processes[$0].stop == .closingStdin }, running.filter { processes[$0].stop == .signal })
        }
        closeStdin(piped)
        killAll(sig, signaled)
    }

    /// Closes the launcher's end of the standard-input pipes of `indices` (once; any thread).
    private func closeStdin(_ indices: [Int]) {
        let fds: [Int32] = stateLock.withLock {
            indices.compactMap { i in
                guard stdinWriters[i] >= 0 else { return nil }
                defer { stdinWriters[i] = -1 }
                return stdinWriters[i]
            }
        }
        for fd in fds { Glibc.close(fd) }
    }

    private func killAll(_ sig: Int32, _ indices: [Int]) {
        let targets = stateLock.withLock { indices.filter { ended[$0] == nil }.map { pids[$0] } }
        for p in targets { kill(-p, sig) }
    }

    private func spawn(_ spec: ProcessSpec, stdin: Int32, stdout: Int32, stderr: Int32, closing: [Int32]) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        if stdin >= 0 { posix_spawn_file_actions_adddup2(&actions, stdin, 0) }
        posix_spawn_file_actions_adddup2(&actions, stdout, 1)
        posix_spawn_file_actions_adddup2(&actions, stderr, 2)
        for fd in closing { posix_spawn_file_actions_addclose(&actions, fd) }
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attr, &empty)   // children take signals normally
        var dfl = sigset_t()
        sigemptyset(&dfl)
        sigaddset(&dfl, SIGINT); sigaddset(&dfl, SIGTERM); sigaddset(&dfl, SIGPIPE)
        posix_spawnattr_setsigdefault(&attr, &dfl)
        // Each child leads its own process group, so a signal reaches whatever it started too.
        posix_spawnattr_setpgroup(&attr, 0)
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP))
        var env = ProcessInfo.processInfo.environment
        for (k, v) in spec.environment { env[k] = v }
        env[Self.parentVariable] = "\(getpid())"
        let program = spec.executable ?? executable
        let argv = ([program] + spec.arguments).map { strdup($0) } + [nil]
        let envp = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { argv.forEach { free($0) }; envp.forEach { free($0) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, program, &actions, &attr, argv, envp)
        guard rc == 0 else { throw LaunchError("cannot start \(spec.label) (\(program)): \(String(cString: strerror(rc)))") }
        return pid
    }

    /// Writes whole text to a file descriptor under the output lock (lines never interleave).
    public func emit(_ text: String, to stream: ProcessOutput) {
        outLock.withLock {
            let bytes = Array(text.utf8)
            var off = 0
            let fd: Int32 = stream == .stdout ? 1 : 2
            while off < bytes.count {
                let w = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + off, bytes.count - off) }
                if w < 0 && errno == EINTR { continue }
                if w <= 0 { break }
                off += w
            }
        }
    }

    /// Splits a child's pipe into lines: each goes to `onLine`, and is relayed when it says so.
    private func relay(_ fd: Int32, index: Int, stream: ProcessOutput, prefix: String) {
        var pending: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        func line(_ bytes: ArraySlice<UInt8>) {
            let text = String(decoding: bytes, as: UTF8.self)
            if onLine?(index, stream, text) ?? true { emit(prefix + text + "\n", to: stream) }
        }
        while true {
            let r = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
            if r < 0 && errno == EINTR { continue }
            if r <= 0 { break }
            pending += buf[0..<r]
            var start = 0
            while let nl = pending[start...].firstIndex(of: 0x0A) {
                line(pending[start..<nl])
                start = nl + 1
            }
            pending.removeFirst(start)
            if pending.count > 1 << 20 {   // a line over 1 MiB: hand it over in pieces
                line(pending[...])
                pending.removeAll()
            }
        }
        if !pending.isEmpty { line(pending[...]) }
        Glibc.close(fd)
    }
}
