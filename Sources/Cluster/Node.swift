// The node runtime: one per `giantvm node` process. It loads the transport plugin, multiplexes
// channels over it, meets every peer, sends heartbeats, detects lost peers and coordinates the
// stop of the whole cluster.
//
// Control channel messages (types < 0x80, runtime-owned):
//   0x01 STOP      status:i32 origin:u32 lost:u32 (0xFFFFFFFF = none) message:text
//   0x02 STOP_ACK  (empty)
//   0x03 LEAVE     (empty) the sender leaves the cluster (node evacuation); the others keep running
//   0x04 LEAVE_ACK (empty)
// Heartbeat channel messages (types < 0x80):
//   0x01 BEAT      seq:u64 sent_ns:u64
//
// Stop protocol: `stop(_:)` (any thread, returns at once) records the first reason. The thread in
// `waitUntilStopped()` then sends STOP to every live peer, waits (at most 2 s) until each has
// acknowledged, sent its own STOP or gone, and stops the transport. A peer that receives STOP
// acknowledges it and stops with the same status, so one failing node stops all of them.
//
// Leave protocol (node evacuation, docs/migration.md): `leave(timeout:)` on the leaving node sends
// LEAVE to every live peer and waits until each acknowledged it. A peer records the node as
// departed first: from then on its disconnect or silence is not a lost node, no heartbeat or STOP
// goes to it and a send to it is dropped (GVM_OK). The leaving node then stops with status 0
// without telling the others to stop.

import Config
import Foundation
import Logging
import Metrics
import PluginAPI
import PluginHost
import Synchronization

/// Why a node stopped. `status` is the process exit status (0 = clean).
public struct StopReason: Sendable, CustomStringConvertible, Equatable {
    public var status: Int32
    public var message: String
    /// The node whose decision this is (this node, or the peer that told us).
    public var origin: UInt32
    /// The node whose loss caused the stop, if any.
    public var lostNode: UInt32?

    public init(status: Int32, message: String, origin: UInt32, lostNode: UInt32? = nil) {
        self.status = status; self.message = message; self.origin = origin; self.lostNode = lostNode
    }
    public var description: String { message }
}

/// A node of the cluster.
///
/// Threading: `init`, `register`, `onStop`, `onPeerLost` and `start` on the main thread, in that
/// order (handlers are read without locks once started). `send` and `stop` from any thread.
/// Channel handlers run on transport receive threads: they must not block (queue what must wait).
/// `waitUntilStopped` on the main thread. `mon` guards the peer tables and the stop state.
public final class Node: TransportEvents, @unchecked Sendable {
    public typealias Handler = (_ from: UInt32, _ payload: UnsafeRawBufferPointer) -> Void

    public let config: ClusterConfig
    public let id: UInt32
    public let metrics: MetricsRegistry
    public let logger: Logger
    public var peers: [UInt32] { config.nodes.map(\.id).filter { $0 != id } }
    /// The transport plugin's name (or "custom" for an injected transport).
    public private(set) var transportName = "custom"

    private var transport: FrameTransport!
    private let mon = Monitor()
    /// Handlers by channel and type byte (256 per channel), filled before `start`.
    private var handlers: [Handler?] = Array(repeating: nil, count: Channel.allCases.count * 256)
    private var stopObservers: [(StopReason) -> Void] = []
    private var lostObservers: [(UInt32) -> Void] = []
    private var started = false
    private var running = false
    private var reason: StopReason?
    private var finished = false
    private var up: [Bool]
    private var lost: [Bool]
    private var lostWhy: [String?]
    private var peerStopping: [Bool]
    private var acked: [Bool]
    /// Peers that left the cluster (LEAVE received) — and, on the leaving node, every peer.
    private var departed: [Bool]
    /// Bit n: node n departed (read without the lock on the send path; nodes 0-63).
    private let departedMask = Atomic<UInt64>(0)
    private var leaveAcked: [Bool]
    private var hasLeft = false
    private var lastHeard: [UInt64]
    private var heartbeatThread: OSThread?
    private let headers: UnsafeMutablePointer<UInt8>
    private let cFramesIn: UInt32, cBytesIn: UInt32, cMalformed: UInt32, cUnhandled: UInt32, cBeats: UInt32

