// The scenarios `giantvm conformance` runs, as data: a name, what it checks, the memory models and
// node counts it applies to, and a body that runs it for one (seed, nodes, size). `size` scales the
// work (operations, increments, rounds, idle steps) from 1 up; the runner shrinks a failure by
// retrying smaller sizes and fewer nodes at the same seed.
//
// Extending: add scenarios in a file of your own as another group (e.g.
// `extension ScenarioCatalog { static let tso: [ConformanceScenario] = [...] }`) and list the group
// in `all`. A scenario that only makes sense for one model says so in `models`.
//
// Threading: single-threaded (see SimNode).

/// The consistency a plugin declares: what the kit holds it to.
public enum MemoryModel: String, CaseIterable, Codable, Sendable {
    /// Sequential consistency, page-granular: one writer or many readers per page at every step,
    /// every copy up to date, every load returns the latest store; litmus: SC outcomes only.
    case sc
    /// Total store order: no per-step single-writer or latest-value checks (stores may sit in a
    /// node's buffer); final values must still be exact; litmus: TSO-allowed outcomes.
    case tso
}

/// One run of a scenario.
public struct ScenarioParameters {
    public var seed: UInt64
    public var nodes: Int
    public var size: Int
    public var model: MemoryModel
    /// Plugin settings, network delays, thread bias, checks and the trace.
    public var options: ConformanceOptions
    /// Which pages the settings make relaxed, and the sc pages the scenarios use (PageLayout).
    public var layout: PageLayout

    /// The step limit of each run of a schedule.
    public static let defaultMaxSteps = 50_000

    /// The seed also picks the network's delays and how often threads run before messages, so
    /// one seed is one complete schedule.
    public init(seed: UInt64, nodes: Int, size: Int, model: MemoryModel, settings: [(String, String)] = [],
                trace: ((String) -> Void)? = nil) {
        self.seed = seed
        self.nodes = nodes
        self.size = size
        self.model = model
        options = ConformanceOptions(settings: settings, maxDelay: Int(seed % 5) * 2, threadBias: 10 + Int(seed % 9) * 10)
        // Every scenario finishes in a few thousand steps; a schedule still running at this bound
        // is reported as a livelock.
        options.maxSteps = Self.defaultMaxSteps
        // A malformed `relaxed` setting is reported by ConformancePlan.scenarios() before any run.
        layout = (try? PageLayout(settings: settings)) ?? PageLayout()
        options.relaxedPages = layout.relaxed
        options.minimumPages = layout.minimumPages
        // With relaxed ranges, the pages outside them are held to every SC check whatever the
        // model: a protocol that names relaxed ranges promises sequential consistency elsewhere.
        options.checkSWMR = model == .sc || layout.hasRelaxed
        options.checkLinearizable = model == .sc || layout.hasRelaxed
        options.trace = trace
    }
}

public struct ConformanceScenario {
    public let name: String
    public let summary: String
    public let models: Set<MemoryModel>
    /// Node counts it can run on (the runner clamps the requested range into it).
    public let nodes: ClosedRange<Int>
    public let defaultSize: Int
    /// A litmus test: its outcomes are tallied in the certificate.
    public let isLitmus: Bool
    /// Runs only when the plugin settings name relaxed ranges (PageLayout; Relaxed.swift).
    public let needsRelaxed: Bool
    public let body: (UnsafeRawPointer, ScenarioParameters) throws -> ScenarioResult

    public init(name: String, summary: String, models: Set<MemoryModel> = Set(MemoryModel.allCases),
                nodes: ClosedRange<Int> = 2...4, defaultSize: Int, isLitmus: Bool = false, needsRelaxed: Bool = false,
                body: @escaping (UnsafeRawPointer, ScenarioParameters) throws -> ScenarioResult) {
        self.needsRelaxed = needsRelaxed
        self.name = name
        self.summary = summary
        self.models = models
        self.nodes = nodes
        self.defaultSize = defaultSize
        self.isLitmus = isLitmus
        self.body = body
    }
}

public enum ScenarioCatalog {
    /// Every scenario, in the order they run. Add a group here.
    public static var all: [ConformanceScenario] { standard + litmus + relaxed }

    /// The scenarios for `model`; `relaxed`: the settings name relaxed ranges (adds the relaxed group).
    public static func scenarios(for model: MemoryModel, relaxed: Bool = false) -> [ConformanceScenario] {
        all.filter { $0.models.contains(model) && (relaxed || !$0.needsRelaxed) }
    }

    public static func named(_ name: String) -> ConformanceScenario? { all.first { $0.name == name } }

