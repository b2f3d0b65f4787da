// Litmus tests: tiny multi-thread programs over shared variables whose possible outcomes are known
// per memory model. The kit runs each on the simulated cluster (each variable on its own page,
// thread i on node i % nodes, pages first scattered over the nodes by a seeded warm-up), and
// judges the outcome against the set the declared model allows, which it computes itself by
// exhausting every execution of an operational model:
//   sc   interleavings of the threads' accesses, one memory;
//   tso  the same with one FIFO store buffer per thread: a load reads its own thread's latest
//        buffered store to that variable, else memory; buffers drain in order at any time.
// The simulation has no fences (a fence hook may block, which a single-threaded schedule cannot
// express), so litmus tests here are fence-free.
//
// Threading: single-threaded (see SimNode).

/// One access of a litmus thread.
public enum LitmusOp: Hashable, Sendable {
    /// Store `value` to variable `variable`.
    case store(_ variable: Int, _ value: UInt64)
    /// Load variable `variable` into register `register`.
    case load(_ variable: Int, into: Int)
}

/// A litmus test: threads of accesses; the outcome is every register, then (when
/// `observesFinalMemory`) every variable's final value.
public struct LitmusTest: Sendable {
    public let name: String
    public let summary: String
    public let threads: [[LitmusOp]]
    public let variables: Int
    public let observesFinalMemory: Bool

    public init(name: String, summary: String, threads: [[LitmusOp]], observesFinalMemory: Bool = false) {
        self.name = name
        self.summary = summary
        self.threads = threads
        self.observesFinalMemory = observesFinalMemory
        var v = 0
        for t in threads { for op in t { switch op { case let .store(x, _), let .load(x, _): v = max(v, x + 1) } } }
        variables = v
    }

    public var registers: Int {
        threads.joined().reduce(0) { n, op in if case let .load(_, r) = op { return max(n, r + 1) } else { return n } }
    }

    static let variableNames = ["x", "y", "z", "w"]

    /// "r0=1 r1=0" (and "x=1 y=2" for the final memory).
    public func describe(_ outcome: [UInt64]) -> String {
        func value(_ i: Int) -> String { i < outcome.count ? "\(outcome[i])" : "?" }
        var parts = (0..<registers).map { "r\($0)=\(value($0))" }
        if observesFinalMemory {
            parts += (0..<variables).map { "\(Self.variableNames[$0 % 4])=\(value(registers + $0))" }
        }
        return parts.joined(separator: " ")
    }

    /// The program, as litmus tests are written: "T0: x=1; r0=y | T1: ...".
    public var program: String {
        threads.enumerated().map { i, ops in
            "T\(i): " + ops.map { op -> String in
                switch op {
                case let .store(x, v): return "\(Self.variableNames[x % 4])=\(v)"
                case let .load(x, r): return "r\(r)=\(Self.variableNames[x % 4])"
                }
            }.joined(separator: "; ")
        }.joined(separator: " | ")
    }

    /// Every outcome `model` allows, by exhausting the model's executions.
    public func allowedOutcomes(_ model: MemoryModel) -> Set<[UInt64]> {
        struct State: Hashable {
            var pc: [Int]
            var buffers: [[LitmusOpStore]]
            var memory: [UInt64]
            var regs: [UInt64]
        }
        var seen = Set<State>()
        var outcomes = Set<[UInt64]>()
        var stack = [State(pc: threads.map { _ in 0 }, buffers: threads.map { _ in [] },
                           memory: [UInt64](repeating: 0, count: variables), regs: [UInt64](repeating: 0, count: registers))]
        while let s = stack.popLast() {
            guard seen.insert(s).inserted else { continue }
            var final = true
            for (t, ops) in threads.enumerated() {
                if !s.buffers[t].isEmpty {   // TSO: drain the oldest buffered store
                    final = false
                    var n = s
                    let w = n.buffers[t].removeFirst()
                    n.memory[w.variable] = w.value
                    stack.append(n)
                }
                guard s.pc[t] < ops.count else { continue }
                final = false
                var n = s
                n.pc[t] += 1
                switch ops[s.pc[t]] {
                case let .store(x, v):
                    if model == .tso { n.buffers[t].append(LitmusOpStore(variable: x, value: v)) } else { n.memory[x] = v }
                case let .load(x, r):
                    n.regs[r] = s.buffers[t].last(where: { $0.variable == x })?.value ?? s.memory[x]
                }
                stack.append(n)
            }
            if final { outcomes.insert(s.regs + (observesFinalMemory ? s.memory : [])) }
        }
        return outcomes
    }

