// The honest floor of a DSM read miss, as `bench dsm` reports it: what a read miss can cost at
// the least between the same two node processes, over the same transport, measured the same way
// as the workload's own read misses (by the faulting thread, around one load, fault included).
//
// One sample: a thread loads a word of a missing page in a private userfaultfd-registered
// region; the kernel stops it and queues the fault; a handler thread (same wake mode as the
// guest memory's) reads the event and sends a 24-byte request (the size of an Ivy GetS) to the
// peer on the urgent lane; the peer answers with a 24-byte header and the 4096 page bytes on the
// bulk lane (the shape of an Ivy Data); the receiving transport thread copies them in with one
// UFFDIO_COPY, which wakes the thread. No coherence protocol, no page table, no statistics:
// everything a read miss needs and nothing else. `bench dsm` takes these samples between the
// workload's own reads (interleaved), so load from the machine falls on both alike.
//
// Control channel types 0xC3 request (seq:u64 page:u64, 24 bytes), 0xC4 reply (same header +
// 4096 bytes: each 8-byte word is seq ^ word index, so the thread checks the page it got).
//
// Threading: `answer` runs on transport receive threads (every node); `sample` on one measuring
// thread at a time; the handler thread is private. Every wait is bounded: a reply that does not
// come within `replyTimeout` is replaced by a zero page (the thread never hangs) and the sample
// fails naming the peer.

import CSystem
import Cluster
import Foundation
import Glibc
import GuestMemory
import Metrics
import PluginAPI
import UserfaultFD

public final class ReadMissFloor: @unchecked Sendable {
    static let request = MessageType.Control.benchFloorRequest.rawValue
    static let reply = MessageType.Control.benchFloorReply.rawValue
    public static let requestBytes = 24
    public static let replyBytes = 24 + 4096
    static let pages = 64
    static let replyTimeout: UInt64 = 5_000_000_000

    let node: Node
    // The measuring side (prepared on demand).
    private var region: UnsafeMutableRawPointer?
    private var uffd: Userfaultfd?
    private var handler: pthread_t?
    private let stopping = ManagedAtomicFlag()
    private let mon = Monitor()
    private var peer: UInt32 = 0
    private var wakeMode: HandlerWakeMode = .poll
    private var outstanding: (seq: UInt64, page: Int, since: UInt64)?
    private var failure: String?
    private var seq: UInt64 = 0
    private let zeros = UnsafeMutableRawPointer.allocate(byteCount: 4096, alignment: 4096)

    /// Registers the two floor types on the control channel (every node answers requests):
    /// before `node.start()`.
    public init(node: Node) {
        self.node = node
        zeros.initializeMemory(as: UInt8.self, repeating: 0, count: 4096)
        node.register(channel: .control, types: [Self.request, Self.reply]) { [weak self] from, p in self?.answer(from, p) }
    }

    deinit {
        close()
        zeros.deallocate()
    }

    static func word(_ seq: UInt64, _ i: Int) -> UInt64 { seq ^ UInt64(i) &* 0x9E37_79B9_7F4A_7C15 }

    func answer(_ from: UInt32, _ payload: UnsafeRawBufferPointer) {
        guard let type = payload.first else { return }
        var r = MessageReader(payload)
        _ = r.u8()
        for _ in 0..<7 { _ = r.u8() }
        guard let seq = r.u64(), let page = r.u64() else { return }
        if type == Self.request {
            guard payload.count == Self.requestBytes else { return }
            var out = [UInt8](repeating: 0, count: Self.replyBytes)
            out[0] = Self.reply
            out.withUnsafeMutableBytes { b in
                b.storeBytes(of: seq.littleEndian, toByteOffset: 8, as: UInt64.self)
                b.storeBytes(of: page.littleEndian, toByteOffset: 16, as: UInt64.self)
                for i in 0..<512 { b.storeBytes(of: Self.word(seq, i), toByteOffset: 24 + 8 * i, as: UInt64.self) }
            }
            _ = node.send(channel: .control, to: from, out, lane: GVM_LANE_BULK)
        } else if type == Self.reply {
            guard payload.count == Self.replyBytes else { return }
            install(seq: seq, page: page, bytes: payload.baseAddress! + 24)
        }
    }

    private func install(seq: UInt64, page: UInt64, bytes: UnsafeRawPointer) {
        let ok: Bool = mon.withLock {
            guard let o = outstanding, o.seq == seq, UInt64(o.page) == page else { return false }
            outstanding = nil
            return true
        }
        guard ok, let region, let uffd else { return }
        do {
            try uffd.copy(to: region + Int(page) * 4096, from: bytes, length: 4096, writeProtect: false, wake: true)
        } catch {
            mon.withLock { failure = failure ?? "UFFDIO_COPY of the floor's reply: \(error)" }
        }
    }

