import Glibc
import CSystem
import PluginKit

// transport-tcp: frames between every pair of nodes over TCP.
//
// One TCP connection per lane per peer (GVM_LANE_URGENT and GVM_LANE_BULK), so urgent frames
// (heartbeats, control) never wait behind bulk page traffic in a socket buffer. The node with
// the lower id connects to the higher one, retrying while the peer starts, until
// `connect_timeout`. Every connection begins with the handshake described in Wire.swift
// (magic + version, cluster name, claimed node id, lane, a random challenge each way, proofs via
// the host's auth_sign/auth_verify). A malformed, truncated or oversized frame closes that
// connection with a logged error; it never reaches the host. Before the handshake completes the
// connection is anonymous and its failure affects no peer; after it, the peer is reported down.
//
// Settings (all optional; durations and sizes in the grammar of giantvm_units.h: a bare number is
// seconds for a duration, bytes for a size):
//   connect_timeout    how long to retry connecting to a peer that is not up yet (default 10s, 1ms-24h)
//   handshake_timeout  how long a new connection may take to finish its handshake (default 5s, 1ms-24h)
//   retry_interval     pause between connection attempts (default 100ms, 1ms-1h)
//   send_queue_limit   bytes queued per connection before send returns GVM_ERR_NOMEM (default 64MiB; 2 frames to 16GiB)
//   listen_address     address to bind (default: this node's `address` from the config)
//   nodelay            TCP_NODELAY on every connection (default true)
//   max_pending_handshakes  unauthenticated connections handled at once (default 32)
//
// Unauthenticated connections (strangers) cannot keep peers out: while all
// `max_pending_handshakes` slots are taken, a new connection evicts the oldest one that has not
// even sent its hello, else (when it comes from the address of a node that connects to this one)
// the oldest one from an address that is no such node's; one address that is no peer's holds at
// most a quarter of the slots. A refused or evicted connection gets a verdict naming the cause,
// so a peer that cannot get in says why ("... too many unauthenticated connections ...").

let entry = TransportPluginEntry(TCPTransport.self, name: "transport-tcp", version: "0.1.0",
                                 summary: "TCP between every pair of nodes, one connection per lane, HMAC handshake, authenticated frames with a key")

@_cdecl("giantvm_plugin_entry")
public func giantvm_plugin_entry() -> UnsafeRawPointer { entry.pointer }

/// Threading: `start`/`stop` on main; `send` from any thread. Internal threads: one accept
/// thread, one connector thread per (higher peer, lane) until connected, one detached handshake
/// thread per accepted connection (counted in `handshaking`), and the reader/writer pair of every established `Connection`. `mon`
/// guards every mutable field below; host callbacks are made without it held.
final class TCPTransport: TransportPlugin {
    let services: HostServices
    let host: TransportHost
    let cluster: ClusterInfo
    let selfID: UInt32
    let connectTimeout: UInt64
    let handshakeTimeout: UInt64
    let retryInterval: UInt64
    let queueLimit: Int
    let listenAddress: String
    let noDelay: Bool
    let maxPendingHandshakes: Int

    private let mon = Monitor()
    private var stopping = false
    private var started = false
    private var listenFD: Int32 = -1
    private var wake: [Int32] = [-1, -1]
    private var lanes: [[Connection?]]
    private var down: [Bool]
    private var upReported: [Bool]
    private var threads: [OSThread] = []
    private var connections: [Connection] = []
    private var handshakeFDs: Set<Int32> = []
    /// Accepted connections still in their handshake, by socket (a subset of handshakeFDs).
    private var pending: [Int32: PendingConnection] = [:]
    /// Numeric addresses of the nodes that connect to this one (lower ids).
    private var expectedAddresses: Set<String> = []

    struct PendingConnection {
        var since: UInt64
        var address: String
        var expected: Bool
        var helloSeen = false
    }
    /// Accepted connections whose (detached) handshake thread has not ended yet.
    private var handshaking = 0

