// virtio-blk and virtio-net in real VMs: the test guest's workloads (readfile, disk-verify,
// net-echo, virtio-hostile) through `giantvm run` (one node) and `giantvm up` (two node
// processes, dsm-ivy over TCP), with the devices on the vCPU's node and on the other node.
// Host-side checks: the readfile checksum equals the host's over the image, the disk-verify
// pattern is on the image afterwards, every echoed frame came back exact. Ports 23400-23499.

import Foundation
import TestSupport
import XCTest

/// The docs/virtio.md checksum: FNV-1a over the image's 64-bit little-endian words.
func diskChecksum(_ path: String) throws -> String {
    let d = try Data(contentsOf: URL(fileURLWithPath: path))
    var h: UInt64 = 0xcbf2_9ce4_8422_2325
    d.withUnsafeBytes { b in
        for i in 0..<(b.count / 8) { h = (h ^ b.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self)) &* 0x100_0000_01b3 }
    }
    return "0x" + String(h, radix: 16)
}

/// A UDP echo peer on 127.0.0.1:port (the host side of the NIC's socket backend).
final class UDPEcho {
    let fd: Int32
    let done = DispatchSemaphore(value: 0)
    let stopFlag = LockedValue<Bool>()
    let echoed = LockedValue<Int>()

    init(port: UInt16) throws {
        fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_port = port.bigEndian
        a.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard rc == 0 else { close(fd); throw XCTSkip("cannot bind UDP 127.0.0.1:\(port) for the echo peer") }
        var tv = timeval(tv_sec: 0, tv_usec: 100_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        echoed.set(0)
        Thread.detachNewThread { [self] in
            var buf = [UInt8](repeating: 0, count: 70000)
            var from = sockaddr_storage()
            while stopFlag.get() != true {
                var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
                let n = withUnsafeMutablePointer(to: &from) { p in
                    p.withMemoryRebound(to: sockaddr.self, capacity: 1) { recvfrom(fd, &buf, buf.count, 0, $0, &len) }
                }
                if n <= 0 { continue }
                _ = withUnsafePointer(to: &from) { p in p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(fd, buf, n, 0, $0, len) } }
                echoed.set((echoed.get() ?? 0) + 1)
            }
            done.signal()
        }
    }

    func stop() {
        stopFlag.set(true)
        _ = done.wait(timeout: .now() + 2)
        close(fd)
    }
}

final class VirtioVMTests: XCTestCase {
    var dir = ""
    var image = ""

    override func setUpWithError() throws {
        try Requirement.testGuestVM()
        dir = NSTemporaryDirectory() + "giantvm-virtio-\(getpid())-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        image = dir + "/disk.img"
        var bytes = [UInt8](repeating: 0, count: 4 << 20)
        var x: UInt64 = 0x1234_5678_9ABC_DEF1
        for i in 0..<bytes.count { x ^= x << 13; x ^= x >> 7; x ^= x << 17; bytes[i] = UInt8(truncatingIfNeeded: x) }
        FileManager.default.createFile(atPath: image, contents: Data(bytes))
    }

    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    /// A VM config: nodes with `vcpus` each, the disk and the NIC on their nodes.
    func config(port: Int, vcpus: [Int], diskNode: Int, netNode: Int, echoPort: Int) -> String {
        var nodes = ""
        for (i, n) in vcpus.enumerated() { nodes += "  - {id: \(i), address: 127.0.0.1, port: \(port + i), vcpus: \(n)}\n" }
        let path = dir + "/vm-\(port)-\(diskNode)-\(netNode).yaml"
        let text = """
            cluster: virtiotest
            nodes:
            \(nodes)
            memory: 48MiB
            transport: {plugin: transport-tcp}
            coherence: {plugin: \(vcpus.count == 1 ? "dsm-local" : "dsm-ivy")}
            devices:
              - {name: com1, model: uart16550, node: 0, base: 0x3f8, irq: 4}
              - {name: exit, model: isa-debug-exit, node: 0, base: 0xf4}
              - {name: results, model: results, node: 0, base: 0xe0}
              - {name: disk0, model: virtio-blk, node: \(diskNode), base: 0xd0000000, settings: {path: "\(image)", max_request: 256KiB}}
              - {name: nic0, model: virtio-net, node: \(netNode), base: 0xd0001000, settings: {backend: socket, peer: "127.0.0.1:\(echoPort)"}}
            ioapic_node: 0
            timeouts: {connect: 10s, heartbeat: 200ms, failure: 3s}
            guest:
              image: \(Built.packageRoot)/Guests/build/testguest.elf
              cmdline: "hello"
            """
        FileManager.default.createFile(atPath: path, contents: Data(text.utf8))
        return path
    }

