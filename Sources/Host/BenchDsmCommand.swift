// `giantvm bench dsm --config F --workload W`: thread-driven DSM workloads on every node of a
// cluster (real processes, real userfaultfd, the configured transport and coherence plugin), with
// exact checks, pages-crossed counts, statistics, and fault latency beside a floor measured in
// the same run by the same binary.
//
// The parent starts one child per node (`giantvm bench dsm --node I ...`, the same binary), each
// of which runs a Node (transport, channels, heartbeats), a GuestMemory over userfaultfd and the
// coherence plugin, then the workload's threads on guest RAM (DsmWorkloads). Children print one
// `RESULT {json}` line; the parent checks and aggregates them. A child that fails (a check, a lost
// peer, a plugin fatal, a timeout) stops the whole cluster, and the parent kills whatever is left
// after --timeout.
//
// Threading: main thread waits; the workload and floor run on a dedicated thread per child;
// channel handlers run on transport receive threads and never block.

import ArgumentParser
import Cluster
import Config
import DsmWorkloads
import Foundation
import Glibc
import GuestMemory
import Logging
import Metrics
import PluginAPI
import PluginHost

struct BenchDsm: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dsm",
        abstract: "DSM workloads on every node (real processes, userfaultfd, transport), checked exactly.",
        discussion: """
            Workloads: counter (threads on every node add to one counter under a spinlock in guest
            memory), litmus (MP, SB, LB, 2+2W, IRIW across nodes; forbidden outcomes fail), random
            (reads, writes and atomic adds; any stale read or lost update fails), pingpong (two nodes
            alternately write one page), readmiss (node 0 reads pages the last node wrote).
            Every run reports how many pages crossed nodes; a run where none did fails. Node 0 also
            measures the floor in the same run: a userfaultfd fault resolved by another thread plus
            one 4 KiB round trip over the configured transport. Needs root (userfaultfd).
            """)

    @OptionGroup var global: GlobalOptions

    @Option(name: .long, help: "The cluster YAML file.")
    var config: String

    @Option(name: .long, help: "counter, litmus, random, pingpong or readmiss.")
    var workload: String

    @Option(name: .long, help: "Seed of the random workload.")
    var seed: UInt64 = 1

    @Option(name: .long, help: "Threads per node.")
    var threads: Int = 2

    @Option(name: .long, help: "Iterations (per thread, trial count, rounds; default per workload).")
    var iterations: Int?

    @Option(name: .long, help: "Pages (random working set, readmiss pages per round).")
    var pages: Int?

    @Option(name: .long, help: "Fault-handler wake mode: poll, spin or spin:<us>.")
    var mode: String = "poll"

    @Option(name: .long, help: "Write the statistics (per node and total) as JSON to this file.")
    var statsOut: String?

    @Option(name: .long, help: "Kill the cluster after this many seconds.")
    var timeout: Double = 120

    @Option(name: .long, help: .hidden)
    var node: UInt32?

    func validate() throws {
        guard WorkloadKind(rawValue: workload) != nil else {
            throw ValidationError("--workload '\(workload)' is not one of \(WorkloadKind.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        guard HandlerWakeMode(parsing: mode) != nil else { throw ValidationError("--mode '\(mode)' is not poll, spin or spin:<us>") }
        guard (1...64).contains(threads) else { throw ValidationError("--threads must be 1...64") }
        if let iterations, iterations < 1 { throw ValidationError("--iterations must be positive") }
        guard timeout > 0 else { throw ValidationError("--timeout must be positive") }
    }

    func params(nodes: Int) -> WorkloadParams {
        var p = WorkloadParams(kind: WorkloadKind(rawValue: workload)!, nodes: nodes, threadsPerNode: threads, seed: seed,
                               iterations: iterations, pages: pages)
        p.timeoutSeconds = timeout * 0.8
        return p
    }

    func run() throws {
        let cfg: ClusterConfig
        do { cfg = try ConfigLoader.load(path: config) } catch { fail("\(error)") }
        if let node {
            runNode(cfg, id: node)
        } else {
            runParent(cfg)
        }
    }

    // MARK: - parent

    func runParent(_ cfg: ClusterConfig) {
        let n = cfg.nodes.count
        let p = params(nodes: n)
        guard n >= 2 else {
            fail("\(config): bench dsm needs at least 2 nodes (the config has \(n)): pages must cross nodes")
        }
        guard UInt64(p.requiredBytes) <= cfg.memoryBytes else {
            fail("\(config): memory \(cfg.memoryBytes) bytes is too small for workload \(workload) (needs \(p.requiredBytes))")
        }
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var children: [(Process, Pipe, Pipe)] = []
        for i in 0..<n {
            let proc = Process()
            proc.executableURL = URL(fileURLWithPath: exe)
            var args = ["bench", "dsm", "--config", config, "--workload", workload, "--seed", "\(seed)",
                        "--threads", "\(threads)", "--mode", mode, "--timeout", "\(timeout)", "--node", "\(i)",
                        "--log-level", global.logLevel]
            if let iterations { args += ["--iterations", "\(iterations)"] }
            if let pages { args += ["--pages", "\(pages)"] }
            proc.arguments = args
            let out = Pipe(), err = Pipe()
            proc.standardOutput = out
            proc.standardError = err
            do { try proc.run() } catch { fail("cannot start node \(i): \(error)") }
            children.append((proc, out, err))
        }
        // Collect output on threads (pipes must be drained while the children run).
        final class Sink: @unchecked Sendable { var data = Data(); let lock = NSLock() }
        var sinks: [(Sink, Sink)] = []
        let group = DispatchGroup()
        for (_, out, err) in children {
            let so = Sink(), se = Sink()
            sinks.append((so, se))
            for (pipe, sink) in [(out, so), (err, se)] {
                group.enter()
                Thread {
                    let d = pipe.fileHandleForReading.readDataToEndOfFile()
                    sink.lock.lock(); sink.data = d; sink.lock.unlock()
                    group.leave()
                }.start()
            }
        }
        let deadline = Date().addingTimeInterval(timeout)
        var timedOut = false
        while children.contains(where: { $0.0.isRunning }) {
            if Date() > deadline {
                timedOut = true
                for (proc, _, _) in children where proc.isRunning { kill(proc.processIdentifier, SIGKILL) }
                break
            }
            usleep(20_000)
        }
        for (proc, _, _) in children { proc.waitUntilExit() }
        _ = group.wait(timeout: .now() + 5)

        var reports: [NodeReport] = []
        var problems: [String] = []
        if timedOut { problems.append("the cluster did not finish within --timeout \(timeout) s (killed)") }
        for (i, (proc, _, _)) in children.enumerated() {
            let out = String(decoding: sinks[i].0.data, as: UTF8.self)
            let err = String(decoding: sinks[i].1.data, as: UTF8.self)
            for line in err.split(separator: "\n") where line.contains("error") || line.contains("fatal") {
                problems.append("node \(i): \(line)")
            }
            if proc.terminationReason == .uncaughtSignal && !timedOut {
                problems.append("node \(i) was killed by signal \(proc.terminationStatus)")
            } else if proc.terminationStatus != 0 && !timedOut {
                problems.append("node \(i) exited with status \(proc.terminationStatus)")
            }
            guard let line = out.split(separator: "\n").first(where: { $0.hasPrefix("RESULT ") }),
                  let report = try? JSONDecoder().decode(NodeReport.self, from: Data(line.dropFirst(7).utf8)) else {
                problems.append("node \(i) printed no result")
                continue
            }
            reports.append(report)
        }
        let summary = Summary(workload: workload, config: config, nodes: n, threadsPerNode: threads, mode: mode,
                              cpus: Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))), reports: reports)
        problems += summary.problems
        print(summary.table(), terminator: "")
        if let statsOut {
            let enc = JSONEncoder()
            enc.outputFormatting = [.prettyPrinted, .sortedKeys]
            do { try enc.encode(summary.stats).write(to: URL(fileURLWithPath: statsOut)) } catch {
                problems.append("cannot write --stats-out \(statsOut): \(error)")
            }
        }
        if !problems.isEmpty {
            for p in problems { FileHandle.standardError.write(Data("giantvm: error: \(p)\n".utf8)) }
            Glibc.exit(1)
        }
        print("bench dsm \(workload): PASS")
    }

    // MARK: - one node

    func runNode(_ cfg: ClusterConfig, id: UInt32) {
        let logger = global.bootstrapLogging(label: "giantvm.bench")
        let n = cfg.nodes.count
        let metrics = MetricsRegistry()
        let loader = PluginLoader(searchPath: PluginLoader.defaultSearchPath(config: cfg))
        let node: Node
        do { node = try Node(config: cfg, id: id, loader: loader, logger: logger, metrics: metrics) } catch {
            fail("node \(id): \(error)")
        }
        let loaded: LoadedPlugin
        do { loaded = try loader.load(cfg.coherence.plugin, kind: .coherence) } catch {
            fail("\(cfg.sourcePath): coherence.plugin: \(error)")
        }
        let services = HostServicesTable(pluginName: loaded.name, metrics: metrics, logger: logger, onFatal: { why in
            node.stop(reason: "coherence plugin \(loaded.name): \(why)", status: 1)
        })
        let mem: GuestMemory
        do {
            mem = try GuestMemory(bytes: cfg.memoryBytes, wakeMode: HandlerWakeMode(parsing: mode)!, handlerThreads: 1,
                                  logger: logger, onFatal: { why in node.stop(reason: "guest memory: \(why)", status: 1) },
                                  send: { dst, iov in node.send(channel: .coherence, to: dst, iov: iov, lane: GVM_LANE_BULK) },
                                  sendUrgent: { dst, iov in node.send(channel: .coherence, to: dst, iov: iov, lane: GVM_LANE_URGENT) })
        } catch {
            fail("node \(id): \(error)")
        }
        let info = ClusterInfoTable(config: cfg, selfID: id)
        let settings = SettingsTable(cfg.coherence.settings)
        let plugin: CoherencePluginInstance
        do {
            plugin = try CoherencePluginInstance(name: loaded.name, ops: loaded.coherenceOps!, services: services.pointer,
                                                 memory: mem, cluster: info.pointer, settings: settings.pointer,
                                                 settingCount: settings.count)
        } catch {
            fail("node \(id): \(error)")
        }
        let control = BenchControl(node: node, nodes: n)
        node.register(channel: .coherence) { from, payload in plugin.receive(from: from, payload) }
        node.register(channel: .control) { from, payload in control.handle(from, payload) }
        node.onPeerLost { peer in plugin.ops.pointee.peer_lost?(plugin.instance, peer) }
        node.onStop { _ in control.wakeAll() }
        do {
            try node.start()
            try plugin.start()
            try mem.start()
        } catch {
            fail("node \(id): \(error)")
        }

        let p = params(nodes: n)
        let worker = Thread {
            var floor: FloorReport?
            if id == 0 {
                do { floor = try self.measureFloor(control: control, loader: loader, logger: logger) } catch {
                    node.stop(reason: "floor measurement failed: \(error)", status: 1)
                    return
                }
            }
            let result: NodeResult
            do {
                let w = try DsmWorkload(memory: mem.base, bytes: Int(mem.size), params: p, node: Int(id))
                result = w.run()
            } catch {
                node.stop(reason: "\(error)", status: 1)
                return
            }
            let snap = metrics.snapshot()
            let report = NodeReport(node: Int(id), result: result, counters: snap.counters, histograms: snap.histograms,
                                    floor: floor, memory: MemoryReport(mem.stats))
            let enc = JSONEncoder()
            enc.outputFormatting = [.sortedKeys]
            let json = (try? enc.encode(report)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
            FileHandle.standardOutput.write(Data("RESULT \(json)\n".utf8))
            if !result.errors.isEmpty {
                node.stop(reason: "workload check failed on node \(id): \(result.errors.first!)", status: 1)
                return
            }
            // Keep serving pages until every node is done, then node 0 stops the cluster.
            control.finished(self.timeout)
            if id == 0 { node.stop(reason: "benchmark finished") }
        }
        worker.stackSize = 1 << 22
        worker.start()
        let reason = node.waitUntilStopped()
        mem.stop()
        plugin.stop()
        if reason.status == 0 { Glibc.exit(0) }
        FileHandle.standardError.write(Data("giantvm: error: node \(id): \(reason.message)\n".utf8))
        Glibc.exit(reason.status > 0 && reason.status < 256 ? reason.status : 1)
    }

    /// The floor, same binary, same run, same wake mode: a userfaultfd fault resolved by another
    /// thread (the minimal C handler series of `bench fault`), and a 4 KiB round trip to node 1
    /// over the configured transport on the bulk lane.
    func measureFloor(control: BenchControl, loader: PluginLoader, logger: Logger) throws -> FloorReport {
        let local = try loader.load("dsm-local", kind: .coherence)
        let svc = HostServicesTable(pluginName: local.name, metrics: MetricsRegistry(), logger: logger, onFatal: { _ in })
        let fault = try FaultBenchmark.run(mode: HandlerWakeMode(parsing: mode)!, iterations: 2000, rounds: 4,
                                           cpus: nil, pluginName: local.name, ops: local.coherenceOps!, services: svc.pointer)
        let rtt = try control.roundTrips(to: 1, count: 1000, size: 4096)
        return FloorReport(faultP50: fault.floor.p50, faultP99: fault.floor.p99, rttP50: rtt.p50, rttP99: rtt.p99)
    }
}

