// Multi-process tests of one VM over several real `giantvm node` processes: real KVM, real
// userfaultfd + dsm-ivy, real TCP (loopback or veth between network namespaces), the test guest.
// Every run is bounded (guest --timeout, process wait timeouts, children always killed).

import Foundation
import TestSupport
import XCTest

/// Lines of `text` that start with `prefix` (prefix removed).
func lines(_ text: String, _ prefix: String) -> [String] {
    text.split(separator: "\n").map(String.init).filter { $0.hasPrefix(prefix) }.map { String($0.dropFirst(prefix.count)) }
}

/// The value of `key=N` in the node's DSM/forwarding lines.
func stat(_ text: String, node: Int, _ key: String) -> Int? {
    for l in text.split(separator: "\n") where l.contains("node \(node): DSM stats:") || l.contains("node \(node): forwarding:") {
        for w in l.split(separator: " ") where w.hasPrefix(key + "=") {
            return Int(w.dropFirst(key.count + 1).trimmingCharacters(in: CharacterSet(charactersIn: ";")))
        }
    }
    return nil
}

final class VMProcessTests: XCTestCase {
    override func setUpWithError() throws {
        try Requirement.testGuestVM()
    }

    /// `giantvm up` on a 2-node config; returns the whole output.
    func up(_ config: String, cmdline: String? = nil, timeout: Double = 40) throws -> ProcessResult {
        var args = ["up", config, "--timeout", "\(Int(timeout - 10))"]
        if let cmdline { args += ["--cmdline", cmdline] }
        return try giantvm(args, timeout: timeout)
    }

