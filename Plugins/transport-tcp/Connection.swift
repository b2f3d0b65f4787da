import Glibc
import CSystem
import PluginKit

/// One established, authenticated TCP connection to one peer on one lane.
///
/// Threading: a dedicated reader thread parses frames and hands each whole data frame to
/// `onFrame` (borrowed bytes); a dedicated writer thread drains the send queue with sendmsg
/// (scatter-gather over several queued frames). `enqueue` may be called from any thread: it only
/// copies into the queue under a short lock and never waits for the peer, so two nodes whose
/// socket buffers are full cannot deadlock through their receive threads. `onFailure` runs at
/// most once, on the reader or writer thread. `shutdownNow` (any thread) wakes both threads;
/// `join` (main thread, after shutdownNow) waits for them and closes the socket.
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
    private var reader: OSThread?
    private var writer: OSThread?
    private var onFailure: ((String) -> Void)?

    init(fd: Int32, peer: UInt32, lane: UInt32, queueLimit: Int) {
        self.fd = fd; self.peer = peer; self.lane = lane; self.queueLimit = queueLimit
    }

    /// Starts the reader and writer threads.
    func start(onFrame: @escaping (UnsafeRawBufferPointer) -> Void, onFailure: @escaping (String) -> Void) throws {
        self.onFailure = onFailure
        reader = try OSThread(name: "tcp-rx-\(peer)-\(lane)") { [self] in readLoop(onFrame) }
        writer = try OSThread(name: "tcp-tx-\(peer)-\(lane)") { [self] in writeLoop() }
    }

    /// Copies one frame (header + concatenated iov) into the queue. Returns a gvm_status.
    func enqueue(_ iov: UnsafeBufferPointer<gvm_iovec>, total: Int) -> Int32 {
        let size = frameHeaderSize + total
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 8)
        let header = encodeFrameHeader(kind: .data, length: total)
        header.withUnsafeBytes { buf.baseAddress!.copyMemory(from: $0.baseAddress!, byteCount: frameHeaderSize) }
        var off = frameHeaderSize
        for v in iov where v.len > 0 {
            guard let base = v.base else { continue }
            (buf.baseAddress! + off).copyMemory(from: base, byteCount: v.len)
            off += v.len
        }
        mon.lock()
        if closed {
            mon.unlock(); buf.deallocate()
            return GVM_ERR_CLOSED.rawValue
        }
        if queuedBytes + size > queueLimit {
            mon.unlock(); buf.deallocate()
            return GVM_ERR_NOMEM.rawValue
        }
        queue.append(buf)
        queuedBytes += size
        if queue.count == 1 { mon.broadcast() }
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
        Glibc.shutdown(fd, Int32(SHUT_RDWR))
        cb?(reason)
    }

    private func readLoop(_ onFrame: (UnsafeRawBufferPointer) -> Void) {
        let cap = 256 * 1024
        let buf = UnsafeMutableRawPointer.allocate(byteCount: cap, alignment: 16)
        defer { buf.deallocate() }
        var filled = 0
        while true {
            // Hand over every whole frame in the buffer.
            var start = 0
            parsing: while true {
                let view = UnsafeRawBufferPointer(start: buf + start, count: filled - start)
                switch parseFrame(view) {
                case let .frame(kind, payload, end):
                    guard kind == .data else {
                        fail("protocol error from node \(peer): \(kind) frame after the handshake")
                        return
                    }
                    onFrame(UnsafeRawBufferPointer(rebasing: view[payload]))
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
        while true {
            mon.lock()
            while queue.isEmpty && !closed { mon.wait() }
            if closed { mon.unlock(); return }
            let batch = queue
            queue.removeAll(keepingCapacity: true)
            queuedBytes = 0
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
