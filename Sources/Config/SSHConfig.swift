// How `giantvm up --ssh` reaches each node's host (docs/launching.md):
//
//   nodes:
//     - {id: 0, address: 10.0.0.1, port: 7000, vcpus: 2}                     # ssh to 10.0.0.1
//     - {id: 1, address: 10.0.1.1, port: 7000, vcpus: 2, ssh: ops@gw1:2222}  # ssh to gw1, port 2222
//   ssh:                                      # all optional
//     giantvm: /opt/giantvm/bin/giantvm       # the binary on every host (default: the launcher's own path)
//     config: /shared/vm.yaml                 # this file on every host (default: its absolute path here)
//     plugin_path: /opt/giantvm/lib           # GIANTVM_PLUGIN_PATH for the nodes (a directory or a list)
//     identity: ~/.ssh/giantvm_ed25519        # private key (ssh -i), a file on the launching machine
//     options: [StrictHostKeyChecking=accept-new]   # ssh -o, each Key=Value
//     client: ssh                             # the ssh program (a name on PATH or a path)
//
// Only the form of each value is checked here: every node reads the same file, and the identity
// and client are files of the launching machine only (`up --ssh` checks them before it starts).

import Foundation
import Yams

/// A node's `ssh:` target: `[user@]host[:port]` (an IPv6 host in brackets when a port follows).
public struct SSHTarget: Equatable, Sendable, CustomStringConvertible {
    public var user: String?
    public var host: String
    public var port: UInt16?

    public init(user: String? = nil, host: String, port: UInt16? = nil) {
        self.user = user; self.host = host; self.port = port
    }

    public var description: String {
        let h = host.contains(":") ? "[\(host)]" : host
        return (user.map { "\($0)@" } ?? "") + h + (port.map { ":\($0)" } ?? "")
    }

    /// Parses `[user@]host[:port]`, `[user@][v6-host]:port` or `[user@]v6-host`; the error says
    /// what is wrong.
    public static func parse(_ text: String) -> Result<SSHTarget, SSHTargetError> {
        func bad(_ why: String) -> Result<SSHTarget, SSHTargetError> { .failure(SSHTargetError(message: "'\(text)' \(why)")) }
        if text.isEmpty { return bad("is empty: expected [user@]host[:port]") }
        if text.unicodeScalars.contains(where: { $0.properties.isWhitespace || $0.value < 0x20 || $0.value == 0x7f }) {
            return bad("holds a space or a control character")
        }
        if text.hasPrefix("-") { return bad("starts with '-' (ssh would read it as an option)") }
        var user: String?
        var rest = Substring(text)
        if let at = text.lastIndex(of: "@") {
            let u = String(text[..<at])
            if u.isEmpty { return bad("has an empty user before '@'") }
            if u.hasPrefix("-") { return bad("has a user starting with '-'") }
            user = u
            rest = text[text.index(after: at)...]
        }
        var host = String(rest)
        var port: UInt16?
        if rest.hasPrefix("[") {
            guard let close = rest.firstIndex(of: "]") else { return bad("has '[' without ']'") }
            host = String(rest[rest.index(after: rest.startIndex)..<close])
            let after = rest[rest.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else { return bad("has text after ']' that is not :port") }
                guard let p = UInt16(after.dropFirst()), p > 0 else { return bad("has a port that is not 1-65535") }
                port = p
            }
        } else if rest.filter({ $0 == ":" }).count == 1, let colon = rest.firstIndex(of: ":") {
            host = String(rest[..<colon])
            guard let p = UInt16(rest[rest.index(after: colon)...]), p > 0 else { return bad("has a port that is not 1-65535") }
            port = p
        }
        if host.isEmpty { return bad("has no host") }
        if host.hasPrefix("-") { return bad("has a host starting with '-'") }
        if host.contains("[") || host.contains("]") || host.contains("/") { return bad("has a host with '[', ']' or '/'") }
        return .success(SSHTarget(user: user, host: host, port: port))
    }
}

/// Why a text is not an ssh target.
public struct SSHTargetError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}

/// The config's top-level `ssh:` section (every field optional).
public struct SSHSettings: Equatable, Sendable {
    /// The ssh program: a name looked up on PATH or a path (default `ssh`).
    public var client: String = "ssh"
    /// The giantvm binary on the hosts (nil: the launching binary's own path).
    public var giantvm: String?
    /// This config file's path on the hosts (nil: its absolute path on the launching machine).
    public var config: String?
    /// GIANTVM_PLUGIN_PATH for the nodes (empty: not set; nodes search the config's plugin_path
    /// and their binary's directory).
    public var pluginPath: [String] = []
    /// The private key `ssh -i` uses, resolved against the config's directory (a file of the
    /// launching machine).
    public var identity: String?
    /// `ssh -o` options, each `Key=Value`, before the defaults (they win).
    public var options: [String] = []