    /// Every setting (the list at the top of this file), for the ABI 3 descriptor.
    static let settingInfo: [SettingInfo] = [
        SettingInfo("connect_timeout", default: "10s", "how long to retry connecting to a peer that is not up yet (1ms to 24h)"),
        SettingInfo("handshake_timeout", default: "5s", "how long a new connection may take to finish its handshake (1ms to 24h)"),
        SettingInfo("retry_interval", default: "100ms", "pause between connection attempts (1ms to 1h)"),
        SettingInfo("send_queue_limit", default: "64MiB",
                    "bytes queued per connection before send returns GVM_ERR_NOMEM (2 frames to 16GiB)"),
        SettingInfo("listen_address", default: nil, "address to bind (default: this node's `address` from the config)"),
        SettingInfo("nodelay", default: "true", "TCP_NODELAY on every connection (true/false)"),
        SettingInfo("max_pending_handshakes", default: "32", "unauthenticated connections handled at once (1 to 1024)"),
    ]
    static var pluginDescription: String? {
        "one TCP connection per lane per peer (urgent, bulk); the lower id connects to the higher; "
            + "handshake: magic + version, cluster, node id, lane, a challenge each way, proofs via auth_sign/auth_verify; "
            + "with a cluster key every frame carries a MAC (auth_mac, sequence-numbered)"
    }

    init(services: HostServices, host: TransportHost, cluster: ClusterInfo, settings: Settings) throws {
        try settings.allowOnly(declared: Self.settingInfo)
        /// Durations: the shared grammar (giantvm_units.h; bare number = seconds) and each
        /// setting's range (TCPDurationSetting, Wire.swift).
        func duration(_ setting: TCPDurationSetting) throws -> UInt64 {
            guard let text = settings.values[setting.rawValue] else { return setting.defaultNanoseconds }
            switch setting.parse(text) {
            case .success(let ns): return ns
            case .failure(let e): throw PluginError(e.message)
            }
        }
        self.services = services
        self.host = host
        self.cluster = cluster
        self.selfID = cluster.selfID
        connectTimeout = try duration(.connectTimeout)
        handshakeTimeout = try duration(.handshakeTimeout)
        retryInterval = try duration(.retryInterval)
        queueLimit = Int(try settings.size("send_queue_limit", default: 64 << 20,
                                           range: UInt64(2 * Int(GVM_MAX_FRAME + 8))...(1 << 34)))
        noDelay = try settings.bool("nodelay", default: true)
        maxPendingHandshakes = try settings.int("max_pending_handshakes", default: 32, range: 1...1024)
        guard Int(selfID) < cluster.nodes.count else {
            throw PluginError("node id \(selfID) is not in the cluster (\(cluster.nodes.count) nodes)")
        }
        listenAddress = settings.string("listen_address", default: cluster.nodes[Int(selfID)].address)
        guard cluster.name.utf8.count <= maxClusterName else {
            throw PluginError("cluster name longer than \(maxClusterName) bytes")
        }
        let n = cluster.nodes.count
        lanes = Array(repeating: Array(repeating: nil, count: Int(GVM_LANE_COUNT)), count: n)
        down = Array(repeating: false, count: n)
        upReported = Array(repeating: false, count: n)
        // Resolve every address now so a typo is reported at create time.
        for node in cluster.nodes { _ = try SocketAddress.resolve(node.address, port: node.port) }
        gvm_net_ignore_sigpipe()
    }

    deinit {
        for fd in wake where fd >= 0 { close(fd) }
    }

    // MARK: start / stop