    func boot(_ cfg: String, nodes: Int, _ cmdline: String) throws -> ProcessResult {
        let args = nodes == 1 ? ["run", "--config", cfg, "--cmdline", cmdline, "--timeout", "40"]
                              : ["up", cfg, "--cmdline", cmdline, "--timeout", "40", "--stats"]
        return try giantvm(args, timeout: 70)
    }

    /// The guest's RESULT object.
    func result(_ r: ProcessResult, file: StaticString = #filePath, line: UInt = #line) -> [String: Any] {
        for l in r.stdout.split(separator: "\n") {
            guard let at = l.range(of: "RESULT ") else { continue }
            if let o = try? JSONSerialization.jsonObject(with: Data(l[at.upperBound...].utf8)) as? [String: Any] { return o }
        }
        XCTFail("no RESULT line: \(r.output)", file: file, line: line)
        return [:]
    }

    /// The expected disk-verify pattern (docs/virtio.md) at byte offset o.
    func pattern(_ o: UInt64, seed: UInt64) -> UInt64 { (o &* 0x9E37_79B9_7F4A_7C15) ^ (seed &* 0xD6E8_FEB8_6659_FD93) }

    func checkDiskVerify(_ r: ProcessResult, seed: UInt64, file: StaticString = #filePath, line: UInt = #line) throws {
        XCTAssertEqual(r.status, 0, r.output, file: file, line: line)
        let o = result(r, file: file, line: line)
        XCTAssertEqual(o["ok"] as? Bool, true, "\(o)", file: file, line: line)
        XCTAssertEqual(o["mismatches"] as? Int, 0, file: file, line: line)
        XCTAssertEqual(o["past_end_status"] as? Int, 1, "a read past the end is IOERR", file: file, line: line)
        XCTAssertEqual(o["bytes"] as? Int, 4 << 20, file: file, line: line)
        // the pattern is on the host's image: the writes reached the file
        let d = try Data(contentsOf: URL(fileURLWithPath: image))
        var bad = 0
        d.withUnsafeBytes { b in
            for i in 0..<(b.count / 8) where b.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self) != pattern(UInt64(8 * i), seed: seed) { bad += 1 }
        }
        XCTAssertEqual(bad, 0, "words of the image that differ from the pattern", file: file, line: line)
    }

    func checkReadfile(_ r: ProcessResult, file: StaticString = #filePath, line: UInt = #line) throws {
        XCTAssertEqual(r.status, 0, r.output, file: file, line: line)
        let o = result(r, file: file, line: line)
        XCTAssertEqual(o["ok"] as? Bool, true, "\(o)", file: file, line: line)
        XCTAssertEqual(o["checksum"] as? String, try diskChecksum(image), file: file, line: line)
        XCTAssertEqual(o["bytes"] as? Int, 4 << 20, file: file, line: line)
    }

    func checkNetEcho(_ r: ProcessResult, echo: UDPEcho, packets: Int, echoedAtLeast: Int, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(r.status, 0, r.output, file: file, line: line)
        let o = result(r, file: file, line: line)
        XCTAssertEqual(o["ok"] as? Bool, true, "\(o)", file: file, line: line)
        XCTAssertEqual(o["bad"] as? Int, 0, file: file, line: line)
        XCTAssertEqual(o["lost"] as? Int, 0, file: file, line: line)
        XCTAssertEqual(o["packets"] as? Int, packets, file: file, line: line)
        XCTAssertGreaterThan(o["rtt_avg_us_x100"] as? Int ?? 0, 0, file: file, line: line)
        XCTAssertGreaterThanOrEqual(echo.echoed.get() ?? 0, echoedAtLeast, "frames the host peer echoed", file: file, line: line)
    }

    func testOneNodeDiskVerifyReadfileNetEchoAndHostileRings() throws {
        let echo = try UDPEcho(port: 23490)
        defer { echo.stop() }
        let cfg = config(port: 23400, vcpus: [2], diskNode: 0, netNode: 0, echoPort: 23490)
        try checkDiskVerify(try boot(cfg, nodes: 1, "disk-verify seed=5"), seed: 5)
        try checkReadfile(try boot(cfg, nodes: 1, "readfile passes=2"))
        checkNetEcho(try boot(cfg, nodes: 1, "net-echo packets=200 size=1000"), echo: echo, packets: 200, echoedAtLeast: 400)
        // hostile rings: every case flagged (NEEDS_RESET, logged), the device works after a
        // reset, and the VMM ends normally
        let r = try boot(cfg, nodes: 1, "virtio-hostile")
        XCTAssertEqual(r.status, 0, r.output)
        let o = result(r)
        XCTAssertEqual(o["ok"] as? Bool, true, "\(o)")
        for k in ["loop", "next_out_of_range", "outside_ram", "oversized", "wraps", "readable_after_writable", "head_out_of_range", "avail_jump"] {
            XCTAssertEqual(o[k] as? Bool, true, "case \(k): \(o)")
        }
        let logged = r.stderr.split(separator: "\n").filter { $0.contains("virtio-blk 'disk0': guest error:") && $0.contains("device needs reset") }
        XCTAssertEqual(logged.count, 8, r.stderr)
    }

    func testTwoNodesWithTheDevicesOnEitherNode() throws {
        let echo = try UDPEcho(port: 23491)
        defer { echo.stop() }
        var seed: UInt64 = 11
        for (i, devNode) in [0, 1].enumerated() {
            let cfg = config(port: 23410 + 10 * i, vcpus: [1, 1], diskNode: devNode, netNode: devNode, echoPort: 23491)
            try checkDiskVerify(try boot(cfg, nodes: 2, "disk-verify seed=\(seed)"), seed: seed)
            let rf = try boot(cfg, nodes: 2, "readfile")
            try checkReadfile(rf)
            // the device's node ran it: with the disk remote, its bulk DMA ran on node 0
            let dmaLine = rf.output.split(separator: "\n").first { $0.contains("[node \(devNode)] io.dma_forwarded ") }
            let forwarded = Int(dmaLine?.split(separator: " ").last ?? "") ?? -1
            if devNode == 1 {
                XCTAssertGreaterThan(forwarded, 0, "remote disk: bulk DMA forwarded to the vCPU's node: \(rf.output)")
                XCTAssertTrue(rf.output.contains("[node 1] virtio-blk.disk0.reads"), rf.output)
            } else {
                XCTAssertEqual(forwarded, 0, "local disk: no DMA forwarded: \(rf.output)")
                XCTAssertTrue(rf.output.contains("[node 0] virtio-blk.disk0.reads"), rf.output)
            }
            checkNetEcho(try boot(cfg, nodes: 2, "net-echo packets=100 size=512"), echo: echo, packets: 100, echoedAtLeast: 200 * (i + 1))
            if devNode == 1 {
                // hostile rings against a device on the other node: both nodes stay up and stop cleanly
                let h = try boot(cfg, nodes: 2, "virtio-hostile")
                XCTAssertEqual(h.status, 0, h.output)
                XCTAssertEqual(result(h)["ok"] as? Bool, true, h.output)
                XCTAssertTrue(h.stdout.contains("[node 1] node 1: stopped cleanly"), h.output)
            }
            seed += 1
        }
    }

    func testBadDiskSettingsNameTheDeviceAndFile() throws {
        let cfg = config(port: 23440, vcpus: [1], diskNode: 0, netNode: 0, echoPort: 23492)
        let text = try String(contentsOfFile: cfg, encoding: .utf8).replacingOccurrences(of: image, with: dir + "/nope.img")
        try text.write(toFile: cfg, atomically: true, encoding: .utf8)
        let r = try boot(cfg, nodes: 1, "readfile")
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("virtio-blk 'disk0': cannot open disk image '\(dir)/nope.img' read-write"), r.stderr)
    }
}