    /// The scenarios every coherence plugin must pass.
    public static let standard: [ConformanceScenario] = [
        ConformanceScenario(name: "locked-counter", summary: "threads on every node add to one counter under a spinlock (cmpxchg): exact total, mutual exclusion",
                            defaultSize: 5) { d, p in
            try Conformance.lockedCounter(d, nodes: p.nodes, threadsPerNode: 1 + Int(p.seed % 2), increments: p.size,
                                          seed: p.seed, options: p.options, lockPage: p.layout.sc(0), counterPage: p.layout.sc(1),
                                          pages: p.layout.pageCount(p.layout.sc(count: 4), atLeast: 4))
        },
        ConformanceScenario(name: "random-rw", summary: "random reads, writes and CAS increments over 3 pages from 2 threads per node: every read and every copy checked, exact totals (with relaxed ranges: plain accesses also to 2 relaxed pages, which must converge)",
                            defaultSize: 12) { d, p in
            try randomRW(d, p, writePercent: 30 + p.seed % 50)
        },
        ConformanceScenario(name: "ping-pong", summary: "two nodes alternately increment one word: the page moves every round",
                            defaultSize: 6) { d, p in
            try Conformance.pingPong(d, nodes: p.nodes, rounds: p.size, seed: p.seed, options: p.options, page: p.layout.sc(1))
        },
        ConformanceScenario(name: "pin-deferral", summary: "a page pinned for host DMA holds off another node's write until it is unpinned (page_unpinned)",
                            defaultSize: 6) { d, p in
            try Conformance.pinHoldsOffWrites(d, nodes: p.nodes, holdSteps: 5 * p.size, seed: p.seed, options: p.options, gfn: p.layout.sc(1))
        },
        ConformanceScenario(name: "receive-fuzz", summary: "hostile messages (random, truncated, bit-flipped, replayed out of context): no crash, no hang (fatal is fine)",
                            defaultSize: 4) { d, p in
            let l = p.layout
            let samples = try Conformance.sampleMessages(d, nodes: p.nodes, seed: p.seed, options: p.options,
                                                         pageList: l.hasRelaxed ? [l.sc(0), l.sc(1), l.mw(0)!, l.mw(1)!] : [0, 1, 2, 3])
            let n = 25 * p.size
            let (fatal, silent) = try Conformance.fuzzReceive(d, nodes: p.nodes, seed: p.seed, iterations: n, samples: samples)
            let report = RunReport(seed: p.seed, steps: n, messages: n, bytes: 0, violations: [], fatals: [], stuck: nil)
            var r = ScenarioResult(report: report, problems: [], messages: n)
            r.outcome = "\(fatal) fatal, \(silent) accepted"
            return r
        },
        ConformanceScenario(name: "standard-statistics", summary: "after a random run, the dsm.* statistics (giantvm_plugin.h, GVM_STAT_*) are all registered and agree with the messages, bytes and requests the kit saw",
                            defaultSize: 12) { d, p in
            var r = try randomRW(d, p, writePercent: 50)
            if r.ok && !r.statistics.isEmpty {
                r.problems = r.statistics.map { "statistics: " + $0 }
                r.failedAtStep = r.report.steps
            }
            return r
        },
    ]

    /// random-rw's run: CAS increments and plain accesses over 3 sc pages, and with relaxed ranges
    /// plain accesses over 2 relaxed pages too (atomics never go to relaxed memory).
    static func randomRW(_ d: UnsafeRawPointer, _ p: ScenarioParameters, writePercent: UInt64) throws -> ScenarioResult {
        let l = p.layout
        let sc = l.sc(count: 3)
        let list = l.hasRelaxed ? sc + [l.mw(0)!, l.mw(1)!] : sc
        return try Conformance.random(d, nodes: p.nodes, threadsPerNode: 2, pages: 3, ops: p.size, writePercent: writePercent,
                                      seed: p.seed, options: p.options, pageList: Array(Set(list)).sorted(), atomicPages: sc)
    }

    /// The classic litmus tests, judged against the declared model.
    public static let litmus: [ConformanceScenario] = LitmusTest.classic.map { test in
        ConformanceScenario(name: "litmus-" + test.name, summary: "\(test.summary) (\(test.program))",
                            defaultSize: 4, isLitmus: true) { d, p in
            try Conformance.litmus(d, test, nodes: p.nodes, size: p.size, seed: p.seed, model: p.model, options: p.options,
                                   variablePages: p.layout.sc(count: test.variables))
        }
    }
}
