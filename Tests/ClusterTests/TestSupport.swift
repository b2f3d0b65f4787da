import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

// Helpers for the multi-process tests: find the built `giantvm`, write configs, run nodes with
// their output in files, and always kill what was started.

enum Paths {
    /// The directory holding the built products (.build/debug).
    static var productsDirectory: URL {
        let candidates = [Bundle.main.bundleURL, Bundle.main.bundleURL.deletingLastPathComponent()]
            + [URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
                .deletingLastPathComponent().appendingPathComponent(".build/debug")]
        for c in candidates where FileManager.default.fileExists(atPath: c.appendingPathComponent("giantvm").path) {
            return c
        }
        return candidates[0]
    }

    static var giantvm: String { productsDirectory.appendingPathComponent("giantvm").path }
    static var transportPlugin: String { productsDirectory.appendingPathComponent("libtransport-tcp.so").path }

    static func requireBinaries() throws {
        guard FileManager.default.isExecutableFile(atPath: giantvm) else {
            throw XCTSkip("giantvm is not built at \(giantvm): run `swift build` first")
        }
        guard FileManager.default.fileExists(atPath: transportPlugin) else {
            throw XCTSkip("libtransport-tcp.so is not built at \(transportPlugin): run `swift build` first")
        }
    }
}

/// A temporary directory removed at the end of the test.
final class TempDir {
    let url: URL
    init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("gvm-net-test-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }
    func path(_ name: String) -> String { url.appendingPathComponent(name).path }
    func write(_ name: String, _ text: String) throws -> String {
        let p = path(name)
        try text.write(toFile: p, atomically: true, encoding: .utf8)
        return p
    }
    deinit { try? FileManager.default.removeItem(at: url) }
}

/// A cluster config for the tests (YAML text).
func clusterYAML(name: String = "nettest", addresses: [String], ports: [Int], keyFile: String? = nil,
                 connect: String = "10s", heartbeat: String = "100ms", failure: String = "1500ms",
                 transportSettings: [String: String] = [:], faults: String? = nil) -> String {
    var y = "cluster: \(name)\nnodes:\n"
    for (i, a) in addresses.enumerated() {
        y += "  - {id: \(i), address: \(a), port: \(ports[i]), vcpus: 1}\n"
    }
    y += "memory: 16MiB\ntransport:\n  plugin: transport-tcp\n"
    if !transportSettings.isEmpty {
        y += "  settings:\n"
        for (k, v) in transportSettings.sorted(by: { $0.key < $1.key }) { y += "    \(k): \"\(v)\"\n" }
    }
    if let faults { y += "  faults:\n" + faults.split(separator: "\n").map { "    " + $0 }.joined(separator: "\n") + "\n" }
    y += "coherence: {plugin: dsm-ivy}\n"
    if let keyFile { y += "key_file: \(keyFile)\n" }
    y += "timeouts: {connect: \(connect), heartbeat: \(heartbeat), failure: \(failure)}\n"
    return y
}

/// One child process (posix_spawn) whose stdout and stderr go to files. Reaped with waitpid
/// (no Foundation.Process: its reaping is not reliable with many children). Killed in `deinit`.
final class Child {
    let name: String
    let outPath: String
    let errPath: String
    let pid: pid_t
    private var status: Int32?

