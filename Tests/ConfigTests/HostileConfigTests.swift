// Hostile and unlucky configs (issue 16): alias bombs, deep nesting, huge files, memory beyond
// what a VM supports, images that are directories or devices, and the key-file warnings.

import Config
import Firmware
import Foundation
import TestSupport
import XCTest

final class HostileConfigTests: XCTestCase {
    let head = """
        cluster: h
        nodes: [{id: 0, address: 127.0.0.1, port: 19620}, {id: 1, address: 127.0.0.1, port: 19621}]
        coherence: dsm-ivy

        """

    func diagnostics(_ yaml: String, path: String = "/cfg/h.yaml") -> [Diagnostic] {
        do { _ = try ConfigLoader.parse(yaml: yaml, path: path); return [] } catch let e as ConfigError {
            return e.diagnostics
        } catch { return [Diagnostic(file: "", line: 0, column: 0, path: "", message: "\(error)")] }
    }

    /// Ten levels of ten aliases each: 10^10 values if expanded.
    func bomb(_ indent: String) -> String {
        var lines = ["\(indent)a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
        for i in 1...10 {
            let refs = Array(repeating: "*a\(i - 1)", count: 10).joined(separator: ", ")
            lines.append("\(indent)a\(i): &a\(i) [\(refs)]")
        }
        return lines.joined(separator: "\n")
    }

    func residentBytes() -> Int {
        let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
        let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
        return (Int(line.split(separator: " ").dropFirst().first ?? "0") ?? 0) * 1024
    }

    func assertFailsFast(_ yaml: String, _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        let rss0 = residentBytes()
        let t0 = Date()
        let d = diagnostics(yaml)
        let seconds = Date().timeIntervalSince(t0)
        XCTAssertEqual(d.count, 1, "\(what): \(d)", file: file, line: line)
        XCTAssertTrue(d.first?.message.contains("expands to more than 100000 values") ?? false, "\(what): \(d)", file: file, line: line)
        XCTAssertGreaterThan(d.first?.line ?? 0, 0, "the message has a line", file: file, line: line)
        XCTAssertLessThan(seconds, 2, "\(what): took \(seconds) s", file: file, line: line)
        XCTAssertLessThan(residentBytes() - rss0, 64 << 20, "\(what): memory grew", file: file, line: line)
    }

    func testAliasBombUnderBenchFailsFast() {
        assertFailsFast(head + "transport: transport-tcp\nbench:\n" + bomb("  "), "bench")
    }

    func testAliasBombUnderFaultsFailsFast() {
        assertFailsFast(head + "transport:\n  plugin: transport-tcp\n  faults:\n    seed: 1\n    junk:\n" + bomb("      "), "faults")
        // The bomb as the rules list itself, and as a mapping key (Yams hashes keys).
        assertFailsFast(head + "x: &r [" + Array(repeating: "{action: drop}", count: 10).joined(separator: ", ") + "]\n"
                        + (1...8).map { "x\($0): &r\($0) [" + Array(repeating: $0 == 1 ? "*r" : "*r\($0 - 1)", count: 10).joined(separator: ", ") + "]" }
                            .joined(separator: "\n")
                        + "\ntransport: {plugin: transport-tcp, faults: *r8}\n", "rules")
        assertFailsFast(head + "transport: transport-tcp\n" + bomb("") + "\nbench: {? *a10 : 1}\n", "key")
    }

    func testModestAliasesStillWork() throws {
        let yaml = head + """
            rule: &slow {channel: coherence, action: delay, delay: 2ms}
            transport:
              plugin: transport-tcp
              faults: [*slow, *slow]
            bench: &b {threads: 2}
            """
        // `rule:` is not a config field: refused as unknown, but after reading the aliases fine.
        let d = diagnostics(yaml)
        XCTAssertEqual(d.map(\.path), ["rule"])
        let ok = try ConfigLoader.parse(yaml: yaml.replacingOccurrences(of: "rule: &slow", with: "bench: &slow")
                                            .replacingOccurrences(of: "bench: &b {threads: 2}", with: ""), path: "/cfg/h.yaml")
        XCTAssertEqual(ok.faults.rules.count, 2)
        XCTAssertEqual(ok.extra["bench"], "&slow {channel: coherence, action: delay, delay: 2ms}", "the file's own text, not re-serialized")
        let block = try ConfigLoader.parse(yaml: head + "transport: transport-tcp\nbench:\n  threads: 2   # two\n  pages: [1, 2]\ntimeouts: {connect: 1s}\n",
                                           path: "/cfg/h.yaml")
        XCTAssertEqual(block.extra["bench"]?.trimmingCharacters(in: .whitespacesAndNewlines), "threads: 2   # two\n  pages: [1, 2]")
    }

    func testDeepNestingIsRefused() {
        let deep = String(repeating: "[", count: 100) + String(repeating: "]", count: 100)
        let d = diagnostics(head + "transport: transport-tcp\nbench: " + deep + "\n")
        XCTAssertEqual(d.map(\.description), ["/cfg/h.yaml:5:71: lists and mappings nested deeper than 64 levels: refused"])
        // Far deeper: libyaml's own nesting limit answers first; an error either way, no crash.
        let deeper = String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000)
        XCTAssertEqual(diagnostics(head + "transport: transport-tcp\nbench: " + deeper + "\n").count, 1)
    }

