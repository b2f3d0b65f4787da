// `transport.faults`: fault-injection rules, read once here into typed rules. The Cluster
// target's FaultInjectingTransport applies them (docs/net.md, "Fault injection").
//
//   transport:
//     faults:
//       seed: 42                 # optional; random choices repeat for one seed
//       rules:                   # or the list of rules directly, without seed
//         - {channel: coherence, type: 6, from: 0, to: 1, lane: bulk, action: delay, delay: 2ms,
//            jitter: 3ms, probability: 0.5, after: 10, count: 5, violate_fifo: false}

import Foundation
import PluginAPI
import Yams

public struct FaultRule: Equatable, Sendable {
    public enum Action: String, Equatable, Sendable, CaseIterable { case drop, delay, reorder }

    /// Channel names as written in YAML; the index is the channel byte on the wire (the Cluster
    /// target's `Channel` raw values, checked by its tests).
    public static let channelNames = ["control", "coherence", "cpu", "io", "heartbeat"]
    /// Fields a rule may have.
    public static let fields = ["channel", "type", "from", "to", "lane", "action", "delay", "jitter",
                                "probability", "after", "count", "violate_fifo"]
    /// How long a `reorder` rule holds a frame at most when `delay` is not given.
    public static let defaultReorderHold: UInt64 = 50 * Durations.millisecond

    /// Channel byte (0...4), nil = any.
    public var channel: UInt8?
    /// First payload byte (the channel's message type), nil = any.
    public var type: UInt8?
    /// Sending node, nil = any.
    public var from: UInt32?
    /// Destination node, nil = any.
    public var to: UInt32?
    /// GVM_LANE_URGENT or GVM_LANE_BULK, nil = any.
    public var lane: UInt32?
    public var action: Action
    /// delay: how long; reorder: how long to hold at most.
    public var delayNanoseconds: UInt64 = 0
    /// delay: plus a uniform random 0..jitter.
    public var jitterNanoseconds: UInt64 = 0
    /// Chance for each matching frame, 0...1.
    public var probability: Double = 1
    /// Leave the first N matching frames alone.
    public var after: Int = 0
    /// Affect at most N frames (nil = unlimited).
    public var count: Int?
    /// false (default): the lane's FIFO order is kept (a delayed or held frame holds back the
    /// frames after it on the same lane to the same node; only other lanes overtake it). true:
    /// later frames of the same lane overtake it, breaking the ABI's per-lane FIFO promise — a
    /// protocol-robustness test: a protocol relying on that promise is expected to stop.
    public var violateFIFO = false

    public init(action: Action) { self.action = action }

    /// Whether the rule's filters select a frame (counters and probability aside).
    public func selects(channel c: UInt8?, type t: UInt8?, from f: UInt32, to d: UInt32, lane l: UInt32) -> Bool {
        if let channel, channel != c { return false }
        if let type, type != t { return false }
        if let from, from != f { return false }
        if let to, to != d { return false }
        if let lane, lane != l { return false }
        return true
    }
}

public struct FaultPlan: Equatable, Sendable {
    public var seed: UInt64 = 1
    public var rules: [FaultRule] = []
    public init(seed: UInt64 = 1, rules: [FaultRule] = []) { self.seed = seed; self.rules = rules }

    /// Reads a `transport.faults` value given alone (tests, tools) with the config reader's rules
    /// and bounds. Throws `ConfigError`; `path` names the text in messages.
    public static func parse(yaml: String, nodeCount: Int, path: String = "<faults>") throws -> FaultPlan {
        let bounds = YAMLBounds.scan(yaml)
        if let p = bounds.problem {
            throw ConfigError(diagnostics: [Diagnostic(file: path, line: p.line, column: p.column,
                                                       path: "transport.faults", message: p.message)])
        }
        var reader = Reader(file: path)
        let root: Node?
        do { root = try Yams.compose(yaml: yaml) } catch let e as YamlError {
            throw ConfigError(diagnostics: [reader.diagnostic(for: e)])
        }
        guard let root else { return FaultPlan() }
        let plan = reader.faults(root, nodeCount: nodeCount)
        if !reader.problems.isEmpty { throw ConfigError(diagnostics: reader.problems) }
        return plan
    }
}

