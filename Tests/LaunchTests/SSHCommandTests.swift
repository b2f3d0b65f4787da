import Foundation
import Launch
import XCTest

/// The ssh and remote command lines of `up --ssh`, checked without ssh: the words a POSIX shell
/// makes of them, and a stand-in "ssh" that runs the remote command the way sshd does.
final class SSHCommandTests: XCTestCase {
    /// What /bin/sh makes of a command line: one word per line.
    private func shellWords(_ commandLine: String) throws -> [String] {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        p.arguments = ["-c", "set -- \(commandLine); for w in \"$@\"; do printf '%s\\0' \"$w\"; done"]
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 0)
        return String(decoding: data, as: UTF8.self).split(separator: "\0", omittingEmptySubsequences: false).dropLast().map(String.init)
    }

    func testQuotedWordsComeBackExactlyFromAShell() throws {
        let words = ["/opt/giant vm/bin/giantvm", "it's", "a\"b", "$HOME", "`id`", "x;y", "*", "~", "", "tab\there",
                     "new\nline", "--cmdline", "counter iters=2000", "plain-word_1.2:3=4@5%6+7,8"]
        XCTAssertEqual(try shellWords(words.map(Shell.quote).joined(separator: " ")), words)
        XCTAssertEqual(Shell.quote("plain-word_1.2:3=4@5%6+7,8"), "plain-word_1.2:3=4@5%6+7,8", "plain words stay readable")
        XCTAssertEqual(Shell.quote("it's"), #"'it'\''s'"#)
        XCTAssertEqual(Shell.quote(""), "''")
    }

    func testRemoteCommandExecsTheNodeWithItsEnvironment() throws {
        let node = RemoteNode(label: "node 1", destination: SSHDestination(host: "h"),
                              argv: ["/opt/g vm/giantvm", "node", "--config", "/etc/vm.yaml", "--id", "1", "--cmdline", "counter iters=5"],
                              environment: [(key: "GIANTVM_PLUGIN_PATH", value: "/opt/a:/opt/b c")], prefix: "[node 1] ")
        XCTAssertEqual(node.remoteCommand,
                       "exec env 'GIANTVM_PLUGIN_PATH=/opt/a:/opt/b c' '/opt/g vm/giantvm' node --config /etc/vm.yaml --id 1 --cmdline 'counter iters=5'")
        XCTAssertEqual(try shellWords(node.remoteCommand),
                       ["exec", "env", "GIANTVM_PLUGIN_PATH=/opt/a:/opt/b c", "/opt/g vm/giantvm", "node", "--config", "/etc/vm.yaml",
                        "--id", "1", "--cmdline", "counter iters=5"])
        let bare = RemoteNode(label: "n", destination: SSHDestination(host: "h"), argv: ["/bin/giantvm", "node"], prefix: "")
        XCTAssertEqual(bare.remoteCommand, "exec /bin/giantvm node")
    }

    func testSSHArgumentsPutTheUsersOptionsFirstAndEndOptionParsing() {
        let client = SSHClient(program: "/usr/bin/ssh", identity: "/k/id_ed25519",
                               options: ["StrictHostKeyChecking=accept-new", "BatchMode=no"])
        let args = client.arguments(destination: SSHDestination(user: "ops", host: "gw1", port: 2222), remote: "exec /bin/true")
        XCTAssertEqual(args, ["-T",
                              "-o", "StrictHostKeyChecking=accept-new", "-o", "BatchMode=no",
                              "-i", "/k/id_ed25519", "-o", "IdentitiesOnly=yes",
                              "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3",
                              "-p", "2222", "--", "ops@gw1", "exec /bin/true"])
        // No tty (-T) comes first; the user's -o precede the defaults (ssh keeps the first value).
        XCTAssertLessThan(args.firstIndex(of: "BatchMode=no")!, args.firstIndex(of: "BatchMode=yes")!)
        let plain = SSHClient(program: "/usr/bin/ssh").arguments(destination: SSHDestination(host: "10.0.0.2"), remote: "x")
        XCTAssertEqual(Array(plain.suffix(3)), ["--", "10.0.0.2", "x"])
        XCTAssertFalse(plain.contains("-p") || plain.contains("-i") || plain.contains("-t"))
        XCTAssertEqual(SSHDestination(user: "u", host: "fe80::1", port: 22).description, "u@[fe80::1]:22")
        XCTAssertEqual(SSHDestination(user: "u", host: "fe80::1", port: 22).login, "u@fe80::1")
    }

    func testProcessSpecRunsTheClientAndStopsByClosingStdin() {
        let node = RemoteNode(label: "node 3 (ssh h)", destination: SSHDestination(host: "h"), argv: ["/g", "node"], prefix: "[node 3] ")
        let spec = node.processSpec(client: SSHClient(program: "/usr/bin/ssh"))
        XCTAssertEqual(spec.executable, "/usr/bin/ssh")
        XCTAssertEqual(spec.stop, .closingStdin)
        XCTAssertEqual(spec.stdoutPrefix, "[node 3] ")
        XCTAssertEqual(spec.stderrPrefix, "[node 3] ")
        XCTAssertEqual(spec.arguments.last, "exec /g node")
        XCTAssertEqual(spec.label, "node 3 (ssh h)")
    }

    func testThePlanRunsTheSameNodeCommandOnEveryHost() throws {
        let plan = RemotePlan(client: SSHClient(program: "/usr/bin/ssh", identity: "/k/id"), giantvm: "/opt/g/giantvm",
                              config: "/shared/vm.yaml", pluginPath: ["/opt/g/lib", "/opt/x"], logLevel: "info")
        let spec = try plan.spec(id: 1, destination: SSHDestination(user: "ops", host: "gw1", port: 2222)) {
            ["node", "--config", $0, "--id", "1", "--cmdline", "counter iters=5"]
        }
        XCTAssertEqual(spec.label, "node 1 (ssh ops@gw1:2222)")
        XCTAssertEqual(spec.stdoutPrefix, "[node 1] ")
        XCTAssertEqual(spec.stop, .closingStdin)
        XCTAssertEqual(spec.executable, "/usr/bin/ssh")
        XCTAssertEqual(Array(spec.arguments.suffix(4).prefix(3)), ["2222", "--", "ops@gw1"])
        XCTAssertEqual(try shellWords(spec.arguments.last!),
                       ["exec", "env", "GIANTVM_PLUGIN_PATH=/opt/g/lib:/opt/x", "/opt/g/giantvm", "node", "--config", "/shared/vm.yaml",
                        "--id", "1", "--cmdline", "counter iters=5", "--exit-on-stdin-eof", "--log-level", "info"])
        let noPlugins = RemotePlan(client: SSHClient(program: "/usr/bin/ssh"), giantvm: "/g", config: "/c.yaml", logLevel: "notice")
        XCTAssertEqual(try noPlugins.spec(id: 0, destination: SSHDestination(host: "10.0.0.1")) { ["node", "--config", $0] }.arguments.last,
                       "exec /g node --config /c.yaml --exit-on-stdin-eof --log-level notice")
        XCTAssertThrowsError(try noPlugins.spec(id: 3, destination: SSHDestination(host: "-oProxyCommand=x")) { _ in [] }) { e in
            XCTAssertTrue("\(e)".contains("node 3: '-oProxyCommand=x' cannot be an ssh host"), "\(e)")
        }
    }

    func testResolveFindsAProgramOnThePath() throws {
        let dir = NSTemporaryDirectory() + "ssh-resolve-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir + "/sub", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        FileManager.default.createFile(atPath: dir + "/fakessh", contents: Data("#!/bin/sh\n".utf8), attributes: [.posixPermissions: 0o755])
        FileManager.default.createFile(atPath: dir + "/noexec", contents: Data(), attributes: [.posixPermissions: 0o644])
        XCTAssertEqual(SSHClient.resolve("fakessh", path: "/nonexistent:\(dir)"), dir + "/fakessh")
        XCTAssertNil(SSHClient.resolve("noexec", path: dir))
        XCTAssertNil(SSHClient.resolve("sub", path: dir), "a directory is not a program")
        XCTAssertEqual(SSHClient.resolve(dir + "/fakessh", path: ""), dir + "/fakessh")
        XCTAssertNil(SSHClient.resolve(dir + "/missing", path: dir))
    }

    /// The whole path without a network: a stand-in "ssh" runs the remote command line with
    /// /bin/sh -c, as sshd's login shell does, and keeps its standard input. The remote command
    /// reads its input until it closes: `terminate` reaches it only by closing that pipe.
    func testAStandInSSHRunsTheRemoteCommandAndStopsWhenTheLauncherClosesItsInput() throws {
        let dir = NSTemporaryDirectory() + "ssh-standin-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let fake = dir + "/ssh"
        // Skips ssh's options up to "--", then the login; runs the remote command line.
        let script = "#!/bin/sh\nwhile [ \"$1\" != -- ]; do shift; done\nshift 2\nexec /bin/sh -c \"$1\"\n"
        FileManager.default.createFile(atPath: fake, contents: Data(script.utf8), attributes: [.posixPermissions: 0o755])
        let remote = "trap 'echo got-signal; exit 9' TERM INT; echo \"arg=$1\"; echo ready; while read x; do :; done; echo input-closed; exit 7"
        let node = RemoteNode(label: "node 0", destination: SSHDestination(host: "h"),
                              argv: ["/bin/sh", "-c", remote, "sh", "it's a word"], prefix: "[node 0] ")
        let lines = LauncherTests.Lines()
        let l = Launcher(executable: "/nonexistent/giantvm", processes: [node.processSpec(client: SSHClient(program: fake))],
                         policy: .init(failureGrace: 5)) { i, s, line in lines.add(i, s, line); return false }
        DispatchQueue.global().async {
            let deadline = Date().addingTimeInterval(10)
            while !lines.of(0, .stdout).contains("ready") && Date() < deadline { usleep(10_000) }
            l.terminate(signal: SIGTERM)
        }
        let r = try l.run()
        XCTAssertEqual(r.ends, [.exited(7)], "\(lines.of(0, .stdout)) \(lines.of(0, .stderr))")
        XCTAssertEqual(lines.of(0, .stdout), ["arg=it's a word", "ready", "input-closed"])
        XCTAssertEqual(r.interruptedBy, SIGTERM)
    }
}
