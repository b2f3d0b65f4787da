// `giantvm up F`: starts every node of the config on this machine as separate processes.

import Metrics
import ArgumentParser
import Cluster
import Config
import Foundation
import Glibc
import CSystem

struct Up: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "up",
        abstract: "Start every node of a config on this machine, each as its own `giantvm node` process.",
        discussion: """
            Output lines of node N are prefixed with [node N]. If any node fails, the others stop
            (they detect it, or are told), and `up` exits non-zero; nodes still running
            timeouts.failure + 5 s after the first failure are killed. Ctrl-C stops every node.
            """)

    @OptionGroup var global: GlobalOptions

    @Argument(help: "The cluster YAML file.")
    var config: String

    @Option(name: .long, help: "Stop the cluster cleanly after this many seconds (default: run until stopped).")
    var duration: Double?

    @Flag(name: .long, help: "Each node prints its counters at the end (see `giantvm node --stats`).")
    var stats = false
    // [dist] passed to every node of a VM config.
    @Option(name: .long, help: "VM: stop the VM after this many seconds (nodes exit 124).")
    var timeout: Double?
    @Option(name: .long, help: "VM: guest command line instead of the config's guest.cmdline.")
    var cmdline: String?

    func run() throws {
        _ = global.bootstrapLogging()
        let cfg: ClusterConfig
        do { cfg = try ConfigLoader.load(path: config) } catch { fail("\(error)") }
        var extra: [String] = []
        if let duration { extra += ["--duration", "\(duration)"] }
        if stats { extra.append("--stats") }
        if let timeout { extra += ["--timeout", "\(timeout)"] }
        if let cmdline { extra += ["--cmdline", cmdline] }
        let launcher = ClusterLauncher(config: cfg, configPath: config, logLevel: global.logLevel, extraArguments: extra)
        let status = launcher.run()
        Glibc.exit(status)
    }
}

/// Starts `giantvm node` for every node of a config, relays their output with a `[node N]`
/// prefix, and waits for all of them. Threading: `run` on the main thread; one relay thread per
/// child pipe; one signal thread.
final class ClusterLauncher: @unchecked Sendable {
    let config: ClusterConfig
    let configPath: String
    let logLevel: String
    let extraArguments: [String]
    /// This node's stdout is relayed without a prefix (net-bench's report).
    let plainOutputNode: UInt32?
    private let outLock = Monitor()

    init(config: ClusterConfig, configPath: String, logLevel: String, extraArguments: [String],
         plainOutputNode: UInt32? = nil) {
        self.config = config; self.configPath = configPath; self.logLevel = logLevel
        self.extraArguments = extraArguments; self.plainOutputNode = plainOutputNode
    }

