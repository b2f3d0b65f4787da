// DMA forwarding: device DMA runs on the node that asked for the I/O.
//
// A device homed on node D serves an access forwarded from a vCPU on node V (IOForwarder's
// server thread). Its DMA would pin the guest buffers on D, so under the DSM every buffer page
// moves V -> D (device writes) and back D -> V (the guest reads what the device wrote): two page
// transfers per page, each a protocol round trip. With DMA forwarding the device's bulk DMA
// (at least `threshold` bytes) for such an access is shipped to V instead, in frames of at most
// `chunk` bytes pipelined on the io channel, and V's DMA server copies it with its own pins —
// coherent by the same DSM, but the pages stay where the guest uses them. Small DMA (ring
// indices, descriptors, status bytes) keeps pinning on D: ring pages move as the DSM decides.
// DMA that no vCPU access started (virtio-net's receive thread) always pins locally.
//
// Messages (io channel, MessageType.IO.dmaRequest / .dmaReply, little endian):
//   DMA_REQ  type:u8 id:u64 gpa:u64 len:u32 write:u8 [data: len bytes when write]
//   DMA_REP  type:u8 id:u64 status:u8 [data: len bytes for a successful read]
//   status: 0 ok, 1 outside guest RAM / pin failed, 2 the node is stopping
//
// Threading: `transfer` runs on the thread doing the DMA (the io server thread); replies complete
// its waiter on transport receive threads (never blocking); requests are served on this
// forwarder's own server thread, so a node serving DMA never waits on its own io server.

import Cluster
import Foundation
import Logging
import Machine
import Metrics

public final class DMAForwarder: DMARouter, @unchecked Sendable {
    public static let chunk = 60 * 1024
    let node: Node
    let ram: any GuestRAM
    let io: IOForwarder
    let timeout: Double
    let threshold: Int
    let logger: Logger
    let metrics: MetricsRegistry
    let cForwarded: UInt32, cBytes: UInt32, cServed: UInt32

    final class Waiter {
        let sem = DispatchSemaphore(value: 0)
        var status: UInt8 = 0
        var data: [UInt8] = []
    }
    private let lock = NSLock()
    private var pending: [UInt64: Waiter] = [:]
    private var nextID: UInt64 = 1
    private var failed: String?
    private let queueCond = NSCondition()
    private var queue: [(from: UInt32, id: UInt64, gpa: UInt64, len: Int, write: Bool, data: [UInt8])] = []
    private var stopped = false

    /// Registers DMA_REQ/DMA_REP on the io channel (before `node.start()`). `threshold`: the
    /// smallest DMA that is forwarded.
    public init(node: Node, ram: any GuestRAM, io: IOForwarder, metrics: MetricsRegistry, timeout: Double,
                threshold: Int = 2048, logger: Logger) {
        self.node = node; self.ram = ram; self.io = io; self.timeout = timeout
        self.threshold = threshold; self.logger = logger; self.metrics = metrics
        cForwarded = metrics.counter("io.dma_forwarded")
        cBytes = metrics.counter("io.dma_forwarded_bytes")
        cServed = metrics.counter("io.dma_served_for_peers")
        node.register(channel: .io, types: [MessageType.IO.dmaRequest.rawValue, MessageType.IO.dmaReply.rawValue]) { [weak self] from, p in
            self?.handle(from: from, p)
        }
    }

    /// The node a DMA of `length` bytes should run on: the requesting vCPU's node when this
    /// thread is serving a forwarded access and the DMA is bulk; nil = pin here.
    public func target(length: Int) -> UInt32? {
        guard length >= threshold, let origin = io.originOfCurrentAccess(), origin != node.id else { return nil }
        return origin
    }

