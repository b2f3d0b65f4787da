// I/O forwarding: a PIO/MMIO access by a local vCPU to a device homed on another node is sent to
// that node on the `io` channel and the vCPU waits for the reply (synchronous, as the guest sees
// a device access complete before its next instruction). A string (`rep ins/outs`) access travels
// whole in one message. The home node serves requests on one server thread, in arrival order, so
// the output of a device (the UART) keeps the order in which vCPUs wrote it.
//
// Threading:
// - `call` runs on vCPU threads (any number at once); each waits on its own semaphore.
// - `handle` runs on transport receive threads: it never blocks (replies complete a waiter,
//   requests are queued for the server thread).
// - the server thread is the only one that touches local devices for remote callers.
// - `failAll` (stop) from any thread: every waiter and every later call fails at once.

import Cluster
import Foundation
import Logging
import Machine
import Metrics
import Synchronization

/// Why a forwarded access did not complete.
public struct IOForwardError: Error, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}

/// The client and server halves of I/O forwarding for one node.
public final class IOForwarder: @unchecked Sendable {
    let node: Node
    let logger: Logger
    let timeout: Double
    /// Resolves a local access for the server (`serve(bus:)` sets it to the machine's bus).
    var serve: ((_ space: IOSpaceKind, _ address: UInt64, _ itemSize: Int, _ data: UnsafeMutableRawBufferPointer, _ isWrite: Bool) -> IOReplyStatus)?

    final class Waiter {
        let sem = DispatchSemaphore(value: 0)
        var status: IOReplyStatus?
        var data: [UInt8] = []
        var failure: String?
    }

    private let lock = NSLock()
    private var pending: [UInt64: Waiter] = [:]
    private var nextID: UInt64 = 1
    private var failed: String?

    // Server queue.
    private let queueCond = NSCondition()
    private var queue: [(from: UInt32, id: UInt64, space: UInt8, address: UInt64, size: UInt8, count: UInt32, write: Bool, data: [UInt8])] = []
    private var serverStopped = false
    private var serverThread: Thread?
    /// The node whose access the server thread is serving (read and written by that thread only).
    private var servingFrom: UInt32?
    private var serverTID: pthread_t?
    /// Ranges whose device moved to another node (node evacuation): accesses still reaching
    /// this node are forwarded there by the server thread. (space, base, length, new home)
    private var redirects: [(space: IOSpaceKind, base: UInt64, length: UInt64, home: UInt32)] = []
    /// Work to run on the server thread between two accesses (DeviceMove: the save).
    private var tasks: [() -> Void] = []

    let cCalls: UInt32, cServed: UInt32, cBytes: UInt32, hRoundTrip: UInt32
    let metrics: MetricsRegistry

    /// Registers the I/O forwarding messages (IO_REQ, IO_REP) on the io channel: call before
    /// `node.start()`. `timeout`: how long a vCPU waits for a reply.
    public init(node: Node, metrics: MetricsRegistry, timeout: Double, logger: Logger) {
        self.node = node
        self.metrics = metrics
        self.timeout = timeout
        self.logger = logger
        cCalls = metrics.counter("io.forwarded")
        cServed = metrics.counter("io.served_for_peers")
        cBytes = metrics.counter("io.forwarded_bytes")
        hRoundTrip = metrics.histogram("io.forward_round_trip")
        node.register(channel: .io, types: [IOMessageType.request.rawValue, IOMessageType.reply.rawValue]) { [weak self] from, p in
            guard let self else { return }
            handle(from: from, p)
        }
    }

    /// Serves peers' accesses with the local devices of `bus` (forwarding stubs excluded: a
    /// request for one means the device maps disagree; it is answered all-ones and logged once).
    public func serve(bus: IOBus) {
        let warned = Mutex<Set<UInt64>>([])
        serve = { [logger] space, address, size, data, isWrite in
            // A device moved in (DeviceMove) answers through its stub's local instance.
            if let r = bus.lookup(space, address), let stub = r.device as? RemoteDevice, let local = stub.localTarget {
                local.io(space: space, offset: address - r.base, data: data, isWrite: isWrite)
                return .ok
            }
            guard let r = bus.lookup(space, address), !(r.device is RemoteDevice) else {
                if !isWrite { data.initializeMemory(as: UInt8.self, repeating: 0xFF) }
                if warned.withLock({ $0.insert(UInt64(space.rawValue) << 60 | address).inserted }) {
                    logger.warning("forwarded \(space) access 0x\(String(address, radix: 16)) matches no device here (the device maps disagree): \(isWrite ? "ignored" : "reads all-ones")")
                }
                return .noDevice
            }
            r.device.io(space: space, offset: address - r.base, data: data, isWrite: isWrite)
            return .ok
        }
    }

    // MARK: client

