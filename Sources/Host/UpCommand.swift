// `giantvm up F`: starts every node of the config on this machine as separate processes, through
// the one launcher (Sources/Launch) that `net-bench` and `bench dsm` use too. `up --ssh F` starts
// each on its own host through OpenSSH instead (Launch/SSH.swift, docs/launching.md).

import ArgumentParser
import Config
import Foundation
import Glibc
import Launch

struct Up: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "up",
        abstract: "Start every node of a config, each as its own `giantvm node` process (here, or on its host with --ssh).",
        discussion: """
            Output lines of node N are prefixed with [node N]. If any node fails, the others stop
            (they detect it, or are told), and `up` exits non-zero; nodes still running
            timeouts.failure + 5 s after the first failure are killed. Ctrl-C stops every node;
            killing `up` stops them too (each node asks the kernel for SIGTERM when `up` dies).
            With --ssh every node runs on its host through `ssh -T -o BatchMode=yes TARGET`: the
            node's `ssh:` target ([user@]host[:port]) or its address; the same binary and config
            paths as here unless the config's `ssh:` section names others (giantvm, config,
            plugin_path, identity, options, client). A remote node stops when its ssh session's
            input closes: Ctrl-C closes it, and so does `up` or its connection dying.
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
    @Flag(name: .long, help: "Start each node on its host over OpenSSH (the node's ssh: target or its address).")
    var ssh = false

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
        if ssh {
            let remote: [ProcessSpec]
            do {
                remote = try sshNodeSpecs(cfg, configPath: config, logLevel: global.logLevel) { path, id in
                    ["node", "--config", path, "--id", "\(id)"] + extra
                }
            } catch { fail("\(error)") }
            Glibc.exit(runNodes(cfg, specs: remote))
        }
        Glibc.exit(launchNodes(cfg, configPath: config, logLevel: global.logLevel) { ["node", "--config", config, "--id", "\($0)"] + extra })
    }
}

/// One ssh process per node of `cfg` (Launch's `RemotePlan`): the node's `ssh:` target or its
/// address; on the host, `giantvm` (ssh.giantvm or this binary's path) runs `arguments(config, id)`
/// with the config path there (ssh.config or this file's absolute path). Throws when ssh or the
/// identity file cannot be used.
func sshNodeSpecs(_ cfg: ClusterConfig, configPath: String, logLevel: String,
                  arguments: (String, UInt32) -> [String]) throws -> [ProcessSpec] {
    let file = cfg.sourcePath
    guard let program = SSHClient.resolve(cfg.ssh.client) else {
        throw LaunchError("\(file): ssh.client: cannot find an executable '\(cfg.ssh.client)'"
                          + (cfg.ssh.client.contains("/") ? "" : " on PATH (install openssh-client)"))
    }
    if let identity = cfg.ssh.identity, !FileManager.default.isReadableFile(atPath: identity) {
        throw LaunchError("\(file): ssh.identity: cannot read the private key '\(identity)'")
    }
    let here = configPath.hasPrefix("/") ? configPath : FileManager.default.currentDirectoryPath + "/" + configPath
    let plan = RemotePlan(client: SSHClient(program: program, identity: cfg.ssh.identity, options: cfg.ssh.options),
                          giantvm: cfg.ssh.giantvm ?? Launcher.currentExecutable,
                          config: cfg.ssh.config ?? (here as NSString).standardizingPath,
                          pluginPath: cfg.ssh.pluginPath, logLevel: logLevel)
    return try cfg.nodes.map { n in
        let target = n.ssh ?? SSHTarget(host: n.address)
        do {
            return try plan.spec(id: n.id, destination: SSHDestination(user: target.user, host: target.host, port: target.port)) {
                arguments($0, n.id)
            }
        } catch { throw LaunchError("\(file): nodes[\(n.id)]: \(error) (set nodes[\(n.id)].ssh)") }
    }
}

/// Starts one process per node of `cfg` (this binary with `arguments(node)` plus the log level),
/// relays their output prefixed with `[node N]` (node `plainOutputNode`'s stdout unprefixed),
/// forwards Ctrl-C/SIGTERM, and returns the exit status for the command: 0 when every node
/// stopped cleanly. `onLine` may take lines instead of relaying them (return false).
func launchNodes(_ cfg: ClusterConfig, configPath: String, logLevel: String, plainOutputNode: UInt32? = nil,
                 deadline: Double? = nil, onLine: Launcher.LineHandler? = nil,
                 arguments: (UInt32) -> [String]) -> Int32 {
    let specs = cfg.nodes.map { n in
        ProcessSpec(label: "node \(n.id)", arguments: arguments(n.id) + ["--log-level", logLevel],
                    stdoutPrefix: n.id == plainOutputNode ? nil : "[node \(n.id)] ", stderrPrefix: "[node \(n.id)] ")
    }
    return runNodes(cfg, specs: specs, deadline: deadline, onLine: onLine)
}

/// Runs one process per node (`specs[i]` is node i): the launcher's policy, Ctrl-C/SIGTERM
/// forwarded, the `[up]` summary lines; returns the command's exit status (`LaunchResult.commandStatus`:
/// the first failed node's own status, as `run` would exit for the same guest).
func runNodes(_ cfg: ClusterConfig, specs: [ProcessSpec], deadline: Double? = nil,
              onLine: Launcher.LineHandler? = nil) -> Int32 {
    let signals = SignalWaiter.blockTerminationSignals()
    let grace = min(cfg.timeouts.failure + 5, secondsMax)
    let launcher = Launcher(executable: Launcher.currentExecutable, processes: specs,
                            policy: .init(failureGrace: grace, deadline: deadline), onLine: onLine)
    signals.start { launcher.terminate(signal: $0 == SIGINT ? SIGTERM : $0) }
    let result: LaunchResult
    do { result = try launcher.run() } catch { fail("\(error)") }
    for i in result.failed where result.ends[i] != .signaled(SIGKILL) || !result.killedAfterFailure.contains(i) {
        // ssh exits 255 when it fails, and also when the remote command was killed by a signal.
        let note = specs[i].stop == .closingStdin && result.ends[i] == .exited(255)
            ? " (ssh failed, or the remote node was killed by a signal)" : ""
        launcher.emit("[up] \(specs[i].label) \(result.ends[i])\(note)\n", to: .stderr)
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
    // ssh's own 255 (it could not connect, or the remote node was killed) is no guest status:
    // like any failure to start a node, `up` exits 1 then.
    let first = result.firstFailure ?? result.failed.first ?? 0
    let sshFailed = specs[first].stop == .closingStdin && result.ends[first] == .exited(255)
    let status = sshFailed ? 1 : result.commandStatus
    launcher.emit("[up] failed: node(s) \(result.failed.map { "\(cfg.nodes[$0].id)" }.joined(separator: ", ")) exited non-zero; "
                  + "exit status \(status) (the first failure's)\n", to: .stderr)
    return status
}