    /// Loads the configured transport plugin through `loader` and creates it (its settings are
    /// validated now). Errors name the config file, the plugin and the cause.
    public convenience init(config: ClusterConfig, id: UInt32, loader: PluginLoader, logger: Logger,
                            metrics: MetricsRegistry = MetricsRegistry()) throws {
        try self.init(config: config, id: id, logger: logger, metrics: metrics) { node in
            let plugin: LoadedPlugin
            do { plugin = try loader.load(config.transport.plugin, kind: .transport) } catch {
                throw ClusterError("\(config.sourcePath): transport.plugin: \(error)")
            }
            node.transportName = plugin.name
            var settings = config.transport.settings
            if plugin.name == "transport-tcp" && !settings.contains(where: { $0.key == "connect_timeout" }) {
                settings.append(("connect_timeout", "\(config.timeouts.connectNanoseconds)ns"))
            }
            let auth = try Authenticator(cluster: config.cluster, selfID: id, nodeCount: config.nodes.count,
                                         keyFile: config.keyFile, logger: node.logger)
            if !auth.hasKey {
                node.logger.notice("no key_file: peers are accepted by cluster name and node id only")
            }
            return try PluginTransport(plugin: plugin, config: config, selfID: id, settings: settings,
                                       authenticator: auth, events: node, metrics: metrics, logger: node.logger,
                                       onFatal: { [weak node] why in
                                           node?.stop(StopReason(status: 1, message: why, origin: id))
                                       })
        }
    }

    /// Builds a node over a transport made by `makeTransport` (tests pass fakes here). Applies
    /// `transport.faults` from the config around it.
    public init(config: ClusterConfig, id: UInt32, logger: Logger, metrics: MetricsRegistry = MetricsRegistry(),
                makeTransport: (Node) throws -> FrameTransport) throws {
        guard Int(id) < config.nodes.count else {
            throw ClusterError("\(config.sourcePath): there is no node \(id) (nodes: 0-\(config.nodes.count - 1))")
        }
        self.config = config
        self.id = id
        self.metrics = metrics
        var l = logger
        l[metadataKey: "node"] = .string("\(id)")
        self.logger = l
        let n = config.nodes.count
        up = Array(repeating: false, count: n)
        lost = Array(repeating: false, count: n)
        lostWhy = Array(repeating: nil, count: n)
        peerStopping = Array(repeating: false, count: n)
        acked = Array(repeating: false, count: n)
        departed = Array(repeating: false, count: n)
        leaveAcked = Array(repeating: false, count: n)
        lastHeard = Array(repeating: 0, count: n)
        headers = .allocate(capacity: Channel.allCases.count * ChannelHeader.size)
        for c in Channel.allCases {
            for (i, b) in ChannelHeader.encode(c).enumerated() { headers[Int(c.rawValue) * ChannelHeader.size + i] = b }
        }
        cFramesIn = metrics.counter("net.frames_in")
        cBytesIn = metrics.counter("net.bytes_in")
        cMalformed = metrics.counter("net.malformed_frames")
        cUnhandled = metrics.counter("net.unhandled_frames")
        cBeats = metrics.counter("net.heartbeats_in")
        var t = try makeTransport(self)
        let plan = config.faults
        if !plan.rules.isEmpty {
            logger.notice("fault injection on: \(plan.rules.count) rule(s), seed \(plan.seed)")
            t = FaultInjectingTransport(wrapping: t, plan: plan, selfID: id, metrics: metrics)
        }
        transport = t
    }

    deinit {
        headers.deallocate()
    }

    // MARK: wiring (main thread, before start)

    /// Sets the handler for every message type of a channel that no other handler took (control
    /// and heartbeat: types >= 0x80 only; types below belong to the runtime).
    public func register(channel: Channel, handler: @escaping Handler) {
        precondition(!started, "Node.register must be called before start()")
        let first = channel == .control || channel == .heartbeat ? 0x80 : 0
        for t in first...0xFF where handlers[Int(channel.rawValue) * 256 + t] == nil {
            handlers[Int(channel.rawValue) * 256 + t] = handler
        }
    }

    /// Sets the handler for the given type bytes of a channel (MessageType hands them out). A
    /// type taken twice is a programming error and stops the process.
    public func register(channel: Channel, types: some Sequence<UInt8>, handler: @escaping Handler) {
        precondition(!started, "Node.register must be called before start()")
        for t in types {
            precondition((channel != .control && channel != .heartbeat) || t >= 0x80 || MessageType.probe.contains(t),
                         "\(channel) types below 0x80 belong to the node runtime")
            precondition(handlers[Int(channel.rawValue) * 256 + Int(t)] == nil,
                         "\(channel) message type 0x\(String(t, radix: 16)) registered twice")
            handlers[Int(channel.rawValue) * 256 + Int(t)] = handler
        }
    }