    func start() throws {
        let me = cluster.nodes[Int(selfID)]
        let addr = try SocketAddress.resolve(listenAddress, port: me.port)
        listenFD = try listenSocket(addr)
        var expected: Set<String> = []
        for peer in cluster.nodes where peer.id < selfID {
            if let a = try? SocketAddress.resolve(peer.address, port: peer.port), let h = a.numericHost { expected.insert(h) }
        }
        mon.withLock { expectedAddresses = expected }
        var fds: [Int32] = [-1, -1]
        guard gvm_net_pipe(&fds) == 0 else { throw PluginError("pipe: \(errnoText())") }
        wake = fds
        services.log(.info, "node \(selfID) listening on \(addr)")
        mon.withLock { started = true }
        let acceptThread = try OSThread(name: "tcp-accept") { [self] in acceptLoop() }
        mon.withLock { threads.append(acceptThread) }
        for peer in cluster.nodes where peer.id > selfID {
            for lane in 0..<GVM_LANE_COUNT {
                let t = try OSThread(name: "tcp-conn-\(peer.id)-\(lane)") { [self] in connectLoop(peer, lane: lane) }
                mon.withLock { threads.append(t) }
            }
        }
    }

    func stop() {
        let (ts, conns): ([OSThread], [Connection]) = mon.withLock {
            stopping = true
            mon.broadcast()
            return (threads, connections)
        }
        if wake[1] >= 0 { var b: UInt8 = 1; _ = write(wake[1], &b, 1) }
        mon.withLock { for fd in handshakeFDs { Glibc.shutdown(fd, Int32(SHUT_RDWR)) } }
        for c in conns { c.shutdownNow() }
        for t in ts { t.join() }
        // Accepted connections still in their handshake: their sockets are shut down, so each
        // thread ends promptly (it may still install its connection, shut down below).
        mon.withLock {
            for fd in handshakeFDs { Glibc.shutdown(fd, Int32(SHUT_RDWR)) }
            while handshaking > 0 { mon.wait() }
        }
        // Handshake threads may have established connections while we were stopping: take the
        // final list after every other thread is gone.
        let all = mon.withLock { connections }
        for c in all { c.shutdownNow() }
        for c in all { c.join() }
        mon.withLock { connections.removeAll(); threads.removeAll() }
        if listenFD >= 0 { close(listenFD); listenFD = -1 }
    }

    // MARK: send

    func send(to node: UInt32, lane: UInt32, _ iov: UnsafeBufferPointer<gvm_iovec>) -> PageStatus {
        guard Int(node) < cluster.nodes.count, node != selfID, lane < GVM_LANE_COUNT else { return .invalid }
        var total = 0
        for v in iov { total += v.len }
        guard total <= maxFramePayload else { return .invalid }
        mon.lock()
        let conn = lanes[Int(node)][Int(lane)]
        let isDown = down[Int(node)] || stopping
        mon.unlock()
        guard let conn, !isDown else { return .closed }
        return PageStatus(raw: conn.enqueue(iov, total: total))
    }

    // MARK: peers

    /// A peer is gone: close its lanes and report it once (unless stopping).
    private func peerFailed(_ peer: UInt32, _ reason: String) {
        let conns: [Connection]? = mon.withLock {
            guard !stopping, !down[Int(peer)] else { return nil }
            down[Int(peer)] = true
            return lanes[Int(peer)].compactMap { $0 }
        }
        guard let conns else { return }
        for c in conns { c.shutdownNow() }
        services.log(.info, "node \(peer) is down: \(reason)")
        host.peerDown(peer, reason: reason)
    }

    /// Installs an authenticated connection; reports the peer up once all its lanes are in.
    private func establish(fd: Int32, peer: UInt32, lane: UInt32, auth: FrameAuth?) {
        if noDelay { setNoDelay(fd) }
        let conn = Connection(fd: fd, peer: peer, lane: lane, queueLimit: queueLimit, auth: auth)
        let outcome: String? = mon.withLock {
            if stopping { return "stopping" }
            if down[Int(peer)] { return "node \(peer) is already down" }
            if lanes[Int(peer)][Int(lane)] != nil { return "duplicate connection for node \(peer) lane \(lane)" }
            lanes[Int(peer)][Int(lane)] = conn
            connections.append(conn)
            return nil
        }
        if let outcome {
            if outcome != "stopping" { services.log(.warning, "closing new connection: \(outcome)") }
            close(fd)
            return
        }
        do {
            try conn.start(onFrame: { [host] frame in host.deliver(from: peer, lane: lane, frame: frame) },
                           onFailure: { [weak self] why in self?.peerFailed(peer, why) })
        } catch {
            peerFailed(peer, "\(error)")
            return
        }
        let reportUp: Bool = mon.withLock {
            guard !stopping, !down[Int(peer)], !upReported[Int(peer)],
                  lanes[Int(peer)].allSatisfy({ $0 != nil }) else { return false }
            upReported[Int(peer)] = true
            return true
        }
        if reportUp {
            services.log(.info, "node \(peer) connected (\(GVM_LANE_COUNT) lanes)")
            host.peerUp(peer)
        }
    }

