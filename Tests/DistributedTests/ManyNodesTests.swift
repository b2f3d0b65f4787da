// Eight nodes for one VM: the test guest on 8 nodes x 1 vCPU and 4 nodes x 2 vCPUs, each node a
// `giantvm node` process in its own network namespace with its own address (a bridge joins
// them), dsm-ivy over TCP; `hello`, `ipi`, `counter` and `litmus` with exact results. Small
// guest RAM (16 MiB a node) and small counts keep a run bounded on 2 cores; every node runs under
// --timeout and every wait is bounded.

import Foundation
import TestSupport
import XCTest

/// `count` network namespaces gvm-mn<tag><i>, joined by a bridge in gvm-mn<tag>br; node i at
/// 10.232.<subnet>.(i+1). Deleted again in `teardown`.
final class BridgedNamespaces {
    let tag: String, subnet: Int, count: Int
    var names: [String] { (0..<count).map { "gvm-mn\(tag)\($0)" } }
    var bridge: String { "gvm-mn\(tag)br" }
    func address(_ i: Int) -> String { "10.232.\(subnet).\(i + 1)" }

    static func ip(_ args: [String]) -> (Int32, String) {
        guard let r = try? TestSupport.run("/usr/bin/env", ["ip"] + args, timeout: 10) else { return (-1, "cannot run ip") }
        return (r.status, r.output)
    }

    init(tag: String, subnet: Int, count: Int) throws {
        self.tag = tag; self.subnet = subnet; self.count = count
        teardown()
        var steps: [[String]] = [["netns", "add", bridge], ["-n", bridge, "link", "add", "br0", "type", "bridge"],
                                 ["-n", bridge, "link", "set", "br0", "up"]]
        for i in 0..<count {
            let dev = "gmn\(tag)\(i)"
            steps += [["netns", "add", names[i]],
                      ["link", "add", dev, "netns", names[i], "type", "veth", "peer", "name", "b" + dev, "netns", bridge],
                      ["-n", bridge, "link", "set", "b" + dev, "master", "br0"], ["-n", bridge, "link", "set", "b" + dev, "up"],
                      ["-n", names[i], "addr", "add", "\(address(i))/24", "dev", dev], ["-n", names[i], "link", "set", dev, "up"],
                      ["-n", names[i], "link", "set", "lo", "up"]]
        }
        for s in steps {
            let (rc, out) = Self.ip(s)
            if rc != 0 {
                teardown()
                throw XCTSkip("cannot build network namespaces (ip \(s.joined(separator: " ")): \(out))")
            }
        }
    }

    func teardown() { for n in names + [bridge] { _ = Self.ip(["netns", "del", n]) } }
}

final class ManyNodesTests: XCTestCase {
    var lab: BridgedNamespaces?

    override func setUpWithError() throws {
        try Requirement.builtGiantVM()
        try Requirement.kvm()
        try Requirement.userfaultfd()
        try Requirement.root()
        if !FileManager.default.fileExists(atPath: Built.packageRoot + "/Guests/build/testguest.elf") {
            throw XCTSkip("the test guest is not built: run `make -C Guests`")
        }
    }

    override func tearDown() { lab?.teardown(); lab = nil }

    /// Runs one guest boot on `vcpus.count` nodes, node i in namespace i; returns every node's
    /// result (node 0 holds the UART, so the guest's lines).
    func boot(_ cfg: String, nodes: Int, timeout: Int = 60) throws -> [ProcessResult] {
        let lab = try XCTUnwrap(self.lab)
        var children: [Child] = []
        defer { for c in children { c.signal(SIGKILL) } }
        for i in 0..<nodes {
            children.append(try Child("/usr/bin/env", ["ip", "netns", "exec", lab.names[i], Built.giantvm, "node", "--config", cfg,
                                                       "--id", "\(i)", "--timeout", "\(timeout)"]))
        }
        // Node 0 decides the end; the others follow it at once.
        let r0 = children[0].wait(timeout: TimeInterval(timeout + 15))
        return [r0] + children.dropFirst().map { $0.wait(timeout: 15) }
    }

