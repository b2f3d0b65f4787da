import Glibc
import CSystem

// Small typed layer over pthreads and sockets for transport-tcp. Everything blocking runs on
// dedicated OS threads (never Swift concurrency tasks).

/// A dedicated OS thread (pthread). Threading: `join` from any other thread, at most once.
final class OSThread {
    private final class Box {
        let name: String
        let body: () -> Void
        init(_ name: String, _ body: @escaping () -> Void) { self.name = name; self.body = body }
    }
    private var tid = pthread_t()
    private var joined = false

    /// Starts the thread. A `detached` thread frees itself when it ends and cannot be joined:
    /// its owner tracks its end itself (e.g. with a counter under a Monitor).
    init(name: String, detached: Bool = false, _ body: @escaping () -> Void) throws {
        let box = Unmanaged.passRetained(Box(name, body)).toOpaque()
        let rc = pthread_create(&tid, nil, { arg in
            let box = Unmanaged<Box>.fromOpaque(arg!).takeRetainedValue()
            gvm_net_set_thread_name(box.name)
            box.body()
            return nil
        }, box)
        if rc != 0 {
            Unmanaged<Box>.fromOpaque(box).release()
            throw TransportError("cannot start thread \(name): \(String(cString: strerror(rc)))")
        }
        if detached {
            pthread_detach(tid)
            joined = true
        }
    }

    func join() {
        guard !joined else { return }
        joined = true
        pthread_join(tid, nil)
    }
}

/// A mutex with one condition variable (CLOCK_MONOTONIC deadlines). Stable addresses.
/// Threading: any thread.
final class Monitor {
    private let m = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let c = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)

    init() {
        pthread_mutex_init(m, nil)
        var attr = pthread_condattr_t()
        pthread_condattr_init(&attr)
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC)
        pthread_cond_init(c, &attr)
        pthread_condattr_destroy(&attr)
    }

    deinit {
        pthread_cond_destroy(c); pthread_mutex_destroy(m)
        c.deallocate(); m.deallocate()
    }

    @inline(__always) func lock() { pthread_mutex_lock(m) }
    @inline(__always) func unlock() { pthread_mutex_unlock(m) }
    func withLock<T>(_ body: () throws -> T) rethrows -> T {
        lock(); defer { unlock() }
        return try body()
    }
    /// Waits (lock held). Spurious wake-ups happen: loop on the predicate.
    func wait() { pthread_cond_wait(c, m) }
    /// Waits until `deadline` (monotonic ns) at most; false if the deadline passed.
    func wait(until deadline: UInt64) -> Bool {
        var ts = timespec(tv_sec: Int(deadline / 1_000_000_000), tv_nsec: Int(deadline % 1_000_000_000))
        return pthread_cond_timedwait(c, m, &ts) == 0
    }
    func broadcast() { pthread_cond_broadcast(c) }
}

func monotonicNanoseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

struct TransportError: Error, CustomStringConvertible {
    var message: String
    init(_ message: String) { self.message = message }
    var description: String { message }
}

func errnoText(_ e: Int32 = gvm_errno()) -> String { String(cString: strerror(e)) }

/// A resolved socket address.
struct SocketAddress: CustomStringConvertible {
    var storage = sockaddr_storage()
    var length: socklen_t = 0
    var family: Int32 { Int32(storage.ss_family) }
    let description: String

    /// Resolves `host` (name or IP literal) and `port`; the first result wins.
    static func resolve(_ host: String, port: UInt16) throws -> SocketAddress {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var res: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, String(port), &hints, &res)
        guard rc == 0, let first = res else {
            throw TransportError("cannot resolve address '\(host)': \(String(cString: gai_strerror(rc)))")
        }
        defer { freeaddrinfo(res) }
        var a = SocketAddress(description: host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)")
        a.length = first.pointee.ai_addrlen
        withUnsafeMutableBytes(of: &a.storage) { dst in
            dst.copyMemory(from: UnsafeRawBufferPointer(start: first.pointee.ai_addr, count: Int(first.pointee.ai_addrlen)))
        }
        return a
    }

    func withSockaddr<T>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> T) -> T {
        withUnsafeBytes(of: storage) { raw in
            body(raw.baseAddress!.assumingMemoryBound(to: sockaddr.self), length)
        }
    }
}

