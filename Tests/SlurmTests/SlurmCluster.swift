// A one-machine Slurm for tests: Debian's slurm-wlm and munge (scripts/deps/slurm.sh installs
// them), started by the test with everything (config, munge key and socket, state, spool, logs)
// in a fresh directory, and stopped by it.
//
// What works in a container without a cgroup hierarchy of its own: process tracking by
// /proc (proctrack/linuxproc), no task plugin (task/none), no job accounting, select/cons_tres
// with CPUs as the resource. The daemons run as daemons (they fork; their pid files name them):
// Foundation's Process, which the tests' Child wraps, blocks in wait4 on a long-running child and
// then reaps no other child, so no daemon is a Process of the test.

import Foundation
import TestSupport
import XCTest

final class SlurmCluster {
    static let programs = ["/usr/sbin/munged", "/usr/sbin/slurmctld", "/usr/sbin/slurmd", "/usr/bin/srun",
                           "/usr/bin/sinfo", "/usr/bin/sbatch", "/usr/bin/squeue", "/usr/bin/scancel"]

    let directory: String
    let confPath: String
    let nodeName: String
    /// The daemons started, with their pid files.
    private var daemons: [(name: String, pidFile: String)] = []

    /// Skips without root or without Slurm outside CI; in CI (CI=true) a missing Slurm is a failure.
    static func requireInstalled() throws {
        let missing = programs.filter { !FileManager.default.isExecutableFile(atPath: $0) }
        guard !missing.isEmpty else { return }
        let why = "Slurm is not installed (missing \(missing.joined(separator: ", "))): run `bash scripts/deps/slurm.sh` as root"
        if ProcessInfo.processInfo.environment["CI"] == "true" { XCTFail(why) }
        throw XCTSkip(why)
    }

    /// The environment Slurm's clients need to find this cluster.
    var clientEnvironment: [String: String] { ["SLURM_CONF": confPath] }

    /// Writes the config and starts munged, slurmctld and slurmd; returns once the node is idle
    /// (at most `timeout` seconds), or throws with the daemons' logs.
    init(cpus: Int = 2, timeout: TimeInterval = 30) throws {
        directory = NSTemporaryDirectory() + "giantvm-slurm-" + UUID().uuidString
        let fm = FileManager.default
        // munged wants its socket directory traversable by everyone and its key private.
        for (sub, mode) in [("", 0o755), ("/munge", 0o755), ("/state", 0o700), ("/spool", 0o755), ("/log", 0o755)] {
            try fm.createDirectory(atPath: directory + sub, withIntermediateDirectories: true,
                                   attributes: [.posixPermissions: mode])
        }
        var key = [UInt8](repeating: 0, count: 1024)
        var rng = SystemRandomNumberGenerator()
        for i in key.indices { key[i] = rng.next() }
        guard fm.createFile(atPath: directory + "/munge/key", contents: Data(key), attributes: [.posixPermissions: 0o600]) else {
            throw SlurmClusterError("cannot write the munge key in \(directory)")
        }
        var host = [CChar](repeating: 0, count: 256)
        gethostname(&host, host.count - 1)
        nodeName = String(String(cString: host).split(separator: ".").first ?? "localhost")
        confPath = directory + "/slurm.conf"
        let ctldPort = try Self.freePort(), slurmdPort = try Self.freePort()
        let conf = """
            ClusterName=giantvmtest
            SlurmctldHost=\(nodeName)(127.0.0.1)
            SlurmUser=root
            SlurmdUser=root
            SlurmctldPort=\(ctldPort)
            SlurmdPort=\(slurmdPort)
            AuthType=auth/munge
            CredType=cred/munge
            AuthInfo=socket=\(directory)/munge/socket
            StateSaveLocation=\(directory)/state
            SlurmdSpoolDir=\(directory)/spool
            SlurmctldPidFile=\(directory)/slurmctld.pid
            SlurmdPidFile=\(directory)/slurmd.pid
            SlurmctldLogFile=\(directory)/log/slurmctld.log
            SlurmdLogFile=\(directory)/log/slurmd.log
            ProctrackType=proctrack/linuxproc
            TaskPlugin=task/none
            SelectType=select/cons_tres
            SelectTypeParameters=CR_CPU
            JobAcctGatherType=jobacct_gather/none
            AccountingStorageType=accounting_storage/none
            MpiDefault=none
            MailProg=/bin/true
            ReturnToService=2
            SchedulerType=sched/builtin
            NodeName=\(nodeName) NodeAddr=127.0.0.1 CPUs=\(cpus) State=UNKNOWN
            PartitionName=giantvm Nodes=\(nodeName) Default=YES MaxTime=10 State=UP

            """
        try conf.write(toFile: confPath, atomically: true, encoding: .utf8)

        do {
            try start("munged", "/usr/sbin/munged", pidFile: directory + "/munge/pid",
                      ["--key-file=\(directory)/munge/key", "--socket=\(directory)/munge/socket",
                       "--pid-file=\(directory)/munge/pid", "--log-file=\(directory)/log/munged.log",
                       "--seed-file=\(directory)/munge/seed"])
            try waitFor("munged's socket", timeout: 10) { fm.fileExists(atPath: self.directory + "/munge/socket") }
            try start("slurmctld", "/usr/sbin/slurmctld", pidFile: directory + "/slurmctld.pid", ["-c", "-f", confPath])
            try start("slurmd", "/usr/sbin/slurmd", pidFile: directory + "/slurmd.pid", ["-f", confPath, "-N", nodeName])
            try waitFor("node \(nodeName) to be idle", timeout: timeout) {
                let r = try? run("/usr/bin/sinfo", ["-h", "-N", "-o", "%T"], timeout: 5, environment: self.clientEnvironment)
                return r?.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "idle"
            }
        } catch {
            let logs = self.logs()
            stop()
            throw SlurmClusterError("\(error)\n\(logs)")
        }
    }

