// Running the runs of `giantvm ab`: the seeded, interleaved schedule (every round runs each
// config once, in a shuffled order, so machine drift hits every config alike; warm-up rounds
// first), and one run = one real multi-process launch through the one launcher (Sources/Launch):
// a test-guest command line on every node of the config (`giantvm node --cmdline W --stats-out`),
// or a `giantvm bench dsm` workload (its own launcher, `--stats-out`).

import Config
import Foundation
import Launch
import Metrics

/// The workload every config runs.
public enum Workload: Sendable, Equatable {
    /// A test-guest command line (`counter iters=2000`): the configs need `guest:`.
    case guest(cmdline: String)
    /// `dsm:NAME [bench dsm options]`: `giantvm bench dsm --workload NAME [options]`.
    case benchDsm(name: String, arguments: [String])

    public init(parsing text: String) throws {
        let words = text.split(separator: " ").map(String.init)
        guard let first = words.first else { throw ABError("--workload is empty") }
        if first.hasPrefix("dsm:") {
            let name = String(first.dropFirst(4))
            guard !name.isEmpty else { throw ABError("--workload '\(text)': name the bench dsm workload, e.g. dsm:pingpong") }
            let reserved = ["--config", "--workload", "--stats-out", "--node"]
            if let bad = words.dropFirst().first(where: { reserved.contains($0) }) {
                throw ABError("--workload '\(text)': \(bad) is set by giantvm ab")
            }
            self = .benchDsm(name: name, arguments: Array(words.dropFirst()))
        } else {
            self = .guest(cmdline: text)
        }
    }

    public var text: String {
        switch self {
        case .guest(let c): return c
        case .benchDsm(let n, let a): return (["dsm:" + n] + a).joined(separator: " ")
        }
    }
}

/// One run as the report keeps it.
public struct RunRecord: Codable, Sendable {
    /// Position in the schedule (0-based, warm-ups included).
    public var index: Int
    public var config: Int
    public var warmup: Bool
    public var metrics: [String: Double]
    /// dsm.fault_latency merged over the run's nodes: [value ns, count] pairs.
    public var faultLatency: [[UInt64]]
    /// The workload's own result: the guest's RESULT JSON, or bench dsm's total operations.
    public var result: String?
    public init(index: Int, config: Int, warmup: Bool, metrics: [String: Double], faultLatency: [[UInt64]], result: String?) {
        self.index = index; self.config = config; self.warmup = warmup; self.metrics = metrics
        self.faultLatency = faultLatency; self.result = result
    }
}

public enum Schedule {
    /// `warmup` then `runs` rounds; each round holds every config once, shuffled with `seed`.
    public static func make(configs: Int, runs: Int, warmup: Int, seed: UInt64) -> [(config: Int, warmup: Bool)] {
        var rng = SeededGenerator(seed: seed)
        var out: [(config: Int, warmup: Bool)] = []
        for round in 0..<(warmup + runs) {
            out += Array(0..<configs).shuffled(using: &rng).map { ($0, round < warmup) }
        }
        return out
    }
}

/// Runs one run of one config; the launcher of the current run can be stopped from any thread.
public final class RunExecutor: @unchecked Sendable {
    public let giantvm: String
    public let logLevel: String
    /// Seconds one run may take before it is stopped (a failure).
    public let timeout: Double
    private let lock = NSLock()
    private var current: Launcher?
    private var cancelled = false

    public init(giantvm: String, logLevel: String = "warning", timeout: Double = 120) {
        self.giantvm = giantvm; self.logLevel = logLevel; self.timeout = timeout
    }

    /// Stops the run in progress (its nodes get `signal`) and every later one.
    public func cancel(signal: Int32) {
        let running = lock.withLock { () -> Launcher? in
            cancelled = true
            return current
        }
        running?.terminate(signal: signal)
    }

