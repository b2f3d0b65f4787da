// `giantvm node --config F --id N`: runs one node of the cluster.

import ArgumentParser
import Cluster
import Config
import Foundation
import Glibc
import CSystem
import Logging
import Metrics
import PluginAPI
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

    @Option(name: .long, help: "This node's id (its index in `nodes:`).")
    var id: UInt32

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

    @Option(name: .long, help: .hidden)
    var benchRoundTrips: Int = 2000

    @Option(name: .long, help: .hidden)
    var benchMegabytes: Int = 64

    func validate() throws {
        if let duration, !(duration > 0) { throw ValidationError("--duration must be a positive number of seconds") }
    }

    func run() throws {
        let logger = global.bootstrapLogging(label: "giantvm.node")
        // Signals are taken by one dedicated thread (sigwait); every other thread blocks them.
        let signals = SignalWaiter.blockTerminationSignals()
        // Started by `giantvm up`: stop (SIGTERM) if `up` dies, so no node is left behind.
        if let parent = ProcessInfo.processInfo.environment["GIANTVM_UP_PID"], let ppid = Int32(parent) {
            _ = gvm_net_parent_death_signal(SIGTERM)
            if getppid() != ppid { fail("node \(id): `giantvm up` (pid \(ppid)) is gone") }
        }
        let cfg: ClusterConfig
        do { cfg = try ConfigLoader.load(path: config) } catch { fail("\(error)") }
        guard Int(id) < cfg.nodes.count else {
            fail("\(config): there is no node \(id) (nodes: 0-\(cfg.nodes.count - 1))")
        }
        let loader = PluginLoader(searchPath: PluginLoader.defaultSearchPath(config: cfg))
        if cfg.guest != nil && !bench {   // [dist] a config with a guest: run this node's part of the VM
            runVMNode(config: cfg, loader: loader, logger: logger, signals: signals)
        }
        let node: Node
        let metrics = MetricsRegistry()
        do { node = try Node(config: cfg, id: id, loader: loader, logger: logger, metrics: metrics) } catch {
            fail("node \(id): \(error)")
        }
        let benchResponder = bench ? NetBenchResponder(node: node) : nil
        let probe = ChannelProbe(node: node, fallback: benchResponder.map { r in { r.handle($0, $1, $2) } })
        signals.start { sig in
            node.stop(reason: "interrupted by signal \(sig)", status: 128 + sig)
        }
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
                let report = try driver.run()
                say(report)
                node.stop(reason: "benchmark finished")
            } catch {
                node.stop(reason: "benchmark failed: \(error)", status: 1)
            }
        }
        if let duration {
            let t = try OSThread(name: "duration") {
                let deadline = monotonicNanoseconds() + UInt64(duration * 1e9)
                while monotonicNanoseconds() < deadline && node.stopReason == nil { usleep(20_000) }
                node.stop(reason: "finished after --duration \(duration) s")
            }
            _ = t
        }
        let reason = node.waitUntilStopped()
        if stats {
            FileHandle.standardError.write(Data((metrics.snapshot().table(title: "node \(id) counters") + "\n").utf8))
        }
        if reason.status == 0 {
            say("node \(id): stopped cleanly: \(reason.message)")
            Glibc.exit(0)
        }
        FileHandle.standardError.write(Data("giantvm: error: node \(id): \(reason.message)\n".utf8))
        Glibc.exit(reason.status > 0 && reason.status < 256 ? reason.status : 1)
    }
}

/// Prints a line to stdout at once (stdout may be a pipe to `giantvm up`).
func say(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}

/// Turns SIGINT/SIGTERM into a callback on a dedicated thread.
/// Threading: `blockTerminationSignals` on the main thread before any other thread starts.
final class SignalWaiter: @unchecked Sendable {
    private var set = sigset_t()

    static func blockTerminationSignals() -> SignalWaiter {
        let w = SignalWaiter()
        sigemptyset(&w.set)
        sigaddset(&w.set, SIGINT)
        sigaddset(&w.set, SIGTERM)
        pthread_sigmask(SIG_BLOCK, &w.set, nil)
        return w
    }