    /// Called once, on the thread that first requests the stop, when the node starts stopping.
    /// Must not block (kick threads, set flags).
    public func onStop(_ body: @escaping (StopReason) -> Void) {
        precondition(!started, "Node.onStop must be called before start()")
        stopObservers.append(body)
    }

    /// Called when a peer is lost (before the stop it causes). Must not block.
    public func onPeerLost(_ body: @escaping (UInt32) -> Void) {
        precondition(!started, "Node.onPeerLost must be called before start()")
        lostObservers.append(body)
    }

    // MARK: start

    /// Starts the transport and waits until every peer is connected and authenticated, at most
    /// `timeouts.connect`. Throws an error naming the unreachable or refused node(s).
    public func start() throws {
        started = true
        try transport.start()
        let sum = monotonicNanoseconds().addingReportingOverflow(config.timeouts.connectNanoseconds)
        let deadline = sum.overflow ? UInt64.max : sum.partialValue  // checked: never traps
        let failure: String? = mon.withLock {
            while true {
                if let i = lost.indices.first(where: { lost[$0] && $0 != Int(id) }) {
                    return "node \(i) (\(address(UInt32(i)))): \(lostWhy[i] ?? "lost")"
                }
                if let reason { return "stopped while meeting peers: \(reason.message)" }
                let missing = peers.filter { !up[Int($0)] }
                if missing.isEmpty { return nil }
                if monotonicNanoseconds() >= deadline {
                    let names = missing.map { "node \($0) (\(address($0)))" }.joined(separator: ", ")
                    return "cannot reach \(names) within \(format(config.timeouts.connect)) s (timeouts.connect)"
                }
                mon.wait(until: deadline)
            }
        }
        if let failure {
            logger.error("\(failure)")
            // Tell the peers already met why this node gives up, so they name the same cause.
            let r: StopReason = mon.withLock {
                if reason == nil {
                    let missing = peers.first { !up[Int($0)] || lost[Int($0)] }
                    reason = StopReason(status: 1, message: failure, origin: id, lostNode: missing)
                    mon.broadcast()
                }
                return reason!
            }
            shutdown(r)
            throw ClusterError(failure)
        }
        let now = monotonicNanoseconds()
        mon.withLock {
            for i in lastHeard.indices { lastHeard[i] = now }
            running = true
        }
        logger.info("met every peer: \(peers.map { "node \($0)" }.joined(separator: ", "))")
        heartbeatThread = try OSThread(name: "heartbeat") { [self] in heartbeatLoop() }
    }

    private func address(_ node: UInt32) -> String {
        let n = config.nodes[Int(node)]
        return "\(n.address):\(n.port)"
    }

    // MARK: send

    /// Sends one message (the concatenation of `parts`) on `channel` to `node`. Returns a
    /// gvm_status (GVM_OK, GVM_ERR_CLOSED when the peer is gone, GVM_ERR_INVALID when too big).
    /// Any thread; never waits for the peer.
    @discardableResult
    public func send(channel: Channel, to node: UInt32, parts: [UnsafeRawBufferPointer], lane: UInt32? = nil) -> Int32 {
        if hasDeparted(node) { return GVM_OK.rawValue }   // it left: nothing is for it any more
        return transmit(channel: channel, to: node, parts: parts, lane: lane)
    }

    /// `send` without the departure check (LEAVE_ACK goes to a node already marked departed).
    private func transmit(channel: Channel, to node: UInt32, parts: [UnsafeRawBufferPointer], lane: UInt32? = nil) -> Int32 {
        withUnsafeTemporaryAllocation(of: gvm_iovec.self, capacity: parts.count + 1) { iov in
            iov[0] = gvm_iovec(base: headers + Int(channel.rawValue) * ChannelHeader.size, len: ChannelHeader.size)
            for (i, p) in parts.enumerated() { iov[i + 1] = gvm_iovec(base: p.baseAddress, len: p.count) }
            return transport.send(to: node, lane: lane ?? channel.defaultLane, UnsafeBufferPointer(iov))
        }
    }

    @discardableResult
    public func send(channel: Channel, to node: UInt32, _ bytes: [UInt8], lane: UInt32? = nil) -> Int32 {
        bytes.withUnsafeBytes { send(channel: channel, to: node, parts: [$0], lane: lane) }
    }