    /// Runs `workload` under the config at `path` (loaded as `cfg`), keeping its files in `dir`.
    public func run(config path: String, _ cfg: ClusterConfig, workload: Workload, dir: String,
                    index: Int, configIndex: Int, warmup: Bool) throws -> RunRecord {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        final class Lines: @unchecked Sendable {
            let lock = NSLock()
            var result: String?, jobMilliseconds: Double?
            var tail: [String] = []
        }
        let lines = Lines()
        let specs: [ProcessSpec]
        switch workload {
        case .guest(let cmdline):
            guard cfg.guest != nil else { throw ABError("\(path): the workload is a guest command line but the config has no `guest:`") }
            specs = cfg.nodes.map { n in
                ProcessSpec(label: "node \(n.id)", arguments: ["node", "--config", path, "--id", "\(n.id)", "--cmdline", cmdline,
                                                               "--stats-out", "\(dir)/node-\(n.id).json", "--log-level", logLevel])
            }
        case .benchDsm(let name, let arguments):
            specs = [ProcessSpec(label: "bench dsm", arguments: ["bench", "dsm", "--config", path, "--workload", name] + arguments
                                 + ["--stats-out", "\(dir)/bench.json", "--log-level", logLevel])]
        }
        let launcher = Launcher(executable: giantvm, processes: specs,
                                policy: .init(failureGrace: min(cfg.timeouts.failure + 5, 600), deadline: timeout)) { i, stream, line in
            lines.lock.withLock {
                if stream == .stdout, line.hasPrefix("RESULT ") { lines.result = String(line.dropFirst(7)) }
                if stream == .stdout, line.hasPrefix("SUMMARY "), let ms = line.split(separator: " ").first(where: { $0.hasPrefix("elapsed_ms=") }) {
                    lines.jobMilliseconds = Double(ms.dropFirst(11))
                }
                lines.tail.append("[\(specs[i].label)] \(line)")
                if lines.tail.count > 40 { lines.tail.removeFirst() }
            }
            return false
        }
        let go = lock.withLock { () -> Bool in
            if cancelled { return false }
            current = launcher
            return true
        }
        guard go else { throw ABError("interrupted") }
        let started = monotonicNanoseconds()
        let outcome = try launcher.run()
        let wall = Double(monotonicNanoseconds() - started) / 1e9
        lock.withLock { current = nil }
        let tail = lines.lock.withLock { lines.tail }.joined(separator: "\n")
        guard outcome.allSucceeded else {
            let why = outcome.timedOut ? "did not finish within \(Int(timeout)) s"
                : outcome.interruptedBy.map { "was interrupted by signal \($0)" }
                ?? "failed: " + outcome.failed.map { "\(specs[$0].label) \(outcome.ends[$0])" }.joined(separator: ", ")
            throw ABError("run \(index + 1) (\(path)) \(why); its last output:\n\(tail)")
        }
        var metrics: [String: Double] = ["wall_time": wall]
        var latency = LatencyDistribution()
        var result: String?
        switch workload {
        case .guest:
            let (res, ms) = lines.lock.withLock { (lines.result, lines.jobMilliseconds) }
            guard let res else { throw ABError("run \(index + 1) (\(path)): the guest printed no RESULT line; its last output:\n\(tail)") }
            result = res
            try RunMetrics.guestFigures(resultJSON: res).forEach { metrics[$0.key] = $0.value }
            if let ms, ms.isFinite, ms >= 0, ms < 1e9 { metrics["job_time"] = ms }
            let files = try cfg.nodes.map { try NodeStatisticsFile.read("\(dir)/node-\($0.id).json") }
            files.forEach { latency.merge($0.latencyValues[GVM_STAT_NAME_FAULT_LATENCY] ?? []) }
            RunMetrics.coherence(counters: files.map(\.counters), latency: latency).forEach { metrics[$0.key] = $0.value }
        case .benchDsm:
            let bench = try BenchStats.read("\(dir)/bench.json")
            latency = bench.latency
            result = "operations=\(bench.operations) seconds=\(bench.seconds)"
            if bench.seconds > 0 { metrics["ops_per_s"] = Double(bench.operations) / bench.seconds }
            metrics["job_time"] = bench.seconds * 1000
            RunMetrics.coherence(counters: bench.counters, latency: latency).forEach { metrics[$0.key] = $0.value }
        }
        return RunRecord(index: index, config: configIndex, warmup: warmup, metrics: metrics,
                         faultLatency: zip(latency.values, latency.counts).map { [$0, $1] }, result: result)
    }
}

/// The standard fault latency histogram's name (GVM_STAT_FAULT_LATENCY).
let GVM_STAT_NAME_FAULT_LATENCY = DSMStatistics.histogramNames[0]

/// What `giantvm bench dsm --stats-out` wrote, as `ab` needs it: per node counters, operations,
/// seconds and recorded latency values.
struct BenchStats {
    var counters: [[String: UInt64]] = []
    var operations: UInt64 = 0
    var seconds: Double = 0
    var latency = LatencyDistribution()

    static func read(_ path: String) throws -> BenchStats {
        struct Node: Decodable {
            var counters: [String: UInt64]
            var operations: [Int]
            var seconds: Double?
            var latency_values: [String: [[UInt64]]]?
        }
        struct File: Decodable { var per_node: [String: Node] }
        guard let data = FileManager.default.contents(atPath: path) else { throw ABError("\(path): bench dsm wrote no statistics") }
        let f: File
        do { f = try JSONDecoder().decode(File.self, from: data) } catch { throw ABError("\(path): unreadable bench dsm statistics: \(error)") }
        var b = BenchStats()
        for (name, n) in f.per_node.sorted(by: { $0.key < $1.key }) {
            guard n.operations.allSatisfy({ $0 >= 0 && $0 < 1 << 48 }) else { throw ABError("\(path): \(name).operations out of range") }
            if let s = n.seconds { guard s.isFinite, s >= 0, s < 1e7 else { throw ABError("\(path): \(name).seconds out of range") } }
            b.counters.append(n.counters)
            b.operations += UInt64(n.operations.reduce(0, +))
            b.seconds = max(b.seconds, n.seconds ?? 0)
            b.latency.merge(n.latency_values?[GVM_STAT_NAME_FAULT_LATENCY] ?? [])
        }
        return b
    }
}