    /// Calls `body` with the signal number for every SIGINT/SIGTERM, on its own thread.
    func start(_ body: @escaping (Int32) -> Void) {
        var s = set
        _ = try? OSThread(name: "signals") {
            while true {
                var sig: Int32 = 0
                if sigwait(&s, &sig) == 0 { body(sig) }
            }
        }
    }
}

/// Sends one test frame to every peer on every channel and checks each answer.
/// Threading: handlers run on receive threads; `exchange` on the main thread.
final class ChannelProbe: @unchecked Sendable {
    static let ping: UInt8 = 0xE0
    static let pong: UInt8 = 0xE1
    private let node: Node
    private let mon = Monitor()
    private var answered = Set<String>()
    private var pinged = Set<String>()
    private var wrong: [String] = []
    private let fallback: ((Channel, UInt32, UnsafeRawBufferPointer) -> Void)?

    /// `fallback` gets every message that is not a probe message.
    init(node: Node, fallback: ((Channel, UInt32, UnsafeRawBufferPointer) -> Void)? = nil) {
        self.node = node
        self.fallback = fallback
        for channel in Channel.allCases {
            node.register(channel: channel) { [weak self] from, payload in self?.handle(channel, from, payload) }
        }
    }

    private func expected(_ channel: Channel, from: UInt32, to: UInt32) -> [UInt8] {
        [Self.ping] + Array("test frame from node \(from) to node \(to) on channel \(channel)".utf8)
    }

    private func handle(_ channel: Channel, _ from: UInt32, _ payload: UnsafeRawBufferPointer) {
        guard let type = payload.first else { return }
        if type != Self.ping && type != Self.pong {
            fallback?(channel, from, payload)
            return
        }
        let bytes = [UInt8](payload)
        if type == Self.ping {
            let ok = bytes == expected(channel, from: from, to: node.id)
            mon.withLock {
                if ok { pinged.insert("\(channel)/\(from)") } else { wrong.append("bad ping on \(channel) from node \(from)") }
                mon.broadcast()
            }
            node.send(channel: channel, to: from, [Self.pong] + bytes.dropFirst())
        } else {
            let ok = Array(bytes.dropFirst()) == Array(expected(channel, from: node.id, to: from).dropFirst())
            mon.withLock {
                if ok { answered.insert("\(channel)/\(from)") } else { wrong.append("bad answer on \(channel) from node \(from)") }
                mon.broadcast()
            }
        }
    }

    /// Pings every peer on every channel; waits for every answer and for every peer's pings.
    func exchange(timeout: Double) -> Result<String, ClusterError> {
        for channel in Channel.allCases {
            for p in node.peers {
                let rc = node.send(channel: channel, to: p, expected(channel, from: node.id, to: p))
                if rc != GVM_OK.rawValue {
                    return .failure(ClusterError("sending on \(channel) to node \(p): \(String(cString: gvm_status_name(rc)))"))
                }
            }
        }
        let want = Channel.allCases.count * node.peers.count
        let deadline = monotonicNanoseconds() + UInt64(timeout * 1e9)
        return mon.withLock {
            while (answered.count < want || pinged.count < want) && wrong.isEmpty
                    && node.stopReason == nil && monotonicNanoseconds() < deadline {
                mon.wait(until: min(deadline, monotonicNanoseconds() + 100_000_000))
            }
            if !wrong.isEmpty { return .failure(ClusterError(wrong.joined(separator: "; "))) }
            if answered.count < want || pinged.count < want {
                let missing = Channel.allCases.flatMap { c in node.peers.compactMap { p in
                    answered.contains("\(c)/\(p)") && pinged.contains("\(c)/\(p)") ? nil : "\(c) with node \(p)" } }
                return .failure(ClusterError("no test exchange on \(missing.joined(separator: ", "))"))
            }
            let names = Channel.allCases.map(\.description).joined(separator: ", ")
            return .success("test frames exchanged with every peer on every channel (\(names)): "
                            + "\(want) sent and answered, \(want) received")
        }
    }
}