    /// Sends a gather list as given by a plugin (e.g. gvm_coherence_host.send).
    @discardableResult
    public func send(channel: Channel, to node: UInt32, iov: UnsafeBufferPointer<gvm_iovec>, lane: UInt32? = nil) -> Int32 {
        if hasDeparted(node) { return GVM_OK.rawValue }
        return withUnsafeTemporaryAllocation(of: gvm_iovec.self, capacity: iov.count + 1) { all in
            all[0] = gvm_iovec(base: headers + Int(channel.rawValue) * ChannelHeader.size, len: ChannelHeader.size)
            for (i, v) in iov.enumerated() { all[i + 1] = v }
            return transport.send(to: node, lane: lane ?? channel.defaultLane, UnsafeBufferPointer(all))
        }
    }

    // MARK: TransportEvents (transport threads)

    public func deliver(from node: UInt32, lane: UInt32, frame: UnsafeRawBufferPointer) {
        guard Int(node) < config.nodes.count, node != id else {
            // Never from a peer: this node does not send to itself through the transport.
            metrics.add(cMalformed, 1)
            logger.error("refused a frame claiming to come from node \(node)\(node == id ? " (this node itself)" : " (not a node of this cluster)")")
            return
        }
        metrics.add(cFramesIn, 1)
        metrics.add(cBytesIn, UInt64(frame.count))
        switch ChannelHeader.parse(frame) {
        case let .malformed(why):
            metrics.add(cMalformed, 1)
            logger.error("dropped a malformed frame from node \(node): \(why)")
        case let .message(channel, range):
            let payload = UnsafeRawBufferPointer(rebasing: frame[range])
            let type: UInt8 = payload.isEmpty ? 0 : payload[0]
            if (channel == .control || channel == .heartbeat) && type < 0x80 {
                runtimeMessage(channel, from: node, type: type, payload)
            } else if !payload.isEmpty, let h = handlers[Int(channel.rawValue) * 256 + Int(type)] {
                h(node, payload)
            } else {
                metrics.add(cUnhandled, 1)
                logger.debug("no handler for channel \(channel): dropped a frame from node \(node)")
            }
        }
    }

    public func peerState(_ node: UInt32, up isUp: Bool, reason why: String) {
        guard Int(node) < config.nodes.count, node != id else { return }
        if isUp {
            mon.withLock {
                up[Int(node)] = true
                lastHeard[Int(node)] = monotonicNanoseconds()
                mon.broadcast()
            }
            logger.info("node \(node) is connected")
        } else {
            peerGone(node, why)
        }
    }

    /// A peer is gone (transport report or heartbeat silence). Expected when it said STOP.
    private func peerGone(_ node: UInt32, _ why: String) {
        let report: Bool = mon.withLock {
            guard !lost[Int(node)] else { return false }
            if departed[Int(node)] {   // it left the cluster: its disconnect is expected
                lost[Int(node)] = true
                mon.broadcast()
                return false
            }
            lost[Int(node)] = true
            lostWhy[Int(node)] = why
            mon.broadcast()
            return !peerStopping[Int(node)] && reason == nil && started
        }
        guard report else { return }
        logger.error("lost node \(node): \(why)")
        for o in lostObservers { o(node) }
        if running {
            stop(StopReason(status: 1, message: "lost node \(node): \(why)", origin: id, lostNode: node))
        }
    }

