// A test double for the transport: several nodes in one process, joined by in-memory queues.
// Other areas (DSM, VM) use it to test protocols over real `Node`s without sockets:
//
//     let net = InMemoryNetwork(nodeCount: 3)
//     let nodes = try (0..<3).map { id in
//         try Node(config: cfg, id: UInt32(id), logger: log) { node in net.endpoint(UInt32(id), events: node) }
//     }
//
// It keeps the transport contract: frames on one lane between two nodes arrive in order, exactly
// once, on a delivery thread of the receiving node (never on the sender's thread), lanes are
// independent, `send` never waits for the receiver, and a node that stops (or is `cut`) is
// reported down to the others.

import PluginAPI

/// N in-process endpoints. Threading: any thread.
public final class InMemoryNetwork: @unchecked Sendable {
    public let nodeCount: Int
    private let mon = Monitor()
    private var endpoints: [InMemoryEndpoint?]

    public init(nodeCount: Int) {
        self.nodeCount = nodeCount
        endpoints = Array(repeating: nil, count: nodeCount)
    }

    /// The transport of node `id`, reporting to `events` (usually the Node being built).
    public func endpoint(_ id: UInt32, events: TransportEvents) -> FrameTransport {
        let e = InMemoryEndpoint(network: self, id: id, events: events)
        mon.withLock { endpoints[Int(id)] = e }
        return e
    }

    /// Simulates losing node `id` (a cable pulled): every other node is told it is down, and
    /// frames to or from it are refused from now on.
    public func cut(_ id: UInt32) {
        guard let e = mon.withLock({ endpoints[Int(id)] }) else { return }
        e.markDown()
        for other in started(except: id) { other.peerDown(id, "link to node \(id) cut (in-memory network)") }
    }

    func started(except id: UInt32) -> [InMemoryEndpoint] {
        mon.withLock { endpoints.compactMap { $0 }.filter { $0.id != id && $0.isLive } }
    }

    func endpoint(_ id: UInt32) -> InMemoryEndpoint? {
        guard Int(id) < nodeCount else { return nil }
        return mon.withLock { endpoints[Int(id)] }
    }
}

/// One node's side. Threading: `start`/`stop` on the node's main thread, `send` from any thread;
/// one delivery thread per lane calls `deliver`.
final class InMemoryEndpoint: FrameTransport, @unchecked Sendable {
    let id: UInt32
    private weak var network: InMemoryNetwork?
    private weak var events: TransportEvents?
    private let mon = Monitor()
    private var live = false
    private var stopping = false
    private var reportedUp: Set<UInt32> = []
    private var reportedDown: Set<UInt32> = []
    private var queues: [[(src: UInt32, bytes: [UInt8])]] = Array(repeating: [], count: Int(GVM_LANE_COUNT))
    private var threads: [OSThread] = []

    init(network: InMemoryNetwork, id: UInt32, events: TransportEvents) {
        self.network = network
        self.id = id
        self.events = events
    }

    var isLive: Bool { mon.withLock { live } }

    func start() throws {
        for lane in 0..<Int(GVM_LANE_COUNT) {
            let t = try OSThread(name: "mem-rx-\(id)-\(lane)") { [self] in deliveryLoop(lane) }
            threads.append(t)
        }
        mon.withLock { live = true }
        // Meet every endpoint already live, both ways.
        for other in network?.started(except: id) ?? [] {
            other.peerUp(id)
            peerUp(other.id)
        }
    }

    func stop() {
        let wasLive: Bool = mon.withLock {
            let w = live
            live = false
            stopping = true
            mon.broadcast()
            return w
        }
        for t in threads { t.join() }
        threads.removeAll()
        if wasLive {
            for other in network?.started(except: id) ?? [] { other.peerDown(id, "node \(id) closed its connections") }
        }
    }

    func markDown() { mon.withLock { live = false } }

    func peerUp(_ node: UInt32) {
        let report: Bool = mon.withLock {
            guard live, !stopping, !reportedDown.contains(node) else { return false }
            return reportedUp.insert(node).inserted
        }
        if report { events?.peerState(node, up: true, reason: "connected (in-memory)") }
    }

    func peerDown(_ node: UInt32, _ why: String) {
        let report: Bool = mon.withLock {
            guard !stopping else { return false }
            return reportedDown.insert(node).inserted
        }
        if report { events?.peerState(node, up: false, reason: why) }
    }

    func send(to node: UInt32, lane: UInt32, _ iov: UnsafeBufferPointer<gvm_iovec>) -> Int32 {
        guard node != id, lane < GVM_LANE_COUNT, let dst = network?.endpoint(node) else { return GVM_ERR_INVALID.rawValue }
        var bytes: [UInt8] = []
        for v in iov where v.len > 0 {
            if let base = v.base { bytes += UnsafeRawBufferPointer(start: base, count: v.len) }
        }
        guard bytes.count <= Int(GVM_MAX_FRAME) else { return GVM_ERR_INVALID.rawValue }
        let ok = mon.withLock { live && !reportedDown.contains(node) }
        guard ok else { return GVM_ERR_CLOSED.rawValue }
        return dst.enqueue(from: id, lane: Int(lane), bytes) ? GVM_OK.rawValue : GVM_ERR_CLOSED.rawValue
    }

    private func enqueue(from src: UInt32, lane: Int, _ bytes: [UInt8]) -> Bool {
        mon.withLock {
            guard live, !reportedDown.contains(src) else { return false }
            queues[lane].append((src, bytes))
            mon.broadcast()
            return true
        }
    }

    private func deliveryLoop(_ lane: Int) {
        while true {
            let batch: [(src: UInt32, bytes: [UInt8])]? = mon.withLock {
                while queues[lane].isEmpty && !stopping { mon.wait() }
                if stopping { return nil }
                let b = queues[lane]
                queues[lane].removeAll()
                return b
            }
            guard let batch else { return }
            for f in batch {
                f.bytes.withUnsafeBytes { events?.deliver(from: f.src, lane: UInt32(lane), frame: $0) }
            }
        }
    }
}
