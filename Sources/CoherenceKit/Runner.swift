// Runs the catalog against one plugin: every scenario over a range of seeds, each seed one
// complete schedule. On the first failure of a scenario the runner shrinks it — the same seed
// with every smaller size and node count, keeping the failing run with the fewest scheduler
// steps — and records how to replay it. The verdicts become the certificate (Certificate.swift).
//
// Threading: single-threaded (see SimNode).

/// What to run.
public struct ConformancePlan: Sendable {
    public var model: MemoryModel
    public var nodes: ClosedRange<Int>
    public var seeds: Int
    public var firstSeed: UInt64
    /// Scenario names to run (empty: every scenario for the model).
    public var only: [String]
    /// Work per run for every scenario (nil: each scenario's default size).
    public var size: Int?
    public var settings: [(String, String)]

    public init(model: MemoryModel, nodes: ClosedRange<Int> = 2...4, seeds: Int = 100, firstSeed: UInt64 = 1,
                only: [String] = [], size: Int? = nil, settings: [(String, String)] = []) {
        self.model = model
        self.nodes = nodes
        self.seeds = seeds
        self.firstSeed = firstSeed
        self.only = only
        self.size = size
        self.settings = settings
    }

    /// The scenarios this plan runs; throws naming an unknown scenario.
    public func scenarios() throws -> [ConformanceScenario] {
        let layout = try PageLayout(settings: settings)
        let all = ScenarioCatalog.scenarios(for: model, relaxed: layout.hasRelaxed)
        if only.isEmpty { return all }
        return try only.map { name in
            guard let s = all.first(where: { $0.name == name }) else {
                let needs = ScenarioCatalog.named(name)?.needsRelaxed == true ? " (it needs relaxed ranges: --setting relaxed=BASE:LENGTH)" : ""
                throw SimError("no scenario '\(name)' for --model \(model.rawValue)\(needs); there are: \(all.map(\.name).joined(separator: ", "))")
            }
            return s
        }
    }

    /// The node count seed `seed` runs on: the plan's range, cycled by seed, clamped into what the
    /// scenario supports. nil when the two ranges do not meet.
    public func nodes(for s: ConformanceScenario, seed: UInt64) -> Int? {
        let lo = max(nodes.lowerBound, s.nodes.lowerBound), hi = min(nodes.upperBound, s.nodes.upperBound)
        guard lo <= hi else { return nil }
        return lo + Int(seed % UInt64(hi - lo + 1))
    }
}

/// A failing run, shrunk: everything needed to reproduce it.
public struct ConformanceFailure: Codable, Sendable {
    public var seed: UInt64
    public var nodes: Int
    public var size: Int
    /// Scheduler steps up to the first problem (the length of the schedule that shows it).
    public var steps: Int
    public var problems: [String]
    /// The run as first found, before shrinking.
    public var foundNodes: Int
    public var foundSize: Int
    public var foundSteps: Int
    /// Arguments to add to `giantvm conformance PLUGIN --model M` to replay it step by step.
    public var replayArguments: [String]
}

/// One scenario's verdict.
public struct ScenarioVerdict: Codable, Sendable {
    public var name: String
    public var summary: String
    public var passed: Bool
    public var runs: Int
    public var seeds: [UInt64]
    /// Why it did not run (e.g. the node range does not fit); a skipped scenario has passed = false.
    public var skipped: String?
    public var failure: ConformanceFailure?
    /// Litmus tests: how often each outcome was observed. Fuzzing: fatal/accepted counts.
    public var outcomes: [String: Int]?
}

public enum RunnerEvent {
    /// Starting seed number `run` (1-based) of `runs` of scenario `index` (0-based) of `count`.
    case running(scenario: String, index: Int, count: Int, run: Int, runs: Int)
    case shrinking(scenario: String, tries: Int)
    case finished(ScenarioVerdict)
}

public final class ConformanceRunner {
    let descriptor: UnsafeRawPointer
    public let plan: ConformancePlan
    /// Called as the run progresses (progress lines, per-scenario results).
    public var onEvent: ((RunnerEvent) -> Void)?

    /// `descriptor`: a coherence plugin's gvm_plugin_descriptor (from the loader).
    public init(descriptor: UnsafeRawPointer, plan: ConformancePlan) {
        self.descriptor = descriptor
        self.plan = plan
    }