    // MARK: connecting (lower id -> higher id)

    private func connectLoop(_ peer: NodeInfo, lane: UInt32) {
        let deadline = monotonicNanoseconds() + connectTimeout
        var lastError = "not tried"
        var attempts = 0
        while true {
            if mon.withLock({ stopping || down[Int(peer.id)] }) { return }
            attempts += 1
            do {
                let addr = try SocketAddress.resolve(peer.address, port: peer.port)
                let left = deadline > monotonicNanoseconds() ? deadline - monotonicNanoseconds() : 0
                let fd = try connectSocket(addr, timeoutMs: Int32(max(1, min(left / 1_000_000, 1000))))
                guard track(fd) else { close(fd); return }
                let result = handshakeAsConnector(fd: fd, peer: peer.id, lane: lane)
                untrack(fd)
                switch result {
                case let .success(auth):
                    establish(fd: fd, peer: peer.id, lane: lane, auth: auth)
                    return
                case let .failure(err):
                    close(fd)
                    if mon.withLock({ stopping }) { return }
                    if err.final {
                        services.log(.error, "handshake with node \(peer.id) at \(addr) (lane \(lane)) failed: \(err)")
                        peerFailed(peer.id, "handshake with node \(peer.id) at \(addr) failed: \(err)")
                        return
                    }
                    // Closed or timed out mid-handshake (e.g. the peer was busy): try again.
                    services.log(.warning, "handshake with node \(peer.id) at \(addr) (lane \(lane)) failed, retrying: \(err)")
                    lastError = "handshake failed: \(err)"
                }
            } catch {
                lastError = "\(error)"
            }
            let now = monotonicNanoseconds()
            if now >= deadline {
                peerFailed(peer.id, "cannot connect to node \(peer.id) at \(peer.address):\(peer.port): \(lastError) "
                           + "(\(attempts) attempts over \(Double(connectTimeout) / 1e9) s)")
                return
            }
            let until = min(deadline, now + retryInterval)
            mon.withLock { while !stopping && monotonicNanoseconds() < until { _ = mon.wait(until: until) } }
        }
    }

    // MARK: accepting