/// Opens a listening TCP socket on `addr` (SO_REUSEADDR, backlog 128).
func listenSocket(_ addr: SocketAddress) throws -> Int32 {
    let fd = socket(addr.family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { throw TransportError("socket: \(errnoText())") }
    var one: Int32 = 1
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
    let rc = addr.withSockaddr { bind(fd, $0, $1) }
    guard rc == 0 else {
        let e = gvm_errno(); close(fd)
        throw TransportError("cannot listen on \(addr): bind: \(errnoText(e))")
    }
    guard listen(fd, 128) == 0 else {
        let e = gvm_errno(); close(fd)
        throw TransportError("cannot listen on \(addr): listen: \(errnoText(e))")
    }
    return fd
}

/// Connects to `addr`, waiting at most `timeoutMs`. Returns a blocking socket, or throws with
/// errno's text (ECONNREFUSED while the peer starts is the common case).
func connectSocket(_ addr: SocketAddress, timeoutMs: Int32) throws -> Int32 {
    let fd = socket(addr.family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
    guard fd >= 0 else { throw TransportError("socket: \(errnoText())") }
    let rc = addr.withSockaddr { connect(fd, $0, $1) }
    if rc != 0 {
        let e = gvm_errno()
        guard e == EINPROGRESS else { close(fd); throw TransportError(errnoText(e)) }
        var p = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
        let n = poll(&p, 1, timeoutMs)
        if n <= 0 { close(fd); throw TransportError(n == 0 ? "connect timed out" : errnoText()) }
        var soerr: Int32 = 0
        var len = socklen_t(MemoryLayout<Int32>.size)
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len)
        if soerr != 0 { close(fd); throw TransportError(errnoText(soerr)) }
    }
    _ = gvm_net_set_nonblocking(fd, 0)
    return fd
}

func setNoDelay(_ fd: Int32) {
    var one: Int32 = 1
    setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
}

/// Reads exactly `n` bytes before `deadline` (monotonic ns). Throws on EOF, error or timeout.
func readExact(_ fd: Int32, _ n: Int, deadline: UInt64) throws -> [UInt8] {
    var out = [UInt8](repeating: 0, count: n)
    var got = 0
    while got < n {
        let now = monotonicNanoseconds()
        guard now < deadline else { throw TransportError("timed out (got \(got) of \(n) bytes)") }
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let waitMs = Int32(min(UInt64(Int32.max), (deadline - now) / 1_000_000 + 1))
        let pr = poll(&p, 1, waitMs)
        if pr < 0 {
            if gvm_errno() == EINTR { continue }
            throw TransportError("poll: \(errnoText())")
        }
        if pr == 0 { continue }
        let r = out.withUnsafeMutableBytes { read(fd, $0.baseAddress! + got, n - got) }
        if r < 0 {
            let e = gvm_errno()
            if e == EINTR || e == EAGAIN { continue }
            throw TransportError(errnoText(e))
        }
        if r == 0 {
            throw TransportError(got == 0 ? "connection closed" : "connection closed mid-frame (got \(got) of \(n) bytes)")
        }
        got += r
    }
    return out
}

/// Writes all of `bytes` (MSG_NOSIGNAL). Throws on error.
func writeAll(_ fd: Int32, _ bytes: [UInt8]) throws {
    var off = 0
    while off < bytes.count {
        let w = bytes.withUnsafeBytes { send(fd, $0.baseAddress! + off, bytes.count - off, Int32(MSG_NOSIGNAL)) }
        if w < 0 {
            if gvm_errno() == EINTR { continue }
            throw TransportError(errnoText())
        }
        off += w
    }
}

/// Fills `buf` with random bytes from the kernel.
func randomBytes(_ n: Int) -> [UInt8] {
    var out = [UInt8](repeating: 0, count: n)
    var got = 0
    while got < n {
        let r = out.withUnsafeMutableBytes { gvm_net_random($0.baseAddress! + got, n - got) }
        if r > 0 { got += r } else if gvm_errno() != EINTR { break }
    }
    if got < n { for i in got..<n { out[i] = UInt8.random(in: 0...255) } }
    return out
}
