// `giantvm up --ssh` against real OpenSSH servers: one network namespace per host, each running
// Debian's sshd (scripts/deps/sshd.sh) with host and user keys made here, joined by a bridge that
// the launcher (in the root namespace) reaches too. The VM is the 2-node test guest; each node
// can bind its address only inside its own namespace, so a passing run proves each node ran on
// its "host". Every wait is bounded; namespaces, sshd and temporary files are always removed.
// Processes are started with posix_spawn and their output goes to files (no Foundation Process:
// its exit detection stalled here with a long-running sshd beside short commands).

import Foundation
import TestSupport
import XCTest

/// A child process whose stdout and stderr go to files; stdin is /dev/null.
final class LoggedProcess {
    let pid: pid_t
    let outPath: String, errPath: String
    private(set) var status: Int32?

    init(_ argv: [String], logs: String) throws {
        outPath = logs + ".out"; errPath = logs + ".err"
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, outPath, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0o600)
        posix_spawn_file_actions_addopen(&actions, 2, errPath, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0o600)
        var program = argv[0]
        if !program.contains("/"), let dir = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"].first(where: { access("\($0)/\(program)", X_OK) == 0 }) {
            program = "\(dir)/\(program)"
        }
        let args = argv.map { strdup($0) } + [nil]
        defer { args.forEach { free($0) } }
        var p: pid_t = 0
        let rc = posix_spawnp(&p, program, &actions, nil, args, environ)
        guard rc == 0 else { throw XCTSkip("cannot start \(argv[0]): \(String(cString: strerror(rc)))") }
        pid = p
    }

    var stdout: String { (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? "" }
    var stderr: String { (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? "" }
    var output: String { stdout + stderr }

    /// Reaps the process if it ended; true when it has.
    func poll() -> Bool {
        if status != nil { return true }
        var st: Int32 = 0
        guard waitpid(pid, &st, WNOHANG) == pid else { return false }
        status = st & 0x7f == 0 ? (st >> 8) & 0xff : 128 + (st & 0x7f)
        return true
    }

    /// Waits at most `timeout` seconds for the exit; nil if it still runs.
    func wait(timeout: Double) -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        while !poll() && Date() < deadline { usleep(20_000) }
        return status
    }

    func waitForOutput(timeout: Double, _ predicate: (String) -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if predicate(output) { return true }
            if poll() { return predicate(output) }
            usleep(50_000)
        }
        return false
    }

    /// SIGKILL and reap (at most 5 s).
    func stop() {
        if !poll() { kill(pid, SIGKILL); _ = wait(timeout: 5) }
    }
}

final class SSHLaunchTests: XCTestCase {
    let names = ["gvmssh0", "gvmssh1"]
    let bridge = "gvmsshbr"
    let addresses = ["10.236.77.1", "10.236.77.2"]
    let launcherAddress = "10.236.77.254"
    var dir = ""
    var sshds: [LoggedProcess] = []
    var commands = 0

    /// Runs a command to completion (at most 10 s, then killed); returns its status and output.
    @discardableResult
    func command(_ args: [String]) -> (status: Int32, output: String) {
        commands += 1
        let base = (dir.isEmpty ? NSTemporaryDirectory() + "gvmssh-cmd-\(getpid())" : dir + "/cmd") + "\(commands)"
        defer { unlink(base + ".out"); unlink(base + ".err") }
        guard let p = try? LoggedProcess(args, logs: base) else { return (-1, "cannot run \(args[0])") }
        guard let status = p.wait(timeout: 10) else { p.stop(); return (-1, "\(args.joined(separator: " ")) timed out") }
        return (status, p.output)
    }

    override func setUpWithError() throws {
        try Requirement.builtGiantVM()
        try Requirement.kvm()
        try Requirement.userfaultfd()
        try Requirement.root()
        for tool in ["/usr/sbin/sshd", "/usr/bin/ssh", "/usr/bin/ssh-keygen"] where access(tool, X_OK) != 0 {
            throw XCTSkip("\(tool) is missing: run scripts/deps/sshd.sh (installs openssh-server and openssh-client)")
        }
        if !FileManager.default.fileExists(atPath: Built.packageRoot + "/Guests/build/testguest.elf") {
            throw XCTSkip("the test guest is not built: run `make -C Guests`")
        }
        removeLab()
        dir = NSTemporaryDirectory() + "gvmssh-" + UUID().uuidString.prefix(8)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try buildLab()
        try startSSHDs()
    }

