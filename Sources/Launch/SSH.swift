// Starting a node on another host through OpenSSH (`giantvm up --ssh`): the ssh command line, the
// remote command line, and the ProcessSpec the one launcher runs.
//
// How a remote node stops (the launcher keeps no signal path to it: SIGTERM to the local ssh ends
// ssh, not the remote process, which sshd leaves running when a session without a tty closes):
//   - no tty is allocated (-T), so the remote node's standard input is the session's data stream;
//   - the remote node runs with `--exit-on-stdin-eof` (StdinWatch.swift): when its standard input
//     closes it stops as on SIGTERM, and exits by itself `StdinWatch.defaultGrace` seconds later
//     if the stop hangs;
//   - the launcher starts ssh with `stop: .closingStdin`: Ctrl-C (and a deadline) close the pipe to
//     ssh's standard input; ssh forwards the end of input, the remote node stops and its exit
//     status comes back as ssh's. When the launcher kills ssh (or itself dies), the connection
//     drops, sshd closes the node's standard input all the same.
// So a node ends on every host however the launcher ends.
//
// Exit statuses: ssh exits with the remote command's status; 255 when ssh itself failed (could not
// connect or authenticate) and also when the remote node was killed by a signal (ssh reports no
// signal death).

import Foundation
import Glibc

/// Where to log in: `[user@]host[:port]`.
public struct SSHDestination: Equatable, Sendable, CustomStringConvertible {
    public var user: String?
    public var host: String
    public var port: UInt16?

    public init(user: String? = nil, host: String, port: UInt16? = nil) {
        self.user = user; self.host = host; self.port = port
    }

    /// `user@host` as ssh takes it (the port goes to -p).
    public var login: String { user.map { "\($0)@\(host)" } ?? host }

    public var description: String {
        let h = host.contains(":") ? "[\(host)]" : host
        return (user.map { "\($0)@" } ?? "") + h + (port.map { ":\($0)" } ?? "")
    }
}

/// How to run ssh: the client, the identity and `-o` options (from the config's `ssh:`).
public struct SSHClient: Equatable, Sendable {
    /// The ssh program (a path).
    public var program: String
    /// `-i`: the private key to log in with (nil: ssh's own choice).
    public var identity: String?
    /// `-o` options given by the user, each `Key=Value`. They come first on the command line:
    /// ssh keeps the first value it reads for each option, so they override the defaults below.
    public var options: [String]

    /// Options always given (after the user's): never prompt (no tty to answer on), notice a dead
    /// connection within ~15 s, give up connecting after 10 s.
    public static let defaultOptions = ["BatchMode=yes", "ConnectTimeout=10", "ServerAliveInterval=5", "ServerAliveCountMax=3"]

    public init(program: String, identity: String? = nil, options: [String] = []) {
        self.program = program; self.identity = identity; self.options = options
    }

    /// The arguments of ssh (after its program name) that run `remote` on `destination`.
    public func arguments(destination: SSHDestination, remote: String) -> [String] {
        var args = ["-T"]
        for o in options { args += ["-o", o] }
        if let identity { args += ["-i", identity, "-o", "IdentitiesOnly=yes"] }
        for o in Self.defaultOptions { args += ["-o", o] }
        if let port = destination.port { args += ["-p", "\(port)"] }
        // "--": nothing after it is read as an ssh option, whatever the host or command look like.
        return args + ["--", destination.login, remote]
    }

    /// The first executable file named `name` in `path` (a `:` list), or `name` itself when it
    /// holds a `/`.
    public static func resolve(_ name: String, path: String? = ProcessInfo.processInfo.environment["PATH"]) -> String? {
        if name.contains("/") { return access(name, X_OK) == 0 ? name : nil }
        for dir in (path ?? "/usr/local/bin:/usr/bin:/bin").split(separator: ":") where !dir.isEmpty {
            let candidate = "\(dir)/\(name)"
            var st = stat()
            if stat(candidate, &st) == 0, st.st_mode & S_IFMT == S_IFREG, access(candidate, X_OK) == 0 { return candidate }
        }
        return nil
    }
}

