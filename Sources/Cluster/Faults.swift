// Fault injection: a transport decorator that delays, reorders or drops outgoing frames chosen by
// channel and message type (the first payload byte), for the race tests of coherence protocols.
//
// Configured under `transport.faults` in the cluster YAML (the config reader hands it over as
// YAML text in the hidden setting `__faults`). Either a list of rules or a mapping with `seed` and
// `rules`:
//
//   transport:
//     plugin: transport-tcp
//     faults:
//       seed: 42                 # optional; the random choices are repeatable for one seed
//       rules:
//         - channel: coherence   # control | coherence | cpu | io | heartbeat (or 0-4); omit = any
//           type: 3              # first payload byte (message type), 0-255; omit = any
//           from: 0              # only frames sent by this node; omit = any sender
//           to: 1                # only frames sent to this node; omit = any destination
//           lane: bulk           # urgent | bulk (or 0/1); omit = any
//           action: delay        # delay | drop | reorder
//           delay: 5ms           # delay: how long; reorder: how long to wait at most for a
//                                #   later frame to overtake it (default 50ms)
//           jitter: 2ms          # delay: plus a uniform random 0..jitter
//           probability: 0.5     # chance for each matching frame (default 1)
//           after: 10            # leave the first N matching frames alone (default 0)
//           count: 5             # affect at most N frames (default unlimited)
//
// The decorator runs on the sending node: a dropped frame is never sent (the sender sees
// success), a delayed frame is sent later by the decorator's thread (frames sent after it may
// overtake it), a reordered frame is held until the next frame to the same node and lane has
// been sent (or `delay` passes). The first rule that matches a frame decides.

import Foundation
import Metrics
import PluginAPI
import Yams

public struct FaultRule: Equatable, Sendable {
    public enum Action: String, Equatable, Sendable { case drop, delay, reorder }
    public var channel: Channel?
    public var type: UInt8?
    public var from: UInt32?
    public var to: UInt32?
    public var lane: UInt32?
    public var action: Action
    public var delayNanoseconds: UInt64 = 0
    public var jitterNanoseconds: UInt64 = 0
    public var probability: Double = 1
    public var after: Int = 0
    public var count: Int?

    public init(action: Action) { self.action = action }