    override func tearDown() {
        for ns in names { killAll(in: ns) }
        for s in sshds { s.stop() }
        sshds = []
        removeLab()
        if !dir.isEmpty { try? FileManager.default.removeItem(atPath: dir) }
    }

    // MARK: - the lab

    /// A bridge in namespace `bridge`; each host namespace and the root namespace (the launcher's
    /// side, `launcherAddress`) joined to it by a veth pair.
    func buildLab() throws {
        var steps: [[String]] = [["ip", "netns", "add", bridge],
                                 ["ip", "-n", bridge, "link", "add", "br0", "type", "bridge"],
                                 ["ip", "-n", bridge, "link", "set", "br0", "up"],
                                 ["ip", "link", "add", "gvmsshup", "type", "veth", "peer", "name", "up0", "netns", bridge],
                                 ["ip", "-n", bridge, "link", "set", "up0", "master", "br0"],
                                 ["ip", "-n", bridge, "link", "set", "up0", "up"],
                                 ["ip", "addr", "add", launcherAddress + "/24", "dev", "gvmsshup"],
                                 ["ip", "link", "set", "gvmsshup", "up"]]
        for (i, ns) in names.enumerated() {
            steps += [["ip", "netns", "add", ns],
                      ["ip", "link", "add", "gvmssh\(i)", "netns", ns, "type", "veth", "peer", "name", "h\(i)", "netns", bridge],
                      ["ip", "-n", bridge, "link", "set", "h\(i)", "master", "br0"],
                      ["ip", "-n", bridge, "link", "set", "h\(i)", "up"],
                      ["ip", "-n", ns, "addr", "add", addresses[i] + "/24", "dev", "gvmssh\(i)"],
                      ["ip", "-n", ns, "link", "set", "gvmssh\(i)", "up"],
                      ["ip", "-n", ns, "link", "set", "lo", "up"]]
        }
        for s in steps {
            let r = command(s)
            if r.status != 0 {
                removeLab()
                throw XCTSkip("cannot build network namespaces (\(s.joined(separator: " "))): \(r.output)")
            }
        }
    }

    func removeLab() {
        // The root namespace's veth end goes with its peer in the bridge namespace.
        for ns in names + [bridge] {
            killAll(in: ns)
            command(["ip", "netns", "del", ns])
        }
        command(["ip", "link", "del", "gvmsshup"])
    }