// MARK: - reports

struct FloorReport: Codable {
    var faultP50: UInt64, faultP99: UInt64
    var rttP50: UInt64, rttP99: UInt64
    var p50: UInt64 { faultP50 + rttP50 }
}

struct MemoryReport: Codable {
    var missingEvents: UInt64, writeProtectEvents: UInt64, staleEvents: UInt64, pluginFaults: UInt64
    init(_ s: FaultStats) {
        missingEvents = s.missingEvents
        writeProtectEvents = s.writeProtectEvents
        staleEvents = s.staleEvents
        pluginFaults = s.pluginFaults
    }
}

struct NodeReport: Codable {
    var node: Int
    var result: NodeResult
    var counters: [String: UInt64]
    var histograms: [String: HistogramSummary]
    var floor: FloorReport?
    var memory: MemoryReport
}

struct Summary {
    var workload: String
    var config: String
    var nodes: Int
    var threadsPerNode: Int
    var mode: String
    var cpus: Int
    var reports: [NodeReport]

    func total(_ name: String) -> UInt64 { reports.reduce(0) { $0 + ($1.counters[name] ?? 0) } }
    var pagesCrossed: UInt64 { total("ivy.pages_sent") + total("ivy.zero_pages_sent") }

    var problems: [String] {
        var p: [String] = []
        for r in reports { p += r.result.errors.map { "node \(r.node): \($0)" } }
        if reports.count == nodes && pagesCrossed == 0 && total("dsm.pages_sent") == 0 {
            p.append("no page crossed between nodes: the run shared nothing")
        }
        for r in reports where r.result.operations.reduce(0, +) == 0 && workloadNeedsAll {
            p.append("node \(r.node) did no work")
        }
        return p
    }