    private func runtimeMessage(_ channel: Channel, from node: UInt32, type: UInt8, _ payload: UnsafeRawBufferPointer) {
        var r = MessageReader(payload)
        _ = r.u8()
        switch (channel, type) {
        case (.heartbeat, MessageType.Heartbeat.beat.rawValue):
            metrics.add(cBeats, 1)
            mon.withLock { lastHeard[Int(node)] = monotonicNanoseconds() }
        case (.control, MessageType.Control.stop.rawValue):
            guard let status = r.i32(), let origin = r.u32(), let lostNode = r.u32(), let message = r.text(),
                  Int(origin) < config.nodes.count, lostNode == UInt32.max || Int(lostNode) < config.nodes.count else {
                metrics.add(cMalformed, 1)
                logger.error("malformed STOP message from node \(node): dropped")
                return
            }
            // A STOP that says this node decided it: relayed back by a peer once this node is
            // stopping (harmless), or forged. Never a reason to start stopping.
            if origin == id && mon.withLock({ reason == nil }) {
                metrics.add(cMalformed, 1)
                logger.error("refused a STOP from node \(node) claiming to be decided by this node (node \(id)), which decided no stop: forged or corrupt")
                return
            }
            mon.withLock { peerStopping[Int(node)] = true; mon.broadcast() }
            send(channel: .control, to: node, [MessageType.Control.stopAck.rawValue])
            let lostID: UInt32? = lostNode == UInt32.max ? nil : lostNode
            let text: String
            if origin == node {
                text = status == 0 ? "node \(node) finished: \(message)" : "node \(node) failed: \(message)"
            } else {
                text = "node \(node) is stopping (decided by node \(origin)): \(message)"
            }
            stop(StopReason(status: status, message: text, origin: origin, lostNode: lostID))
        case (.control, MessageType.Control.stopAck.rawValue):
            mon.withLock { acked[Int(node)] = true; mon.broadcast() }
        case (.control, MessageType.Control.leave.rawValue):
            let fresh: Bool = mon.withLock {
                guard reason == nil, !departed[Int(node)] else { return false }
                departed[Int(node)] = true
                mon.broadcast()
                return true
            }
            if fresh { setDeparted(node) }
            // Acknowledged once recorded (even when stopping: the leaving node must not wait for
            // a peer that heard it).
            _ = [MessageType.Control.leaveAck.rawValue].withUnsafeBytes { transmit(channel: .control, to: node, parts: [$0]) }
            if fresh {
                logger.notice("node \(node) left the cluster (evacuated); the others keep running")
            }
        case (.control, MessageType.Control.leaveAck.rawValue):
            mon.withLock { leaveAcked[Int(node)] = true; mon.broadcast() }
        default:
            logger.warning("unknown \(channel) message type 0x\(String(type, radix: 16)) from node \(node): dropped")
        }
    }

    // MARK: heartbeats and failure detection

    private func heartbeatLoop() {
        // Checked conversions (the config's ranges keep both at most a day; never trap).
        let interval = max(config.timeouts.heartbeatNanoseconds, 1)
        let failure = config.timeouts.failureNanoseconds
        var seq: UInt64 = 0
        var next = monotonicNanoseconds()
        while true {
            let silent: [(UInt32, UInt64)]? = mon.withLock {
                while reason == nil && monotonicNanoseconds() < next { mon.wait(until: next) }
                if reason != nil { return nil }
                let now = monotonicNanoseconds()
                return peers.compactMap { p in
                    let i = Int(p)
                    guard !lost[i], !peerStopping[i], !departed[i], now > lastHeard[i], now - lastHeard[i] > failure else { return nil }
                    return (p, now - lastHeard[i])
                }
            }
            guard let silent else { return }
            for (p, quiet) in silent {
                peerGone(p, "no heartbeat for \(format(Double(quiet) / 1e9)) s "
                            + "(timeouts.failure \(format(config.timeouts.failure)) s): stopped, hung or unreachable")
            }
            seq += 1
            var w = MessageWriter(type: MessageType.Heartbeat.beat.rawValue)
            w.u64(seq)
            w.u64(monotonicNanoseconds())
            for p in peers where !mon.withLock({ lost[Int(p)] || departed[Int(p)] }) {
                send(channel: .heartbeat, to: p, w.bytes, lane: GVM_LANE_URGENT)
            }
            let sum = next.addingReportingOverflow(interval)
            next = sum.overflow ? UInt64.max : sum.partialValue
            let now = monotonicNanoseconds()
            if next < now { next = now.addingReportingOverflow(interval).overflow ? UInt64.max : now + interval }
        }
    }

    // MARK: stop

    /// Requests the stop of this node and, through it, of the cluster. Any thread; returns at
    /// once. The first reason wins; later calls are ignored.
    public func stop(_ r: StopReason) {
        let first: Bool = mon.withLock {
            guard reason == nil else { return false }
            reason = r
            mon.broadcast()
            return true
        }
        guard first else { return }
        if r.status == 0 { logger.info("stopping: \(r.message)") } else { logger.error("stopping: \(r.message)") }
        for o in stopObservers { o(r) }
    }

    public func stop(reason message: String, status: Int32 = 0) {
        stop(StopReason(status: status, message: message, origin: id))
    }