    /// Host keys, a user key, authorized_keys, known_hosts; one sshd per host namespace.
    func startSSHDs() throws {
        func keygen(_ path: String) throws {
            let r = command(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "gvmssh-test", "-f", path])
            guard r.status == 0 else { throw XCTSkip("ssh-keygen failed: \(r.output)") }
        }
        try keygen(dir + "/id")
        try FileManager.default.copyItem(atPath: dir + "/id.pub", toPath: dir + "/authorized_keys")
        // sshd's privilege-separation directory (made by the service scripts, which never ran here).
        try? FileManager.default.createDirectory(atPath: "/run/sshd", withIntermediateDirectories: true,
                                                 attributes: [.posixPermissions: 0o755])
        for i in names.indices { try keygen(dir + "/host\(i)") }
        var known = ""
        for (i, ns) in names.enumerated() {
            let pub = try String(contentsOfFile: dir + "/host\(i).pub", encoding: .utf8).split(separator: " ").prefix(2).joined(separator: " ")
            known += "\(addresses[i]) \(pub)\n"
            let config = """
                ListenAddress \(addresses[i]):22
                HostKey \(dir)/host\(i)
                AuthorizedKeysFile \(dir)/authorized_keys
                PidFile \(dir)/sshd\(i).pid
                StrictModes no
                UsePAM no
                PermitRootLogin prohibit-password
                PubkeyAuthentication yes
                PasswordAuthentication no
                KbdInteractiveAuthentication no
                AllowTcpForwarding no
                X11Forwarding no
                PrintMotd no
                """
            try config.write(toFile: dir + "/sshd\(i).conf", atomically: true, encoding: .utf8)
            let sshd = try LoggedProcess(["ip", "netns", "exec", ns, "/usr/sbin/sshd", "-D", "-e", "-f", dir + "/sshd\(i).conf"],
                                         logs: dir + "/sshd\(i)")
            sshds.append(sshd)
            guard sshd.waitForOutput(timeout: 10, { $0.contains("Server listening on \(self.addresses[i])") }) else {
                XCTFail("sshd in \(ns) did not start: \(sshd.output)")
                throw XCTSkip("sshd did not start")
            }
        }
        try known.write(toFile: dir + "/known_hosts", atomically: true, encoding: .utf8)
    }

    /// A 2-node VM config on the namespaces' addresses: node 0 reached at its address, node 1
    /// through its `ssh:` target; the test's key and known_hosts.
    func sshConfig(port: Int, cmdline: String) throws -> String {
        let path = vmConfig(port: port, addresses: addresses, cmdline: cmdline)
        var text = try String(contentsOfFile: path, encoding: .utf8)
        let node1 = "{id: 1, address: \(addresses[1]), port: \(port + 1), vcpus: 2}"
        XCTAssertTrue(text.contains(node1))
        text = text.replacingOccurrences(of: node1, with: "{id: 1, address: \(addresses[1]), port: \(port + 1), vcpus: 2, ssh: \"root@\(addresses[1]):22\"}")
        text += """

            ssh:
              identity: \(dir)/id
              options: [UserKnownHostsFile=\(dir)/known_hosts, StrictHostKeyChecking=yes]

            """
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// giantvm processes running in namespace `ns` (pid, command line).
    func giantvmProcesses(in ns: String) -> [(pid: Int32, cmdline: String)] {
        command(["ip", "netns", "pids", ns]).output.split(separator: "\n").compactMap { line -> (Int32, String)? in
            guard let pid = Int32(line.trimmingCharacters(in: .whitespaces)),
                  let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return nil }
            let args = data.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            guard let exe = args.first, exe.hasSuffix("/giantvm"), args.dropFirst().first == "node" else { return nil }
            return (pid, args.joined(separator: " "))
        }
    }

    func killAll(in ns: String) {
        for line in command(["ip", "netns", "pids", ns]).output.split(separator: "\n") {
            if let pid = Int32(line.trimmingCharacters(in: .whitespaces)) { kill(pid, SIGKILL) }
        }
    }

    /// Waits (at most `timeout`) until no giantvm node runs in any host namespace; returns those left.
    func leftOver(timeout: Double) -> [String] {
        let deadline = Date().addingTimeInterval(timeout)
        var left: [String] = []
        repeat {
            left = names.flatMap { ns in giantvmProcesses(in: ns).map { "\(ns): \($0.pid) \($0.cmdline)" } }
            if left.isEmpty { return [] }
            usleep(100_000)
        } while Date() < deadline
        return left
    }

    func startUp(_ config: String, timeout: Int = 60) throws -> LoggedProcess {
        try LoggedProcess([Built.giantvm, "up", "--ssh", config, "--timeout", "\(timeout)"], logs: dir + "/up")
    }

    /// Waits until both nodes run the guest.
    func waitRunning(_ up: LoggedProcess, file: StaticString = #filePath, line: UInt = #line) -> Bool {
        let ok = up.waitForOutput(timeout: 30) {
            $0.contains("[node 1] node 1: met node 0") && $0.contains("[node 0] guest: workload=counter")
        }
        if !ok { XCTFail("the VM did not start over ssh: \(up.output)", file: file, line: line) }
        return ok
    }

    // MARK: - tests

    func testTheDemoRunsOverSSHOnTwoHosts() throws {
        let r = try startUp(try sshConfig(port: 20700, cmdline: "hello"), timeout: 30)
        defer { r.stop() }
        XCTAssertEqual(r.wait(timeout: 60), 0, r.output)
        let n0 = lines(r.stdout, "[node 0] "), n1 = lines(r.stdout, "[node 1] ")
        XCTAssertEqual(Set(n0.filter { $0.hasPrefix("hello from") }), Set((0..<4).map { "hello from vCPU \($0)" }), r.output)
        XCTAssertTrue(n0.contains { $0.hasPrefix("SUMMARY workload=hello vcpus=4 ok=true") }, r.output)
        XCTAssertTrue(n0.contains { $0.hasPrefix("node 0: met node 1 over transport-tcp") }, r.output)
        XCTAssertTrue(n1.contains { $0.hasPrefix("node 1: met node 0 over transport-tcp") }, r.output)
        XCTAssertTrue(n0.contains { $0.hasPrefix("node 0: stopped cleanly: guest passed") }, r.output)
        XCTAssertTrue(n1.contains { $0.hasPrefix("node 1: stopped cleanly: node 0 finished: guest passed") }, r.output)
        XCTAssertGreaterThan(stat(r.stdout, node: 1, "io_forwarded") ?? 0, 0, r.output)
        XCTAssertTrue(r.stdout.hasSuffix("[up] all 2 nodes stopped cleanly\n"), r.output)
        XCTAssertEqual(leftOver(timeout: 5), [])
    }

    func testKillingOneHostsNodeStopsEveryNodeAndLeavesNothing() throws {
        let up = try startUp(try sshConfig(port: 20710, cmdline: "counter iters=2000000000"))
        defer { up.stop() }
        guard waitRunning(up) else { return }
        let victims = giantvmProcesses(in: names[1])
        XCTAssertEqual(victims.count, 1, "\(victims)")
        XCTAssertTrue(victims.first?.cmdline.contains("--id 1 ") ?? false, "\(victims)")
        XCTAssertTrue(victims.first?.cmdline.contains("--exit-on-stdin-eof") ?? false, "\(victims)")
        for v in victims { kill(v.pid, SIGKILL) }
        let status = up.wait(timeout: 40), r = up
        XCTAssertNotNil(status, "up did not end after a node died: \(r.output)")
        XCTAssertNotEqual(status, 0, r.output)
        XCTAssertTrue(r.stderr.contains("[up] node 1 (ssh root@\(addresses[1]):22) exited with status 255 (ssh failed, or the remote node was killed by a signal)"),
                      r.output)
        // Node 0 stopped because node 1 went away (found lost, or a coherence message to it failed).
        let stop0 = lines(r.output, "[node 0] giantvm: error: node 0: ")
        XCTAssertEqual(stop0.count, 1, r.output)
        XCTAssertTrue(stop0.first?.contains("node 1") ?? false, r.output)
        XCTAssertTrue(r.stderr.contains("[up] node 0 (ssh \(addresses[0])) exited with status "), r.output)
        XCTAssertFalse(r.stdout.contains("RESULT"), "the guest must not have finished: \(r.output)")
        XCTAssertEqual(leftOver(timeout: 5), [], "nothing may be left running on any host")
    }

    func testCtrlCStopsEveryRemoteNodeThroughItsInput() throws {
        let up = try startUp(try sshConfig(port: 20720, cmdline: "counter iters=2000000000"))
        defer { up.stop() }
        guard waitRunning(up) else { return }
        kill(up.pid, SIGINT)
        let status = up.wait(timeout: 40), r = up
        XCTAssertNotNil(status, "up did not end after Ctrl-C: \(r.output)")
        XCTAssertEqual(status, 128 + SIGTERM, r.output)
        XCTAssertTrue(r.stderr.contains("[up] interrupted by signal \(SIGTERM)"), r.output)
        for n in 0..<2 {
            XCTAssertTrue(r.output.contains("[node \(n)] node \(n): standard input closed"), "node \(n) was not stopped through its input: \(r.output)")
        }
        XCTAssertEqual(leftOver(timeout: 5), [], "nothing may be left running on any host")
    }

    /// `up` killed outright: its ends of the pipes close with it, each ssh forwards the end of
    /// input, each remote node stops, and the sshs end with their sessions.
    func testKillingUpStopsEveryRemoteNode() throws {
        let up = try startUp(try sshConfig(port: 20740, cmdline: "counter iters=2000000000"))
        defer { up.stop() }
        guard waitRunning(up) else { return }
        up.stop()
        XCTAssertEqual(leftOver(timeout: 20), [], "nothing may be left running on any host")
        XCTAssertTrue(up.output.contains("[node 1] node 1: met node 0"))
        // The local sshs (they name this test's key) end too.
        let deadline = Date().addingTimeInterval(10)
        var sshs: [String] = []
        repeat {
            sshs = (try? FileManager.default.contentsOfDirectory(atPath: "/proc"))?.compactMap { pid -> String? in
                guard Int32(pid) != nil, let d = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return nil }
                let text = String(decoding: d, as: UTF8.self)
                return text.hasPrefix("/usr/bin/ssh\0") && text.contains(dir + "/id") ? pid : nil
            } ?? []
            if sshs.isEmpty { break }
            usleep(100_000)
        } while Date() < deadline
        XCTAssertEqual(sshs, [], "ssh processes left behind")
    }
}

