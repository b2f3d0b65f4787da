// One `giantvm ab`: load and diff the configs, record the environment, run the schedule with a
// progress line, analyse, and write DIR/report.json and DIR/report.html.

import Config
import Foundation
import Glibc

public struct ABOptions: Sendable {
    public var configs: [String]
    public var workload: Workload
    public var runs = 10
    public var warmup = 1
    public var seed: UInt64 = 1
    public var outDirectory: String
    public var analysis = AnalysisSettings()
    /// The giantvm binary every run starts.
    public var giantvm: String
    public var logLevel = "warning"
    public var runTimeout: Double = 120
    /// The command line, for the report.
    public var command: [String] = []

    public init(configs: [String], workload: Workload, outDirectory: String, giantvm: String) {
        self.configs = configs; self.workload = workload; self.outDirectory = outDirectory; self.giantvm = giantvm
    }

    /// The most runs (and warm-ups) per config, and configs, one comparison may ask for.
    public static let maxRuns = 1000, maxConfigs = 26

    public func check() throws {
        guard configs.count >= 2 else { throw ABError("give at least two configs to compare (CONFIG_A CONFIG_B ...)") }
        guard configs.count <= Self.maxConfigs else { throw ABError("at most \(Self.maxConfigs) configs (labels A-Z)") }
        guard (1...Self.maxRuns).contains(runs) else { throw ABError("--runs \(runs) is not 1...\(Self.maxRuns)") }
        guard (0...Self.maxRuns).contains(warmup) else { throw ABError("--warmup \(warmup) is not 0...\(Self.maxRuns)") }
        guard analysis.threshold >= 0, analysis.threshold < 10 else { throw ABError("--threshold must be 0 or more (a fraction: 0.05 = 5%)") }
        guard analysis.alpha > 0, analysis.alpha < 1 else { throw ABError("--alpha must be between 0 and 1") }
    }
}

public final class ABSession: @unchecked Sendable {
    public let options: ABOptions
    public let executor: RunExecutor
    /// Receives the progress line (rewritten in place on a terminal) and notes.
    let progress: @Sendable (String) -> Void

    public init(_ options: ABOptions, progress: @escaping @Sendable (String) -> Void) {
        self.options = options
        self.progress = progress
        executor = RunExecutor(giantvm: options.giantvm, logLevel: options.logLevel, timeout: options.runTimeout)
    }

    static func label(_ i: Int) -> String { String(UnicodeScalar(UInt8(65 + i))) }

    /// Runs everything; throws on the first failed run (its output is in the error).
    public func run() throws -> ABReport {
        try options.check()
        let cfgs: [ClusterConfig] = try options.configs.map { path in
            do { return try ConfigLoader.load(path: path) } catch { throw ABError("\(error)") }
        }
        let differences = try options.configs.map { try ConfigDiff.diff(basePath: options.configs[0], otherPath: $0) }
        let dir = options.outDirectory
        try FileManager.default.createDirectory(atPath: dir + "/runs", withIntermediateDirectories: true)
        let firstDir = ((options.configs[0] as NSString).deletingLastPathComponent as NSString).standardizingPath
        let environment = RunEnvironment.collect(giantvm: options.giantvm, configs: cfgs,
                                                 directory: firstDir.isEmpty ? "." : firstDir)
        let schedule = Schedule.make(configs: cfgs.count, runs: options.runs, warmup: options.warmup, seed: options.seed)
        var runs: [RunRecord] = []
        var done = [Int](repeating: 0, count: cfgs.count)
        for (index, item) in schedule.enumerated() {
            let name = Self.label(item.config)
            let what = item.warmup ? "warm-up" : "run \(done[item.config] + 1)/\(options.runs)"
            progress("[ab] \(index + 1)/\(schedule.count): \(name) \(what) ...")
            let record = try executor.run(config: options.configs[item.config], cfgs[item.config], workload: options.workload,
                                          dir: "\(dir)/runs/\(index + 1)-\(name)", index: index, configIndex: item.config,
                                          warmup: item.warmup)
            if !item.warmup { done[item.config] += 1 }
            runs.append(record)
            let headline = record.metrics.keys.sorted().first { $0.hasSuffix("_per_s") }.map {
                "\($0) \(ABReport.num(record.metrics[$0]!))"
            } ?? "job \(ABReport.num(record.metrics["job_time"] ?? .nan)) ms"
            progress(String(format: "[ab] %d/%d: %@ %@ done in %.2f s, %@", index + 1, schedule.count, name, what,
                            record.metrics["wall_time"] ?? 0, headline))
        }
        let labels = cfgs.indices.map(Self.label)
        var analysis = options.analysis
        analysis.seed = options.seed
        let comparisons = (1..<cfgs.count).map { Analysis.compare(base: 0, other: $0, runs: runs, labels: labels, settings: analysis) }
        let report = ABReport(
            created: ISO8601DateFormatter().string(from: Date()), command: options.command, workload: options.workload.text,
            runsPerConfig: options.runs, warmup: options.warmup, seed: options.seed, analysis: analysis,
            configs: cfgs.indices.map { i in
                ConfigEntry(label: labels[i], path: options.configs[i], sha256: RunEnvironment.sha256(path: options.configs[i]),
                            coherence: cfgs[i].coherence.plugin)
            },
            differences: differences, environment: environment, runs: runs, metrics: Analysis.metrics(of: runs),
            comparisons: comparisons)
        try report.write(json: dir + "/report.json")
        try HTMLReport.render(report).write(toFile: dir + "/report.html", atomically: true, encoding: .utf8)
        return report
    }
}
