// MetricsServer: a small blocking HTTP/1.x listener on one thread that answers
// `GET /metrics` with a body made per request (the node's Prometheus text), 404 for any other
// path and 405 for any other method. One connection at a time, closed after the answer; a
// request is read up to 8 KiB and 2 s, so a slow or hostile client cannot hold the node.

import Foundation
#if canImport(Glibc)
import Glibc
#endif

public struct MetricsServerError: Error, CustomStringConvertible {
    public var description: String
}

public final class MetricsServer: @unchecked Sendable {
    public let address: String
    /// The port listened on (the one bound when `port` 0 was asked for).
    public let port: UInt16
    private let listenFD: Int32
    private let stopPipe: (read: Int32, write: Int32)
    private let body: @Sendable () -> String
    /// `POST path`: the node's control endpoint (live migration; NodeAssembly/ControlEndpoint.swift):
    /// nil when the path is not a control path. Runs on the serving thread and may block briefly.
    public typealias Control = @Sendable (_ path: String) -> (status: String, body: String)?
    private let control: Control?
    private let done = DispatchSemaphore(value: 0)
    private var stopped = false

    /// Listens on `address:port` (IPv4; port 0: any free port, see `port`) and starts the serving thread.
    public init(address: String, port: UInt16, control: Control? = nil, body: @escaping @Sendable () -> String) throws {
        self.address = address
        self.body = body
        self.control = control
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw MetricsServerError(description: "metrics: socket: \(String(cString: strerror(errno)))") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var sa = sockaddr_in()
        sa.sin_family = sa_family_t(AF_INET)
        sa.sin_port = port.bigEndian
        guard inet_pton(AF_INET, address, &sa.sin_addr) == 1 else {
            close(fd)
            throw MetricsServerError(description: "metrics: '\(address)' is not an IPv4 address")
        }
        let rc = withUnsafePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard rc == 0, listen(fd, 16) == 0 else {
            let why = String(cString: strerror(errno))
            close(fd)
            throw MetricsServerError(description: "metrics: cannot listen on \(address):\(port): \(why)")
        }
        var bound = sockaddr_in()
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &bound) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        self.port = UInt16(bigEndian: bound.sin_port)
        var p: [Int32] = [0, 0]
        guard pipe(&p) == 0 else {
            close(fd)
            throw MetricsServerError(description: "metrics: pipe: \(String(cString: strerror(errno)))")
        }
        for f in p { _ = fcntl(f, F_SETFD, FD_CLOEXEC) }
        listenFD = fd
        stopPipe = (p[0], p[1])
        let t = Thread { [self] in serve() }
        t.name = "metrics-http"
        t.start()
    }

    /// Stops the listener and waits for its thread (at most the 2 s of a request in progress).
    /// Idempotent.
    public func stop() {
        guard !stopped else { return }
        stopped = true
        var b: UInt8 = 1
        _ = write(stopPipe.write, &b, 1)
        done.wait()
        close(listenFD); close(stopPipe.read); close(stopPipe.write)
    }

    deinit { stop() }

    private func serve() {
        defer { done.signal() }
        while true {
            var fds = [pollfd(fd: listenFD, events: Int16(POLLIN), revents: 0),
                       pollfd(fd: stopPipe.read, events: Int16(POLLIN), revents: 0)]
            let n = poll(&fds, 2, -1)
            if n < 0 { if errno == EINTR { continue } else { return } }
            if fds[1].revents != 0 { return }
            guard fds[0].revents & Int16(POLLIN) != 0 else { continue }
            let c = accept(listenFD, nil, nil)
            if c < 0 { continue }
            _ = fcntl(c, F_SETFD, FD_CLOEXEC)
            answer(c)
            close(c)
        }
    }

    private func answer(_ c: Int32) {
        var tv = timeval(tv_sec: 2, tv_usec: 0)
        setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(c, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var request: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 2048)
        let end: [UInt8] = Array("\r\n\r\n".utf8)
        while request.count < 8192 {
            let n = buf.withUnsafeMutableBytes { read(c, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            request += buf[0..<n]
            if request.count >= 4, request.indices.dropLast(3).contains(where: { Array(request[$0..<$0 + 4]) == end }) { break }
        }
        let line = String(decoding: request.prefix { $0 != 13 && $0 != 10 }, as: UTF8.self).split(separator: " ")
        let status: String, type: String, text: String
        if line.count < 2 || !line[line.count - 1].hasPrefix("HTTP/") && line.count == 3 {
            (status, type, text) = ("400 Bad Request", "text/plain", "bad request\n")
        } else if line[0] == "POST", let control, let r = control(String(line[1])) {
            (status, type, text) = (r.status, "text/plain", r.body)
        } else if line[0] != "GET" && line[0] != "HEAD" {
            (status, type, text) = ("405 Method Not Allowed", "text/plain", "only GET /metrics\n")
        } else if line[1] != "/metrics" && !line[1].hasPrefix("/metrics?") {
            (status, type, text) = ("404 Not Found", "text/plain", "not found: metrics are at /metrics\n")
        } else {
            (status, type, text) = ("200 OK", "text/plain; version=0.0.4; charset=utf-8", body())
        }
        let payload = Array(text.utf8)
        var out = Array("HTTP/1.1 \(status)\r\nContent-Type: \(type)\r\nContent-Length: \(payload.count)\r\nConnection: close\r\n\r\n".utf8)
        if line.first != "HEAD" { out += payload }
        var sent = 0
        while sent < out.count {
            let n = out[sent...].withUnsafeBytes { send(c, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { break }
            sent += n
        }
    }
}