    var workloadNeedsAll: Bool { workload == "counter" || workload == "random" }

    var stats: [String: AnyCodable] {
        var perNode: [String: AnyCodable] = [:]
        var totals: [String: UInt64] = [:]
        for r in reports {
            perNode["node\(r.node)"] = AnyCodable(["counters": AnyCodable(r.counters), "histograms": AnyCodable(r.histograms),
                                                   "operations": AnyCodable(r.result.operations), "checks": AnyCodable(r.result.checks)])
            for (k, v) in r.counters { totals[k, default: 0] += v }
        }
        var s: [String: AnyCodable] = ["workload": AnyCodable(workload), "nodes": AnyCodable(nodes),
                                       "threads_per_node": AnyCodable(threadsPerNode), "pages_crossed": AnyCodable(pagesCrossed),
                                       "per_node": AnyCodable(perNode), "total": AnyCodable(totals), "cpus": AnyCodable(cpus)]
        if let f = reports.first(where: { $0.floor != nil })?.floor { s["floor"] = AnyCodable(f) }
        if let lit = reports.first(where: { !$0.result.litmus.isEmpty })?.result.litmus { s["litmus"] = AnyCodable(lit) }
        return s
    }

    func us(_ ns: UInt64) -> String { String(format: "%.1f", Double(ns) / 1000) }
    func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s + " " : s + String(repeating: " ", count: n - s.count) }

    func table() -> String {
        var out = "bench dsm \(workload): \(nodes) nodes x \(threadsPerNode) threads, wake mode \(mode), \(cpus) CPUs on this machine (threads unpinned), config \(config)\n"
        out += "pages crossed between nodes: \(pagesCrossed) (\(total("ivy.pages_sent")) with data, \(total("ivy.zero_pages_sent")) zero)\n"
        out += pad("node", 6) + pad("ops", 10) + pad("read_miss", 11) + pad("write_miss", 11) + pad("upgrade", 9)
            + pad("msgs", 9) + pad("bytes", 12) + "fault p50/p99 us\n"
        for r in reports.sorted(by: { $0.node < $1.node }) {
            let msgs = r.counters.filter { $0.key.hasPrefix("ivy.msg.") }.values.reduce(0, +)
            let bytes = r.counters.filter { $0.key.hasPrefix("ivy.bytes.") }.values.reduce(0, +)
            let lat = r.histograms["ivy.latency.all"]
            out += pad("\(r.node)", 6) + pad("\(r.result.operations.reduce(0, +))", 10)
                + pad("\(r.counters["ivy.fault.read_miss"] ?? 0)", 11) + pad("\(r.counters["ivy.fault.write_miss"] ?? 0)", 11)
                + pad("\(r.counters["ivy.fault.upgrade"] ?? 0)", 9) + pad("\(msgs)", 9) + pad("\(bytes)", 12)
                + (lat.map { "\(us($0.p50)) / \(us($0.p99))" } ?? "-") + "\n"
        }
        let faults = total("ivy.fault.read_miss") + total("ivy.fault.write_miss") + total("ivy.fault.upgrade")
        let seconds = reports.map(\.result.seconds).max() ?? 0
        if seconds > 0 {
            out += String(format: "throughput: %llu faults in %.3f s = %.0f faults/s (all nodes), %llu operations\n",
                          faults, seconds, Double(faults) / seconds,
                          UInt64(reports.reduce(0) { $0 + $1.result.operations.reduce(0, +) }))
        }
        let hops = (0...5).map { h in (h, total(h == 5 ? "ivy.hops.5plus" : "ivy.hops.\(h)")) }.filter { $0.1 > 0 }
        if !hops.isEmpty { out += "faults by network hops: " + hops.map { "\($0.0 == 5 ? "5+" : "\($0.0)"): \($0.1)" }.joined(separator: ", ") + "\n" }
        for r in reports {
            for (k, v) in r.result.checks.sorted(by: { $0.key < $1.key }) { out += "check node \(r.node): \(k) = \(v) (exact)\n" }
        }
        if let lit = reports.first(where: { !$0.result.litmus.isEmpty })?.result.litmus {
            for (name, outcomes) in lit.sorted(by: { $0.key < $1.key }) {
                out += "litmus \(name): " + outcomes.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: ", ") + "\n"
            }
        }
        if let f = reports.first(where: { $0.floor != nil })?.floor {
            out += "floor (node 0, same run): uffd fault p50 \(us(f.faultP50)) us + 4 KiB transport round trip p50 \(us(f.rttP50)) us = \(us(f.p50)) us\n"
            if let r0 = reports.first(where: { $0.node == 0 }), !r0.result.latencies.isEmpty {
                let s = HistogramSummary(samples: r0.result.latencies)
                let what = workload == "readmiss" ? "read miss (node 0 reads a page the last node wrote)" : "pingpong round (two page moves)"
                out += "\(what): n=\(s.count) p50 \(us(s.p50)) us, p90 \(us(s.p90)) us, p99 \(us(s.p99)) us, max \(us(s.max)) us; "
                    + String(format: "p50 ratio to floor %.2fx\n", Double(s.p50) / Double(max(f.p50, 1)))
            }
            for h in 0...5 {
                let name = h == 5 ? "ivy.latency.hops_5plus" : "ivy.latency.hops_\(h)"
                if let s = reports.first(where: { $0.node == 0 })?.histograms[name], s.count > 0 {
                    out += "node 0 faults resolved in \(h == 5 ? "5+" : "\(h)") hops: n=\(s.count) p50 \(us(s.p50)) us, p99 \(us(s.p99)) us, "
                        + String(format: "p50 ratio to floor %.2fx\n", Double(s.p50) / Double(max(f.p50, 1)))
                }
            }
            for kind in ["read_miss", "write_miss", "upgrade"] {
                if let h = reports.first(where: { $0.node == 0 })?.histograms["ivy.latency.\(kind)"], h.count > 0 {
                    out += "node 0 plugin \(kind): n=\(h.count) p50 \(us(h.p50)) us, p99 \(us(h.p99)) us, "
                        + String(format: "p50 ratio to floor %.2fx\n", Double(h.p50) / Double(max(f.p50, 1)))
                }
            }
        }
        return out
    }
}