    func testHugeAndSpecialConfigFilesAreRefusedBeforeReading() throws {
        let big = temporaryFile(head + "transport: transport-tcp\n# " + String(repeating: "x", count: 2 << 20) + "\n")
        XCTAssertThrowsError(try ConfigLoader.load(path: big)) { e in
            XCTAssertTrue("\(e)".contains("a config may be at most 1048576 bytes"), "\(e)")
        }
        XCTAssertThrowsError(try ConfigLoader.load(path: "/dev/zero")) { e in
            XCTAssertEqual("\(e)", "/dev/zero: the config file is a character device, not a regular file")
        }
        XCTAssertThrowsError(try ConfigLoader.load(path: "/tmp")) { e in
            XCTAssertEqual("\(e)", "/tmp: the config file is a directory, not a file")
        }
        XCTAssertThrowsError(try ConfigLoader.load(path: "/nonexistent/x.yaml")) { e in
            XCTAssertEqual("\(e)", "/nonexistent/x.yaml: no such file")
        }
    }

    // MARK: memory

    func testMemoryLimitIsWhatAVMSupports() throws {
        XCTAssertEqual(ClusterConfig.maxMemoryBytes, FirmwareLayout.maxRAM)
        let base = head + "transport: transport-tcp\n"
        XCTAssertEqual(diagnostics(base + "memory: 1TiB").map(\.description),
                       ["/cfg/h.yaml:5:9: memory: '1TiB' is above the maximum 3GiB (range 1MiB to 3GiB)"])
        XCTAssertEqual(diagnostics(base + "memory: 3145732KiB").map(\.message), ["'3145732KiB' is above the maximum 3GiB (range 1MiB to 3GiB)"])
        XCTAssertEqual(diagnostics(base + "memory: 16777216TiB").map(\.message),
                       ["'16777216TiB' is above the maximum 3GiB (range 1MiB to 3GiB)"], "2^64 bytes: past 64 bits")
        XCTAssertEqual(diagnostics(base + "memory: 512KiB").map(\.message), ["'512KiB' is below the minimum 1MiB (range 1MiB to 3GiB)"])
        XCTAssertEqual(diagnostics(base + "memory: 1048577").map(\.message), ["1048577 is not a multiple of the 4 KiB page size"])
        XCTAssertEqual(try ConfigLoader.parse(yaml: base + "memory: 3GiB", path: "/cfg/h.yaml").memoryBytes, 3 << 30)
        XCTAssertEqual(try ConfigLoader.parse(yaml: base + "memory: 1.5G", path: "/cfg/h.yaml").memoryBytes, 3 << 29)
    }

    // MARK: guest image

    func guestConfig(_ image: String) -> String {
        """
        cluster: g
        nodes: [{id: 0, address: 127.0.0.1, port: 19630}]
        transport: transport-tcp
        coherence: dsm-local
        guest: {image: \(image)}
        """
    }

