// Live metrics during a guest run: `giantvm up` of a 2-node config with `metrics:`; `curl` reads
// each node's endpoint twice and the standard DSM counters are there and rising; `giantvm top`
// runs under tmux and its screen shows both nodes with non-zero fault rates.
// Needs curl and tmux (scripts/deps/tmux.sh installs them).

import Foundation
import TestSupport
import XCTest

final class LiveMetricsTests: XCTestCase {
    /// The standard counters (giantvm_plugin.h) as exported.
    static let standard = ["dsm_fault_read_miss", "dsm_fault_write_miss", "dsm_fault_upgrade", "dsm_fault_coalesced", "dsm_fault_stale",
                           "dsm_pin_deferred", "dsm_msg_sent", "dsm_bytes_sent", "dsm_msg_received", "dsm_bytes_received",
                           "dsm_page_sent_data", "dsm_page_sent_nodata", "dsm_inv_sent", "dsm_inv_received", "dsm_diff_made",
                           "dsm_diff_applied"].map { "giantvm_\($0)_total" }

    override func setUpWithError() throws {
        try Requirement.testGuestVM()
        for tool in ["curl", "tmux"] where !FileManager.default.isExecutableFile(atPath: "/usr/bin/\(tool)") {
            throw XCTSkip("\(tool) is not installed: run scripts/deps/tmux.sh")
        }
    }

    /// A 2-node VM (2 + 2 vCPUs) running litmus tests long enough to outlast the test (pages move
    /// between the nodes all the time), with metrics on metricsPort + id. Stopped by the caller.
    func startVM(port: Int, metricsPort: Int) throws -> (Child, String) {
        let cfg = vmConfig(port: port, cmdline: "litmus trials=100000")
        var text = try String(contentsOfFile: cfg, encoding: .utf8)
        text += "\nmetrics: {address: 127.0.0.1, port: \(metricsPort), hot_pages: 5}\n"
        try text.write(toFile: cfg, atomically: true, encoding: .utf8)
        let up = try Child(Built.giantvm, ["up", cfg, "--timeout", "40"])
        let started = up.waitForOutput(timeout: 30) { $0.contains("guest: workload=litmus") && $0.contains("node 1: metrics at http://127.0.0.1:\(metricsPort + 1)/metrics") }
        if !started {
            up.signal(SIGKILL)
            XCTFail("the VM did not start: \(up.stdoutSoFar)\(up.stderrSoFar)")
        }
        return (up, cfg)
    }

    func curl(_ port: Int) throws -> [String: Double] {
        let r = try TestSupport.run("/usr/bin/curl", ["-sS", "--max-time", "5", "http://127.0.0.1:\(port)/metrics"], timeout: 10)
        XCTAssertEqual(r.status, 0, r.output)
        var values: [String: Double] = [:]
        for line in r.stdout.split(separator: "\n") where !line.hasPrefix("#") {
            let parts = line.split(separator: " ")
            guard parts.count == 2, let v = Double(parts[1]) else { continue }
            let name = parts[0].split(separator: "{").first.map(String.init) ?? ""
            values[name, default: 0] += v
        }
        return values
    }