    /// Prepares the measuring side: a private region of `pages` pages under userfaultfd, its
    /// handler thread in `wakeMode`, round trips to `peer`.
    public func prepare(peer: UInt32, wakeMode: HandlerWakeMode) throws {
        precondition(region == nil, "ReadMissFloor.prepare called twice")
        self.peer = peer
        self.wakeMode = wakeMode
        let bytes = Self.pages * 4096
        guard let p = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), p != MAP_FAILED else {
            throw ClusterError("floor: mmap of \(bytes) bytes: \(String(cString: strerror(errno)))")
        }
        region = p
        let u = try Userfaultfd(features: [])
        try u.register(p, length: bytes, mode: .missing)
        uffd = u
        let ctx = Unmanaged.passRetained(self).toOpaque()
        var tid = pthread_t()
        let rc = pthread_create(&tid, nil, { arg in
            let me = Unmanaged<ReadMissFloor>.fromOpaque(arg!).takeRetainedValue()
            me.handlerLoop()
            return nil
        }, ctx)
        guard rc == 0 else {
            Unmanaged<ReadMissFloor>.fromOpaque(ctx).release()
            throw ClusterError("floor: cannot start its fault-handler thread: \(String(cString: strerror(rc)))")
        }
        handler = tid
    }

    /// The handler thread: reads fault events (poll, or spin then poll, as the guest memory's
    /// handlers do) and sends one request per fault; releases a fault whose reply is overdue.
    private func handlerLoop() {
        guard let uffd, let region else { return }
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: 16 * Userfaultfd.messageSize, alignment: 8)
        defer { buffer.deallocate() }
        var fds = [pollfd(fd: uffd.fd, events: Int16(POLLIN), revents: 0)]
        var spinUntil: UInt64 = 0
        while !stopping.isSet {
            let n = (try? uffd.readEvents(into: buffer, capacity: 16)) ?? 0
            if n == 0 {
                releaseOverdue()
                if case .spin(let budget) = wakeMode {
                    let now = monotonicNanoseconds()
                    if spinUntil == 0 { spinUntil = now + budget }
                    if now < spinUntil { gvm_cpu_relax(); continue }
                }
                spinUntil = 0
                _ = fds.withUnsafeMutableBufferPointer { poll($0.baseAddress, 1, 50) }
                continue
            }
            spinUntil = 0
            for i in 0..<n {
                guard case .pageFault(let address, _, _, _) = Userfaultfd.event(in: buffer, at: i) else { continue }
                let page = Int((address - UInt64(UInt(bitPattern: region))) / 4096)
                guard page >= 0, page < Self.pages else { continue }
                let s: UInt64? = mon.withLock {
                    guard let o = outstanding, o.page == page else { return nil }
                    return o.seq
                }
                guard let s else { continue }   // a spurious or repeated event: the reply wakes it
                var req = [UInt8](repeating: 0, count: Self.requestBytes)
                req[0] = Self.request
                req.withUnsafeMutableBytes { b in
                    b.storeBytes(of: s.littleEndian, toByteOffset: 8, as: UInt64.self)
                    b.storeBytes(of: UInt64(page).littleEndian, toByteOffset: 16, as: UInt64.self)
                }
                let rc = node.send(channel: .control, to: peer, req, lane: GVM_LANE_URGENT)
                if rc != GVM_OK.rawValue {
                    mon.withLock { failure = failure ?? "floor request to node \(peer): \(String(cString: gvm_status_name(rc)))" }
                }
            }
        }
    }

    /// A fault whose reply is overdue (or whose request failed) gets zeros, so its thread returns.
    private func releaseOverdue() {
        guard let region, let uffd else { return }
        let page: Int? = mon.withLock {
            guard let o = outstanding else { return nil }
            guard failure != nil || monotonicNanoseconds() - o.since > Self.replyTimeout else { return nil }
            failure = failure ?? "no floor reply from node \(peer) within \(Self.replyTimeout / 1_000_000_000) s"
            outstanding = nil
            return o.page
        }
        if let page { try? uffd.copy(to: region + page * 4096, from: zeros, length: 4096, writeProtect: false, wake: true) }
    }

    /// One thread-observed read miss against the floor: ns from before the load to after it.
    public func sample() throws -> UInt64 {
        guard let region else { throw ClusterError("floor: not prepared") }
        seq &+= 1
        let s = seq
        let page = Int(s % UInt64(Self.pages))
        let p = region + page * 4096
        mon.withLock { outstanding = (s, page, monotonicNanoseconds()) }
        let t0 = monotonicNanoseconds()
        let v = gvm_ivy_load_acquire64(p)
        let t1 = monotonicNanoseconds()
        let failed = mon.withLock { failure }
        try? Userfaultfd.dontNeed(p, length: 4096)   // the next sample on this page faults again
        if let failed { throw ClusterError(failed) }
        guard v == Self.word(s, 0) else {
            throw ClusterError("floor: page from node \(peer) holds 0x\(String(v, radix: 16)), expected reply \(s)")
        }
        return t1 - t0
    }

    /// `count` samples in a row (after `warmup` untimed ones).
    public func samples(_ count: Int, warmup: Int = 20) throws -> [UInt64] {
        for _ in 0..<warmup { _ = try sample() }
        return try (0..<count).map { _ in try sample() }
    }

    /// Stops the handler thread and unmaps the region. Idempotent.
    public func close() {
        stopping.set()
        if let h = handler { pthread_join(h, nil); handler = nil }
        if let r = region { munmap(r, Self.pages * 4096); region = nil }
    }
}

/// A flag set once, read from any thread.
final class ManagedAtomicFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    func set() { lock.withLock { value = true } }
    var isSet: Bool { lock.withLock { value } }
}