    /// Whether the rule's filters select a frame (counters and probability aside).
    public func selects(channel c: Channel?, type t: UInt8?, from f: UInt32, to d: UInt32, lane l: UInt32) -> Bool {
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

    /// Parses the `transport.faults` YAML text. Errors name the rule and field.
    public static func parse(yaml: String, nodeCount: Int) throws -> FaultPlan {
        let root: Any?
        do { root = try Yams.load(yaml: yaml) } catch {
            throw ClusterError("transport.faults: not valid YAML: \(error)")
        }
        var plan = FaultPlan()
        var items: [Any] = []
        if let list = root as? [Any] {
            items = list
        } else if let map = root as? [String: Any] {
            for key in map.keys where key != "seed" && key != "rules" {
                throw ClusterError("transport.faults: unknown field '\(key)' (expected seed, rules)")
            }
            if let s = map["seed"] {
                guard let v = UInt64("\(s)") else { throw ClusterError("transport.faults.seed: '\(s)' is not a non-negative integer") }
                plan.seed = v
            }
            if let r = map["rules"] {
                guard let list = r as? [Any] else { throw ClusterError("transport.faults.rules: expected a list of rules") }
                items = list
            }
        } else if root != nil {
            throw ClusterError("transport.faults: expected a list of rules or {seed, rules}")
        }
        for (i, item) in items.enumerated() {
            let path = "transport.faults.rules[\(i)]"
            guard let m = item as? [String: Any] else { throw ClusterError("\(path): expected a mapping") }
            let known = ["channel", "type", "from", "to", "lane", "action", "delay", "jitter", "probability", "after", "count"]
            for key in m.keys.sorted() where !known.contains(key) {
                throw ClusterError("\(path): unknown field '\(key)' (expected one of: \(known.joined(separator: ", ")))")
            }
            func text(_ k: String) -> String? { m[k].map { "\($0)" } }
            guard let a = text("action"), let action = FaultRule.Action(rawValue: a) else {
                throw ClusterError("\(path).action: '\(text("action") ?? "missing")' is not one of drop, delay, reorder")
            }
            var rule = FaultRule(action: action)
            if let c = text("channel") {
                guard let ch = Channel(name: c) else {
                    throw ClusterError("\(path).channel: '\(c)' is not one of control, coherence, cpu, io, heartbeat")
                }
                rule.channel = ch
            }
            if let t = text("type") {
                guard let v = UInt8(t) ?? (t.hasPrefix("0x") ? UInt8(t.dropFirst(2), radix: 16) : nil) else {
                    throw ClusterError("\(path).type: '\(t)' is not a message type 0-255")
                }
                rule.type = v
            }
            for (k, dst) in [("from", \FaultRule.from), ("to", \FaultRule.to)] {
                if let s = text(k) {
                    guard let v = UInt32(s), Int(v) < nodeCount else {
                        throw ClusterError("\(path).\(k): '\(s)' is not a node id of this cluster (0-\(nodeCount - 1))")
                    }
                    rule[keyPath: dst] = v
                }
            }
            if let l = text("lane") {
                switch l {
                case "urgent", "0": rule.lane = GVM_LANE_URGENT
                case "bulk", "1": rule.lane = GVM_LANE_BULK
                default: throw ClusterError("\(path).lane: '\(l)' is not urgent or bulk")
                }
            }
            func duration(_ k: String) throws -> UInt64? {
                guard let s = text(k) else { return nil }
                guard let ns = parseDuration(s) else { throw ClusterError("\(path).\(k): '\(s)' is not a duration (e.g. 5ms, 1s)") }
                return ns
            }
            rule.delayNanoseconds = try duration("delay") ?? (action == .reorder ? 50_000_000 : 0)
            rule.jitterNanoseconds = try duration("jitter") ?? 0
            if action == .delay && rule.delayNanoseconds == 0 && rule.jitterNanoseconds == 0 {
                throw ClusterError("\(path).delay: a delay rule needs delay (or jitter) > 0")
            }
            if let p = text("probability") {
                guard let v = Double(p), v >= 0, v <= 1 else { throw ClusterError("\(path).probability: '\(p)' is not between 0 and 1") }
                rule.probability = v
            }
            if let s = text("after") {
                guard let v = Int(s), v >= 0 else { throw ClusterError("\(path).after: '\(s)' is not a count >= 0") }
                rule.after = v
            }
            if let s = text("count") {
                guard let v = Int(s), v >= 1 else { throw ClusterError("\(path).count: '\(s)' is not a count >= 1") }
                rule.count = v
            }
            plan.rules.append(rule)
        }
        return plan
    }
}

/// "5ms", "1.5s", "200us", "100ns", or a bare number of seconds.
func parseDuration(_ s: String) -> UInt64? {
    let t = s.trimmingCharacters(in: .whitespaces)
    for (suffix, scale) in [("ms", 1e6), ("us", 1e3), ("ns", 1.0), ("s", 1e9)] where t.hasSuffix(suffix) {
        guard let v = Double(t.dropLast(suffix.count)), v >= 0, v < 1e6 else { return nil }
        return UInt64(v * scale)
    }
    guard let v = Double(t), v >= 0, v < 1e6 else { return nil }
    return UInt64(v * 1e9)
}

/// Wraps a transport and applies a `FaultPlan` to outgoing frames.
/// Threading: `send` from any thread (decisions and sends are serialised by one lock); one
/// dedicated thread sends delayed and held frames when due. `stop` joins it, then stops the
/// inner transport; frames still pending are discarded.
public final class FaultInjectingTransport: FrameTransport, @unchecked Sendable {
    private let inner: FrameTransport
    private let plan: FaultPlan
    private let selfID: UInt32
    private let mon = Monitor()
    private var rng: UInt64
    private var matched: [Int]
    private var applied: [Int]
    private struct Timed { var due: UInt64; var dst: UInt32; var lane: UInt32; var bytes: [UInt8]; var heldToken: UInt64? }
    private var timed: [Timed] = []
    private struct LaneKey: Hashable { var dst: UInt32; var lane: UInt32 }
    private var held: [LaneKey: (bytes: [UInt8], token: UInt64)] = [:]
    private var nextToken: UInt64 = 1
    private var stopping = false
    private var thread: OSThread?
    private let dropped: UInt32, delayed: UInt32, reordered: UInt32
    private let metrics: MetricsRegistry

    public init(wrapping inner: FrameTransport, plan: FaultPlan, selfID: UInt32, metrics: MetricsRegistry) {
        self.inner = inner
        self.plan = plan
        self.selfID = selfID
        self.metrics = metrics
        rng = plan.seed &* 0x9E37_79B9_7F4A_7C15 ^ UInt64(selfID + 1)
        matched = Array(repeating: 0, count: plan.rules.count)
        applied = Array(repeating: 0, count: plan.rules.count)
        dropped = metrics.counter("faults.dropped")
        delayed = metrics.counter("faults.delayed")
        reordered = metrics.counter("faults.reordered")
    }