    private func acceptLoop() {
        while true {
            var p = [pollfd(fd: listenFD, events: Int16(POLLIN), revents: 0),
                     pollfd(fd: wake[0], events: Int16(POLLIN), revents: 0)]
            let n = poll(&p, 2, -1)
            if mon.withLock({ stopping }) { break }
            if n < 0 { if gvm_errno() == EINTR { continue }; services.log(.error, "poll: \(errnoText())"); break }
            guard p[0].revents != 0 else { continue }
            let fd = gvm_net_accept(listenFD)
            if fd < 0 {
                let e = gvm_errno()
                if e == EINTR || e == EAGAIN || e == ECONNABORTED { continue }
                services.log(.error, "accept on port \(cluster.nodes[Int(selfID)].port): \(errnoText(e))")
                if e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM { usleep(100_000); continue }
                break
            }
            let from = peerName(fd)
            let refusal: String? = admit(fd)
            if let refusal {
                services.log(.warning, "refused connection from \(from): \(refusal)")
                // Tell it why (a peer that cannot get in then names the cause); never blocks.
                let frame = encodeFrame(kind: .verdict, payload: encodeVerdict(ok: false, reason: "node \(selfID) refused the connection: \(refusal)"))
                _ = frame.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL) | Int32(MSG_DONTWAIT)) }
                close(fd)
                continue
            }
            do {
                // Detached: a port scan must not pile up unjoined threads. stop() waits for
                // `handshaking` to reach 0 instead of joining them.
                _ = try OSThread(name: "tcp-handshake", detached: true) { [self] in
                    defer { handshakeEnded() }
                    let result = handshakeAsAcceptor(fd: fd)
                    untrack(fd)
                    switch result {
                    case let .success((peer, lane, auth)):
                        establish(fd: fd, peer: peer, lane: lane, auth: auth)
                    case let .failure(err):
                        if !mon.withLock({ stopping }) {
                            services.log(.error, "refused connection from \(from): \(err)")
                        }
                        close(fd)
                    }
                }
            } catch {
                untrack(fd)
                close(fd)
                handshakeEnded()
                services.log(.error, "\(error)")
            }
        }
    }

    /// Decides whether an accepted connection gets a handshake slot, evicting a stranger when
    /// the slots are full (see the header). On success the socket is tracked and counted in
    /// `handshaking`; else returns why it was refused.
    private func admit(_ fd: Int32) -> String? {
        let address = peerHost(fd) ?? "unknown"
        let now = monotonicNanoseconds()
        return mon.withLock {
            if stopping { return "this node is stopping" }
            let isExpected = expectedAddresses.contains(address)
            let perAddress = max(1, maxPendingHandshakes / 4)
            if !isExpected && pending.values.filter({ $0.address == address }).count >= perAddress {
                return "too many unauthenticated connections from \(address) (\(perAddress), a quarter of max_pending_handshakes)"
            }
            // Threads of evicted connections end promptly; never more than twice the slots.
            guard handshaking < 2 * maxPendingHandshakes else {
                return "too many unauthenticated connections in progress (max_pending_handshakes \(maxPendingHandshakes))"
            }
            if pending.count >= maxPendingHandshakes {
                let silent = pending.filter { !$0.value.helloSeen }.min { $0.value.since < $1.value.since }
                let stranger = isExpected ? pending.filter { !$0.value.expected }.min { $0.value.since < $1.value.since } : nil
                guard let (victim, info) = silent ?? stranger else {
                    return "too many unauthenticated connections in progress (max_pending_handshakes \(maxPendingHandshakes))"
                }
                // Still open: a handshake thread removes its socket from `pending` before closing it.
                pending[victim] = nil
                services.log(.warning, "evicted an unauthenticated connection from \(info.address) "
                             + "(\(info.helloSeen ? "in its handshake" : "silent") for \((now &- info.since) / 1_000_000) ms): "
                             + "all \(maxPendingHandshakes) handshake slots (max_pending_handshakes) are taken")
                Glibc.shutdown(victim, Int32(SHUT_RDWR))
            }
            handshaking += 1
            handshakeFDs.insert(fd)
            pending[fd] = PendingConnection(since: now, address: address, expected: isExpected)
            return nil
        }
    }

    private func handshakeEnded() {
        mon.withLock {
            handshaking -= 1
            mon.broadcast()
        }
    }

    /// Registers a socket under handshake so stop() can shut it down; false when stopping.
    private func track(_ fd: Int32) -> Bool {
        mon.withLock {
            guard !stopping else { return false }
            handshakeFDs.insert(fd)
            return true
        }
    }

    private func untrack(_ fd: Int32) {
        mon.withLock {
            _ = handshakeFDs.remove(fd)
            pending[fd] = nil
        }
    }

    // MARK: handshake

    private func readHandshakeFrame(_ fd: Int32, _ expected: FrameKind, deadline: UInt64) throws -> [UInt8] {
        let header = try readExact(fd, frameHeaderSize, deadline: deadline)
        switch parseFrame(header, maxPayload: 1024) {
        case let .malformed(why): throw HandshakeError(why)
        case .frame, .needMore: break
        }
        let kind = FrameKind(rawValue: header[6])!
        let length = Int(header[0]) | Int(header[1]) << 8 | Int(header[2]) << 16 | Int(header[3]) << 24
        if kind == .verdict && expected != .verdict {
            // Refused before the handshake (e.g. no free slot): the verdict says why. Retryable.
            let body = try? readExact(fd, length, deadline: deadline)
            let why = body.flatMap { try? decodeVerdict($0).get().1 } ?? "no reason given"
            throw HandshakeError(why)
        }
        guard kind == expected else { throw HandshakeError("expected a \(expected) frame, got \(kind)") }
        do {
            return try readExact(fd, length, deadline: deadline)
        } catch {
            throw HandshakeError("truncated \(expected) frame: \(error)")
        }
    }

    private func sendFrame(_ fd: Int32, _ kind: FrameKind, _ payload: [UInt8]) throws {
        try writeAll(fd, encodeFrame(kind: kind, payload: payload))
    }

    private func handshakeAsConnector(fd: Int32, peer: UInt32, lane: UInt32) -> Result<FrameAuth?, HandshakeError> {
        let deadline = monotonicNanoseconds() + handshakeTimeout
        let nonce = randomBytes(nonceSize)
        do {
            try sendFrame(fd, .hello, Hello(lane: UInt8(lane), sender: selfID, receiver: peer, nonce: nonce,
                                            cluster: cluster.name).encode())
            let theirs = try Hello.decode(readHandshakeFrame(fd, .hello, deadline: deadline)).get()
            guard theirs.sender == peer, theirs.receiver == selfID, theirs.lane == UInt8(lane) else {
                throw HandshakeError("peer answered as node \(theirs.sender) (lane \(theirs.lane)) for node \(theirs.receiver); expected node \(peer) lane \(lane)")
            }
            let proof = host.sign(challenge: authMaterial(cluster: cluster.name, signer: selfID, verifier: peer,
                                                          lane: UInt8(lane), verifierNonce: theirs.nonce, signerNonce: nonce))
            try sendFrame(fd, .proof, encodeProof(proof))
            let (ok, why) = try decodeVerdict(readHandshakeFrame(fd, .verdict, deadline: deadline)).get()
            guard ok else { throw HandshakeError("node \(peer) refused this node: \(why)", final: true) }
            let theirProof = try decodeProof(readHandshakeFrame(fd, .proof, deadline: deadline)).get()
            let material = authMaterial(cluster: theirs.cluster, signer: peer, verifier: selfID, lane: UInt8(lane),
                                        verifierNonce: nonce, signerNonce: theirs.nonce)
            guard host.verify(peer: peer, cluster: theirs.cluster, challenge: material, proof: theirProof) else {
                try? sendFrame(fd, .verdict, encodeVerdict(ok: false, reason: "authentication failed"))
                throw HandshakeError("node \(peer) failed authentication (wrong cluster or key)", final: true)
            }
            let auth = try FrameAuth.make(host: host, keyed: !proof.isEmpty, cluster: cluster.name, selfID: selfID,
                                          peer: peer, lane: UInt8(lane), ownNonce: nonce, peerNonce: theirs.nonce)
            try sendFrame(fd, .verdict, encodeVerdict(ok: true, reason: ""))
            return .success(auth)
        } catch let e as HandshakeError {
            return .failure(e)
        } catch {
            return .failure(HandshakeError("\(error)"))
        }
    }

    private func handshakeAsAcceptor(fd: Int32) -> Result<(UInt32, UInt32, FrameAuth?), HandshakeError> {
        let deadline = monotonicNanoseconds() + handshakeTimeout
        let nonce = randomBytes(nonceSize)
        do {
            let theirs = try Hello.decode(readHandshakeFrame(fd, .hello, deadline: deadline)).get()
            mon.withLock { pending[fd]?.helloSeen = true }
            let peer = theirs.sender
            let lane = UInt32(theirs.lane)
            guard lane < GVM_LANE_COUNT else { throw HandshakeError("unknown lane \(lane)") }
            guard theirs.receiver == selfID else {
                throw HandshakeError("peer wanted node \(theirs.receiver), this is node \(selfID)")
            }
            guard Int(peer) < cluster.nodes.count, peer < selfID else {
                throw HandshakeError("claimed node id \(peer) is not a lower-numbered node of this cluster")
            }
            try sendFrame(fd, .hello, Hello(lane: theirs.lane, sender: selfID, receiver: peer, nonce: nonce,
                                            cluster: cluster.name).encode())
            let theirProof = try decodeProof(readHandshakeFrame(fd, .proof, deadline: deadline)).get()
            let material = authMaterial(cluster: theirs.cluster, signer: peer, verifier: selfID, lane: theirs.lane,
                                        verifierNonce: nonce, signerNonce: theirs.nonce)
            guard host.verify(peer: peer, cluster: theirs.cluster, challenge: material, proof: theirProof) else {
                try? sendFrame(fd, .verdict, encodeVerdict(ok: false, reason: "authentication failed (wrong cluster or key)"))
                throw HandshakeError("peer claiming node \(peer) of cluster '\(theirs.cluster)' failed authentication")
            }
            let busy: Bool = mon.withLock { lanes[Int(peer)][Int(lane)] != nil || down[Int(peer)] }
            guard !busy else {
                try? sendFrame(fd, .verdict, encodeVerdict(ok: false, reason: "node \(peer) lane \(lane) is already connected"))
                throw HandshakeError("node \(peer) lane \(lane) is already connected (or down)")
            }
            try sendFrame(fd, .verdict, encodeVerdict(ok: true, reason: ""))
            let proof = host.sign(challenge: authMaterial(cluster: cluster.name, signer: selfID, verifier: peer,
                                                          lane: theirs.lane, verifierNonce: theirs.nonce, signerNonce: nonce))
            try sendFrame(fd, .proof, encodeProof(proof))
            let (ok, why) = try decodeVerdict(readHandshakeFrame(fd, .verdict, deadline: deadline)).get()
            guard ok else { throw HandshakeError("node \(peer) refused this node: \(why)") }
            let auth = try FrameAuth.make(host: host, keyed: !proof.isEmpty, cluster: cluster.name, selfID: selfID,
                                          peer: peer, lane: theirs.lane, ownNonce: nonce, peerNonce: theirs.nonce)
            return .success((peer, lane, auth))
        } catch let e as HandshakeError {
            return .failure(e)
        } catch {
            return .failure(HandshakeError("\(error)"))
        }
    }
}

