// Back pressure and lost messages: what IvyNode does when the transport has no room for a
// message, and when a page request is never answered.
//
// Back pressure. A transport whose send queue to a peer is full returns GVM_ERR_NOMEM. The node
// keeps the message (bytes copied) in an outbox for that (peer, lane), behind which every later
// message to the same (peer, lane) waits too, so per-lane FIFO holds; a one-shot timer retries the
// outboxes every millisecond. Nothing blocks: the node's lock is never held across a wait, so
// receive threads keep draining the network while a queue is full. A message that has waited
// `send_wait` stops the cluster naming the peer, the message and the page.
//
// Request timeouts. Every outstanding page request (a read miss, write miss or upgrade) is
// watched by one one-shot timer, armed for the oldest request's deadline while any is
// outstanding, and cancelled (outside the lock) when none is. A request unanswered for
// `request_timeout` stops the cluster naming the request, the page, its state and the peer it
// waits on (a dropped coherence message, a peer that stopped answering). The timer is disarmed
// at the end of every entry point that leaves nothing outstanding, so an idle node has no timer.
//
// Settings (YAML `coherence.settings`), a bare number meaning seconds:
//   request_timeout  default 10s, 0 (off) or 1ms ... 1h
//   send_wait        default 5s, 1ms ... 1h

import PluginKit

#if canImport(Glibc)
import Glibc
#endif

extension IvyConfig {
    public static let livenessSettingKeys = ["request_timeout", "send_wait"]

    /// Reads `request_timeout` and `send_wait` in the config's one duration grammar (a bare
    /// number is seconds: "10s", "500ms", "30").
    public mutating func parseLivenessSettings(_ settings: [String: String]) throws {
        let ms: UInt64 = 1_000_000, hour: UInt64 = 3_600_000_000_000
        if let t = settings["request_timeout"] {
            guard case let .success(ns) = Units.duration(t, range: 0...hour), ns == 0 || ns >= ms else {
                throw PluginError("setting 'request_timeout': '\(t)' is not 0 (off) or a duration from 1ms to 1h like 10s, 500ms, 30 (seconds)")
            }
            requestTimeoutNanoseconds = ns
        }
        if let t = settings["send_wait"] {
            guard case let .success(ns) = Units.duration(t, range: ms...hour) else {
                throw PluginError("setting 'send_wait': '\(t)' is not a duration from 1ms to 1h like 5s, 200ms, 10 (seconds)")
            }
            sendWaitNanoseconds = ns
        }
    }
}

/// The transport status for a full send queue.
let sendQueueFull = PageStatus(raw: GVM_ERR_NOMEM.rawValue)

/// One lane to one peer.
struct OutboxKey: Hashable, Comparable {
    var node: UInt32
    var urgent: Bool
    static func < (a: OutboxKey, b: OutboxKey) -> Bool { (a.node, a.urgent ? 0 : 1) < (b.node, b.urgent ? 0 : 1) }
}

/// A message waiting for room in the transport.
struct Outgoing {
    var bytes: [UInt8]
    var type: MessageType
    var gfn: UInt64
    var since: UInt64
}

/// The request-timeout timer: `armed` holds the one pending timer; `cancelling` while a thread
/// cancels it outside the lock (nobody arms meanwhile; the canceller re-arms if needed).
enum WatchState {
    case idle
    case armed(UInt64)
    case cancelling
}

extension IvyNode {
    // MARK: entry points

    /// Runs `body` under the lock, then keeps the request-timeout timer in step with what is
    /// outstanding. Every entry point (fault, receive, unpin, timers) goes through here.
    func entry(_ body: () -> Void) {
        pthread_mutex_lock(&lock)
        body()
        let cancel = watchAfterEntry()
        pthread_mutex_unlock(&lock)
        guard cancel != 0 else { return }
        // Outside the lock: cancel waits for a running callback, which takes the lock.
        services.cancelOneShot(cancel)
        pthread_mutex_lock(&lock)
        watch = .idle
        if !failed && !outstanding.isEmpty { armWatch() }
        pthread_mutex_unlock(&lock)
    }

    // MARK: back pressure

    /// Sends one message, or keeps it for later when the transport's queue is full (or messages
    /// to the same peer and lane already wait). Any other error stops the node. Lock held.
    func transmit(_ type: MessageType, gfn: UInt64, to dst: UInt32, _ parts: [UnsafeRawBufferPointer], urgent: Bool) {
        let key = OutboxKey(node: dst, urgent: urgent)
        if outbox[key] == nil {
            let st = host.send(to: dst, parts, urgent: urgent)
            if st == .ok { return }
            guard st == sendQueueFull else {
                fail("sending \(type.name) for gfn \(gfn) to node \(dst): \(st)")
                return
            }
        }
        var bytes: [UInt8] = []
        for p in parts { bytes += p }
        outbox[key, default: []].append(Outgoing(bytes: bytes, type: type, gfn: gfn, since: services.nowNanoseconds()))
        sendWaits(1)
        armFlushTimer()
    }

    func armFlushTimer() {
        guard flushTimer == 0, !failed else { return }
        flushTimer = services.startOneShot(afterNanoseconds: 1_000_000, { ctx in
            Unmanaged<IvyNode>.fromOpaque(ctx!).takeUnretainedValue().flushTimerFired()
        }, context: Unmanaged.passUnretained(self).toOpaque())
        if flushTimer == 0 { fail("the host offers no timers: cannot wait for room in a full send queue") }
    }

