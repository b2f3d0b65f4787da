// `giantvm up F`: starts every node of the config on this machine as separate processes, through
// the one launcher (Sources/Launch) that `net-bench` and `bench dsm` use too.

import ArgumentParser
import Config
import Foundation
import Glibc
import Launch

struct Up: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "up",
        abstract: "Start every node of a config on this machine, each as its own `giantvm node` process.",
        discussion: """
            Output lines of node N are prefixed with [node N]. If any node fails, the others stop
            (they detect it, or are told), and `up` exits non-zero; nodes still running
            timeouts.failure + 5 s after the first failure are killed. Ctrl-C stops every node;
            killing `up` stops them too (each node asks the kernel for SIGTERM when `up` dies).
            """)

    @OptionGroup var global: GlobalOptions

    @Argument(help: "The cluster YAML file.")
    var config: String

    @Option(name: .long, help: "Stop the cluster cleanly after this many seconds (default: run until stopped).")
    var duration: Double?

    @Flag(name: .long, help: "Each node prints its counters at the end (see `giantvm node --stats`).")
    var stats = false
    @Option(name: .long, help: "VM: stop the VM after this many seconds (nodes exit 124).")
    var timeout: Double?
    @Option(name: .long, help: "VM: guest command line instead of the config's guest.cmdline.")
    var cmdline: String?

    func validate() throws {
        if let duration { try checkSeconds(duration, option: "--duration") }
        if let timeout { try checkSeconds(timeout, option: "--timeout") }
    }

    func run() throws {
        _ = global.bootstrapLogging()
        let cfg: ClusterConfig
        do { cfg = try ConfigLoader.load(path: config) } catch { fail("\(error)") }
        var extra: [String] = []
        if let duration { extra += ["--duration", "\(duration)"] }
        if stats { extra.append("--stats") }
        if let timeout { extra += ["--timeout", "\(timeout)"] }
        if let cmdline { extra += ["--cmdline", cmdline] }
        Glibc.exit(launchNodes(cfg, configPath: config, logLevel: global.logLevel) { ["node", "--config", config, "--id", "\($0)"] + extra })
    }
}

/// Starts one process per node of `cfg` (this binary with `arguments(node)` plus the log level),
/// relays their output prefixed with `[node N]` (node `plainOutputNode`'s stdout unprefixed),
/// forwards Ctrl-C/SIGTERM, and returns the exit status for the command: 0 when every node
/// stopped cleanly. `onLine` may take lines instead of relaying them (return false).
func launchNodes(_ cfg: ClusterConfig, configPath: String, logLevel: String, plainOutputNode: UInt32? = nil,
                 deadline: Double? = nil, onLine: Launcher.LineHandler? = nil,
                 arguments: (UInt32) -> [String]) -> Int32 {
    let signals = SignalWaiter.blockTerminationSignals()
    let specs = cfg.nodes.map { n in
        ProcessSpec(label: "node \(n.id)", arguments: arguments(n.id) + ["--log-level", logLevel],
                    stdoutPrefix: n.id == plainOutputNode ? nil : "[node \(n.id)] ", stderrPrefix: "[node \(n.id)] ")
    }
    let grace = min(cfg.timeouts.failure + 5, secondsMax)
    let launcher = Launcher(executable: Launcher.currentExecutable, processes: specs,
                            policy: .init(failureGrace: grace, deadline: deadline), onLine: onLine)
    signals.start { launcher.terminate(signal: $0 == SIGINT ? SIGTERM : $0) }
    let result: LaunchResult
    do { result = try launcher.run() } catch { fail("\(error)") }
    for i in result.failed where result.ends[i] != .signaled(SIGKILL) || !result.killedAfterFailure.contains(i) {
        launcher.emit("[up] node \(cfg.nodes[i].id) \(result.ends[i])\n", to: .stderr)
    }
    if !result.killedAfterFailure.isEmpty {
        launcher.emit("[up] killed node(s) \(result.killedAfterFailure.map { "\(cfg.nodes[$0].id)" }.joined(separator: ", ")) "
                      + "still running \(Int(grace)) s after the first failure\n", to: .stderr)
    }
    if result.timedOut { launcher.emit("[up] stopped every node after \(Int(deadline ?? 0)) s\n", to: .stderr); return 124 }
    if let sig = result.interruptedBy { launcher.emit("[up] interrupted by signal \(sig)\n", to: .stderr); return 128 + sig }
    if result.allSucceeded {
        launcher.emit("[up] all \(specs.count) nodes stopped cleanly\n", to: .stdout)
        return 0
    }
    launcher.emit("[up] failed: node(s) \(result.failed.map { "\(cfg.nodes[$0].id)" }.joined(separator: ", ")) exited non-zero\n", to: .stderr)
    return 1
}
