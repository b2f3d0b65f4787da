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
        options.checkSWMR = model == .sc
        options.checkLinearizable = model == .sc
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
    public let body: (UnsafeRawPointer, ScenarioParameters) throws -> ScenarioResult

    public init(name: String, summary: String, models: Set<MemoryModel> = Set(MemoryModel.allCases),
                nodes: ClosedRange<Int> = 2...4, defaultSize: Int, isLitmus: Bool = false,
                body: @escaping (UnsafeRawPointer, ScenarioParameters) throws -> ScenarioResult) {
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
    public static var all: [ConformanceScenario] { standard + litmus }

    public static func scenarios(for model: MemoryModel) -> [ConformanceScenario] {
        all.filter { $0.models.contains(model) }
    }

    public static func named(_ name: String) -> ConformanceScenario? { all.first { $0.name == name } }

    /// The scenarios every coherence plugin must pass.
    public static let standard: [ConformanceScenario] = [
        ConformanceScenario(name: "locked-counter", summary: "threads on every node add to one counter under a spinlock (cmpxchg): exact total, mutual exclusion",
                            defaultSize: 5) { d, p in
            try Conformance.lockedCounter(d, nodes: p.nodes, threadsPerNode: 1 + Int(p.seed % 2), increments: p.size,
                                          seed: p.seed, options: p.options)
        },
        ConformanceScenario(name: "random-rw", summary: "random reads, writes and CAS increments over 3 pages from 2 threads per node: every read and every copy checked, exact totals",
                            defaultSize: 12) { d, p in
            try Conformance.random(d, nodes: p.nodes, threadsPerNode: 2, pages: 3, ops: p.size,
                                   writePercent: 30 + p.seed % 50, seed: p.seed, options: p.options)
        },
        ConformanceScenario(name: "ping-pong", summary: "two nodes alternately increment one word: the page moves every round",
                            defaultSize: 6) { d, p in
            try Conformance.pingPong(d, nodes: p.nodes, rounds: p.size, seed: p.seed, options: p.options)
        },
        ConformanceScenario(name: "pin-deferral", summary: "a page pinned for host DMA holds off another node's write until it is unpinned (page_unpinned)",
                            defaultSize: 6) { d, p in
            try Conformance.pinHoldsOffWrites(d, nodes: p.nodes, holdSteps: 5 * p.size, seed: p.seed, options: p.options)
        },
        ConformanceScenario(name: "receive-fuzz", summary: "hostile messages (random, truncated, bit-flipped, replayed out of context): no crash, no hang (fatal is fine)",
                            defaultSize: 4) { d, p in
            let samples = try Conformance.sampleMessages(d, nodes: p.nodes, seed: p.seed)
            let n = 25 * p.size
            let (fatal, silent) = try Conformance.fuzzReceive(d, nodes: p.nodes, seed: p.seed, iterations: n, samples: samples)
            let report = RunReport(seed: p.seed, steps: n, messages: n, bytes: 0, violations: [], fatals: [], stuck: nil)
            var r = ScenarioResult(report: report, problems: [], messages: n)
            r.outcome = "\(fatal) fatal, \(silent) accepted"
            return r
        },
        ConformanceScenario(name: "standard-statistics", summary: "after a random run, the dsm.* statistics (giantvm_plugin.h, GVM_STAT_*) are all registered and agree with the messages, bytes and requests the kit saw",
                            defaultSize: 12) { d, p in
            var r = try Conformance.random(d, nodes: p.nodes, threadsPerNode: 2, pages: 3, ops: p.size,
                                           writePercent: 50, seed: p.seed, options: p.options)
            if r.ok && !r.statistics.isEmpty {
                r.problems = r.statistics.map { "statistics: " + $0 }
                r.failedAtStep = r.report.steps
            }
            return r
        },
    ]

    /// The classic litmus tests, judged against the declared model.
    public static let litmus: [ConformanceScenario] = LitmusTest.classic.map { test in
        ConformanceScenario(name: "litmus-" + test.name, summary: "\(test.summary) (\(test.program))",
                            defaultSize: 4, isLitmus: true) { d, p in
            try Conformance.litmus(d, test, nodes: p.nodes, size: p.size, seed: p.seed, model: p.model, options: p.options)
        }
    }
}