    func testCurlSeesStandardCountersRisingDuringTheRun() throws {
        let (up, _) = try startVM(port: 21610, metricsPort: 21690)
        defer { up.signal(SIGINT); _ = up.wait(timeout: 20); up.signal(SIGKILL) }
        for node in 0..<2 {
            let first = try curl(21690 + node)
            usleep(1_000_000)
            let second = try curl(21690 + node)
            for name in Self.standard {
                XCTAssertNotNil(first[name], "node \(node): \(name) missing")
                XCTAssertNotNil(second[name], "node \(node): \(name) missing")
            }
            let faults = ["giantvm_dsm_fault_read_miss_total", "giantvm_dsm_fault_write_miss_total", "giantvm_dsm_fault_upgrade_total"]
            func sum(_ v: [String: Double], _ names: [String]) -> Double { names.reduce(0) { $0 + (v[$1] ?? 0) } }
            XCTAssertGreaterThan(sum(second, faults), sum(first, faults), "node \(node): faults did not rise")
            XCTAssertGreaterThan(second["giantvm_dsm_msg_sent_total"] ?? 0, first["giantvm_dsm_msg_sent_total"] ?? 0, "node \(node)")
            XCTAssertGreaterThan(second["giantvm_dsm_bytes_sent_total"] ?? 0, first["giantvm_dsm_bytes_sent_total"] ?? 0, "node \(node)")
            // Fault latency histogram, forwarding counters, guest memory and the hottest pages.
            XCTAssertGreaterThan(second["giantvm_dsm_fault_latency_seconds_count"] ?? 0, 0, "node \(node)")
            XCTAssertNotNil(second["giantvm_cpu_ipi_forwarded_total"], "node \(node)")
            XCTAssertGreaterThan(second["giantvm_memory_uffd_missing_total"] ?? 0, 0, "node \(node)")
            XCTAssertGreaterThan(second["giantvm_page_faults"] ?? 0, 0, "node \(node)")
        }
    }

    func testTopUnderTmuxShowsEveryNodeWithRates() throws {
        let (up, cfg) = try startVM(port: 21630, metricsPort: 21695)
        // A tmux server of its own (-L), started through sh with its output elsewhere: the server
        // outlives the command and must not hold the test's pipes open.
        let socket = "gvm-top-\(getpid())"
        func tmux(_ args: String) throws -> ProcessResult {
            try TestSupport.run("/bin/sh", ["-c", "exec /usr/bin/tmux -L \(socket) \(args) 2>&1 </dev/null"], timeout: 10)
        }
        defer {
            _ = try? tmux("kill-server")
            up.signal(SIGINT); _ = up.wait(timeout: 20); up.signal(SIGKILL)
        }
        // Started with posix_spawn, its standard streams on /dev/null: the server outlives this
        // command and must hold none of the test's pipes (and Foundation's Process loses it).
        let args = ["/usr/bin/tmux", "-L", socket, "new-session", "-d", "-s", "top", "-x", "160", "-y", "50",
                    "\(Built.giantvm) top \(cfg) --count 30; sleep 30"]
        var argv: [UnsafeMutablePointer<CChar>?] = args.map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        for fd: Int32 in 0...2 { posix_spawn_file_actions_addopen(&actions, fd, "/dev/null", fd == 0 ? O_RDONLY : O_WRONLY, 0) }
        var pid: pid_t = 0
        XCTAssertEqual(posix_spawn(&pid, args[0], &actions, nil, &argv, environ), 0)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        XCTAssertEqual(status, 0, "tmux new-session failed")
        var screen = ""
        var ok = false
        let deadline = Date().addingTimeInterval(15)
        while Date() < deadline && !ok {
            usleep(500_000)
            screen = (try? tmux("capture-pane -p -t top").stdout) ?? ""
            let rows = (0..<2).map { n in screen.split(separator: "\n").first { $0.hasPrefix("\(n)     127.0.0.1:\(21695 + n)") }.map(String.init) }
            ok = rows.allSatisfy { row in
                guard let row else { return false }
                // read/s, write/s, upgr/s: the litmus pages move both ways all the time.
                let rates = row.split(separator: " ").dropFirst(2).prefix(3).compactMap { Double($0) }
                return rates.count == 3 && rates.reduce(0, +) > 0
            }
        }
        XCTAssertTrue(ok, "top did not show both nodes with non-zero rates:\n\(screen)")
        XCTAssertTrue(screen.contains("giantvm top: cluster disttest, 2 nodes"), screen)
        XCTAssertTrue(screen.contains("node 0 hottest: 0x") && screen.contains("node 1 hottest: 0x"), screen)
    }
}