    /// One run; a thrown error (the plugin refused to create, ...) becomes a failed result.
    /// `maxSteps`: the step limit of each run of the schedule (default: ScenarioParameters').
    public func runOnce(_ s: ConformanceScenario, seed: UInt64, nodes: Int, size: Int, maxSteps: Int? = nil,
                        trace: ((String) -> Void)? = nil) -> ScenarioResult {
        var p = ScenarioParameters(seed: seed, nodes: nodes, size: size, model: plan.model, settings: plan.settings, trace: trace)
        if let maxSteps { p.options.maxSteps = maxSteps }
        do { return try s.body(descriptor, p) } catch {
            let report = RunReport(seed: seed, steps: 0, messages: 0, bytes: 0, violations: [], fatals: [], stuck: nil)
            return ScenarioResult(report: report, problems: ["error: \(error)"], messages: 0, failedAtStep: 0)
        }
    }

    public func run() throws -> [ScenarioVerdict] {
        let list = try plan.scenarios()
        return list.enumerated().map { i, s in run(s, index: i, count: list.count) }
    }

    func run(_ s: ConformanceScenario, index: Int, count: Int) -> ScenarioVerdict {
        let seeds = (0..<UInt64(max(plan.seeds, 0))).map { plan.firstSeed &+ $0 }
        var v = ScenarioVerdict(name: s.name, summary: s.summary, passed: true, runs: 0, seeds: [], skipped: nil,
                                failure: nil, outcomes: s.isLitmus ? [:] : nil)
        guard plan.nodes(for: s, seed: 0) != nil else {
            v.passed = false
            v.skipped = "needs \(s.nodes.lowerBound)...\(s.nodes.upperBound) nodes, --nodes is \(plan.nodes.lowerBound)...\(plan.nodes.upperBound)"
            onEvent?(.finished(v))
            return v
        }
        for (k, seed) in seeds.enumerated() {
            onEvent?(.running(scenario: s.name, index: index, count: count, run: k + 1, runs: seeds.count))
            let nodes = plan.nodes(for: s, seed: seed)!
            let r = runOnce(s, seed: seed, nodes: nodes, size: plan.size ?? s.defaultSize)
            v.runs += 1
            v.seeds.append(seed)
            if let o = r.outcome, s.isLitmus, r.ok { v.outcomes![o, default: 0] += 1 }
            if !r.ok {
                v.passed = false
                v.failure = shrink(s, seed: seed, nodes: nodes, size: plan.size ?? s.defaultSize, found: r)
                break
            }
        }
        onEvent?(.finished(v))
        return v
    }

    /// The failing run with the fewest steps among every smaller size and node count at `seed`.
    public func shrink(_ s: ConformanceScenario, seed: UInt64, nodes: Int, size: Int, found: ScenarioResult) -> ConformanceFailure {
        var best = (nodes: nodes, size: size, result: found)
        var tries = 0
        let minNodes = max(s.nodes.lowerBound, plan.nodes.lowerBound)
        for n in minNodes...max(minNodes, nodes) {
            for z in 1...max(1, size) where (n, z) != (nodes, size) {
                tries += 1
                onEvent?(.shrinking(scenario: s.name, tries: tries))
                // A candidate is only interesting if it fails within the best schedule's length: cut
                // it there, and a run cut at that limit found nothing. (A livelock found at the
                // default limit is shrunk at the same limit: a smaller livelock then counts.)
                let livelock = best.result.report.hitStepLimit
                let bound = best.result.failedAtStep ?? best.result.report.steps
                let r = runOnce(s, seed: seed, nodes: n, size: z, maxSteps: livelock ? nil : bound + 1)
                // Fewest steps first, then fewest nodes, then least work.
                if !r.ok, livelock || !r.report.hitStepLimit,
                   ((r.failedAtStep ?? .max), n, z) < ((best.result.failedAtStep ?? .max), best.nodes, best.size) {
                    best = (n, z, r)
                }
            }
        }
        return ConformanceFailure(
            seed: seed, nodes: best.nodes, size: best.size, steps: best.result.failedAtStep ?? best.result.report.steps,
            problems: Array(best.result.problems.prefix(8)), foundNodes: nodes, foundSize: size,
            foundSteps: found.failedAtStep ?? found.report.steps,
            replayArguments: ["--scenario", s.name, "--nodes", "\(best.nodes)", "--size", "\(best.size)", "--replay", "\(seed)"])
    }
}