/// virtio-net's TAP backend in a network namespace: a host-side peer on the TAP (a packet
/// socket) echoes every frame the guest sends. Both ways of getting the TAP: a persistent one
/// made beforehand (attached by name) and one the node creates. Needs root, `ip`, python3 and
/// /dev/net/tun; skips elsewhere.
final class VirtioTapTests: XCTestCase {
    var ns = ""

    override func setUpWithError() throws {
        try Requirement.testGuestVM()
        try Requirement.root()
        guard FileManager.default.fileExists(atPath: "/dev/net/tun") else { throw XCTSkip("/dev/net/tun is missing") }
        if !FileManager.default.isExecutableFile(atPath: "/usr/bin/python3") { throw XCTSkip("python3 is missing (the TAP echo peer)") }
        ns = "gvmvirtio\(getpid() % 100000)"
        _ = try? TestSupport.run(ipTool, ["netns", "del", ns], timeout: 10)
        let r = try TestSupport.run(ipTool, ["netns", "add", ns], timeout: 10)
        guard r.status == 0 else { throw XCTSkip("cannot create a network namespace: \(r.output)") }
        _ = try TestSupport.run(ipTool, ["netns", "exec", ns, "ip", "link", "set", "lo", "up"], timeout: 10)
        // no IPv6 chatter (router solicitations) on the TAP
        _ = try TestSupport.run(ipTool, ["netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
                             "net.ipv6.conf.default.disable_ipv6=1"], timeout: 10)
    }