    /// The classic five, as the simulated cluster expresses them (fence-free).
    public static let classic: [LitmusTest] = [
        LitmusTest(name: "MP", summary: "message passing: a reader that sees the flag sees the data",
                   threads: [[.store(0, 1), .store(1, 1)], [.load(1, into: 0), .load(0, into: 1)]]),
        LitmusTest(name: "SB", summary: "store buffering: both threads may read 0 only under TSO",
                   threads: [[.store(0, 1), .load(1, into: 0)], [.store(1, 1), .load(0, into: 1)]]),
        LitmusTest(name: "LB", summary: "load buffering: no load sees a store that follows it",
                   threads: [[.load(0, into: 0), .store(1, 1)], [.load(1, into: 1), .store(0, 1)]]),
        LitmusTest(name: "2+2W", summary: "two writers, two variables: stores to each variable are ordered",
                   threads: [[.store(0, 1), .store(1, 2)], [.store(1, 1), .store(0, 2)]], observesFinalMemory: true),
        LitmusTest(name: "IRIW", summary: "independent reads of independent writes: readers agree on the order",
                   threads: [[.store(0, 1)], [.store(1, 1)], [.load(0, into: 0), .load(1, into: 1)],
                             [.load(1, into: 2), .load(0, into: 3)]]),
    ]
}

struct LitmusOpStore: Hashable {
    var variable: Int
    var value: UInt64
}

extension Conformance {
    /// Runs one litmus test on a fresh cluster: a seeded warm-up scatters the variables' pages
    /// (some nodes read them, one may write 0), then each thread waits 0..<3*size steps and runs
    /// its accesses. The outcome must be one `model` allows. Variable k lives at (gfn k, offset 0).
    public static func litmus(_ d: UnsafeRawPointer, _ test: LitmusTest, nodes: Int, size: Int, seed: UInt64,
                              model: MemoryModel, options: ConformanceOptions = .init(),
                              variablePages: [UInt64]? = nil) throws -> ScenarioResult {
        let gfns = variablePages ?? (0..<UInt64(test.variables)).map { $0 }
        precondition(gfns.count == test.variables, "one page per litmus variable")
        let c = try make(d, nodes: nodes, pages: Int(gfns.max() ?? 0) + 1, seed: seed, options)
        for x in gfns {
            if c.random(3) == 0 {
                let writer = UInt32(c.random(UInt64(nodes)))
                c.addThread(node: writer, ClosureProgram { t in !t.store(x, 0, 0) })
            }
            for n in 0..<UInt32(nodes) where c.random(2) == 0 {
                c.addThread(node: n, ClosureProgram { t in t.load(x, 0) == nil })
            }
        }
        let warm = c.run(maxSteps: options.maxSteps)
        guard warm.ok else {
            return finish(c, warm, ["the warm-up (seeded accesses that scatter the pages over the nodes) failed:"], verify: false)
        }
        var regs = [UInt64](repeating: 0, count: test.registers)
        for (i, ops) in test.threads.enumerated() {
            var idle = Int(c.random(UInt64(3 * max(size, 1))))
            var pc = 0
            c.addThread(node: UInt32(i % nodes), ClosureProgram { t in
                if idle > 0 { idle -= 1; return true }
                switch ops[pc] {
                case let .store(x, v): guard t.store(gfns[x], 0, v) else { return true }
                case let .load(x, r):
                    guard let v = t.load(gfns[x], 0) else { return true }
                    regs[r] = v
                }
                pc += 1
                return pc < ops.count
            })
        }
        var r = c.run(maxSteps: options.maxSteps)
        var outcome = regs
        if r.ok && test.observesFinalMemory {
            var final = [UInt64](repeating: 0, count: test.variables)
            var x = 0
            c.addThread(node: 0, ClosureProgram { t in
                guard let v = t.load(gfns[x], 0) else { return true }
                final[x] = v
                x += 1
                return x < test.variables
            })
            let f = c.run(maxSteps: options.maxSteps)
            r.steps += f.steps
            r.violations = f.violations
            r.fatals = f.fatals
            r.stuck = f.stuck
            outcome += final
        }
        var extra: [String] = []
        let text = test.describe(outcome)
        if r.ok && !test.allowedOutcomes(model).contains(outcome) {
            c.noteProblem("outcome \(text) is forbidden")
            extra.append("\(test.name) (\(test.program)): outcome \(text) is forbidden under \(model.rawValue.uppercased())")
        }
        var result = finish(c, r, extra)
        result.outcome = text
        return result
    }
}