    public func start() throws {
        thread = try OSThread(name: "fault-inject") { [self] in timerLoop() }
        try inner.start()
    }

    public func stop() {
        mon.withLock { stopping = true; mon.broadcast() }
        thread?.join()
        inner.stop()
    }

    /// SplitMix64: a uniform double in [0, 1). Lock held.
    private func random() -> Double {
        rng &+= 0x9E37_79B9_7F4A_7C15
        var z = rng
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
        return Double(z >> 11) / Double(1 << 53)
    }

    /// The rule that applies to this frame, if any (counts it). Lock held.
    private func decide(_ bytes: [UInt8], dst: UInt32, lane: UInt32) -> FaultRule? {
        var channel: Channel?
        var type: UInt8?
        if case let .message(c, payload) = ChannelHeader.parse(bytes) {
            channel = c
            if !payload.isEmpty { type = bytes[payload.lowerBound] }
        }
        for (i, rule) in plan.rules.enumerated()
        where rule.selects(channel: channel, type: type, from: selfID, to: dst, lane: lane) {
            matched[i] += 1
            if matched[i] <= rule.after { continue }
            if let count = rule.count, applied[i] >= count { continue }
            if rule.probability < 1 && random() >= rule.probability { continue }
            applied[i] += 1
            return rule
        }
        return nil
    }

    private func sendNow(_ bytes: [UInt8], dst: UInt32, lane: UInt32) -> Int32 {
        bytes.withUnsafeBytes { raw in
            var v = gvm_iovec(base: raw.baseAddress, len: raw.count)
            return withUnsafePointer(to: &v) { inner.send(to: dst, lane: lane, UnsafeBufferPointer(start: $0, count: 1)) }
        }
    }

    public func send(to node: UInt32, lane: UInt32, _ iov: UnsafeBufferPointer<gvm_iovec>) -> Int32 {
        var bytes: [UInt8] = []
        for v in iov where v.len > 0 {
            if let base = v.base { bytes += UnsafeRawBufferPointer(start: base, count: v.len) }
        }
        mon.lock()
        defer { mon.unlock() }
        let key = LaneKey(dst: node, lane: lane)
        let rule = decide(bytes, dst: node, lane: lane)
        switch rule?.action {
        case .drop?:
            metrics.add(dropped, 1)
            return GVM_OK.rawValue
        case .delay?:
            let r = rule!
            let jitter = r.jitterNanoseconds > 0 ? UInt64(random() * Double(r.jitterNanoseconds)) : 0
            timed.append(Timed(due: monotonicNanoseconds() + r.delayNanoseconds + jitter, dst: node, lane: lane,
                               bytes: bytes, heldToken: nil))
            metrics.add(delayed, 1)
            mon.broadcast()
            return GVM_OK.rawValue
        case .reorder? where held[key] == nil:
            let token = nextToken
            nextToken += 1
            held[key] = (bytes, token)
            timed.append(Timed(due: monotonicNanoseconds() + rule!.delayNanoseconds, dst: node, lane: lane,
                               bytes: [], heldToken: token))
            metrics.add(reordered, 1)
            mon.broadcast()
            return GVM_OK.rawValue
        default:
            let rc = sendNow(bytes, dst: node, lane: lane)
            if let h = held.removeValue(forKey: key) { _ = sendNow(h.bytes, dst: node, lane: lane) }
            return rc
        }
    }

    private func timerLoop() {
        mon.lock()
        defer { mon.unlock() }
        while !stopping {
            guard let next = timed.indices.min(by: { timed[$0].due < timed[$1].due }) else {
                mon.wait()
                continue
            }
            let now = monotonicNanoseconds()
            if timed[next].due > now {
                mon.wait(until: timed[next].due)
                continue
            }
            let t = timed.remove(at: next)
            if let token = t.heldToken {
                let key = LaneKey(dst: t.dst, lane: t.lane)
                if let h = held[key], h.token == token {
                    held.removeValue(forKey: key)
                    _ = sendNow(h.bytes, dst: t.dst, lane: t.lane)
                }
            } else {
                _ = sendNow(t.bytes, dst: t.dst, lane: t.lane)
            }
        }
    }
}