/// A tiny Codable wrapper for heterogeneous JSON.
struct AnyCodable: Encodable {
    let encodeBody: (Encoder) throws -> Void
    init<T: Encodable>(_ v: T) { encodeBody = { try v.encode(to: $0) } }
    func encode(to encoder: Encoder) throws { try encodeBody(encoder) }
}

// MARK: - control-channel helpers: floor round trips, "finished" agreement

/// Control messages 0xC0 ping (payload echoed), 0xC1 pong, 0xC2 finished.
/// Threading: `handle` on receive threads (never blocks); waits on the worker thread.
final class BenchControl: @unchecked Sendable {
    let node: Node
    let nodes: Int
    let cond = NSCondition()
    var pongs = 0
    var finishedNodes = Set<UInt32>()
    var stopping = false

    init(node: Node, nodes: Int) {
        self.node = node
        self.nodes = nodes
    }

    func handle(_ from: UInt32, _ payload: UnsafeRawBufferPointer) {
        guard let type = payload.first else { return }
        switch type {
        case 0xC0:
            var reply = Array(payload)
            reply[0] = 0xC1
            _ = node.send(channel: .control, to: from, reply, lane: GVM_LANE_BULK)
        case 0xC1:
            cond.lock(); pongs += 1; cond.signal(); cond.unlock()
        case 0xC2:
            cond.lock(); finishedNodes.insert(from); cond.broadcast(); cond.unlock()
        default:
            break
        }
    }