    /// True once `node` left the cluster (LEAVE received), or this node left. Any thread.
    public func hasDeparted(_ node: UInt32) -> Bool {
        node < 64 && departedMask.load(ordering: .acquiring) & (UInt64(1) << UInt64(node)) != 0
    }

    /// This node leaves the cluster (node evacuation): sends LEAVE to every live peer and waits
    /// until each acknowledged it (at most `timeout` seconds). Afterwards every peer takes this
    /// node's disconnect as a departure; call `stop` with status 0 next (no peer is told to
    /// stop). Throws naming the peers that did not answer. Any thread but a receive thread.
    public func leave(timeout: Double) throws {
        let targets: [UInt32] = try mon.withLock {
            guard reason == nil else { throw ClusterError("node \(id) is stopping: \(reason!.message)") }
            return peers.filter { up[Int($0)] && !lost[Int($0)] && !departed[Int($0)] }
        }
        for p in targets { send(channel: .control, to: p, [MessageType.Control.leave.rawValue]) }
        let deadline = monotonicNanoseconds() + UInt64(max(0, min(timeout, 3600)) * 1e9)
        let missing: [UInt32] = mon.withLock {
            while monotonicNanoseconds() < deadline && reason == nil
                    && targets.contains(where: { !leaveAcked[Int($0)] && !lost[Int($0)] }) {
                mon.wait(until: deadline)
            }
            return targets.filter { !leaveAcked[Int($0)] }
        }
        guard missing.isEmpty else {
            throw ClusterError("node(s) \(missing.map(String.init).joined(separator: ", ")) did not acknowledge that node \(id) leaves")
        }
        mon.withLock {
            hasLeft = true
            for p in peers { departed[Int(p)] = true }
        }
        for p in peers { setDeparted(p) }
        logger.notice("left the cluster: every peer recorded it")
    }

    private func setDeparted(_ node: UInt32) {
        guard node < 64 else { return }
        departedMask.bitwiseOr(UInt64(1) << UInt64(node), ordering: .sequentiallyConsistent)
    }

    /// Whether this node left the cluster (`leave` completed).
    public var leftCluster: Bool { mon.withLock { hasLeft } }

    /// [dist hook] True once `node` said it is stopping (its STOP arrived) or this node is
    /// stopping: a send to it that fails as closed is then expected, not a fault. Any thread.
    public func isStopping(peer node: UInt32) -> Bool {
        mon.withLock { reason != nil || (Int(node) < peerStopping.count && peerStopping[Int(node)]) }
    }

    /// The stop reason once a stop was requested.
    public var stopReason: StopReason? { mon.withLock { reason } }

    /// Blocks until a stop is requested, tells the peers, waits (briefly) for them to acknowledge,
    /// stops the transport and returns the reason. Main thread; call once after `start`.
    @discardableResult
    public func waitUntilStopped() -> StopReason {
        let r: StopReason = mon.withLock {
            while reason == nil { mon.wait() }
            return reason!
        }
        heartbeatThread?.join()
        let alreadyDone = mon.withLock { finished }
        if alreadyDone { return r }
        shutdown(r)
        return r
    }

    /// Sends STOP to every live peer, waits (at most 2 s) for each to acknowledge, send its own
    /// STOP or go, then stops the transport.
    private func shutdown(_ r: StopReason) {
        // Tell every live peer, unless it told us first (then it is stopping already).
        // The node whose loss caused the stop (possibly unknown to this node yet, when a peer
        // told us) will not answer: do not wait for it.
        let targets: [UInt32] = mon.withLock {
            hasLeft ? [] : peers.filter { up[Int($0)] && !lost[Int($0)] && !departed[Int($0)] && $0 != r.lostNode }
        }
        var w = MessageWriter(type: MessageType.Control.stop.rawValue)
        w.i32(r.status)
        w.u32(r.origin)
        w.u32(r.lostNode ?? UInt32.max)
        w.text(r.message)
        for p in targets where send(channel: .control, to: p, w.bytes) != GVM_OK.rawValue {
            mon.withLock { lost[Int(p)] = true }
        }
        let deadline = monotonicNanoseconds() + 2_000_000_000
        mon.withLock {
            while monotonicNanoseconds() < deadline
                    && targets.contains(where: { !acked[Int($0)] && !peerStopping[Int($0)] && !lost[Int($0)] }) {
                mon.wait(until: deadline)
            }
        }
        transport.stop()
        mon.withLock { finished = true }
    }
}

func format(_ seconds: Double) -> String {
    String(format: "%.1f", seconds)
}