/// `up --ssh` refusing to start, and ssh failing: no sshd, no root, no KVM needed.
final class SSHLaunchErrorTests: XCTestCase {
    override func setUpWithError() throws { try Requirement.builtGiantVM() }

    func config(_ extra: String, nodeSSH: String = "") -> String {
        temporaryFile("""
            cluster: sshfail
            nodes:
              - {id: 0, address: 127.0.0.1, port: 20730, vcpus: 1\(nodeSSH)}
              - {id: 1, address: 127.0.0.1, port: 20731, vcpus: 1\(nodeSSH)}
            transport: {plugin: transport-tcp}
            coherence: {plugin: dsm-ivy}
            timeouts: {connect: 2s, heartbeat: 100ms, failure: 1s}
            \(extra)
            """)
    }

    func testAMissingIdentityFileIsRefusedBeforeAnythingStarts() throws {
        let path = config("ssh: {identity: /nonexistent/gvm-key}")
        let r = try giantvm(["up", "--ssh", path], timeout: 20)
        XCTAssertEqual(r.status, 1, r.output)
        XCTAssertTrue(r.stderr.contains("giantvm: error: \(path): ssh.identity: cannot read the private key '/nonexistent/gvm-key'"), r.output)
        XCTAssertFalse(r.output.contains("[node"), r.output)
    }