    /// Forwards one access (count items of itemSize bytes in `data`) to `home` and waits for the
    /// reply. On a read, `data` is filled (all-ones when the home node has no device there).
    func call(home: UInt32, space: IOSpaceKind, address: UInt64, itemSize: Int, data: UnsafeMutableRawBufferPointer,
              isWrite: Bool) throws {
        let w = Waiter()
        let id: UInt64 = try lock.withLock {
            if let failed { throw IOForwardError(message: failed) }
            let id = nextID
            nextID += 1
            pending[id] = w
            return id
        }
        let count = data.count / itemSize
        let msg = IOMessage.request(id: id, space: UInt8(space.rawValue), address: address, itemSize: UInt8(itemSize),
                                    count: UInt32(count), isWrite: isWrite, data: isWrite ? Array(UnsafeRawBufferPointer(data)) : [])
        let start = monotonicNanoseconds()
        let rc = node.send(channel: .io, to: home, msg.encode())
        if rc != 0 {
            _ = lock.withLock { pending.removeValue(forKey: id) }
            throw IOForwardError(message: "cannot forward \(space) 0x\(String(address, radix: 16)) to node \(home): send failed (status \(rc))")
        }
        if w.sem.wait(timeout: .now() + timeout) == .timedOut {
            _ = lock.withLock { pending.removeValue(forKey: id) }
            throw IOForwardError(message: "\(space) access 0x\(String(address, radix: 16)) forwarded to node \(home) got no reply within \(timeout) s")
        }
        if let f = w.failure { throw IOForwardError(message: f) }
        metrics.add(cCalls, 1)
        metrics.add(cBytes, UInt64(data.count))
        metrics.record(hRoundTrip, nanoseconds: monotonicNanoseconds() - start)
        if !isWrite {
            if w.status == .ok && w.data.count == data.count {
                w.data.withUnsafeBytes { data.copyMemory(from: $0) }
            } else {
                data.initializeMemory(as: UInt8.self, repeating: 0xFF)
            }
        }
    }

    /// Fails every waiting and future call (the node is stopping). Any thread.
    public func failAll(_ why: String) {
        let waiters: [Waiter] = lock.withLock {
            if failed == nil { failed = why }
            let w = Array(pending.values)
            pending.removeAll()
            return w
        }
        for w in waiters { w.failure = why; w.sem.signal() }
        queueCond.lock()
        serverStopped = true
        queueCond.broadcast()
        queueCond.unlock()
    }

    /// Whether the server thread is stopping (a task that waits checks it).
    public var isStopping: Bool { queueCond.lock(); defer { queueCond.unlock() }; return serverStopped }

    // MARK: receive (transport threads)

    func handle(from: UInt32, _ payload: UnsafeRawBufferPointer) {
        let m: IOMessage
        do { m = try IOMessage.decode(payload) } catch {
            logger.error("dropped an io message from node \(from): \(error)")
            return
        }
        switch m {
        case .deviceMap, .ready, .cpuFeatures:
            logger.error("io message \(m) from node \(from) reached the I/O forwarder: dropped")
        case let .reply(id, status, data):
            guard let w = lock.withLock({ pending.removeValue(forKey: id) }) else {
                logger.warning("io reply \(id) from node \(from) matches no waiting access (late or duplicate): dropped")
                return
            }
            w.status = IOReplyStatus(rawValue: status) ?? .noDevice
            w.data = data
            w.sem.signal()
        case let .request(id, space, address, size, count, write, data):
            queueCond.lock()
            if serverStopped {
                queueCond.unlock()
                node.send(channel: .io, to: from, IOMessage.reply(id: id, status: IOReplyStatus.stopping.rawValue, data: []).encode())
                return
            }
            queue.append((from, id, space, address, size, count, write, data))
            queueCond.signal()
            queueCond.unlock()
        }
    }

    // MARK: server

    public func startServer() {
        let t = Thread { [self] in serverLoop() }
        t.name = "io-server"
        t.stackSize = 1 << 20
        serverThread = t
        t.start()
    }

    /// The node whose vCPU made the access the calling thread is serving, when the caller is
    /// the server thread inside a device access; nil on any other thread.
    public func originOfCurrentAccess() -> UInt32? {
        guard let t = serverTID, pthread_equal(t, pthread_self()) != 0 else { return nil }
        return servingFrom
    }

    /// Runs `body` on the server thread between two accesses and waits for it: while it runs no
    /// peer's access is served (they queue). False when the server stopped first.
    public func runBetweenAccesses(_ body: @escaping () -> Void) -> Bool {
        let done = DispatchSemaphore(value: 0)
        queueCond.lock()
        if serverStopped || serverThread == nil { queueCond.unlock(); return false }
        tasks.append { body(); done.signal() }
        queueCond.signal()
        queueCond.unlock()
        done.wait()
        return true
    }

