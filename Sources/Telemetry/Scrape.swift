// The client side of live metrics: a bounded blocking HTTP GET and a reader of the Prometheus
// text format (the samples a node serves), for `giantvm top` and tests.

import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// One sample line: `name{label="value",...} value`.
public struct PrometheusSample: Sendable, Equatable {
    public var name: String
    public var labels: [String: String]
    public var value: Double
}

public enum PrometheusText {
    /// The samples of a text exposition; comment lines and lines that do not parse are skipped.
    public static func parse(_ text: String) -> [PrometheusSample] {
        var out: [PrometheusSample] = []
        for raw in text.split(separator: "\n") {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") { continue }
            if let s = sample(line) { out.append(s) }
        }
        return out
    }

    static func sample(_ line: String) -> PrometheusSample? {
        var labels: [String: String] = [:]
        let chars = Array(line)
        var i = 0
        while i < chars.count, chars[i] != "{", chars[i] != " " { i += 1 }
        let name = String(chars[0..<i])
        guard !name.isEmpty else { return nil }
        if i < chars.count, chars[i] == "{" {
            i += 1
            while i < chars.count, chars[i] != "}" {
                var key = ""
                while i < chars.count, chars[i] != "=" { if chars[i] != "," && chars[i] != " " { key.append(chars[i]) }; i += 1 }
                i += 1
                guard i < chars.count, chars[i] == "\"" else { return nil }
                i += 1
                var value = ""
                while i < chars.count, chars[i] != "\"" {
                    if chars[i] == "\\", i + 1 < chars.count {
                        i += 1
                        value.append(chars[i] == "n" ? "\n" : chars[i])
                    } else { value.append(chars[i]) }
                    i += 1
                }
                guard i < chars.count else { return nil }
                i += 1
                labels[key] = value
                while i < chars.count, chars[i] == "," || chars[i] == " " { i += 1 }
            }
            guard i < chars.count else { return nil }
            i += 1
        }
        let rest = String(chars[i...]).split(separator: " ")
        guard let first = rest.first else { return nil }
        let value: Double?
        switch first {
        case "+Inf": value = .infinity
        case "-Inf": value = -.infinity
        case "NaN": value = .nan
        default: value = Double(first)
        }
        guard let value else { return nil }
        return PrometheusSample(name: name, labels: labels, value: value)
    }
}

public struct HTTPGetError: Error, CustomStringConvertible {
    public var description: String
}

public enum HTTPGet {
    /// GET http://host:port/path (host: an IPv4 literal or a name resolved to IPv4); the status code and body. The whole
    /// exchange takes at most about `timeout` seconds per step; the body is read up to `limit` bytes.
    public static func get(host: String, port: UInt16, path: String = "/metrics", timeout: Double = 1,
                           limit: Int = 16 << 20, method: String = "GET") throws -> (status: Int, body: String) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw HTTPGetError(description: "socket: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let t = max(0.01, min(timeout, 60))
        var tv = timeval(tv_sec: Int(t), tv_usec: Int((t - Double(Int(t))) * 1e6))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var sa = sockaddr_in()
        sa.sin_family = sa_family_t(AF_INET)
        sa.sin_port = port.bigEndian
        if inet_pton(AF_INET, host, &sa.sin_addr) != 1 {
            // A host name: its first IPv4 address.
            var hints = addrinfo()
            hints.ai_family = AF_INET
            hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
            var res: UnsafeMutablePointer<addrinfo>?
            let rc = getaddrinfo(host, nil, &hints, &res)
            defer { if res != nil { freeaddrinfo(res) } }
            guard rc == 0, let first = res, let a = first.pointee.ai_addr else {
                throw HTTPGetError(description: "cannot resolve '\(host)': \(String(cString: gai_strerror(rc)))")
            }
            sa.sin_addr = a.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee.sin_addr }
        }
        let rc = withUnsafePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard rc == 0 else { throw HTTPGetError(description: "\(host):\(port): \(String(cString: strerror(errno)))") }
        let request = Array("\(method) \(path) HTTP/1.1\r\nHost: \(host):\(port)\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".utf8)
        guard request.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }) == request.count else {
            throw HTTPGetError(description: "\(host):\(port): send: \(String(cString: strerror(errno)))")
        }
        var data: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while data.count < limit {
            let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 { throw HTTPGetError(description: "\(host):\(port): read: \(String(cString: strerror(errno)))") }
            if n == 0 { break }
            data += buf[0..<n]
        }
        let text = String(decoding: data, as: UTF8.self)
        guard let split = text.range(of: "\r\n\r\n") else { throw HTTPGetError(description: "\(host):\(port): no HTTP header in the answer") }
        let statusLine = text[..<split.lowerBound].split(separator: "\r\n").first ?? ""
        let parts = statusLine.split(separator: " ")
        guard parts.count >= 2, parts[0].hasPrefix("HTTP/"), let code = Int(parts[1]), (100...599).contains(code) else {
            throw HTTPGetError(description: "\(host):\(port): bad status line '\(statusLine)'")
        }
        return (code, String(text[split.upperBound...]))
    }
}