    public init() {}

    /// ssh options that would break how nodes are started and stopped (a tty keeps the remote
    /// node's input open; another command replaces the node).
    public static let refusedOptions = ["requesttty": "a tty would keep the node running when the launcher closes its input",
                                        "remotecommand": "`up --ssh` runs the node command itself",
                                        "sessiontype": "`up --ssh` runs the node command itself",
                                        "stdinnull": "the node stops when its standard input closes"]
}

extension Reader {
    /// The top-level key (allowed beside `Reader.topLevel`).
    static let sshSection = "ssh"
    static let sshFields = ["client", "giantvm", "config", "plugin_path", "identity", "options"]

    /// A node's `ssh:` value.
    mutating func sshTarget(_ node: Node, _ path: String) -> SSHTarget? {
        guard let text = string(node, path) else { return nil }
        switch SSHTarget.parse(text) {
        case .success(let t): return t
        case .failure(let why): report(node, path, why.message); return nil
        }
    }

    /// The top-level `ssh:` section.
    mutating func sshSettings(_ node: Node) -> SSHSettings {
        var out = SSHSettings()
        guard let m = mapping(node, "ssh", allowed: Self.sshFields) else { return out }
        /// An absolute path on the hosts (a relative one would depend on the remote login's directory).
        func hostPath(_ key: String) -> String? {
            guard let v = m[key]?.value, let s = string(v, "ssh.\(key)") else { return nil }
            guard s.hasPrefix("/"), !s.contains("\n") else {
                report(v, "ssh.\(key)", "'\(s)' must be an absolute path (it names a file on every node's host)")
                return nil
            }
            return s
        }
        if let v = m["client"]?.value, let s = string(v, "ssh.client") {
            if s.isEmpty || s.hasPrefix("-") || s.contains("\n") { report(v, "ssh.client", "'\(s)' is not a program name or path") }
            else { out.client = s.contains("/") ? resolve(s) : s }
        }
        out.giantvm = hostPath("giantvm")
        out.config = hostPath("config")
        if let v = m["plugin_path"]?.value {
            var dirs: [(Node, String)] = []
            switch v {
            case .sequence(let seq):
                for (i, item) in seq.enumerated() { if let s = string(item, "ssh.plugin_path[\(i)]") { dirs.append((item, s)) } }
            case .scalar: if let s = string(v, "ssh.plugin_path") { dirs.append((v, s)) }
            default: report(v, "ssh.plugin_path", "expected a directory or a list of directories")
            }
            for (n, d) in dirs {
                if d.hasPrefix("/"), !d.contains(":"), !d.contains("\n") { out.pluginPath.append(d) } else {
                    report(n, "ssh.plugin_path", "'\(d)' must be an absolute directory without ':' (on every node's host)")
                }
            }
        }
        if let v = m["identity"]?.value, let s = string(v, "ssh.identity") {
            if s.isEmpty || s.contains("\n") { report(v, "ssh.identity", "expected the path of a private key file") }
            else if s.hasPrefix("~/"), let home = ProcessInfo.processInfo.environment["HOME"] { out.identity = home + s.dropFirst(1) }
            else { out.identity = resolve(s) }
        }
        if let v = m["options"]?.value {
            guard case .sequence(let seq) = v else {
                report(v, "ssh.options", "expected a list of Key=Value, e.g. [StrictHostKeyChecking=accept-new]")
                return out
            }
            for (i, item) in seq.enumerated() {
                guard let s = string(item, "ssh.options[\(i)]") else { continue }
                if let why = Self.sshOptionProblem(s) { report(item, "ssh.options[\(i)]", why) } else { out.options.append(s) }
            }
        }
        return out
    }

    /// What is wrong with one `-o` value (nil: fine).
    static func sshOptionProblem(_ s: String) -> String? {
        guard let eq = s.firstIndex(of: "="), let first = s.first, first.isASCII, first.isLetter else {
            return "'\(s)' is not Key=Value (e.g. ConnectTimeout=5)"
        }
        let key = s[..<eq]
        guard key.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber) }), s.index(after: eq) < s.endIndex else {
            return "'\(s)' is not Key=Value (e.g. ConnectTimeout=5)"
        }
        if s.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7f }) { return "'\(s)' holds a control character" }
        if let why = SSHSettings.refusedOptions[key.lowercased()] { return "\(key) cannot be set: \(why)" }
        return nil
    }
}