    init(name: String, executable: String, arguments: [String], dir: TempDir) throws {
        self.name = name
        outPath = dir.path("\(name).out")
        errPath = dir.path("\(name).err")
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, outPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_addopen(&actions, 2, errPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attr, &empty)
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGMASK))
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var p: pid_t = 0
        let rc = posix_spawn(&p, executable, &actions, &attr, argv, environ)
        guard rc == 0 else { throw XCTSkip("cannot start \(executable): \(String(cString: strerror(rc)))") }
        pid = p
    }

    var stdout: String { (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? "" }
    var stderr: String { (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? "" }
    var output: String { stdout + stderr }

    /// Reaps the child if it exited; returns its status (128 + signal when killed).
    private func poll() -> Int32? {
        if let status { return status }
        var st: Int32 = 0
        let r = waitpid(pid, &st, WNOHANG)
        if r == pid {
            status = (st & 0x7f) == 0 ? (st >> 8) & 0xff : 128 + (st & 0x7f)
        } else if r < 0 {
            status = -1
        }
        return status
    }

    var running: Bool { poll() == nil }

    /// Waits for exit at most `timeout` seconds; nil if still running.
    func wait(timeout: Double) -> Int32? {
        let deadline = clusterTestNow() + timeout
        while poll() == nil && clusterTestNow() < deadline { usleep(20_000) }
        return poll()
    }

    /// Waits until the output contains `text`; false after `timeout` seconds or if it exited.
    func waitForOutput(_ text: String, timeout: Double) -> Bool {
        let deadline = clusterTestNow() + timeout
        while clusterTestNow() < deadline {
            if output.contains(text) { return true }
            if !running { return output.contains(text) }
            usleep(50_000)
        }
        return false
    }

    func killNow() {
        guard poll() == nil else { return }
        kill(pid, SIGCONT)
        kill(pid, SIGKILL)
        _ = wait(timeout: 10)
    }

    deinit { killNow() }
}

func clusterTestNow() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// Starts `giantvm node` for node `id`, optionally inside a network namespace.
func startNode(_ config: String, id: Int, dir: TempDir, netns: String? = nil, extra: [String] = []) throws -> Child {
    let args = ["node", "--config", config, "--id", "\(id)", "--log-level", "info"] + extra
    if let netns {
        return try Child(name: "node\(id)", executable: "/usr/sbin/ip", arguments: ["netns", "exec", netns, Paths.giantvm] + args, dir: dir)
    }
    return try Child(name: "node\(id)", executable: Paths.giantvm, arguments: args, dir: dir)
}

/// Runs a command to completion (at most 10 s, then killed); returns (status, combined output).
@discardableResult
func runCommand(_ executable: String, _ args: [String]) -> (Int32, String) {
    guard let dir = try? TempDir(), let c = try? Child(name: "cmd", executable: executable, arguments: args, dir: dir) else {
        return (-1, "cannot run \(executable)")
    }
    let status = c.wait(timeout: 10) ?? -1
    c.killNow()
    return (status, c.output)
}

/// Three network namespaces (gvm-net-<tag>0..2) joined by a bridge in gvm-net-<tag>br, node i at
/// 10.231.<subnet>.(i+1). Deleted in `teardown` (also called from deinit).
final class NamespaceLab {
    let tag: String
    let subnet: Int
    let count: Int
    var names: [String] { (0..<count).map { "gvm-net-\(tag)\($0)" } }
    var bridgeNS: String { "gvm-net-\(tag)br" }
    func address(_ i: Int) -> String { "10.231.\(subnet).\(i + 1)" }
    func device(_ i: Int) -> String { "gvn\(tag)\(i)" }

    init(tag: String, subnet: Int, count: Int = 3) throws {
        self.tag = tag
        self.subnet = subnet
        self.count = count
        guard getuid() == 0 else { throw XCTSkip("network namespaces need root (running as uid \(getuid()))") }
        guard FileManager.default.isExecutableFile(atPath: "/usr/sbin/ip") else { throw XCTSkip("no /usr/sbin/ip: cannot make network namespaces") }
        teardown()
        let ip = "/usr/sbin/ip"
        var steps: [[String]] = [["netns", "add", bridgeNS],
                                 ["-n", bridgeNS, "link", "add", "br0", "type", "bridge"],
                                 ["-n", bridgeNS, "link", "set", "br0", "up"]]
        for i in 0..<count {
            let ns = names[i]
            steps += [["netns", "add", ns],
                      ["link", "add", device(i), "netns", ns, "type", "veth", "peer", "name", "b\(device(i))", "netns", bridgeNS],
                      ["-n", bridgeNS, "link", "set", "b\(device(i))", "master", "br0"],
                      ["-n", bridgeNS, "link", "set", "b\(device(i))", "up"],
                      ["-n", ns, "addr", "add", "\(address(i))/24", "dev", device(i)],
                      ["-n", ns, "link", "set", device(i), "up"],
                      ["-n", ns, "link", "set", "lo", "up"]]
        }
        for s in steps {
            let (rc, out) = runCommand(ip, s)
            if rc != 0 {
                teardown()
                throw XCTSkip("cannot build network namespaces (ip \(s.joined(separator: " ")): \(out.trimmingCharacters(in: .whitespacesAndNewlines)))")
            }
        }
        // No ping here (not installed); nodes retry connecting while bridge ports come up.
    }

    func linkDown(_ i: Int) -> (Int32, String) {
        runCommand("/usr/sbin/ip", ["-n", names[i], "link", "set", device(i), "down"])
    }

    func teardown() {
        for ns in names + [bridgeNS] { _ = runCommand("/usr/sbin/ip", ["netns", "del", ns]) }
    }

    deinit { teardown() }
}

/// Opens a TCP connection to 127.0.0.1:port (blocking). Returns the fd or -1.
func connectLoopback(_ port: Int) -> Int32 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return -1 }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = in_port_t(UInt16(port).bigEndian)
    let rc = withUnsafePointer(to: &addr) { p in
        p.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    if rc != 0 { close(fd); return -1 }
    return fd
}

func writeBytes(_ fd: Int32, _ bytes: [UInt8]) {
    _ = bytes.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
}

/// Reads until EOF or `timeout`; returns the bytes and whether the peer closed.
func readUntilClosed(_ fd: Int32, timeout: Double) -> (bytes: [UInt8], closed: Bool) {
    var out: [UInt8] = []
    let deadline = clusterTestNow() + timeout
    var buf = [UInt8](repeating: 0, count: 4096)
    while clusterTestNow() < deadline {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let n = poll(&p, 1, 100)
        if n <= 0 { continue }
        let r = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if r <= 0 { return (out, true) }
        out += buf[0..<r]
    }
    return (out, false)
}

/// A direct child of `parent` whose argv contains every string of `args` (read from /proc).
func childProcess(of parent: pid_t, argumentsContain args: [String]) -> pid_t? {
    guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return nil }
    for e in entries {
        guard let pid = pid_t(e),
              let stat = try? String(contentsOfFile: "/proc/\(e)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { continue }
        // Fields after "(comm)": state ppid ...
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 1, pid_t(fields[1]) == parent,
              let raw = FileManager.default.contents(atPath: "/proc/\(e)/cmdline") else { continue }
        let argv = raw.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
        if args.allSatisfy(argv.contains) { return pid }
    }
    return nil
}