    /// Runs a daemon's start command (it forks the daemon and exits) and waits for its pid file.
    private func start(_ name: String, _ path: String, pidFile: String, _ arguments: [String]) throws {
        // Through bash, closing every descriptor but stdio first: the daemon must hold neither the
        // pipes `run` reads to their end nor the socket by which Foundation's Process learns that
        // its child has exited (held by a daemon, it would never see the starter exit).
        let out = "\(directory)/log/\(name).out"
        let script = """
            for fd in $(ls /proc/$$/fd); do [ "$fd" -gt 2 ] && eval "exec $fd>&-"; done 2>/dev/null
            exec "$0" "$@" </dev/null >>'\(out)' 2>&1
            """
        let r = try run("/bin/bash", ["-c", script, path] + arguments,
                        timeout: 20, environment: clientEnvironment, directory: directory)
        guard r.status == 0, !r.timedOut else {
            let text = (try? String(contentsOfFile: out, encoding: .utf8)) ?? ""
            throw SlurmClusterError("\(name) did not start (status \(r.status)\(r.timedOut ? ", timed out" : "")): \(text)")
        }
        daemons.append((name, pidFile))
        try waitFor("\(name)'s pid file", timeout: 10) { Self.pid(pidFile) != nil }
    }

    /// The live process a pid file names (nil if absent, unreadable, gone or a zombie).
    static func pid(_ pidFile: String) -> Int32? {
        guard let text = try? String(contentsOfFile: pidFile, encoding: .utf8),
              let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)), pid > 1 else { return nil }
        return isAlive(pid) ? pid : nil
    }

    /// Whether `pid` is a process that has not exited (zombies, which nothing may reap in a
    /// container whose init does not, count as exited).
    static func isAlive(_ pid: Int32) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")"), stat.distance(from: close, to: stat.endIndex) > 2 else { return false }
        let state = stat[stat.index(close, offsetBy: 2)]
        return state != "Z" && state != "X"
    }

    private func waitFor(_ what: String, timeout: TimeInterval, _ condition: () -> Bool) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if condition() { return }
            for d in daemons where Self.pid(d.pidFile) == nil && FileManager.default.fileExists(atPath: d.pidFile) {
                throw SlurmClusterError("\(d.name) exited while waiting for \(what)")
            }
            usleep(200_000)
        }
        throw SlurmClusterError("timed out after \(Int(timeout)) s waiting for \(what)")
    }

    /// The daemons' log files (for failure messages).
    func logs() -> String {
        var out = ""
        for f in ["munged.out", "munged.log", "slurmctld.out", "slurmctld.log", "slurmd.out", "slurmd.log"] {
            if let text = try? String(contentsOfFile: directory + "/log/" + f, encoding: .utf8) {
                out += "--- \(f):\n\(text.suffix(3000))\n"
            }
        }
        return out
    }

    /// Stops the daemons, slurmd first (SIGTERM, then SIGKILL after 10 s each), and removes the directory.
    func stop() {
        // A job still running (a test that timed out) is cancelled first, so that its tasks end too.
        if !daemons.isEmpty, (try? run("/usr/bin/squeue", ["-h", "-o", "%i"], timeout: 5, environment: clientEnvironment))?
            .stdout.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty == false {
            _ = try? run("/usr/bin/scancel", ["--full", "--user=root"], timeout: 10, environment: clientEnvironment)
            let deadline = Date().addingTimeInterval(10)
            while Date() < deadline, (try? run("/usr/bin/squeue", ["-h", "-o", "%i"], timeout: 5, environment: clientEnvironment))?
                    .stdout.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty == false {
                usleep(200_000)
            }
        }
        for d in daemons.reversed() {
            guard let pid = Self.pid(d.pidFile) else { continue }
            kill(pid, SIGTERM)
            let deadline = Date().addingTimeInterval(10)
            while Self.isAlive(pid) && Date() < deadline { usleep(50_000) }
            if Self.isAlive(pid) { kill(pid, SIGKILL) }
        }
        daemons.removeAll()
        try? FileManager.default.removeItem(atPath: directory)
    }

    deinit { stop() }

    /// A TCP port free on 127.0.0.1 now (bound to port 0, then released).
    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw SlurmClusterError("socket: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &a) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                bind(fd, sa, len) == 0 && getsockname(fd, sa, &len) == 0
            }
        }
        guard ok else { throw SlurmClusterError("bind 127.0.0.1:0: \(String(cString: strerror(errno)))") }
        return Int(UInt16(bigEndian: a.sin_port))
    }
}

struct SlurmClusterError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

/// Processes (not zombies) whose command line contains `needle`.
func livingProcesses(matching needle: String) -> [String] {
    guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
    var found: [String] = []
    for entry in entries {
        guard let pid = Int32(entry), pid != getpid(), SlurmCluster.isAlive(pid),
              let raw = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { continue }
        let cmdline = String(decoding: raw.map { $0 == 0 ? 0x20 : $0 }, as: UTF8.self)
        if cmdline.contains(needle) { found.append("\(pid): \(cmdline)") }
    }
    return found
}