    /// Returns the exit status for `up`: 0 when every node stopped cleanly.
    func run() -> Int32 {
        let signals = SignalWaiter.blockTerminationSignals()
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var pids: [pid_t] = []
        var relays: [OSThread] = []
        for node in config.nodes {
            let args = ["node", "--config", configPath, "--id", "\(node.id)", "--log-level", logLevel] + extraArguments
            var outPipe: [Int32] = [-1, -1], errPipe: [Int32] = [-1, -1]
            guard gvm_net_pipe_cloexec(&outPipe) == 0, gvm_net_pipe_cloexec(&errPipe) == 0 else {
                killAll(pids, SIGKILL)
                fail("cannot create pipes: \(String(cString: strerror(errno)))")
            }
            var actions = posix_spawn_file_actions_t()
            posix_spawn_file_actions_init(&actions)
            posix_spawn_file_actions_adddup2(&actions, outPipe[1], 1)
            posix_spawn_file_actions_adddup2(&actions, errPipe[1], 2)
            posix_spawn_file_actions_addclose(&actions, outPipe[0])
            posix_spawn_file_actions_addclose(&actions, errPipe[0])
            var attr = posix_spawnattr_t()
            posix_spawnattr_init(&attr)
            var empty = sigset_t()
            sigemptyset(&empty)
            posix_spawnattr_setsigmask(&attr, &empty)  // children take signals normally
            posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGMASK))
            let argv = ([exe] + args).map { strdup($0) } + [nil]
            var pid: pid_t = 0
            var env = ProcessInfo.processInfo.environment
            env["GIANTVM_UP_PID"] = "\(getpid())"
            let envp = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
            defer { envp.forEach { free($0) } }
            let rc = posix_spawn(&pid, exe, &actions, &attr, argv, envp)
            argv.forEach { free($0) }
            posix_spawn_file_actions_destroy(&actions)
            posix_spawnattr_destroy(&attr)
            Glibc.close(outPipe[1]); Glibc.close(errPipe[1])
            guard rc == 0 else {
                killAll(pids, SIGKILL)
                fail("cannot start node \(node.id) (\(exe)): \(String(cString: strerror(rc)))")
            }
            pids.append(pid)
            let plain = plainOutputNode == node.id
            if let t = try? OSThread(name: "relay-out-\(node.id)", { [self] in relay(outPipe[0], prefix: plain ? "" : "[node \(node.id)] ", to: 1) }) { relays.append(t) }
            if let t = try? OSThread(name: "relay-err-\(node.id)", { [self] in relay(errPipe[0], prefix: "[node \(node.id)] ", to: 2) }) { relays.append(t) }
        }
        let interrupted = Monitor()
        var gotSignal: Int32 = 0
        signals.start { sig in
            interrupted.withLock { gotSignal = sig }
            // Nodes stop cleanly on SIGTERM (a Ctrl-C in a terminal reaches them directly too).
            self.killAll(pids, SIGTERM)
        }
        var statuses: [pid_t: Int32] = [:]
        var firstFailure: UInt64?
        let grace = UInt64((config.timeouts.failure + 5) * 1e9)
        var killed = false
        while statuses.count < pids.count {
            var st: Int32 = 0
            let pid = waitpid(-1, &st, WNOHANG)
            if pid > 0, let idx = pids.firstIndex(of: pid) {
                let code: Int32 = (st & 0x7f) == 0 ? (st >> 8) & 0xff : 128 + (st & 0x7f)
                statuses[pid] = code
                if code != 0 {
                    let what = (st & 0x7f) == 0 ? "exited with status \(code)" : "was killed by signal \(st & 0x7f)"
                    emit("[up] node \(idx) \(what)\n", to: 2)
                    if firstFailure == nil { firstFailure = monotonicNanoseconds() }
                }
                continue
            }
            if pid < 0 && errno == ECHILD { break }
            if let f = firstFailure, !killed, monotonicNanoseconds() - f > grace {
                emit("[up] killing nodes still running \(Int(config.timeouts.failure + 5)) s after the first failure\n", to: 2)
                killAll(pids.filter { statuses[$0] == nil }, SIGKILL)
                killed = true
            }
            usleep(20_000)
        }
        for t in relays { t.join() }
        let sig = interrupted.withLock { gotSignal }
        let failed = pids.enumerated().filter { (statuses[$0.element] ?? 1) != 0 }.map { $0.offset }
        if failed.isEmpty && sig == 0 {
            emit("[up] all \(pids.count) nodes stopped cleanly\n", to: 1)
            return 0
        }
        if sig != 0 { emit("[up] interrupted by signal \(sig)\n", to: 2); return 128 + sig }
        emit("[up] failed: node(s) \(failed.map(String.init).joined(separator: ", ")) exited non-zero\n", to: 2)
        return 1
    }

    private func killAll(_ pids: [pid_t], _ sig: Int32) {
        for p in pids { kill(p, sig) }
    }

    private func emit(_ text: String, to fd: Int32) {
        outLock.withLock {
            let bytes = Array(text.utf8)
            var off = 0
            while off < bytes.count {
                let w = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + off, bytes.count - off) }
                if w <= 0 { break }
                off += w
            }
        }
    }

    /// Copies lines from a child's pipe to our fd, each line prefixed.
    private func relay(_ fd: Int32, prefix: String, to out: Int32) {
        var pending: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let r = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
            if r < 0 && errno == EINTR { continue }
            if r <= 0 { break }
            pending += buf[0..<r]
            while let nl = pending.firstIndex(of: 0x0A) {
                let line = String(decoding: pending[0...nl], as: UTF8.self)
                pending.removeSubrange(0...nl)
                emit(prefix + line, to: out)
            }
        }
        if !pending.isEmpty { emit(prefix + String(decoding: pending, as: UTF8.self) + "\n", to: out) }
        Glibc.close(fd)
    }
}