    func wakeAll() {
        cond.lock(); stopping = true; cond.broadcast(); cond.unlock()
    }

    /// `count` round trips of `size` bytes to `peer` on the bulk lane (after 100 warm-up ones).
    func roundTrips(to peer: UInt32, count: Int, size: Int) throws -> HistogramSummary {
        var frame = [UInt8](repeating: 0x5A, count: size)
        frame[0] = 0xC0
        var samples: [UInt64] = []
        for i in 0..<(count + 100) {
            let t0 = DispatchTime.now().uptimeNanoseconds
            cond.lock()
            let before = pongs
            cond.unlock()
            guard node.send(channel: .control, to: peer, frame, lane: GVM_LANE_BULK) == GVM_OK.rawValue else {
                throw WorkloadError("round trip to node \(peer): send failed")
            }
            cond.lock()
            while pongs == before && !stopping {
                if !cond.wait(until: Date().addingTimeInterval(5)) { break }
            }
            let ok = pongs > before
            cond.unlock()
            guard ok else { throw WorkloadError("round trip to node \(peer): no answer within 5 s") }
            if i >= 100 { samples.append(DispatchTime.now().uptimeNanoseconds - t0) }
        }
        return HistogramSummary(samples: samples)
    }

    /// Tells every node this one is done, then waits until all are (or the node stops).
    func finished(_ timeout: Double) {
        for p in 0..<UInt32(nodes) where p != node.id { _ = node.send(channel: .control, to: p, [0xC2]) }
        cond.lock()
        finishedNodes.insert(node.id)
        let deadline = Date().addingTimeInterval(timeout)
        while finishedNodes.count < nodes && !stopping {
            if !cond.wait(until: deadline) { break }
        }
        cond.unlock()
    }
}
