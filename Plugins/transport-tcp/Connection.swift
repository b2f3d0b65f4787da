import Glibc
import CSystem
import PluginKit

/// One established, authenticated TCP connection to one peer on one lane.
///
/// Threading: a dedicated reader thread parses frames and hands each whole data frame to
/// `onFrame` (borrowed bytes); a dedicated writer thread drains the send queue with sendmsg
/// (scatter-gather over several queued frames). `enqueue` may be called from any thread: it only
/// copies into the queue under a short lock and never waits for the peer, so two nodes whose
/// socket buffers are full cannot deadlock through their receive threads. When the queue is
/// empty and no thread is writing, `enqueue` first tries one non-blocking sendmsg itself (no copy,
/// no hand-off); `writing` keeps that fast path and the writer thread from interleaving bytes.
/// `onFailure` runs at
/// most once, on the reader or writer thread. `shutdownNow` (any thread) wakes both threads;
/// `join` (main thread, after shutdownNow) waits for them and closes the socket.
///
/// With a cluster key (`auth` set), every data frame carries a MAC over its sequence number, header
/// and payload (Wire.swift): the send number is taken and the MAC computed under `mon`, in the
/// order frames reach the socket; the reader checks each frame against the number it expects next
/// and fails the connection on a mismatch, before anything reaches the host.
final class Connection {
    let fd: Int32
    let peer: UInt32
    let lane: UInt32
    private let queueLimit: Int
    private let mon = Monitor()
    private var queue: [UnsafeMutableRawBufferPointer] = []
    private var queuedBytes = 0
    private var closed = false
    private var failed = false
    /// A thread (the writer, or a sender on the fast path) is inside sendmsg on this socket.
    private var writing = false
    private var reader: OSThread?
    private var writer: OSThread?
    private var onFailure: ((String) -> Void)?
    private let auth: FrameAuth?
    /// Number of the next data frame sent (guarded by `mon`).
    private var sendSeq: UInt64 = 0

    init(fd: Int32, peer: UInt32, lane: UInt32, queueLimit: Int, auth: FrameAuth? = nil) {
        self.fd = fd; self.peer = peer; self.lane = lane; self.queueLimit = queueLimit; self.auth = auth
    }

    /// Starts the reader and writer threads.
    func start(onFrame: @escaping (UnsafeRawBufferPointer) -> Void, onFailure: @escaping (String) -> Void) throws {
        self.onFailure = onFailure
        reader = try OSThread(name: "tcp-rx-\(peer)-\(lane)") { [self] in readLoop(onFrame) }
        writer = try OSThread(name: "tcp-tx-\(peer)-\(lane)") { [self] in writeLoop() }
    }