    /// The demo, asserted line by line: every vCPU says hello through the one UART (on node 0),
    /// the guest powers off through the exit device, every node exits 0 with its DSM stats.
    func assertDemo(_ r: ProcessResult, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(r.status, 0, r.output, file: file, line: line)
        let n0 = lines(r.stdout, "[node 0] "), n1 = lines(r.stdout, "[node 1] ")
        // Guest console (node 0 only: the UART lives there).
        let guest = n0.filter { $0.hasPrefix("guest: ") || $0.hasPrefix("hello from") || $0.hasPrefix("RESULT") || $0.hasPrefix("SUMMARY") }
        XCTAssertEqual(guest.count, 7, "\(guest)", file: file, line: line)
        guard guest.count == 7 else { return }
        XCTAssertTrue(guest[0].hasPrefix("guest: workload=hello vcpus=4 nodes=2 mem_mib=32 "), guest[0], file: file, line: line)
        XCTAssertEqual(Set(guest[1...4]), Set((0..<4).map { "hello from vCPU \($0)" }), file: file, line: line)
        XCTAssertEqual(guest[5], #"RESULT {"workload":"hello","vcpus":4,"greeted":4,"#
                       + guest[5].split(separator: ",").dropFirst(3).joined(separator: ","), file: file, line: line)
        XCTAssertTrue(guest[5].hasSuffix(#""ok":true}"#), guest[5], file: file, line: line)
        XCTAssertTrue(guest[6].hasPrefix("SUMMARY workload=hello vcpus=4 ok=true elapsed_ms="), guest[6], file: file, line: line)
        XCTAssertTrue(n1.allSatisfy { !$0.hasPrefix("hello from") }, "node 1 has no UART: \(n1)", file: file, line: line)
        // Node lifecycle lines.
        XCTAssertTrue(n0.contains { $0.hasPrefix("node 0: met node 1 over transport-tcp; vCPUs 0-1 here, IOAPIC here") }, file: file, line: line)
        XCTAssertTrue(n1.contains { $0.hasPrefix("node 1: met node 0 over transport-tcp; vCPUs 2-3 here") }, file: file, line: line)
        XCTAssertTrue(n1.contains { $0.hasPrefix("node 1: time: host clock of node 0 minus this node's: ") && $0.contains(" ticks over 16 samples") }, file: file, line: line)
        XCTAssertTrue(n0.contains { $0.hasPrefix("node 0: DSM stats: read_miss=") }, file: file, line: line)
        XCTAssertTrue(n1.contains { $0.hasPrefix("node 1: DSM stats: read_miss=") }, file: file, line: line)
        XCTAssertTrue(n0.contains("node 0: stopped cleanly: guest passed (isa-debug-exit value 0, status 1) [exit: guest wrote 0 to isa-debug-exit (status 1)]"),
                      "\(n0)", file: file, line: line)
        XCTAssertTrue(n1.contains("node 1: stopped cleanly: node 0 finished: guest passed (isa-debug-exit value 0, status 1) [exit: guest wrote 0 to isa-debug-exit (status 1)]"),
                      "\(n1)", file: file, line: line)
        XCTAssertTrue(r.stdout.hasSuffix("[up] all 2 nodes stopped cleanly\n"), file: file, line: line)
        // The APs of node 1 were started by INIT + SIPI from vCPU 0 (node 0), and vCPUs 2 and 3
        // wrote their hello through the UART of node 0.
        XCTAssertGreaterThanOrEqual(stat(r.stdout, node: 1, "ipi_in") ?? 0, 4, file: file, line: line)
        XCTAssertGreaterThan(stat(r.stdout, node: 1, "io_forwarded") ?? 0, 0, file: file, line: line)
        XCTAssertEqual(stat(r.stdout, node: 1, "io_forwarded"), stat(r.stdout, node: 0, "io_served"), file: file, line: line)
    }

    func testDemoOnLoopback() throws {
        let r = try up(vmConfig(port: 20200))
        assertDemo(r)
    }

    /// The example file itself (examples/vm-2node.yaml), as the README runs it.
    func testExampleConfig() throws {
        let r = try giantvm(["up", Built.packageRoot + "/examples/vm-2node.yaml", "--timeout", "30"], timeout: 40)
        assertDemo(r)
    }

    func testIPIAcrossNodesDeliveredExactlyOnce() throws {
        let r = try up(vmConfig(port: 20210), cmdline: "ipi ipis=20")
        XCTAssertEqual(r.status, 0, r.output)
        let result = lines(r.stdout, "[node 0] RESULT ").first ?? ""
        XCTAssertTrue(result.hasPrefix(#"{"workload":"ipi","vcpus":4,"per_pair":20,"expected":240,"total":240,"#), result)
        XCTAssertTrue(result.hasSuffix(#""ok":true}"#), result)
        // vCPUs 0,1 (node 0) <-> 2,3 (node 1): 2 x 2 x 20 = 80 IPIs cross each way, each sent once
        // and received once (the guest counts every IPI per sender; a duplicate or a loss fails it).
        XCTAssertEqual(stat(r.stdout, node: 1, "ipi_out"), 80, r.stdout)
        XCTAssertEqual(stat(r.stdout, node: 0, "ipi_in"), 80, r.stdout)
        XCTAssertEqual(stat(r.stdout, node: 1, "ipi_in"), stat(r.stdout, node: 0, "ipi_out"), r.stdout)
        // Node 0 sent the 80 fixed IPIs plus INIT and SIPI(s) to the two APs of node 1.
        XCTAssertGreaterThanOrEqual(stat(r.stdout, node: 0, "ipi_out") ?? 0, 84, r.stdout)
    }

    func testCounterAcrossNodes() throws {
        let r = try up(vmConfig(port: 20220), cmdline: "counter iters=2000")
        XCTAssertEqual(r.status, 0, r.output)
        let result = lines(r.stdout, "[node 0] RESULT ").first ?? ""
        XCTAssertTrue(result.hasPrefix(#"{"workload":"counter","vcpus":4,"expected":8000,"total":8000,"#), result)
        XCTAssertTrue(result.hasSuffix(#""ok":true}"#), result)
        // The lock and counter pages crossed between the nodes.
        XCTAssertGreaterThan(stat(r.stdout, node: 0, "pages_sent") ?? 0, 0, r.stdout)
        XCTAssertGreaterThan(stat(r.stdout, node: 1, "pages_sent") ?? 0, 0, r.stdout)
        XCTAssertGreaterThan(stat(r.stdout, node: 1, "write_miss") ?? 0, 0, r.stdout)
    }

    func testLitmusAcrossNodes() throws {
        let r = try up(vmConfig(port: 20230), cmdline: "litmus trials=100", timeout: 55)
        XCTAssertEqual(r.status, 0, r.output)
        let result = lines(r.stdout, "[node 0] RESULT ").first ?? ""
        XCTAssertTrue(result.contains(#""MP":{"groups":2,"cross_node":2,"#), result)
        XCTAssertTrue(result.hasSuffix(#""sb_relaxed":0,"forbidden":0,"ok":true}"#) || result.contains(#""forbidden":0,"ok":true}"#), result)
        XCTAssertFalse(result.contains(#""forbidden":1"#), result)
        XCTAssertGreaterThan(stat(r.stdout, node: 0, "pages_sent") ?? 0, 100, r.stdout)
        XCTAssertGreaterThan(stat(r.stdout, node: 1, "pages_sent") ?? 0, 100, r.stdout)
    }

    /// Serial output of a vCPU on node 1 reaches node 0's console whole and in order: with one
    /// vCPU per node, vCPU 1 (node 1) writes every byte of its line through the forwarded UART.
    func testSerialFromNode1InOrderOnNode0() throws {
        let r = try up(vmConfig(port: 20240, vcpus: [1, 1]))
        XCTAssertEqual(r.status, 0, r.output)
        let n0 = lines(r.stdout, "[node 0] ")
        XCTAssertTrue(n0.contains("hello from vCPU 1"), "\(n0)")
        XCTAssertTrue(n0.contains("hello from vCPU 0"), "\(n0)")
        XCTAssertTrue(lines(r.stdout, "[node 1] ").allSatisfy { !$0.contains("hello from") })
        // Every byte vCPU 1 wrote was one forwarded access ("hello from vCPU 1\n" = 18 bytes, plus
        // the line-status polls), served by node 0.
        XCTAssertGreaterThanOrEqual(stat(r.stdout, node: 1, "io_forwarded") ?? 0, 18, r.stdout)
    }

    /// The UART homed on node 1: node 0's vCPUs' output is forwarded there and appears on node 1.
    func testDeviceHomedOnNode1() throws {
        let r = try up(vmConfig(port: 20250, uartNode: 1))
        XCTAssertEqual(r.status, 0, r.output)
        let n1 = lines(r.stdout, "[node 1] ")
        XCTAssertEqual(Set(n1.filter { $0.hasPrefix("hello from") }), Set((0..<4).map { "hello from vCPU \($0)" }), r.stdout)
        XCTAssertTrue(n1.contains { $0.hasPrefix("SUMMARY workload=hello vcpus=4 ok=true") }, r.stdout)
    }

    /// A node with no vCPU that only hosts the UART (an I/O node): every console byte of the
    /// guest crosses to it, and it needs no time sync.
    func testDeviceOnlyNode() throws {
        let r = try up(vmConfig(port: 20350, vcpus: [2, 0], uartNode: 1))
        XCTAssertEqual(r.status, 0, r.output)
        let n1 = lines(r.stdout, "[node 1] ")
        XCTAssertEqual(Set(n1.filter { $0.hasPrefix("hello from") }), ["hello from vCPU 0", "hello from vCPU 1"], r.stdout)
        XCTAssertTrue(n1.contains { $0.hasPrefix("SUMMARY workload=hello vcpus=2 ok=true") }, r.stdout)
        XCTAssertFalse(r.stdout.contains("node 1: time:"), r.stdout)
        XCTAssertEqual(stat(r.stdout, node: 0, "io_forwarded"), stat(r.stdout, node: 1, "io_served"))
        XCTAssertEqual(stat(r.stdout, node: 1, "uffd_missing"), 0, "node 1 runs no vCPU and touches no guest page")
    }

    /// The same guest through its multiboot entry (firmware loader on the BSP's node, vCPU count
    /// from fw-cfg): the APs on node 1 start by SIPI and every vCPU says hello.
    func testMultibootGuestAcrossNodes() throws {
        let path = vmConfig(port: 20360)
        var text = try String(contentsOfFile: path, encoding: .utf8)
        text = text.replacingOccurrences(of: "  cmdline: \"hello\"", with: "  protocol: multiboot\n  cmdline: \"hello\"")
        text = text.replacingOccurrences(of: "  - {name: results, model: results, node: 0, base: 0xe0}",
                                         with: "  - {name: results, model: results, node: 0, base: 0xe0}\n  - {name: fwcfg, model: fw-cfg, node: 0}")
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        let r = try up(path)
        XCTAssertEqual(r.status, 0, r.output)
        let n0 = lines(r.stdout, "[node 0] ")
        XCTAssertEqual(Set(n0.filter { $0.hasPrefix("hello from") }), Set((0..<4).map { "hello from vCPU \($0)" }), r.stdout)
        XCTAssertTrue(n0.contains { $0.hasPrefix("SUMMARY workload=hello vcpus=4 ok=true") }, r.stdout)
        XCTAssertGreaterThanOrEqual(stat(r.stdout, node: 1, "ipi_in") ?? 0, 4, r.stdout)
    }

    /// Three nodes (1 + 2 + 1 vCPUs), the UART on node 2, the exit device and the IOAPIC on
    /// node 1: hello from every vCPU on node 2's console, exact IPIs, every node exits 0.
    func testThreeNodesDevicesSpreadOut() throws {
        let image = Built.packageRoot + "/Guests/build/testguest.elf"
        let cfg = temporaryFile("""
            cluster: vm3
            nodes:
              - {id: 0, address: 127.0.0.1, port: 20310, vcpus: 1}
              - {id: 1, address: 127.0.0.1, port: 20311, vcpus: 2}
              - {id: 2, address: 127.0.0.1, port: 20312, vcpus: 1}
            memory: 32MiB
            transport: {plugin: transport-tcp}
            coherence: {plugin: dsm-ivy}
            devices:
              - {name: com1, model: uart16550, node: 2, base: 0x3f8, irq: 4}
              - {name: exit, model: isa-debug-exit, node: 1, base: 0xf4}
              - {name: results, model: results, node: 0, base: 0xe0}
            ioapic_node: 1
            timeouts: {connect: 10s, heartbeat: 100ms, failure: 2s}
            guest: {image: \(image), cmdline: hello}
            """)
        let r = try up(cfg)
        XCTAssertEqual(r.status, 0, r.output)
        let n2 = lines(r.stdout, "[node 2] ")
        XCTAssertEqual(Set(n2.filter { $0.hasPrefix("hello from") }), Set((0..<4).map { "hello from vCPU \($0)" }), r.stdout)
        XCTAssertTrue(lines(r.stdout, "[node 1] ").contains { $0.hasPrefix("node 1: met node 0, node 2 over transport-tcp; vCPUs 1-2 here, IOAPIC here") }, r.stdout)
        XCTAssertTrue(r.stdout.hasSuffix("[up] all 3 nodes stopped cleanly\n"), r.stdout)
        let ipi = try up(cfg, cmdline: "ipi ipis=10")
        XCTAssertEqual(ipi.status, 0, ipi.output)
        XCTAssertTrue(ipi.stdout.contains(#"[node 2] RESULT {"workload":"ipi","vcpus":4,"per_pair":10,"expected":120,"total":120,"#), ipi.stdout)
    }

    /// A guest failure (exception report, exit value 3) ends every node with the same status, and
    /// `up` exits with it too (as `run` would).
    func testGuestFailureStatusOnEveryNode() throws {
        let r = try up(vmConfig(port: 20320), cmdline: "fault")
        XCTAssertEqual(r.status, 35, r.output)
        XCTAssertTrue(r.stderr.contains("[node 0] giantvm: error: node 0: guest failed: isa-debug-exit value 3 (status 7); giantvm exits 35"), r.stderr)
        XCTAssertTrue(r.stderr.contains("[up] node 0 exited with status 35"), r.stderr)
        XCTAssertTrue(r.stderr.contains("[up] node 1 exited with status 35"), r.stderr)
        XCTAssertTrue(r.stdout.contains(#"[node 0] RESULT {"workload":"fault","vcpus":4,"ok":false,"error":"exception 14 #PF on vCPU 0 at "#), r.stdout)
    }

    /// Bad input fails fast on every node with the file, the field and the cause.
    func testBadGuestImageAndSingleNodeCoherence() throws {
        let missing = vmConfig(port: 20330)
        let text = try String(contentsOfFile: missing, encoding: .utf8)
            .replacingOccurrences(of: Built.packageRoot + "/Guests/build/testguest.elf", with: "/nonexistent/guest.elf")
        try text.write(toFile: missing, atomically: true, encoding: .utf8)
        let r = try giantvm(["up", missing, "--timeout", "20"], timeout: 30)
        XCTAssertEqual(r.status, 1, r.output)
        for n in 0..<2 {
            XCTAssertTrue(r.stderr.contains("[node \(n)] giantvm: error: node \(n): \(missing): guest.image: /nonexistent/guest.elf: no such file"), r.stderr)
        }
        let local = vmConfig(port: 20340)
        let t2 = try String(contentsOfFile: local, encoding: .utf8).replacingOccurrences(of: "dsm-ivy", with: "dsm-local")
        try t2.write(toFile: local, atomically: true, encoding: .utf8)
        let r2 = try giantvm(["up", local, "--timeout", "20"], timeout: 30)
        XCTAssertEqual(r2.status, 1, r2.output)
        XCTAssertTrue(r2.stderr.contains("coherence.plugin: coherence plugin dsm-local: dsm-local serves one node only, but the cluster has 2 nodes"), r2.stderr)
    }

    /// A node killed in the middle of the guest stops every other node with a clear error.
    func testNodeKilledMidGuestStopsEveryNode() throws {
        let cfg = vmConfig(port: 20260, cmdline: "counter iters=100000000")
        let n0 = try Child(Built.giantvm, ["node", "--config", cfg, "--id", "0", "--timeout", "40"])
        let n1 = try Child(Built.giantvm, ["node", "--config", cfg, "--id", "1", "--timeout", "40"])
        defer { n0.signal(SIGKILL); n1.signal(SIGKILL) }
        XCTAssertTrue(n0.waitForOutput(timeout: 20) { $0.contains("guest: workload=counter") }, n0.stdoutSoFar + n0.stderrSoFar)
        usleep(300_000)
        n1.signal(SIGKILL)
        let r0 = n0.wait(timeout: 20)
        XCTAssertFalse(r0.timedOut, "node 0 did not stop after node 1 died: \(r0.output)")
        XCTAssertNotEqual(r0.status, 0, r0.output)
        XCTAssertTrue(r0.stderr.contains("giantvm: error: node 0: lost node 1"), r0.output)
        _ = n1.wait(timeout: 5)
    }

    /// The node with the BSP and every device killed mid-guest: node 1's vCPUs (blocked in page
    /// faults or running) stop at once, non-zero, naming the lost node.
    func testBSPNodeKilledMidGuestStopsNode1() throws {
        let cfg = vmConfig(port: 20290, cmdline: "counter iters=100000000")
        let n1 = try Child(Built.giantvm, ["node", "--config", cfg, "--id", "1", "--timeout", "40"])
        let n0 = try Child(Built.giantvm, ["node", "--config", cfg, "--id", "0", "--timeout", "40"])
        defer { n0.signal(SIGKILL); n1.signal(SIGKILL) }
        XCTAssertTrue(n0.waitForOutput(timeout: 20) { $0.contains("guest: workload=counter") }, n0.stdoutSoFar + n0.stderrSoFar)
        usleep(500_000)
        n0.signal(SIGKILL)
        let start = Date()
        let r1 = n1.wait(timeout: 20)
        XCTAssertFalse(r1.timedOut, "node 1 did not stop after node 0 died: \(r1.output)")
        XCTAssertLessThan(Date().timeIntervalSince(start), 10)
        XCTAssertEqual(r1.status, 1, r1.output)
        XCTAssertTrue(r1.stderr.contains("giantvm: error: node 1: lost node 0"), r1.output)
        XCTAssertTrue(r1.stdout.contains("node 1: DSM stats: "), r1.output)
        _ = n0.wait(timeout: 5)
    }

    /// Time: node 1 acts as if its host TSC ran 1e9 ticks ahead of node 0's. The sync must
    /// measure that difference over the network (to within the best round trip) and program it;
    /// where KVM applies TSC offsets, node 1's guest TSC must then match node 0's (checked against
    /// the TSC both share on this machine). PVM (this machine) ignores TSC offset writes — its
    /// guests read the host TSC, shared by the nodes — which the node reports as such.
    func testTimeSkewCorrected() throws {
        let cfg = vmConfig(port: 20270)
        let skew: Int64 = 1_000_000_000
        let n0 = try Child(Built.giantvm, ["node", "--config", cfg, "--id", "0", "--timeout", "30"])
        let n1 = try Child(Built.giantvm, ["node", "--config", cfg, "--id", "1", "--timeout", "30", "--tsc-skew", "\(skew)"])
        defer { n0.signal(SIGKILL); n1.signal(SIGKILL) }
        let r1 = n1.wait(timeout: 40), r0 = n0.wait(timeout: 10)
        XCTAssertEqual(r0.status, 0, r0.output)
        XCTAssertEqual(r1.status, 0, r1.output)
        guard let line = r1.stdout.split(separator: "\n").first(where: { $0.contains("node 1: time: ") }).map(String.init) else {
            return XCTFail("no time line: \(r1.output)")
        }
        func number(after word: String) -> Int64? {
            guard let range = line.range(of: word) else { return nil }
            return Int64(line[range.upperBound...].split(separator: " ")[0])
        }
        guard let estimate = number(after: "minus this node's: "), let rtt = number(after: "best round trip "),
              let before = number(after: "before "), let after = number(after: "after ") else { return XCTFail(line) }
        // Node 0's host clock is `skew` behind node 1's: the estimate is -skew within the round trip.
        XCTAssertLessThanOrEqual(abs(estimate + skew), rtt, line)
        XCTAssertLessThan(rtt, 50_000_000, line)
        if line.contains(" applied;") {
            XCTAssertGreaterThan(abs(before), skew / 2, line)     // the injected skew was real
            XCTAssertLessThan(abs(after), 200_000, line)          // and is gone
        } else {
            XCTAssertTrue(line.contains("ignored by this KVM (guest TSC = host TSC)"), line)
            XCTAssertLessThan(abs(after), 200_000, line)          // one shared TSC: equal anyway
        }
        XCTAssertTrue(r0.stdout.contains("SUMMARY workload=hello vcpus=4 ok=true"), r0.output)
    }

    /// Without --tsc-skew and with --no-time-sync nothing is measured or printed.
    func testNoTimeSync() throws {
        let cfg = vmConfig(port: 20280)
        let n0 = try Child(Built.giantvm, ["node", "--config", cfg, "--id", "0", "--timeout", "30"])
        let n1 = try Child(Built.giantvm, ["node", "--config", cfg, "--id", "1", "--timeout", "30", "--no-time-sync"])
        defer { n0.signal(SIGKILL); n1.signal(SIGKILL) }
        let r1 = n1.wait(timeout: 40), r0 = n0.wait(timeout: 10)
        XCTAssertEqual(r0.status, 0, r0.output)
        XCTAssertEqual(r1.status, 0, r1.output)
        XCTAssertFalse(r1.stdout.contains("time:"), r1.stdout)
    }
}

/// The demo with each node in its own network namespace, joined by a veth pair.
final class VMNamespaceTests: XCTestCase {
    let names = ["gvm-dist-a", "gvm-dist-b"]
    let addresses = ["10.231.0.1", "10.231.0.2"]

    func sh(_ args: [String]) -> Int32 {
        (try? TestSupport.run("/usr/bin/env", args, timeout: 10).status) ?? -1
    }

    override func setUpWithError() throws {
        try Requirement.builtGiantVM()
        try Requirement.kvm()
        try Requirement.root()
        if !FileManager.default.fileExists(atPath: Built.packageRoot + "/Guests/build/testguest.elf") {
            throw XCTSkip("the test guest is not built: run `make -C Guests`")
        }
        tearDownNamespaces()
        var ok = sh(["ip", "netns", "add", names[0]]) == 0 && sh(["ip", "netns", "add", names[1]]) == 0
        ok = ok && sh(["ip", "link", "add", "gvmdist0", "netns", names[0], "type", "veth", "peer", "name", "gvmdist1", "netns", names[1]]) == 0
        for i in 0..<2 where ok {
            ok = sh(["ip", "-n", names[i], "addr", "add", addresses[i] + "/24", "dev", "gvmdist\(i)"]) == 0
                && sh(["ip", "-n", names[i], "link", "set", "gvmdist\(i)", "up"]) == 0
                && sh(["ip", "-n", names[i], "link", "set", "lo", "up"]) == 0
        }
        if !ok {
            tearDownNamespaces()
            throw XCTSkip("cannot create network namespaces and a veth pair here (ip netns / ip link failed)")
        }
    }

    override func tearDown() { tearDownNamespaces() }

    func tearDownNamespaces() {
        for n in names { _ = sh(["ip", "netns", "del", n]) }
    }

    func testDemoInSeparateNamespaces() throws {
        let cfg = vmConfig(port: 20300, addresses: addresses)
        let n0 = try Child("/usr/bin/env", ["ip", "netns", "exec", names[0], Built.giantvm, "node", "--config", cfg, "--id", "0", "--timeout", "30"])
        let n1 = try Child("/usr/bin/env", ["ip", "netns", "exec", names[1], Built.giantvm, "node", "--config", cfg, "--id", "1", "--timeout", "30"])
        defer { n0.signal(SIGKILL); n1.signal(SIGKILL) }
        let r0 = n0.wait(timeout: 45), r1 = n1.wait(timeout: 10)
        XCTAssertEqual(r0.status, 0, r0.output)
        XCTAssertEqual(r1.status, 0, r1.output)
        let out0 = r0.stdout.split(separator: "\n").map(String.init)
        let out1 = r1.stdout.split(separator: "\n").map(String.init)
        let guest = out0.filter { $0.hasPrefix("guest: ") || $0.hasPrefix("hello from") || $0.hasPrefix("RESULT") || $0.hasPrefix("SUMMARY") }
        XCTAssertEqual(guest.count, 7, "\(out0)")
        guard guest.count == 7 else { return }
        XCTAssertTrue(guest[0].hasPrefix("guest: workload=hello vcpus=4 nodes=2 mem_mib=32 "), guest[0])
        XCTAssertEqual(Set(guest[1...4]), Set((0..<4).map { "hello from vCPU \($0)" }))
        XCTAssertTrue(guest[5].hasPrefix(#"RESULT {"workload":"hello","vcpus":4,"greeted":4,"#) && guest[5].hasSuffix(#""ok":true}"#), guest[5])
        XCTAssertTrue(guest[6].hasPrefix("SUMMARY workload=hello vcpus=4 ok=true elapsed_ms="), guest[6])
        XCTAssertTrue(out0.contains { $0.hasPrefix("node 0: met node 1 over transport-tcp") }, "\(out0)")
        XCTAssertTrue(out0.contains("node 0: stopped cleanly: guest passed (isa-debug-exit value 0, status 1) [exit: guest wrote 0 to isa-debug-exit (status 1)]"))
        XCTAssertTrue(out1.contains("node 1: stopped cleanly: node 0 finished: guest passed (isa-debug-exit value 0, status 1) [exit: guest wrote 0 to isa-debug-exit (status 1)]"), "\(out1)")
        XCTAssertTrue(out1.contains { $0.hasPrefix("node 1: DSM stats: read_miss=") })
        XCTAssertGreaterThan(stat(r1.stdout, node: 1, "io_forwarded") ?? 0, 0)
    }
}