/// The numeric address (no port) of the remote end of a socket; IPv4-mapped IPv6 as IPv4.
func peerHost(_ fd: Int32) -> String? {
    let name = peerName(fd)
    guard name != "unknown peer", let colon = name.lastIndex(of: ":") else { return nil }
    return normalizeHost(String(name[..<colon]))
}

func normalizeHost(_ h: String) -> String {
    h.hasPrefix("::ffff:") && h.contains(".") ? String(h.dropFirst(7)) : h
}

extension SocketAddress {
    /// The address as a numeric host (no port), as `peerHost` reports a connection's source.
    var numericHost: String? {
        var host = [CChar](repeating: 0, count: 64)
        let rc = withSockaddr { sa, len in getnameinfo(sa, len, &host, 64, nil, 0, NI_NUMERICHOST) }
        return rc == 0 ? normalizeHost(String(cString: host)) : nil
    }
}

/// "address:port" of the remote end of a socket, for log messages.
func peerName(_ fd: Int32) -> String {
    var ss = sockaddr_storage()
    var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
    let ok = withUnsafeMutablePointer(to: &ss) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getpeername(fd, $0, &len) }
    } == 0
    guard ok else { return "unknown peer" }
    var host = [CChar](repeating: 0, count: 64)
    var serv = [CChar](repeating: 0, count: 16)
    let rc = withUnsafePointer(to: &ss) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            getnameinfo($0, len, &host, 64, &serv, 16, NI_NUMERICHOST | NI_NUMERICSERV)
        }
    }
    guard rc == 0 else { return "unknown peer" }
    return "\(String(cString: host)):\(String(cString: serv))"
}