    /// Sends one frame (header + concatenated iov) or copies it into the queue; never waits for
    /// the peer. Fast path: when nothing is queued and no thread is writing, the caller tries one
    /// non-blocking sendmsg straight from its buffers (no copy, no thread hand-off); whatever the
    /// socket does not take at once is copied into the queue for the writer thread. Returns a
    /// gvm_status.
    func enqueue(_ iov: UnsafeBufferPointer<gvm_iovec>, total: Int) -> Int32 {
        let macLength = auth == nil ? 0 : frameMacSize
        let size = frameHeaderSize + total + macLength
        var header = encodeFrameHeader(kind: .data, length: total + macLength)
        var mac = [UInt8](repeating: 0, count: macLength)
        /// Takes the next send number and writes the frame's MAC (with `mon` held).
        func seal() {
            guard let auth else { return }
            header.withUnsafeBytes { h in
                withUnsafeTemporaryAllocation(of: gvm_iovec.self, capacity: iov.count + 1) { all in
                    all[0] = gvm_iovec(base: h.baseAddress, len: frameHeaderSize)
                    for (i, e) in iov.enumerated() { all[i + 1] = e }
                    mac.withUnsafeMutableBytes { auth.seal(seq: sendSeq, UnsafeBufferPointer(all), into: $0.baseAddress!) }
                }
            }
            sendSeq &+= 1
        }
        var sent = 0
        var tried = false
        mon.lock()
        if closed {
            mon.unlock()
            return GVM_ERR_CLOSED.rawValue
        }
        if !writing && queue.isEmpty && iov.count < 63 {
            // The queue is empty, so the frame fits under queueLimit: it is sent now or queued.
            seal()
            writing = true
            tried = true
            mon.unlock()
            sent = header.withUnsafeMutableBytes { h in
                withUnsafeTemporaryAllocation(of: iovec.self, capacity: iov.count + 2) { v in
                    v[0] = iovec(iov_base: h.baseAddress, iov_len: frameHeaderSize)
                    var n = 1
                    for e in iov where e.len > 0 {
                        v[n] = iovec(iov_base: UnsafeMutableRawPointer(mutating: e.base), iov_len: e.len)
                        n += 1
                    }
                    return mac.withUnsafeMutableBytes { m in
                        if m.count > 0 { v[n] = iovec(iov_base: m.baseAddress, iov_len: m.count); n += 1 }
                        var msg = msghdr()
                        msg.msg_iov = v.baseAddress
                        msg.msg_iovlen = n
                        let w = sendmsg(fd, &msg, Int32(MSG_NOSIGNAL) | Int32(MSG_DONTWAIT))
                        return max(w, 0)  // errors: the writer thread retries and reports them
                    }
                }
            }
            mon.lock()
            writing = false
            if sent == size {
                if !queue.isEmpty { mon.broadcast() }
                mon.unlock()
                return GVM_OK.rawValue
            }
        } else {
            if queuedBytes + size > queueLimit {
                mon.unlock()
                return GVM_ERR_NOMEM.rawValue
            }
            seal()
        }
        return queueRest(iov, header: header, mac: mac, size: size, sent: sent, fromFastPath: tried)
    }

