// `giantvm ab CONFIG_A CONFIG_B [CONFIG...] --workload W`: the same workload under each config,
// interleaved runs, statistics and reports. The logic is the ABTest library; this is its CLI.

import ABTest
import ArgumentParser
import Foundation
import Glibc
import Launch

struct AB: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ab",
        abstract: "A/B-test configs: run one workload under each, interleaved, and say what really differs.",
        discussion: """
            Every run is a real launch of every node of the config. Runs are interleaved in rounds (each round runs \
            every config once, in a seeded random order), after --warmup rounds that are recorded but not analysed. \
            For each metric (the workload's own figures, wall time, faults by kind, fault latency p50/p99 from the \
            nodes' merged histograms, messages, bytes, pages moved, invalidations, diffs) it prints the median per \
            config with a 95% bootstrap interval, the relative change with its interval and the Mann-Whitney U \
            p-value (Holm-adjusted over the metrics); a difference is called only when the adjusted p < --alpha AND \
            |change| > --threshold. Outliers (> 3 scaled MADs) are listed, never dropped. \
            Writes DIR/report.json (every run, the configs' differences, the environment) and DIR/report.html \
            (offline charts). See docs/ab.md.
            Workloads: a test-guest command line ("counter iters=2000"; configs with guest:), or \
            "dsm:NAME [bench dsm options]" ("dsm:pingpong --iterations 500") for `giantvm bench dsm`.
            """)

    @Argument(help: "Two or more cluster YAML files; the first is the baseline (A).")
    var configs: [String]

    @Option(name: .long, help: "A test-guest command line, or dsm:NAME [bench dsm options].")
    var workload: String

    @Option(name: .long, help: "Measured runs per config.")
    var runs = 10

    @Option(name: .long, help: "Warm-up rounds (each config once per round), not analysed.")
    var warmup = 1

    @Option(name: .long, help: "Seed of the run order and of the bootstrap.")
    var seed: UInt64 = 1

    @Option(name: .long, help: "Directory for report.json, report.html and each run's files.")
    var out = "ab-report"

    @Option(name: .long, help: "Noise threshold in percent: smaller changes of a median are never called.")
    var threshold = 5.0

    @Option(name: .long, help: "Significance level of the Holm-adjusted p-values.")
    var alpha = 0.05

    @Option(name: .long, help: "Seconds one run may take before it is stopped (a failure).")
    var runTimeout = 120.0

    @OptionGroup var global: GlobalOptions

    func validate() throws {
        guard threshold.isFinite, (0...1000).contains(threshold) else { throw ValidationError("--threshold must be 0...1000 (percent)") }
        try checkSeconds(runTimeout, option: "--run-timeout")
    }

    func run() throws {
        _ = global.bootstrapLogging()
        let signals = SignalWaiter.blockTerminationSignals()
        var options: ABOptions
        do {
            options = ABOptions(configs: configs, workload: try Workload(parsing: workload), outDirectory: out,
                                giantvm: Launcher.currentExecutable)
        } catch { fail("\(error)") }
        options.runs = runs
        options.warmup = warmup
        options.seed = seed
        options.analysis.threshold = threshold / 100
        options.analysis.alpha = alpha
        options.runTimeout = runTimeout
        options.logLevel = global.logLevel == "notice" ? "warning" : global.logLevel
        options.command = CommandLine.arguments
        let tty = isatty(STDERR_FILENO) == 1
        let session = ABSession(options) { line in
            FileHandle.standardError.write(Data((tty ? "\r\u{1B}[K" + line : line + "\n").utf8))
        }
        signals.start { session.executor.cancel(signal: $0 == SIGINT ? SIGTERM : $0) }
        let report: ABReport
        do { report = try session.run() } catch {
            if tty { FileHandle.standardError.write(Data("\n".utf8)) }
            fail("\(error)")
        }
        if tty { FileHandle.standardError.write(Data("\n".utf8)) }
        print(report.text(), terminator: "")
        print("wrote \(out)/report.json and \(out)/report.html")
    }
}