    func testImageThatIsADirectoryOrADeviceIsRefused() throws {
        let dir = NSTemporaryDirectory() + "giantvm-img-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        XCTAssertEqual(diagnostics(guestConfig(dir)).map(\.description),
                       ["/cfg/h.yaml:5:16: guest.image: cannot read '\(dir)': it is a directory, not a file"])
        XCTAssertEqual(diagnostics(guestConfig("/dev/zero")).map(\.message),
                       ["cannot read '/dev/zero': it is a character device, not a regular file"])
        XCTAssertEqual(diagnostics(guestConfig("/dev/null/x")).map(\.message),
                       ["cannot read '/dev/null/x': it does not exist (a component of the path is not a directory)"])
        XCTAssertEqual(diagnostics(guestConfig("/dev/zero").replacingOccurrences(of: "{image: /dev/zero}", with: "{image: k.bin, initrd: /dev/zero}"))
                        .map(\.message), ["cannot read '/dev/zero': it is a character device, not a regular file"])
    }

    func testMissingImageIsLeftToTheRunButRefusedByValidate() throws {
        let cfg = temporaryFile(guestConfig("nothere.elf"))
        let dir = (cfg as NSString).deletingLastPathComponent
        XCTAssertEqual(try ConfigLoader.load(path: cfg).guest?.image, dir + "/nothere.elf")
        XCTAssertThrowsError(try ConfigLoader.validate(path: cfg)) { e in
            XCTAssertEqual("\(e)", "\(cfg):5:16: guest.image: cannot read '\(dir)/nothere.elf': it does not exist")
        }
        _ = FileManager.default.createFile(atPath: dir + "/nothere.elf", contents: Data([0x7f, 0x45]))
        XCTAssertNoThrow(try ConfigLoader.validate(path: cfg))
    }

    // MARK: key file

    func testKeyFileWarnings() throws {
        let twoNodes = head + "transport: transport-tcp\n"
        let noKey = try ConfigLoader.parse(yaml: twoNodes, path: "/cfg/h.yaml")
        XCTAssertEqual(noKey.warnings.map(\.description),
                       ["/cfg/h.yaml: key_file: not set: peers are accepted by cluster name and node id only, so any process that reaches a node's port first can claim a node id; set key_file to a shared secret"])
        let oneNode = try ConfigLoader.parse(yaml: guestConfig("k.elf"), path: "/cfg/h.yaml")
        XCTAssertEqual(oneNode.warnings, [], "one node has no peer to impersonate")

        let key = temporaryFile("0123456789abcdef0123456789abcdef\n", name: "cluster.key")
        let dir = (key as NSString).deletingLastPathComponent
        chmod(key, 0o644)
        let open = try ConfigLoader.parse(yaml: twoNodes + "key_file: cluster.key\n", path: dir + "/c.yaml")
        XCTAssertEqual(open.warnings.map(\.description),
                       ["\(dir)/c.yaml:5:11: key_file: '\(key)' is readable by every user (mode 644): anyone on this machine can join the cluster; chmod 600 it"])
        chmod(key, 0o600)
        XCTAssertEqual(try ConfigLoader.parse(yaml: twoNodes + "key_file: cluster.key\n", path: dir + "/c.yaml").warnings, [])
        XCTAssertEqual(diagnostics(twoNodes + "key_file: /tmp\n").map(\.message), ["cannot read '/tmp': it is a directory, not a file"])
        XCTAssertEqual(diagnostics(twoNodes + "key_file: /dev/zero\n").map(\.message),
                       ["cannot read '/dev/zero': it is a character device, not a regular file"])
        let huge = temporaryFile(String(repeating: "k", count: 70_000), name: "huge.key")
        XCTAssertEqual(diagnostics(twoNodes + "key_file: \(huge)\n").map(\.message),
                       ["'\(huge)' is 70000 bytes: a key file holds at most 65536 (e.g. head -c 32 /dev/urandom | base64 > cluster.key)"])
    }
}
