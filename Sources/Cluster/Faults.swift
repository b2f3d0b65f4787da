// Fault injection: a transport decorator that delays, reorders or drops outgoing frames chosen by
// channel and message type (the first payload byte), for the race tests of coherence protocols.
//
// The rules (`transport.faults` in the cluster YAML) are read and checked once by the Config
// target into a typed `FaultPlan` (Sources/Config/Faults.swift; fields in docs/net.md). The
// decorator runs on the sending node. The first rule that matches a frame decides:
//
//   drop     the frame is never sent (the sender sees success).
//   delay    the frame is sent `delay` + random 0..`jitter` later. The lane's FIFO order is kept:
//            frames sent after it to the same node on the same lane wait behind it (as behind a
//            slow link); frames on the other lane overtake it.
//   reorder  the frame is held until a frame to the same node on the OTHER lane has been sent
//            (that frame overtakes it), or `delay` (default 50ms) passes; frames after it on its
//            own lane wait behind it.
//
// So by default the injector only produces orders the ABI allows (per-lane FIFO, no order across
// lanes). A rule with `violate_fifo: true` breaks the promise on purpose, as a protocol-robustness
// test: a delayed frame is overtaken by later frames of its own lane, and a reordered frame swaps
// with the next frame to the same node and lane. A protocol that relies on per-lane FIFO (dsm-ivy
// does) is expected to detect this and stop, never to corrupt memory.

import Config
import Foundation
import Metrics
import PluginAPI

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

    private struct LaneKey: Hashable { var dst: UInt32; var lane: UInt32 }
    /// A frame waiting in its lane's FIFO queue. It leaves when it is at the head and `due` has
    /// passed; a held frame (`holdForOtherLane`) also when a frame to the same node on another
    /// lane is sent while it is at the head (its `due` then becomes 0).
    private struct Pending { var bytes: [UInt8]; var due: UInt64; var holdForOtherLane: Bool }
    /// Per destination and lane: frames that must leave in this order. While a queue is not
    /// empty, every frame for that node and lane joins its tail: the lane's FIFO order is kept.
    private var queues: [LaneKey: [Pending]] = [:]

    // violate_fifo rules only: frames outside the lane order.
    private struct Loose { var due: UInt64; var key: LaneKey; var bytes: [UInt8]; var heldToken: UInt64? }
    private var loose: [Loose] = []
    private var swapHeld: [LaneKey: (bytes: [UInt8], token: UInt64)] = [:]
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
        rng = plan.seed &* 0x9E37_79B9_7F4A_7C15 ^ UInt64(selfID &+ 1)
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
        var channel: UInt8?
        var type: UInt8?
        if case let .message(c, payload) = ChannelHeader.parse(bytes) {
            channel = c.rawValue
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

    /// Uniform 0..<jitter ns (jitter capped at 2^62 ns so the Double product always converts). Lock held.
    private func randomJitter(_ jitter: UInt64) -> UInt64 {
        jitter > 0 ? UInt64(random() * Double(min(jitter, 1 << 62))) : 0
    }

    /// `now + a + b`, saturating (the rule's durations are at most an hour each).
    private func deadline(_ a: UInt64, _ b: UInt64 = 0) -> UInt64 {
        let (x, o1) = monotonicNanoseconds().addingReportingOverflow(a)
        let (y, o2) = x.addingReportingOverflow(b)
        return o1 || o2 ? UInt64.max : y
    }

    /// Sends through the inner transport and releases frames held for other-lane traffic to
    /// this node. Lock held.
    @discardableResult
    private func emit(_ bytes: [UInt8], _ key: LaneKey) -> Int32 {
        let rc = bytes.withUnsafeBytes { raw in
            var v = gvm_iovec(base: raw.baseAddress, len: raw.count)
            return withUnsafePointer(to: &v) { inner.send(to: key.dst, lane: key.lane, UnsafeBufferPointer(start: $0, count: 1)) }
        }
        for (other, queue) in queues where other.dst == key.dst && other.lane != key.lane && queue.first?.holdForOtherLane == true {
            queues[other]![0].holdForOtherLane = false
            queues[other]![0].due = 0
        }
        return rc
    }

    /// Sends every queue head that is due, in lane order, until nothing more can leave. Lock held.
    private func pump() {
        var progress = true
        while progress {
            progress = false
            let now = monotonicNanoseconds()
            for key in Array(queues.keys) {
                while let head = queues[key]?.first, head.due <= now {
                    queues[key]!.removeFirst()
                    if queues[key]!.isEmpty { queues[key] = nil }
                    emit(head.bytes, key)
                    progress = true
                }
            }
        }
    }

    /// Hands a frame to its lane: sent now when nothing waits on the lane, else queued behind.
    /// Lock held.
    private func enqueue(_ bytes: [UInt8], _ key: LaneKey, due: UInt64 = 0, holdForOtherLane: Bool = false) -> Int32 {
        if queues[key] == nil && due == 0 && !holdForOtherLane {
            let rc = emit(bytes, key)
            pump()
            return rc
        }
        queues[key, default: []].append(Pending(bytes: bytes, due: due, holdForOtherLane: holdForOtherLane))
        pump()
        mon.broadcast()
        return GVM_OK.rawValue
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
        var rc = GVM_OK.rawValue
        switch (rule?.action, rule?.violateFIFO ?? false) {
        case (.drop?, _):
            metrics.add(dropped, 1)
            return GVM_OK.rawValue
        case (.delay?, false):
            let r = rule!
            let jitter = randomJitter(r.jitterNanoseconds)
            metrics.add(delayed, 1)
            rc = enqueue(bytes, key, due: max(deadline(r.delayNanoseconds, jitter), 1))
        case (.reorder?, false):
            metrics.add(reordered, 1)
            rc = enqueue(bytes, key, due: deadline(rule!.delayNanoseconds), holdForOtherLane: true)
        case (.delay?, true):
            let r = rule!
            let jitter = randomJitter(r.jitterNanoseconds)
            loose.append(Loose(due: deadline(r.delayNanoseconds, jitter), key: key, bytes: bytes, heldToken: nil))
            metrics.add(delayed, 1)
            mon.broadcast()
            return GVM_OK.rawValue
        case (.reorder?, true) where swapHeld[key] == nil:
            let token = nextToken
            nextToken += 1
            swapHeld[key] = (bytes, token)
            loose.append(Loose(due: deadline(rule!.delayNanoseconds), key: key, bytes: [], heldToken: token))
            metrics.add(reordered, 1)
            mon.broadcast()
            return GVM_OK.rawValue
        default:
            rc = enqueue(bytes, key)
        }
        // A frame swapped out by a violate_fifo reorder follows the next frame of its lane.
        if let h = swapHeld.removeValue(forKey: key) { _ = enqueue(h.bytes, key) }
        return rc
    }

    private func timerLoop() {
        mon.lock()
        defer { mon.unlock() }
        while !stopping {
            pump()
            let now = monotonicNanoseconds()
            if let i = loose.indices.first(where: { loose[$0].due <= now }) {
                let l = loose.remove(at: i)
                if let token = l.heldToken {
                    if let h = swapHeld[l.key], h.token == token {
                        swapHeld.removeValue(forKey: l.key)
                        _ = enqueue(h.bytes, l.key)
                    }
                } else {
                    emit(l.bytes, l.key)
                }
                continue
            }
            let heads = queues.values.compactMap { $0.first?.due }.filter { $0 > 0 }
            guard let next = (heads + loose.map(\.due)).min() else {
                mon.wait()
                continue
            }
            mon.wait(until: next)
        }
    }
}