/// One node to start on another host.
public struct RemoteNode: Sendable {
    public var label: String
    public var destination: SSHDestination
    /// The program and its arguments, as they are to run on the host.
    public var argv: [String]
    /// Variables set for the program on the host (through `env`).
    public var environment: [(key: String, value: String)]
    public var prefix: String

    public init(label: String, destination: SSHDestination, argv: [String],
                environment: [(key: String, value: String)] = [], prefix: String) {
        self.label = label; self.destination = destination; self.argv = argv
        self.environment = environment; self.prefix = prefix
    }

    /// The command line the remote login shell runs: `exec [env K=V...] argv...`, every word
    /// quoted for a POSIX shell. `exec` replaces the shell, so the node is sshd's own child.
    public var remoteCommand: String {
        var words = ["exec"]
        if !environment.isEmpty { words += ["env"] + environment.map { Shell.quote("\($0.key)=\($0.value)") } }
        return (words + argv.map(Shell.quote)).joined(separator: " ")
    }

    /// The launcher's process: ssh with the node's output prefixed, stopped by closing its input.
    public func processSpec(client: SSHClient) -> ProcessSpec {
        ProcessSpec(label: label, arguments: client.arguments(destination: destination, remote: remoteCommand),
                    stdoutPrefix: prefix, stderrPrefix: prefix, executable: client.program, stop: .closingStdin)
    }
}

/// What `giantvm up --ssh` runs on every host: one ssh per node, each running
/// `giantvm node ... --exit-on-stdin-eof --log-level L` there.
public struct RemotePlan: Sendable {
    public var client: SSHClient
    /// giantvm on the hosts.
    public var giantvm: String
    /// The config file on the hosts.
    public var config: String
    /// GIANTVM_PLUGIN_PATH for the nodes (empty: not set).
    public var pluginPath: [String]
    public var logLevel: String

    /// The node option that ties a remote node to its ssh session's input (StdinWatch).
    public static let stopOnEOFOption = "--exit-on-stdin-eof"

    public init(client: SSHClient, giantvm: String, config: String, pluginPath: [String] = [], logLevel: String) {
        self.client = client; self.giantvm = giantvm; self.config = config
        self.pluginPath = pluginPath; self.logLevel = logLevel
    }

    /// Node `id` on `destination`: `giantvm` with `arguments(config)` (the node's arguments,
    /// given the config's path on the host), then the stop option and the log level; output
    /// prefixed `[node id]`, labelled `node id (ssh destination)`.
    public func spec(id: UInt32, destination: SSHDestination, arguments: (String) -> [String]) throws -> ProcessSpec {
        if destination.host.hasPrefix("-") || destination.host.isEmpty {
            throw LaunchError("node \(id): '\(destination.host)' cannot be an ssh host")
        }
        let env = pluginPath.isEmpty ? [] : [(key: "GIANTVM_PLUGIN_PATH", value: pluginPath.joined(separator: ":"))]
        let node = RemoteNode(label: "node \(id) (ssh \(destination))", destination: destination,
                              argv: [giantvm] + arguments(config) + [Self.stopOnEOFOption, "--log-level", logLevel],
                              environment: env, prefix: "[node \(id)] ")
        return node.processSpec(client: client)
    }
}

public enum Shell {
    /// `word` as one word for a POSIX shell: as it is when it holds only characters no shell
    /// treats specially (never the first word here: `=` is plain), else in single quotes (a '
    /// inside becomes '\'').
    public static func quote(_ word: String) -> String {
        let plain = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./:=@%+,")
        if !word.isEmpty, word.allSatisfy({ plain.contains($0) }) { return word }
        return "'" + word.replacingOccurrences(of: "'", with: #"'\''"#) + "'"
    }
}