extension Reader {
    /// `transport.faults`: a list of rules, or {seed, rules}.
    mutating func faults(_ node: Node, nodeCount: Int) -> FaultPlan {
        let path = "transport.faults"
        var plan = FaultPlan()
        var list: Node?
        switch node {
        case .sequence: list = node
        case .mapping:
            guard let m = mapping(node, path, allowed: ["seed", "rules"]) else { return plan }
            if let s = m["seed"]?.value, let v = integer(s, "\(path).seed", range: 0...UInt64.max, what: "a seed") {
                plan.seed = v
            }
            list = m["rules"]?.value
        case .scalar(let s) where s.string.isEmpty || s.string == "~" || s.string == "null":
            return plan
        default:
            report(node, path, "expected a list of rules or a mapping with seed and rules, got \(describe(node))")
            return plan
        }
        guard let list else { return plan }
        guard case .sequence(let items) = list else {
            report(list, "\(path).rules", "expected a list of rules, got \(describe(list))")
            return plan
        }
        for (i, item) in items.enumerated() {
            if let rule = faultRule(item, "\(path).rules[\(i)]", nodeCount: nodeCount) { plan.rules.append(rule) }
        }
        return plan
    }

    mutating func faultRule(_ item: Node, _ path: String, nodeCount: Int) -> FaultRule? {
        guard let m = mapping(item, path, allowed: FaultRule.fields) else { return nil }
        let before = problems.count
        guard let a = m["action"]?.value else {
            report(item, "\(path).action", "missing (drop, delay or reorder)")
            return nil
        }
        guard let text = string(a, "\(path).action") else { return nil }
        guard let action = FaultRule.Action(rawValue: text) else {
            report(a, "\(path).action", "'\(text)' is not one of drop, delay, reorder")
            return nil
        }
        var rule = FaultRule(action: action)
        if let c = m["channel"]?.value, let name = string(c, "\(path).channel") {
            if let i = FaultRule.channelNames.firstIndex(of: name) { rule.channel = UInt8(i) }
            else if let n = UInt8(name), Int(n) < FaultRule.channelNames.count { rule.channel = n }
            else { report(c, "\(path).channel", "'\(name)' is not one of \(FaultRule.channelNames.joined(separator: ", "))") }
        }
        if let t = m["type"]?.value {
            rule.type = integer(t, "\(path).type", range: 0...255, what: "a message type (0-255)").map(UInt8.init)
        }
        let ids = UInt64(0)...UInt64(max(nodeCount, 1) - 1)
        if let f = m["from"]?.value {
            rule.from = integer(f, "\(path).from", range: ids, what: "a node id of this cluster (0-\(ids.upperBound))").map(UInt32.init)
        }
        if let t = m["to"]?.value {
            rule.to = integer(t, "\(path).to", range: ids, what: "a node id of this cluster (0-\(ids.upperBound))").map(UInt32.init)
        }
        if let l = m["lane"]?.value, let name = string(l, "\(path).lane") {
            switch name {
            case "urgent", "0": rule.lane = GVM_LANE_URGENT
            case "bulk", "1": rule.lane = GVM_LANE_BULK
            default: report(l, "\(path).lane", "'\(name)' is not urgent or bulk")
            }
        }
        if let d = m["delay"]?.value, let ns = duration(d, "\(path).delay", range: Durations.faultDelayRange) {
            rule.delayNanoseconds = ns
        } else if action == .reorder && m["delay"] == nil {
            rule.delayNanoseconds = FaultRule.defaultReorderHold
        }
        if let j = m["jitter"]?.value, let ns = duration(j, "\(path).jitter", range: Durations.faultDelayRange) {
            rule.jitterNanoseconds = ns
        }
        if action == .delay && rule.delayNanoseconds == 0 && rule.jitterNanoseconds == 0 && problems.count == before {
            report(m["delay"]?.value ?? item, "\(path).delay", "a delay rule needs delay (or jitter) > 0")
        }
        if let p = m["probability"]?.value, let text = string(p, "\(path).probability") {
            if let v = Double(text), v >= 0, v <= 1 { rule.probability = v }
            else { report(p, "\(path).probability", "'\(text)' is not a number between 0 and 1") }
        }
        if let v = m["after"]?.value {
            rule.after = integer(v, "\(path).after", range: 0...UInt64(Int32.max), what: "a count (0-\(Int32.max))").map(Int.init) ?? 0
        }
        if let v = m["count"]?.value {
            rule.count = integer(v, "\(path).count", range: 1...UInt64(Int32.max), what: "a count (1-\(Int32.max))").map(Int.init)
        }
        if let v = m["violate_fifo"]?.value, let text = string(v, "\(path).violate_fifo") {
            switch text {
            case "true", "yes", "on": rule.violateFIFO = true
            case "false", "no", "off": rule.violateFIFO = false
            default: report(v, "\(path).violate_fifo", "'\(text)' is not true or false")
            }
        }
        return problems.count == before ? rule : nil
    }
}
