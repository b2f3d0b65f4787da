// `giantvm node --config F --id N|auto`: runs one node of the cluster.

import ArgumentParser
import Bench
import Cluster
import Config
import Foundation
import Glibc
import Launch
import Logging
import Metrics
import NodeAssembly
import PluginHost

struct NodeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "node",
        abstract: "Run one node: meet every peer, exchange test frames on every channel, run until stopped.",
        discussion: """
            The node connects to every other node of the config (retrying while they start, for at
            most timeouts.connect), authenticates them, sends one test frame to every peer on every
            channel (control, coherence, cpu, io, heartbeat) and checks every answer. It then runs
            until it is stopped: Ctrl-C or SIGTERM, --duration, another node stopping, or a lost
            peer (timeouts.failure). A node that stops tells the others, so they all stop together.
            Exit status: 0 after a clean stop, non-zero after a failure anywhere in the cluster.
            With `guest:` in the config the node instead runs its part of one VM spread over every
            node (its vCPUs, its devices, guest RAM through the coherence plugin) until the guest
            exits; exit status as for `giantvm run` (docs/distributed.md).
            """)

    @OptionGroup var global: GlobalOptions

    @Option(name: .long, help: "The cluster YAML file.")
    var config: String

    @Option(name: .customLong("id"), help: ArgumentHelp(
        "This node's id (its index in `nodes:`), or `auto`.",
        discussion: "auto: the rank from the launcher (Open MPI, PMIx, MPICH/Hydra, Slurm's srun), else the one node whose address is local (docs/launching.md).",
        valueName: "n|auto"))
    var idRequest: NodeIDRequest

    /// This node's id: `--id N`, or what `--id auto` resolved to at the start of run().
    var id: UInt32 {
        if case .fixed(let n) = idRequest { return n }
        return NodeIDRequest.resolved.get() ?? 0
    }

    @Option(name: .long, help: "Stop the cluster cleanly after this many seconds (default: run until stopped).")
    var duration: Double?

    @Flag(name: .long, help: "Print the node's counters (frames, bytes, heartbeats, injected faults) to stderr at the end.")
    var stats = false

    @Flag(name: .long, help: .hidden)
    var bench = false

    // [dist] Options of a node running its part of the VM (config with `guest:`).
    @Option(name: .long, help: "VM: stop the VM after this many seconds (exit 124).")
    var timeout: Double?
    @Option(name: .long, help: "VM: guest command line instead of the config's guest.cmdline.")
    var cmdline: String?
    @Option(name: .long, help: "VM: inject a TSC skew of this many ticks on this node (tests the time sync).")
    var tscSkew: Int64 = 0
    @Flag(name: .long, help: "VM: do not align this node's TSC with node 0's.")
    var noTimeSync = false
    @Option(name: .long, help: "VM: write this node's statistics as JSON to this file when it stops (read by `giantvm ab`).")
    var statsOut: String?

    @Option(name: .long, help: .hidden)
    var benchRoundTrips: Int = 2000

    @Option(name: .long, help: .hidden)
    var benchMegabytes: Int = 64

    // Started by `up --ssh`: stop when standard input closes (Launch/StdinWatch.swift).
    @Flag(name: .customLong("exit-on-stdin-eof"), help: .hidden)
    var exitOnStdinEOF = false

    func validate() throws {
        if let duration { try checkSeconds(duration, option: "--duration") }
        if let timeout { try checkSeconds(timeout, option: "--timeout") }
    }

    func run() throws {
        let logger = global.bootstrapLogging(label: "giantvm.node")
        // Signals are taken by one dedicated thread (sigwait); every other thread blocks them.
        let signals = SignalWaiter.blockTerminationSignals()
        // Started by `up --ssh`: stop when the ssh session's input closes (after the mask above).
        if exitOnStdinEOF { StdinWatch.stopProcessOnEOF(label: "node \(id)") }
        // Started by a launcher (`giantvm up`, `net-bench`): stop if it dies, so nothing is left behind.
        guard Launcher.adoptParentDeath() else { fail("node \(idRequest): the launcher that started this node is gone") }
        let cfg: ClusterConfig
        do { cfg = try ConfigLoader.load(path: config) } catch { fail("\(error)") }
        resolveID(cfg)
        let loader = PluginLoader(searchPath: PluginLoader.defaultSearchPath(config: cfg))
        if cfg.guest != nil && !bench {   // a config with a guest: run this node's part of the VM
            runVMNode(config: cfg, loader: loader, logger: logger, signals: signals)
        }
        let node: Node
        let metrics = MetricsRegistry()
        do { node = try Node(config: cfg, id: id, loader: loader, logger: logger, metrics: metrics) } catch {
            fail("node \(id): \(error)")
        }
        let benchResponder = bench ? NetBenchResponder(node: node) : nil
        let probe = ChannelProbe(node: node)
        signals.start { sig in node.stop(StopCause.signal(sig).stopReason(origin: node.id)) }
        do { try node.start() } catch {
            fail("node \(id): \(error)")
        }
        say("node \(id): met \(node.peers.map { "node \($0)" }.joined(separator: ", ")) over \(node.transportName)")
        switch probe.exchange(timeout: max(5, cfg.timeouts.failure * 2)) {
        case .success(let summary):
            say("node \(id): \(summary)")
        case .failure(let why):
            node.stop(reason: "test exchange failed: \(why)", status: 1)
        }
        if let benchResponder, id == 0, node.stopReason == nil {
            let driver = NetBenchDriver(node: node, responder: benchResponder, roundTrips: benchRoundTrips,
                                        megabytes: benchMegabytes)
            do {
                say(try driver.run())
                node.stop(reason: "benchmark finished")
            } catch {
                node.stop(reason: "benchmark failed: \(error)", status: 1)
            }
        }
        if let duration { stopAfter(duration) { node.stop(reason: "finished after --duration \(duration) s") } }
        let reason = node.waitUntilStopped()
        if stats {
            FileHandle.standardError.write(Data((metrics.snapshot().table(title: "node \(id) counters") + "\n").utf8))
        }
        finish(status: reason.status, message: reason.message)
    }

    /// Resolves `--id` against the config (range-checked; `auto` from the launcher or the local addresses).
    func resolveID(_ cfg: ClusterConfig) {
        do {
            let identity = try NodeIdentity.resolve(
                idRequest, nodes: cfg.nodes.map { NodeAddress(id: $0.id, address: $0.address) }, configName: config,
                environment: ProcessInfo.processInfo.environment, localAddresses: LocalAddresses.current,
                resolve: HostResolver.numericAddresses(of:))
            NodeIDRequest.resolved.set(identity.id)
            if idRequest == .auto { say("node \(identity.id): this is \(identity)") }
        } catch { fail("\(error)") }
    }

    /// Exits with a node's stop: 0 and "stopped cleanly" on success, the error otherwise.
    func finish(status: Int32, message: String) -> Never {
        if status == 0 {
            say("node \(id): stopped cleanly: \(message)")
            Glibc.exit(0)
        }
        FileHandle.standardError.write(Data("giantvm: error: node \(id): \(message)\n".utf8))
        Glibc.exit(StopCause.processStatus(status))
    }
}

extension NodeIDRequest: ExpressibleByArgument {
    public init?(argument: String) { self.init(parsing: argument) }
    public static var defaultCompletionKind: CompletionKind { .list(["auto"]) }
    /// The id `--id auto` resolved to (set once, before any other thread reads it).
    static let resolved = ResolvedID()
}

/// The node id `run()` resolved, readable from the command's other methods (a ParsableCommand is
/// a value its parser decodes: it has no stored property that is not an argument).
final class ResolvedID: @unchecked Sendable {
    private let lock = NSLock()
    private var value: UInt32?
    func set(_ v: UInt32) { lock.withLock { value = v } }
    func get() -> UInt32? { lock.withLock { value } }
}