    func flushTimerFired() {
        entry {
            flushTimer = 0
            guard !failed else { return }
            flushOutbox()
        }
    }

    /// Sends what waits, in order, until a queue is full again. Lock held.
    func flushOutbox() {
        let now = services.nowNanoseconds()
        for key in outbox.keys.sorted() {
            guard var queue = outbox[key] else { continue }
            while let first = queue.first {
                let st = first.bytes.withUnsafeBytes { host.send(to: key.node, [$0], urgent: key.urgent) }
                if st == .ok { queue.removeFirst(); continue }
                if st != sendQueueFull {
                    fail("sending \(first.type.name) for gfn \(first.gfn) to node \(key.node): \(st)")
                    return
                }
                let waited = now &- first.since
                if waited >= config.sendWaitNanoseconds {
                    fail("the transport's send queue to node \(key.node) (\(key.urgent ? "urgent" : "bulk") lane) stayed full "
                         + "for \(seconds(waited)) s (send_wait \(seconds(config.sendWaitNanoseconds)) s): "
                         + "\(first.type.name) for gfn \(first.gfn) and \(queue.count - 1) later message(s) could not be sent; "
                         + "node \(key.node) is not reading (stopped, hung or overloaded)")
                    return
                }
                break
            }
            outbox[key] = queue.isEmpty ? nil : queue
        }
        if !outbox.isEmpty { armFlushTimer() }
    }

    /// Messages waiting for room (tests, diagnostics).
    public var waitingForRoom: Int { withLock { outbox.values.reduce(0) { $0 + $1.count } } }

    // MARK: request timeouts

    /// Arms, or asks the caller to cancel, the request-timeout timer. Lock held. Returns a
    /// timer to cancel outside the lock, or 0.
    func watchAfterEntry() -> UInt64 {
        guard config.requestTimeoutNanoseconds > 0 else { return 0 }
        switch watch {
        case .idle:
            if !failed && !outstanding.isEmpty { armWatch() }
            return 0
        case let .armed(id):
            guard failed || outstanding.isEmpty else { return 0 }
            watch = .cancelling
            return id
        case .cancelling:
            return 0
        }
    }

    /// Arms the timer for the oldest outstanding request's deadline. Lock held; watch idle.
    func armWatch() {
        guard let oldest = outstanding.values.map(\.start).min() else { return }
        let deadline = oldest &+ config.requestTimeoutNanoseconds
        let now = services.nowNanoseconds()
        let delay = deadline > now ? deadline - now : 1
        let id = services.startOneShot(afterNanoseconds: delay, { ctx in
            Unmanaged<IvyNode>.fromOpaque(ctx!).takeUnretainedValue().watchFired()
        }, context: Unmanaged.passUnretained(self).toOpaque())
        if id != 0 { watch = .armed(id) }
    }

    /// The pending timer to cancel at stop (lock held); it will not be re-armed (failed is set).
    func takeWatchTimer() -> UInt64 {
        if case let .armed(id) = watch {
            watch = .cancelling
            return id
        }
        return 0
    }

    func watchFired() {
        pthread_mutex_lock(&lock)
        defer { pthread_mutex_unlock(&lock) }
        // Being cancelled (the canceller re-arms), or stopped.
        guard case .armed = watch else { return }
        watch = .idle
        guard !failed else { return }
        let now = services.nowNanoseconds()
        let expired = outstanding.filter { now &- $0.value.start >= config.requestTimeoutNanoseconds }
        if let (gfn, o) = expired.min(by: { $0.value.start < $1.value.start }) {
            fail(timeoutMessage(gfn, o, now: now))
            return
        }
        armWatch()
    }

    func timeoutMessage(_ gfn: UInt64, _ o: Outstanding, now: UInt64) -> String {
        let what = ["read miss", "write miss", "upgrade"][o.kind.rawValue]
        let st = state[Int(gfn)]
        let waited = "unanswered for \(seconds(now &- o.start)) s (request_timeout \(seconds(config.requestTimeoutNanoseconds)) s)"
        if let t = ownerTxn[gfn], t.acksLeft > 0 {
            let nodes = (0..<nodeCount).filter { t.waitingOn & bit($0) != 0 }.map { "node \($0)" }
            return "request timed out: \(what) of gfn \(gfn) (state \(st)) \(waited): "
                + "no invalidation acknowledgement from \(nodes.isEmpty ? "\(t.acksLeft) sharer(s)" : nodes.joined(separator: ", ")); "
                + "a coherence message was lost or the peer stopped answering"
        }
        let manager = managerOf(gfn)
        let path = manager == selfID ? "this node manages the page and forwarded it to the owner"
                                     : "sent to node \(manager), the page's manager, which forwards it to the owner"
        return "request timed out: \(what) of gfn \(gfn) (state \(st)) \(waited); \(path); waiting on node \(manager): "
            + "a coherence message was lost or the peer stopped answering"
    }

    func seconds(_ ns: UInt64) -> String {
        let s = Double(ns) / 1e9
        let text = String(s)
        if s >= 0.1 { return String(Double(Int(s * 10 + 0.5)) / 10) }
        return text.count > 8 ? String(text.prefix(8)) : text
    }
}