    /// Runs a DMA on `target`: reads into `read`, or writes `write`, in pipelined chunks.
    public func transfer(on target: UInt32, gpa: UInt64, read: UnsafeMutableRawBufferPointer?, write: UnsafeRawBufferPointer?) throws {
        let total = read?.count ?? write?.count ?? 0
        var waiters: [(Waiter, Int, Int)] = []
        var offset = 0
        while offset < total {
            let n = min(DMAForwarder.chunk, total - offset)
            let w = Waiter()
            let id: UInt64 = try lock.withLock {
                if let failed { throw IOForwardError(message: failed) }
                let id = nextID
                nextID += 1
                pending[id] = w
                return id
            }
            var msg = [MessageType.IO.dmaRequest.rawValue]
            msg.reserveCapacity(22 + (write != nil ? n : 0))
            putLE(&msg, id, 8); putLE(&msg, gpa &+ UInt64(offset), 8); putLE(&msg, UInt64(n), 4)
            msg.append(write != nil ? 1 : 0)
            if let write { msg += UnsafeRawBufferPointer(rebasing: write[offset..<offset + n]) }
            if node.send(channel: .io, to: target, msg) != 0 {
                _ = lock.withLock { pending.removeValue(forKey: id) }
                throw IOForwardError(message: "cannot forward DMA at 0x\(String(gpa, radix: 16)) to node \(target): send failed")
            }
            waiters.append((w, offset, n))
            offset += n
        }
        var failure: String?
        for (w, off, n) in waiters {
            if w.sem.wait(timeout: .now() + timeout) == .timedOut {
                failure = failure ?? "DMA at 0x\(String(gpa, radix: 16)) forwarded to node \(target) got no reply within \(timeout) s"
                continue
            }
            if w.status != 0 {
                failure = failure ?? "DMA at 0x\(String(gpa &+ UInt64(off), radix: 16))+\(n) on node \(target) failed (status \(w.status))"
            } else if let read {
                guard w.data.count == n else { failure = failure ?? "DMA reply of \(w.data.count) bytes, expected \(n)"; continue }
                w.data.withUnsafeBytes { UnsafeMutableRawBufferPointer(rebasing: read[off..<off + n]).copyMemory(from: $0) }
            }
        }
        if let failure {
            lock.withLock { for (w, _, _) in waiters { pending = pending.filter { $0.value !== w } } }
            throw IOForwardError(message: failure)
        }
        metrics.add(cForwarded, 1)
        metrics.add(cBytes, UInt64(total))
    }

    /// Fails every waiting and future transfer and stops the server (the node is stopping).
    public func failAll(_ why: String) {
        let ws: [Waiter] = lock.withLock {
            if failed == nil { failed = why }
            let w = Array(pending.values)
            pending.removeAll()
            return w
        }
        for w in ws { w.status = 2; w.sem.signal() }
        queueCond.lock(); stopped = true; queueCond.broadcast(); queueCond.unlock()
    }

    func handle(from: UInt32, _ p: UnsafeRawBufferPointer) {
        guard p.count >= 1 else { return }
        if p[0] == MessageType.IO.dmaReply.rawValue {
            guard p.count >= 10 else { return logger.error("dropped a short DMA reply from node \(from)") }
            let id = getLE(p, 1, 8)
            guard let w = lock.withLock({ pending.removeValue(forKey: id) }) else { return }
            w.status = p[9]
            w.data = Array(p[10...])
            w.sem.signal()
            return
        }
        guard p.count >= 22 else { return logger.error("dropped a short DMA request from node \(from)") }
        let id = getLE(p, 1, 8), gpa = getLE(p, 9, 8), len = Int(getLE(p, 17, 4)), write = p[21] != 0
        guard len <= DMAForwarder.chunk, !write || p.count == 22 + len else {
            return logger.error("dropped a malformed DMA request from node \(from) (len \(len), \(p.count) bytes)")
        }
        queueCond.lock()
        if stopped {
            queueCond.unlock()
            reply(to: from, id: id, status: 2, data: [])
            return
        }
        queue.append((from, id, gpa, len, write, write ? Array(p[22...]) : []))
        queueCond.signal()
        queueCond.unlock()
    }

    func reply(to: UInt32, id: UInt64, status: UInt8, data: [UInt8]) {
        var msg = [MessageType.IO.dmaReply.rawValue]
        putLE(&msg, id, 8)
        msg.append(status)
        msg += data
        _ = node.send(channel: .io, to: to, msg)
    }

    public func startServer() {
        let t = Thread { [self] in
            while true {
                queueCond.lock()
                while queue.isEmpty && !stopped { queueCond.wait() }
                if queue.isEmpty { queueCond.unlock(); return }
                let r = queue.removeFirst()
                queueCond.unlock()
                metrics.add(cServed, 1)
                do {
                    if r.write {
                        try r.data.withUnsafeBytes { src in try ram.withPinned(gpa: r.gpa, length: r.len, write: true) { $0.copyMemory(from: src) } }
                        reply(to: r.from, id: r.id, status: 0, data: [])
                    } else {
                        let d = try ram.withPinned(gpa: r.gpa, length: r.len, write: false) { Array(UnsafeRawBufferPointer($0)) }
                        reply(to: r.from, id: r.id, status: 0, data: d)
                    }
                } catch {
                    reply(to: r.from, id: r.id, status: 1, data: [])
                }
            }
        }
        t.name = "dma-server"
        t.stackSize = 1 << 20
        t.start()
    }
}

private func putLE(_ b: inout [UInt8], _ v: UInt64, _ n: Int) {
    for i in 0..<n { b.append(UInt8(truncatingIfNeeded: v >> (8 * UInt64(i)))) }
}

private func getLE(_ p: UnsafeRawBufferPointer, _ o: Int, _ n: Int) -> UInt64 {
    (0..<n).reduce(UInt64(0)) { $0 | UInt64(p[o + $1]) << (8 * UInt64($1)) }
}
