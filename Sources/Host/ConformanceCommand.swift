import ArgumentParser
import CoherenceKit
import Foundation
import Glibc
import PluginAPI
import PluginHost

struct ConformanceCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "conformance",
        abstract: "Certify a coherence plugin: seeded schedules, litmus tests, statistics; a JSON certificate.",
        discussion: """
            Loads the plugin (a name, found like any plugin, or a path to its .so) and runs it on a \
            simulated cluster: 2 to 4 instances of the plugin in this process, a network that delays \
            and reorders messages, threads that read, write and cmpxchg guest pages. A seeded \
            scheduler picks every step (deliver a message, hand a fault to the plugin, run a thread \
            access), so a seed is one complete, reproducible schedule.

            Scenarios (--list shows them): locked counter, random read/write, ping-pong, pin \
            deferral, receive fuzzing, the standard statistics (dsm.*), and the litmus tests MP, SB, \
            LB, 2+2W and IRIW judged against --model. sc: SC outcomes only, and after every step one \
            writer or many readers per page, every copy up to date, every load the latest store. \
            tso: TSO outcomes (store buffers), final values exact.

            A protocol with relaxed (multiple-writer) ranges, given as --setting relaxed=BASE:LENGTH \
            (the same setting the plugin reads, e.g. dsm-tso's): the kit keeps locks, flags, \
            cmpxchg counters, pins and litmus variables in sc pages outside those ranges and adds \
            the mw-* scenarios over the relaxed pages: data under an sc lock exact, disjoint writes \
            to one page never lost, racy writes converging to one value on every node.

            A failure prints its seed, the shortest schedule found that still fails (the same seed \
            with fewer nodes and less work) and the command that replays it step by step, every \
            message printed. Examples:
              giantvm conformance dsm-ivy --model sc
              giantvm conformance ./libmine.so --seeds 1000 --out cert.json
              giantvm conformance dsm-tso --model tso --setting relaxed=0x1000:8KiB
              giantvm conformance ./libmine.so --scenario ping-pong --nodes 2 \\
                  --size 1 --replay 17

            Exit status: 0 when every scenario passed, 1 when one failed, 2 when the plugin cannot \
            be loaded or a scenario is unknown, 64 for a malformed option. docs/writing-a-protocol.md \
            walks through build, certify, compare.
            """)

    @Argument(help: "The coherence plugin: a name (lib<name>.so in the plugin path) or a path to a .so.")
    var plugin: String

    @Option(name: .long, help: "The memory model the plugin promises: sc or tso.")
    var model: String = "sc"

    @Option(name: .long, help: "Node counts: N or LO..HI, within 2..4 (each seed picks one).")
    var nodes: String = "2..4"

    @Option(name: .long, help: "Schedules (seeds) per scenario.")
    var seeds: Int = 100

    @Option(name: .long, help: "The first seed.")
    var firstSeed: UInt64 = 1

    @Option(name: .long, help: "Run only this scenario (repeatable; see --list).")
    var scenario: [String] = []

    @Option(name: .long, help: "Work per run (operations, increments, rounds), 1..1000; default: each scenario's own.")
    var size: Int?

    @Option(name: .long, help: "Replay this seed step by step, printing every message and access (with --scenario, --nodes, --size from a failure).")
    var replay: UInt64?

    @Option(name: .long, help: "A plugin setting KEY=VALUE, as in the YAML's settings (repeatable).")
    var setting: [String] = []

    @Option(name: .long, help: "Where to write the JSON certificate (default: conformance-PLUGIN-MODEL.json).")
    var out: String?

    @Option(name: .long, help: "Extra directory to search for plugins (repeatable).")
    var pluginDir: [String] = []

    @Flag(name: .long, help: "List the scenarios for --model and exit.")
    var list = false

    @OptionGroup var global: GlobalOptions

    func validate() throws {
        guard MemoryModel(rawValue: model) != nil else { throw ValidationError("--model '\(model)' is not sc or tso") }
        _ = try nodeRange()
        guard (1...1_000_000).contains(seeds) else { throw ValidationError("--seeds \(seeds) is outside 1...1000000") }
        if let size, !(1...1000).contains(size) { throw ValidationError("--size \(size) is outside 1...1000") }
        for s in setting where !s.contains("=") { throw ValidationError("--setting '\(s)' is not KEY=VALUE") }
    }

    func nodeRange() throws -> ClosedRange<Int> {
        let parts = nodes.components(separatedBy: "..").map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard (1...2).contains(parts.count), let lo = parts.first!, let hi = parts.last!, 2 <= lo, lo <= hi, hi <= 4 else {
            throw ValidationError("--nodes '\(nodes)' must be N or LO..HI with 2 <= LO <= HI <= 4")
        }
        return lo...hi
    }

    func run() throws {
        _ = global.bootstrapLogging()
        let plan = ConformancePlan(model: MemoryModel(rawValue: model)!, nodes: try nodeRange(), seeds: seeds,
                                   firstSeed: firstSeed, only: scenario, size: size, settings: setting.map { kv in
                                       let i = kv.firstIndex(of: "=")!
                                       return (String(kv[..<i]), String(kv[kv.index(after: i)...]))
                                   })
        let scenarios: [ConformanceScenario]
        do { scenarios = try plan.scenarios() } catch { fail("\(error)", code: 2) }
        if list {
            for s in scenarios { say("\(s.name.padding(toLength: 20, withPad: " ", startingAt: 0)) \(s.summary)") }
            return
        }
        let loader = PluginLoader(searchPath: pluginDir + PluginLoader.defaultSearchPath(config: nil))
        let loaded: LoadedPlugin
        do { loaded = try loader.load(plugin, kind: .coherence) } catch { fail("\(error)", code: 2) }
        // The runner reads the loader's copy of the ops table (hooks past a shorter table absent).
        let d = UnsafeMutablePointer<gvm_plugin_descriptor>.allocate(capacity: 1)
        d.initialize(to: loaded.descriptor.pointee)
        d.pointee.ops = UnsafeRawPointer(loaded.coherenceOps!)
        let runner = ConformanceRunner(descriptor: UnsafeRawPointer(d), plan: plan)
        CrashNote.install()
        if let replay {
            throw ExitCode(replayRun(runner, scenarios, seed: replay))
        }
        say("conformance of \(loaded.name) \(loaded.version) (\(loaded.path)) against \(plan.model.rawValue.uppercased()): \(scenarios.count) scenarios x \(seeds) seeds, \(plan.nodes.lowerBound)..\(plan.nodes.upperBound) nodes")
        let progress = ProgressLine()
        runner.onEvent = { e in
            switch e {
            case let .running(name, i, n, run, runs):
                CrashNote.set("scenario \(name), seed \(plan.firstSeed &+ UInt64(run - 1))")
                progress.show("[\(i + 1)/\(n)] \(name): seed \(run)/\(runs)")
            case let .shrinking(name, tries):
                progress.show("\(name): failed; shrinking (\(tries) tries)")
            case let .finished(v):
                progress.clear()
                say(ConformanceText.verdict(v, plugin: plugin, model: plan.model))
            }
        }
        let verdicts = try runner.run()
        let identity = ConformanceCertificate.PluginIdentity(
            name: loaded.name, version: loaded.version, path: loaded.path,
            sha256: (try? ConformanceCertificate.sha256(path: loaded.path)) ?? "unreadable", abiVersion: loaded.abiVersion)
        let cert = ConformanceCertificate(giantvmVersion: GiantVM.configuration.version, plugin: identity, plan: plan, scenarios: verdicts)
        let path = out ?? "conformance-\(loaded.name)-\(plan.model.rawValue).json"
        do { try cert.json().write(to: URL(fileURLWithPath: path)) } catch { fail("cannot write the certificate '\(path)': \(error)", code: 2) }
        let failed = verdicts.filter { !$0.passed }
        say(failed.isEmpty ? "PASSED: every scenario, \(seeds) seeds each; certificate: \(path)"
                           : "FAILED: \(failed.map(\.name).joined(separator: ", ")); certificate: \(path)")
        if !failed.isEmpty { throw ExitCode(1) }
    }

    /// --replay: each chosen scenario at one seed, traced up to its first problem.
    func replayRun(_ runner: ConformanceRunner, _ scenarios: [ConformanceScenario], seed: UInt64) -> Int32 {
        var status: Int32 = 0
        for s in scenarios {
            guard let n = runner.plan.nodes(for: s, seed: seed) else { continue }
            let z = runner.plan.size ?? s.defaultSize
            say("== replay \(s.name), seed \(seed), \(n) nodes, size \(z) (\(plugin), \(runner.plan.model.rawValue))")
            CrashNote.set("replay of scenario \(s.name), seed \(seed)")
            var cut = false
            let r = runner.runOnce(s, seed: seed, nodes: n, size: z) { line in
                guard !cut else { return }
                say(line)
                if line.hasPrefix("!! ") { cut = true; say("   (schedule cut at the first problem)") }
            }
            if r.ok { say("== \(s.name): passes at seed \(seed)\(r.outcome.map { ": \($0)" } ?? "")") } else {
                status = 1
                say("== \(s.name) FAILS at seed \(seed), step \(r.failedAtStep ?? r.report.steps):")
                r.problems.prefix(8).forEach { say("   " + $0) }
            }
        }
        return status
    }
}

/// One progress line on stderr, rewritten in place (only when stderr is a terminal), at most ten
/// times a second.
final class ProgressLine {
    let tty = isatty(2) != 0
    var last = 0.0
    var shown = false

    func show(_ text: String) {
        guard tty else { return }
        let now = Date().timeIntervalSince1970
        guard now - last >= 0.1 else { return }
        last = now
        shown = true
        FileHandle.standardError.write(Data(("\r\u{1B}[K" + text.prefix(100)).utf8))
    }

    func clear() {
        if shown { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
        shown = false
    }
}