    func testAMissingClientIsRefused() throws {
        let path = config("ssh: {client: /nonexistent/ssh}")
        let r = try giantvm(["up", "--ssh", path], timeout: 20)
        XCTAssertEqual(r.status, 1, r.output)
        XCTAssertTrue(r.stderr.contains("\(path): ssh.client: cannot find an executable '/nonexistent/ssh'"), r.output)
    }

    /// Nothing listens on port 1: each ssh fails at once, `up` says which node and why, exits 1.
    func testAnUnreachableHostFailsEveryNodeClearly() throws {
        guard access("/usr/bin/ssh", X_OK) == 0 else { throw XCTSkip("ssh is missing: run scripts/deps/sshd.sh") }
        let path = config("ssh: {options: [UserKnownHostsFile=/dev/null, StrictHostKeyChecking=no]}", nodeSSH: ", ssh: \"127.0.0.1:1\"")
        let r = try giantvm(["up", "--ssh", path], timeout: 40)
        XCTAssertEqual(r.status, 1, r.output)
        for n in 0..<2 {
            XCTAssertTrue(r.stderr.contains("[node \(n)] ssh: connect to host 127.0.0.1 port 1: Connection refused"), r.output)
            XCTAssertTrue(r.stderr.contains("[up] node \(n) (ssh 127.0.0.1:1) exited with status 255 (ssh failed, or the remote node was killed by a signal)"), r.output)
        }
        XCTAssertTrue(r.stderr.contains("[up] failed: node(s) 0, 1 exited non-zero"), r.output)
    }
}
