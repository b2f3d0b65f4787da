// `giantvm bench dsm --config F --workload W`: thread-driven DSM workloads on every node of a
// cluster (real processes, real userfaultfd, the configured transport and coherence plugin), with
// exact checks, pages-crossed counts, statistics, and fault latency beside a floor measured in
// the same run by the same binary.
//
// The parent starts one child per node (`giantvm bench dsm --node I ...`, the same binary) through
// the one launcher; each child is a Bench.DsmBenchNode and prints one `RESULT {json}` line; the
// parent checks and aggregates them (Bench.DsmBenchSummary). A child that fails (a check, a lost
// peer, a plugin fatal) stops the whole cluster; the launcher kills what is left after the
// failure grace or at --timeout, and the nodes stop if the parent is killed.

import ArgumentParser
import Bench
import Config
import DsmWorkloads
import Foundation
import Glibc
import GuestMemory
import Launch
import NodeAssembly
import PluginHost

struct BenchDsm: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dsm",
        abstract: "DSM workloads on every node (real processes, userfaultfd, transport), checked exactly.",
        discussion: """
            Workloads: counter (threads on every node add to one counter under a spinlock in guest
            memory), litmus (MP, SB, LB, 2+2W, IRIW across nodes; forbidden outcomes fail), random
            (reads, writes and atomic adds; any stale read or lost update fails), pingpong (two nodes
            alternately write one page), readmiss (node 0 reads pages the last node wrote),
            seqread (node 0's first thread reads --pages pages the last node wrote, in order:
            pages/s and MiB/s). Every run reports how many pages crossed nodes; a run where none
            did fails. Node 0 also measures the read-miss floor in the same run: a userfaultfd read
            fault answered by the last node with a 24-byte request and a 4 KiB reply over the
            configured transport, timed by the faulting thread (between the workload's own reads
            for readmiss and seqread). Needs root (userfaultfd).
            """)

    @OptionGroup var global: GlobalOptions

    @Option(name: .long, help: "The cluster YAML file.")
    var config: String

    @Option(name: .long, help: "counter, litmus, random, pingpong, readmiss or seqread.")
    var workload: String

    @Option(name: .long, help: "Seed of the random workload.")
    var seed: UInt64 = 1

    @Option(name: .long, help: "Threads per node.")
    var threads: Int = 2

    @Option(name: .long, help: "Iterations (per thread, trial count, rounds; default per workload).")
    var iterations: Int?

    @Option(name: .long, help: "Pages (random working set, readmiss and seqread pages per round).")
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
        try checkSeconds(timeout, option: "--timeout")
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
        final class Collected: @unchecked Sendable {
            let lock = NSLock()
            var results: [Int: NodeReport] = [:]
            var problems: [String] = []
        }
        let got = Collected()
        let status = launchNodes(cfg, configPath: config, logLevel: global.logLevel, deadline: timeout, onLine: { i, stream, line in
            if stream == .stdout, line.hasPrefix("RESULT ") {
                if let r = try? JSONDecoder().decode(NodeReport.self, from: Data(line.dropFirst(7).utf8)) {
                    got.lock.withLock { got.results[i] = r }
                } else {
                    got.lock.withLock { got.problems.append("node \(i) printed an unreadable result") }
                }
                return false
            }
            if stream == .stderr, line.contains("error") || line.contains("fatal") {
                got.lock.withLock { got.problems.append("node \(i): \(line)") }
            }
            return stream == .stderr
        }) { id in
            var args = ["bench", "dsm", "--config", config, "--workload", workload, "--seed", "\(seed)",
                        "--threads", "\(threads)", "--mode", mode, "--timeout", "\(timeout)", "--node", "\(id)"]
            if let iterations { args += ["--iterations", "\(iterations)"] }
            if let pages { args += ["--pages", "\(pages)"] }
            return args
        }
        var problems = got.lock.withLock { got.problems }
        let reports = got.lock.withLock { got.results.keys.sorted().map { got.results[$0]! } }
        if status == 124 { problems.append("the cluster did not finish within --timeout \(timeout) s (stopped)") }
        for i in 0..<n where !reports.contains(where: { $0.node == i }) { problems.append("node \(i) printed no result") }
        let summary = DsmBenchSummary(workload: workload, config: config, nodes: n, threadsPerNode: threads, mode: mode,
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
        if status != 0 && problems.isEmpty { problems.append("a node failed (launcher status \(status))") }
        if !problems.isEmpty {
            for p in problems { FileHandle.standardError.write(Data("giantvm: error: \(p)\n".utf8)) }
            Glibc.exit(1)
        }
        print("bench dsm \(workload): PASS")
    }

    // MARK: - one node

    func runNode(_ cfg: ClusterConfig, id: UInt32) {
        let logger = global.bootstrapLogging(label: "giantvm.bench")
        guard Launcher.adoptParentDeath() else { fail("node \(id): the `bench dsm` that started this node is gone") }
        guard Int(id) < cfg.nodes.count else { fail("\(config): there is no node \(id)") }
        let node = DsmBenchNode(config: cfg, id: id, params: params(nodes: cfg.nodes.count),
                                wakeMode: HandlerWakeMode(parsing: mode)!, timeout: timeout)
        let reason = node.run(loader: PluginLoader(searchPath: PluginLoader.defaultSearchPath(config: cfg)), logger: logger, emit: say)
        if reason.status == 0 { Glibc.exit(0) }
        FileHandle.standardError.write(Data("giantvm: error: node \(id): \(reason.message)\n".utf8))
        Glibc.exit(StopCause.processStatus(reason.status))
    }
}