    func config(layout vcpus: [Int], port: Int, cmdline: String) throws -> String {
        let lab = try XCTUnwrap(self.lab)
        return vmConfig(port: port, vcpus: vcpus, addresses: (0..<vcpus.count).map(lab.address), memory: "16MiB", cmdline: cmdline)
    }

    /// hello, ipi, counter and litmus on one layout; each result exact.
    func runWorkloads(layout: [Int], port: Int) throws {
        let n = layout.count, v = layout.reduce(0, +)
        let ipis = 10, iters = 2000, trials = 50
        let cases: [(String, (String) -> Bool)] = [
            ("hello", { $0.hasPrefix(#"{"workload":"hello","vcpus":\#(v),"greeted":\#(v),"#) }),
            ("ipi ipis=\(ipis)", { $0.hasPrefix(#"{"workload":"ipi","vcpus":\#(v),"per_pair":\#(ipis),"expected":\#(v * (v - 1) * ipis),"total":\#(v * (v - 1) * ipis),"#) }),
            ("counter iters=\(iters)", { $0.hasPrefix(#"{"workload":"counter","vcpus":\#(v),"expected":\#(v * iters),"total":\#(v * iters),"#) }),
            ("litmus trials=\(trials)", { $0.hasPrefix(#"{"workload":"litmus","vcpus":\#(v),"#) && $0.contains(#""forbidden":0,"ok":true}"#) }),
        ]
        for (k, (cmdline, check)) in cases.enumerated() {
            let cfg = try config(layout: layout, port: port + 10 * k, cmdline: cmdline)
            let started = Date()
            let results = try boot(cfg, nodes: n)
            let all = results.enumerated().map { "--- node \($0.offset) (status \($0.element.status)):\n\($0.element.output)" }.joined(separator: "\n")
            for (i, r) in results.enumerated() {
                XCTAssertFalse(r.timedOut, "\(cmdline): node \(i) did not stop\n\(all)")
                XCTAssertEqual(r.status, 0, "\(cmdline): node \(i)\n\(all)")
            }
            let out0 = results[0].stdout.split(separator: "\n").map(String.init)
            let result = out0.first { $0.hasPrefix("RESULT ") }.map { String($0.dropFirst(7)) } ?? ""
            XCTAssertTrue(check(result) && result.hasSuffix(#""ok":true}"#), "\(cmdline) on \(layout): \(result)\n\(all)")
            if cmdline == "hello" {
                XCTAssertEqual(Set(out0.filter { $0.hasPrefix("hello from vCPU ") }), Set((0..<v).map { "hello from vCPU \($0)" }), all)
                let peers = (1..<n).map { "node \($0)" }.joined(separator: ", ")
                XCTAssertTrue(out0.contains { $0.hasPrefix("node 0: met \(peers) over transport-tcp") }, all)
            }
            for i in 1..<n {
                // The stop may reach a node relayed by another ("node 5 is stopping (decided by node 0): ...").
                let stopped = results[i].stdout.split(separator: "\n").first { $0.hasPrefix("node \(i): stopped cleanly: ") } ?? ""
                XCTAssertTrue(stopped.contains("node 0 finished: guest passed"), "node \(i)\n\(all)")
            }
            print("many nodes \(layout): \(cmdline): \(String(format: "%.1f", Date().timeIntervalSince(started))) s: \(result)")
        }
    }

    func testEightNodesOneVCPUEach() throws {
        lab = try BridgedNamespaces(tag: "e", subnet: 8, count: 8)
        try runWorkloads(layout: Array(repeating: 1, count: 8), port: 21400)
    }

    func testFourNodesTwoVCPUsEach() throws {
        lab = try BridgedNamespaces(tag: "f", subnet: 4, count: 4)
        try runWorkloads(layout: Array(repeating: 2, count: 4), port: 21500)
    }
}