    /// From now on, accesses to [base, base+length) reaching this node go on to `home` (the
    /// device's new home). Call on the server thread (inside `runBetweenAccesses`).
    public func redirect(space: IOSpaceKind, base: UInt64, length: UInt64, to home: UInt32) {
        lock.withLock { redirects.append((space, base, length, home)) }
    }

    private func redirectHome(_ space: IOSpaceKind, _ address: UInt64) -> UInt32? {
        lock.withLock { redirects.first { $0.space == space && address >= $0.base && address - $0.base < $0.length }?.home }
    }

    private func serverLoop() {
        serverTID = pthread_self()
        while true {
            queueCond.lock()
            while queue.isEmpty && tasks.isEmpty && !serverStopped { queueCond.wait() }
            if !tasks.isEmpty {
                let t = tasks.removeFirst()
                queueCond.unlock()
                t()
                continue
            }
            if queue.isEmpty && serverStopped { queueCond.unlock(); return }
            let r = queue.removeFirst()
            queueCond.unlock()
            let size = Int(r.size)
            var buf = r.write ? r.data : [UInt8](repeating: 0, count: size * Int(r.count))
            var status = IOReplyStatus.noDevice
            servingFrom = r.from
            defer { servingFrom = nil }
            if let space = IOSpaceKind(rawValue: UInt32(r.space)), let home = redirectHome(space, r.address) {
                // The device moved: pass the access on whole and answer with its result.
                status = buf.withUnsafeMutableBytes { b in
                    do {
                        try call(home: home, space: space, address: r.address, itemSize: size, data: b, isWrite: r.write)
                        return .ok
                    } catch {
                        logger.error("access 0x\(String(r.address, radix: 16)) of node \(r.from) to a device moved to node \(home): \(error)")
                        return .stopping
                    }
                }
            } else if let space = IOSpaceKind(rawValue: UInt32(r.space)), let serve {
                status = buf.withUnsafeMutableBytes { b in
                    var st = IOReplyStatus.ok
                    for i in 0..<Int(r.count) {
                        let item = UnsafeMutableRawBufferPointer(rebasing: b[(i * size)..<((i + 1) * size)])
                        let s = serve(space, r.address, size, item, r.write)
                        if s != .ok { st = s }
                    }
                    return st
                }
            }
            metrics.add(cServed, 1)
            let reply = IOMessage.reply(id: r.id, status: status.rawValue, data: r.write || status != .ok ? [] : buf)
            node.send(channel: .io, to: r.from, reply.encode())
        }
    }
}

/// A device homed on another node, as seen on this node's bus: every access is forwarded.
/// Its home changes when the device moves (node evacuation, DeviceMove.swift): to another node
/// (`home`), or to this node (`localTarget`: the moved-in instance, offsets from `base`).
final class RemoteDevice: IOStringDevice, @unchecked Sendable {
    let name: String
    let base: UInt64
    let forwarder: IOForwarder
    /// Stops the VM when forwarding fails (the home node is gone or silent).
    let onFailure: (String) -> Void
    private let routeLock = NSLock()
    private var currentHome: UInt32
    private var local: IODevice?

    init(name: String, home: UInt32, base: UInt64, forwarder: IOForwarder, onFailure: @escaping (String) -> Void) {
        self.name = name; self.currentHome = home; self.base = base; self.forwarder = forwarder; self.onFailure = onFailure
    }

    var home: UInt32 { routeLock.withLock { currentHome } }
    var localTarget: IODevice? { routeLock.withLock { local } }
    func route(to home: UInt32) { routeLock.withLock { currentHome = home } }
    func routeHere(_ device: IODevice) { routeLock.withLock { local = device } }

    func io(space: IOSpaceKind, offset: UInt64, data: UnsafeMutableRawBufferPointer, isWrite: Bool) {
        ioString(space: space, offset: offset, itemSize: data.count, data: data, isWrite: isWrite)
    }

    func ioString(space: IOSpaceKind, offset: UInt64, itemSize: Int, data: UnsafeMutableRawBufferPointer, isWrite: Bool) {
        let (home, local) = routeLock.withLock { (currentHome, self.local) }
        if let local {
            for i in 0..<(data.count / itemSize) {
                local.io(space: space, offset: offset, data: UnsafeMutableRawBufferPointer(rebasing: data[(i * itemSize)..<((i + 1) * itemSize)]),
                         isWrite: isWrite)
            }
            return
        }
        do {
            try forwarder.call(home: home, space: space, address: base + offset, itemSize: itemSize, data: data, isWrite: isWrite)
        } catch {
            if !isWrite { data.initializeMemory(as: UInt8.self, repeating: 0xFF) }
            onFailure("device '\(name)' on node \(home): \(error)")
        }
    }
}