    /// Slow path of `enqueue` (called with `mon` held, releases it): copies what was not sent.
    private func queueRest(_ iov: UnsafeBufferPointer<gvm_iovec>, header: [UInt8], mac: [UInt8], size: Int,
                           sent: Int, fromFastPath: Bool) -> Int32 {
        // A frame from the fast path goes first in the queue, sent or not: frames queued meanwhile
        // by other threads were numbered (and must be sent) after it.
        let rest = size - sent
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: rest, alignment: 8)
        var out = 0, pos = 0
        func copy(_ base: UnsafeRawPointer, _ len: Int) {
            // Copies the part of [pos, pos+len) at or after `sent`.
            let from = max(sent, pos)
            if from < pos + len {
                (buf.baseAddress! + out).copyMemory(from: base + (from - pos), byteCount: pos + len - from)
                out += pos + len - from
            }
            pos += len
        }
        header.withUnsafeBytes { copy($0.baseAddress!, frameHeaderSize) }
        for v in iov where v.len > 0 {
            if let base = v.base { copy(base, v.len) }
        }
        mac.withUnsafeBytes { if $0.count > 0 { copy($0.baseAddress!, $0.count) } }
        if fromFastPath { queue.insert(buf, at: 0) } else { queue.append(buf) }
        queuedBytes += rest
        mon.broadcast()
        mon.unlock()
        return GVM_OK.rawValue
    }

    /// Marks the connection closed and wakes both threads (shutdown(2) unblocks read/sendmsg).
    func shutdownNow() {
        mon.withLock {
            closed = true
            mon.broadcast()
        }
        Glibc.shutdown(fd, Int32(SHUT_RDWR))
    }

    /// Joins both threads, frees what is still queued and closes the socket. After shutdownNow.
    func join() {
        reader?.join()
        writer?.join()
        mon.withLock {
            for b in queue { b.deallocate() }
            queue.removeAll()
            queuedBytes = 0
        }
        close(fd)
    }

    private func fail(_ reason: String) {
        let cb: ((String) -> Void)? = mon.withLock {
            let first = !failed && !closed
            failed = true
            closed = true
            mon.broadcast()
            return first ? onFailure : nil
        }
        // The reason is reported before the socket is shut: the peer sees the close at once and
        // closes its other lanes, and this node must already have recorded why (an
        // authentication failure, not "closed by the peer" on another lane).
        cb?(reason)
        Glibc.shutdown(fd, Int32(SHUT_RDWR))
    }

    private func readLoop(_ onFrame: (UnsafeRawBufferPointer) -> Void) {
        let cap = 256 * 1024
        let buf = UnsafeMutableRawPointer.allocate(byteCount: cap, alignment: 16)
        defer { buf.deallocate() }
        var filled = 0
        var receiveSeq: UInt64 = 0
        let macLength = auth == nil ? 0 : frameMacSize
        while true {
            // Hand over every whole frame in the buffer.
            var start = 0
            parsing: while true {
                let view = UnsafeRawBufferPointer(start: buf + start, count: filled - start)
                switch parseFrame(view, maxPayload: maxFramePayload + macLength) {
                case let .frame(kind, payload, end):
                    guard kind == .data else {
                        fail("protocol error from node \(peer): \(kind) frame after the handshake")
                        return
                    }
                    var body = payload
                    if let auth {
                        guard payload.count >= macLength else {
                            fail("protocol error from node \(peer) (lane \(lane)): frame of \(payload.count) bytes has no MAC")
                            return
                        }
                        body = payload.lowerBound..<payload.upperBound - macLength
                        let ok = auth.check(seq: receiveSeq,
                                            header: UnsafeRawBufferPointer(rebasing: view[0..<frameHeaderSize]),
                                            payload: UnsafeRawBufferPointer(rebasing: view[body]),
                                            mac: UnsafeRawBufferPointer(rebasing: view[body.upperBound..<payload.upperBound]))
                        guard ok else {
                            fail("frame \(receiveSeq) from node \(peer) (lane \(lane)) failed authentication: "
                                 + "forged, modified, replayed or reordered on the path; connection closed")
                            return
                        }
                        receiveSeq &+= 1
                    }
                    onFrame(UnsafeRawBufferPointer(rebasing: view[body]))
                    start += end
                case .needMore:
                    break parsing
                case let .malformed(why):
                    fail("protocol error from node \(peer) (lane \(lane)): \(why)")
                    return
                }
            }
            if start > 0 {
                if filled > start { memmove(buf, buf + start, filled - start) }
                filled -= start
            }
            let r = read(fd, buf + filled, cap - filled)
            if r < 0 {
                let e = gvm_errno()
                if e == EINTR { continue }
                fail("connection to node \(peer) (lane \(lane)) failed: \(errnoText(e))")
                return
            }
            if r == 0 {
                fail(filled > 0
                     ? "connection to node \(peer) (lane \(lane)) closed mid-frame (\(filled) bytes of an incomplete frame)"
                     : "connection to node \(peer) (lane \(lane)) closed by the peer")
                return
            }
            filled += r
        }
    }

    private func writeLoop() {
        let maxIov = 64
        let iovs = UnsafeMutablePointer<iovec>.allocate(capacity: maxIov)
        defer { iovs.deallocate() }
        var finishedBatch = false
        while true {
            mon.lock()
            if finishedBatch { writing = false }
            finishedBatch = true
            while (queue.isEmpty || writing) && !closed { mon.wait() }
            if closed { mon.unlock(); return }
            let batch = queue
            queue.removeAll(keepingCapacity: true)
            queuedBytes = 0
            writing = true
            mon.unlock()

            var idx = 0, off = 0
            while idx < batch.count {
                let n = min(maxIov, batch.count - idx)
                for i in 0..<n {
                    let b = batch[idx + i]
                    let skip = i == 0 ? off : 0
                    iovs[i] = iovec(iov_base: b.baseAddress! + skip, iov_len: b.count - skip)
                }
                var msg = msghdr()
                msg.msg_iov = iovs
                msg.msg_iovlen = n
                let w = sendmsg(fd, &msg, Int32(MSG_NOSIGNAL))
                if w < 0 {
                    let e = gvm_errno()
                    if e == EINTR { continue }
                    for b in batch { b.deallocate() }
                    fail("sending to node \(peer) (lane \(lane)) failed: \(errnoText(e))")
                    return
                }
                var rem = w
                while rem > 0 {
                    let left = batch[idx].count - off
                    if rem >= left { rem -= left; idx += 1; off = 0 } else { off += rem; rem = 0 }
                }
            }
            for b in batch { b.deallocate() }
        }
    }
}