    override func tearDown() { if !ns.isEmpty { _ = try? TestSupport.run(ipTool, ["netns", "del", ns], timeout: 10) } }

    var ipTool: String { ["/usr/sbin/ip", "/usr/bin/ip", "/sbin/ip", "/bin/ip"].first { FileManager.default.isExecutableFile(atPath: $0) } ?? "ip" }

    /// Echoes every incoming frame on `ifname` (waits for the interface to appear).
    let peer = """
        import socket, sys, time
        ifname = sys.argv[1]
        deadline = time.time() + 30
        while True:
            try:
                s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003)); s.bind((ifname, 0)); break
            except OSError:
                if time.time() > deadline: raise
                time.sleep(0.05)
        print("peer ready", flush=True)
        while True:
            try:
                d, a = s.recvfrom(65536)
            except OSError as e:          # ENETDOWN once when the link changes state
                print("recv:", e, file=sys.stderr, flush=True); continue
            if a[2] == socket.PACKET_OUTGOING: continue
            for attempt in range(200):
                try:
                    s.send(d); break
                except OSError as e:
                    print("send:", e, file=sys.stderr, flush=True); time.sleep(0.01)
        """

    func runEcho(createTapFirst: Bool) throws {
        let ifname = "gvmtap\(createTapFirst ? 1 : 2)"
        if createTapFirst {
            let r = try TestSupport.run(ipTool, ["netns", "exec", ns, "ip", "tuntap", "add", ifname, "mode", "tap"], timeout: 10)
            XCTAssertEqual(r.status, 0, r.output)
        }
        let echo = try Child(ipTool, ["netns", "exec", ns, "python3", "-c", peer, ifname])
        defer { echo.signal(SIGKILL); _ = echo.wait(timeout: 5) }
        if createTapFirst { XCTAssertTrue(echo.waitForOutput(timeout: 15) { $0.contains("peer ready") }, echo.stderrSoFar) }
        let dir = NSTemporaryDirectory() + "giantvm-tap-\(getpid())-\(ifname)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let cfg = dir + "/vm.yaml"
        FileManager.default.createFile(atPath: cfg, contents: Data("""
            cluster: virtiotap
            nodes:
              - {id: 0, address: 127.0.0.1, port: 23450, vcpus: 1}
            memory: 32MiB
            transport: {plugin: transport-tcp}
            coherence: {plugin: dsm-local}
            devices:
              - {name: com1, model: uart16550, node: 0, base: 0x3f8, irq: 4}
              - {name: exit, model: isa-debug-exit, node: 0, base: 0xf4}
              - {name: results, model: results, node: 0, base: 0xe0}
              - {name: nic0, model: virtio-net, node: 0, settings: {backend: tap, ifname: \(ifname)}}
            ioapic_node: 0
            guest:
              image: \(Built.packageRoot)/Guests/build/testguest.elf
              cmdline: "net-echo packets=100 size=600"
            """.utf8))
        let r = try TestSupport.run(ipTool, ["netns", "exec", ns, Built.giantvm, "run", "--config", cfg, "--timeout", "40"], timeout: 70)
        XCTAssertEqual(r.status, 0, r.output + "peer: " + echo.stderrSoFar + echo.stdoutSoFar)
        XCTAssertTrue(r.stdout.contains(#""bad":0,"lost":0"#) && r.stdout.contains(#""ok":true"#), r.output)
    }

    func testEchoThroughAPersistentTapGivenByName() throws { try runEcho(createTapFirst: true) }
    func testEchoThroughATapTheNodeCreates() throws { try runEcho(createTapFirst: false) }
}
