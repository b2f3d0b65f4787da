// `giantvm run` end to end: the built binary, the real libdevices.so, tiny ELF guests, and (when
// Guests/ is in the tree) the SMP test guest's workloads on 1 node x 4 vCPUs.
import XCTest
import Foundation
import TestSupport
@testable import Machine

final class RunCommandTests: XCTestCase {
    override func setUpWithError() throws {
        try Requirement.kvm()
        try Requirement.builtGiantVM()
    }

    func config(image: String, vcpus: Int = 1, memory: String = "16MiB", cmdline: String = "", extraDevice: String = "") -> String {
        """
        cluster: runtest
        nodes:
          - {id: 0, address: 127.0.0.1, port: 19010, vcpus: \(vcpus)}
        memory: \(memory)
        transport: {plugin: transport-tcp}
        coherence: {plugin: dsm-local}
        devices:
          - {name: com1, model: uart16550, node: 0, base: 0x3f8, irq: 4}
          - {name: exit, model: isa-debug-exit, node: 0, base: 0xf4}
          - {name: results, model: results, node: 0, base: 0xe0}
        \(extraDevice)
        guest:
          image: \(image)
          cmdline: "\(cmdline)"
        """
    }

    /// Writes an ELF built from `code` next to a config and returns the config path.
    func setup(code: [UInt8], extraDevice: String = "") -> String {
        let cfg = temporaryFile(config(image: "guest.elf", extraDevice: extraDevice))
        let elf = (cfg as NSString).deletingLastPathComponent + "/guest.elf"
        FileManager.default.createFile(atPath: elf, contents: Data(ELFImage.build(code: code, loadAddress: 0x100000)))
        return cfg
    }

    func testHelloPrintsUARTAndResultAndExitsZero() throws {
        try Requirement.userfaultfd()
        let r = try giantvm(["run", "--config", setup(code: TinyGuests.hello(exitValue: 0)), "--timeout", "20", "--stats"],
                            timeout: 40)
        XCTAssertEqual(r.status, 0, r.output)
        XCTAssertEqual(r.stdout, "Hi\n{\"result\":{\"t\":1}}\n")
        XCTAssertTrue(r.stderr.contains("guest passed (isa-debug-exit value 0, status 1)"), r.stderr)
        // Guest RAM went through userfaultfd and dsm-local: the image load and the guest faulted pages in.
        XCTAssertTrue(r.stderr.contains("guest memory: userfaultfd + dsm-local"), r.stderr)
        let faults = r.stderr.split(separator: "\n").first { $0.hasPrefix("dsm.fault.write_miss") }
        XCTAssertNotNil(faults, r.stderr)
        XCTAssertNotEqual(faults.flatMap { Int($0.split(separator: " ").last ?? "") } ?? 0, 0, r.stderr)
    }

    func testAnonymousMemoryOption() throws {
        let r = try giantvm(["run", "--config", setup(code: TinyGuests.hello(exitValue: 0)), "--memory", "anonymous", "--stats"],
                            timeout: 40)
        XCTAssertEqual(r.status, 0, r.output)
        XCTAssertTrue(r.stderr.contains("guest memory: anonymous mapping"), r.stderr)
        let bad = try giantvm(["run", "--config", setup(code: [0xF4]), "--memory", "swap"], timeout: 40)
        XCTAssertEqual(bad.status, 1)
        XCTAssertTrue(bad.stderr.contains("--memory 'swap' is not one of uffd, anonymous"), bad.stderr)
    }

    func testNonZeroExitValueMapsToDistinctCode() throws {
        let r = try giantvm(["run", "--config", setup(code: TinyGuests.hello(exitValue: 3))], timeout: 40)
        XCTAssertEqual(r.status, 35, r.output)
        XCTAssertTrue(r.stderr.contains("guest failed: isa-debug-exit value 3 (status 7); giantvm exits 35"), r.stderr)
        XCTAssertEqual(RunExitStatusMirror.forGuest(1000), 127)
    }

    /// The UART's THR-empty interrupt travels device -> set_irq -> IOAPIC pin 4 -> vector 0x44
    /// on vCPU 0, waking it from HLT; the handler's EOI reaches the local APIC.
    func testUARTInterruptThroughIOAPICWakesHaltedVCPU() throws {
        let r = try giantvm(["run", "--config", setup(code: TinyGuests.uartInterruptViaIOAPIC), "--timeout", "20", "--stats"],
                            timeout: 40)
        XCTAssertEqual(r.status, 0, r.output)
        XCTAssertEqual(r.stdout, "Q\n", "the VMM ends the guest's unterminated line before it stops")
    }

    /// A guest spinning forever (`jmp .`) is kicked out of KVM_RUN by --timeout: exit 124.
    func testTimeoutStopsASpinningGuest() throws {
        let start = Date()
        let r = try giantvm(["run", "--config", setup(code: [0xEB, 0xFE]), "--timeout", "1"], timeout: 30)
        XCTAssertEqual(r.status, 124, r.output)
        XCTAssertTrue(r.stderr.contains("VM stopped: timed out after 1.0 s"), r.stderr)
        XCTAssertLessThan(Date().timeIntervalSince(start), 15)
    }

    /// Ctrl-C (SIGINT) stops a spinning guest cleanly: exit 130, no stack trace.
    func testSIGINTStopsTheVM() throws {
        let child = try Child(Built.giantvm, ["run", "--config", setup(code: [0xEB, 0xFE]), "--log-level", "info"])
        XCTAssertTrue(child.waitForOutput(timeout: 20) { $0.contains("booting") }, child.stderrSoFar)
        usleep(200_000)
        child.signal(SIGINT)
        let r = child.wait(timeout: 20)
        XCTAssertFalse(r.timedOut)
        XCTAssertEqual(r.status, 130, r.output)
        XCTAssertTrue(r.stderr.contains("VM stopped: interrupted (SIGINT)"), r.stderr)
    }

    func testTripleFaultExitsTwoNamingVCPUAndRegisters() throws {
        let r = try giantvm(["run", "--config", setup(code: TinyGuests.tripleFault)], timeout: 40)
        XCTAssertEqual(r.status, 2, r.output)
        XCTAssertTrue(r.stderr.contains("VM stopped: vCPU 0: triple fault (KVM_EXIT_SHUTDOWN)"), r.stderr)
        XCTAssertTrue(r.stderr.contains("RAX=0000000000001234"), r.stderr)
        XCTAssertTrue(r.stderr.contains("RIP=000000000010000c"), r.stderr)
        XCTAssertFalse(r.output.contains("Fatal error"), "no stack trace")
    }

    func testOverlappingDevicesAreAConfigError() throws {
        let cfg = setup(code: TinyGuests.hello(exitValue: 0),
                        extraDevice: "  - {name: com1b, model: uart16550, node: 0, base: 0x3fc}")
        let r = try giantvm(["run", "--config", cfg], timeout: 40)
        XCTAssertEqual(r.status, 1, r.output)
        XCTAssertTrue(r.stderr.contains("device 'com1b'"), r.stderr)
        XCTAssertTrue(r.stderr.contains("overlaps 0x3f8+0x8 of device 'com1'"), r.stderr)
    }

    func testUnknownModelAndMissingImageAreClear() throws {
        let cfg = setup(code: TinyGuests.hello(exitValue: 0), extraDevice: "  - {name: x, model: floppy, node: 0}")
        let r = try giantvm(["run", "--config", cfg], timeout: 40)
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.stderr.contains("device 'x': plugin devices has no model 'floppy' (it offers: uart16550, isa-debug-exit, results, irq-lines, fw-cfg, i8254, cmos-rtc, i8042, i8259, post-ports, pci-host, pci-testdev, port92, hpet, pc-testdev, acpi-pm, virtio-blk, virtio-net, coherence-hint)"), r.stderr)
        let missing = temporaryFile(config(image: "nope.elf"))
        let r2 = try giantvm(["run", "--config", missing], timeout: 40)
        XCTAssertEqual(r2.status, 1)
        XCTAssertTrue(r2.stderr.contains("guest.image: ") && r2.stderr.contains("nope.elf: no such file"), r2.stderr)
    }

    // ---- the SMP test guest (Guests/) ----------------------------------------------------------

    /// The test guest image: $GIANTVM_TEST_GUEST, or Guests/build/testguest.elf (built with make
    /// when Guests/ is present). Skips when neither exists.
    func guestImage() throws -> String {
        if let p = ProcessInfo.processInfo.environment["GIANTVM_TEST_GUEST"] { return p }
        let root = Built.packageRoot
        let elf = root + "/Guests/build/testguest.elf"
        if !FileManager.default.fileExists(atPath: root + "/Guests/Makefile") {
            throw XCTSkip("Guests/ is not in this tree (set GIANTVM_TEST_GUEST to a testguest.elf to run these)")
        }
        let r = try TestSupport.run("/usr/bin/make", ["-C", root + "/Guests"], timeout: 120)
        guard r.status == 0, FileManager.default.fileExists(atPath: elf) else {
            throw XCTSkip("cannot build Guests/ (make failed: \(r.output.suffix(400)))")
        }
        return elf
    }

    /// Runs a workload on 1 node x 4 vCPUs; returns the decoded result object.
    func workload(_ cmdline: String, memory: String = "64MiB") throws -> [String: Any] {
        let image = try guestImage()
        let cfg = temporaryFile(config(image: image, vcpus: 4, memory: memory, cmdline: cmdline))
        let r = try giantvm(["run", "--config", cfg, "--timeout", "50"], timeout: 58)
        XCTAssertEqual(r.status, 0, r.output)
        let lines = r.stdout.split(separator: "\n").filter { $0.hasPrefix("{\"result\":") }
        XCTAssertEqual(lines.count, 1, "exactly one result line: \(r.stdout)")
        guard let line = lines.first,
              let obj = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
              let result = obj["result"] as? [String: Any] else {
            XCTFail("no result in: \(r.output)")
            return [:]
        }
        XCTAssertEqual(result["ok"] as? Bool, true, "\(result)")
        XCTAssertEqual(result["vcpus"] as? Int, 4)
        return result
    }

    func testGuestHelloEveryVCPUGreets() throws {
        let image = try guestImage()
        let cfg = temporaryFile(config(image: image, vcpus: 4, memory: "64MiB", cmdline: "hello"))
        let r = try giantvm(["run", "--config", cfg, "--timeout", "50"], timeout: 58)
        XCTAssertEqual(r.status, 0, r.output)
        for id in 0..<4 { XCTAssertTrue(r.stdout.contains("hello from vCPU \(id)\n"), r.stdout) }
        XCTAssertTrue(r.stdout.contains("{\"result\":{\"workload\":\"hello\",\"vcpus\":4,\"greeted\":4,"), r.stdout)
    }

    func testGuestIPICountsMatch() throws {
        let r = try workload("ipi ipis=50")
        XCTAssertEqual(r["per_pair"] as? Int, 50)
        XCTAssertEqual(r["expected"] as? Int, 4 * 3 * 50)
        XCTAssertEqual(r["total"] as? Int, 4 * 3 * 50)
    }

    func testGuestCounterIsExact() throws {
        let r = try workload("counter iters=100000")
        XCTAssertEqual(r["expected"] as? Int, 400_000)
        XCTAssertEqual(r["total"] as? Int, 400_000)
    }

    func testGuestLitmusHasNoTSOForbiddenOutcome() throws {
        let trials = 500 // 4 vCPUs share 2 host cores: keep the run well inside the test's time bound
        let r = try workload("litmus trials=\(trials)")
        XCTAssertEqual(r["forbidden"] as? Int, 0)
        let tests = r["tests"] as? [String: [String: Any]] ?? [:]
        XCTAssertEqual(Set(tests.keys), ["MP", "SB", "LB", "2+2W", "IRIW"])
        let forbidden = ["MP": "10", "LB": "11", "2+2W": "11", "IRIW": "1010"]
        for (name, test) in tests {
            XCTAssertEqual(test["forbidden"] as? Int, 0, name)
            let outcomes = test["outcomes"] as? [String: Int] ?? [:]
            if let bad = forbidden[name] { XCTAssertNil(outcomes[bad], "\(name) outcome \(bad) is forbidden by TSO") }
            let groups = test["groups"] as? Int ?? 0
            XCTAssertEqual(outcomes.values.reduce(0, +), groups * trials, "\(name): outcomes sum to groups x trials")
        }
    }

    func testGuestMutexCountersSum() throws {
        let r = try workload("mutex ops=5000")
        XCTAssertEqual(r["expected"] as? Int, 20_000)
        let cases = r["cases"] as? [[String: Any]] ?? []
        XCTAssertEqual(cases.map { $0["locks"] as? Int }, [1, 16])
        for c in cases { XCTAssertEqual(c["total"] as? Int, 20_000) }
    }

    func testGuestCPUAndMemoryWorkloads() throws {
        let cpu = try workload("cpu events=8")
        XCTAssertEqual(cpu["primes"] as? Int, 1229)
        XCTAssertEqual(cpu["bad_events"] as? Int, 0)
        XCTAssertEqual(cpu["events"] as? Int, 32)
        let mem = try workload("memory total=4")
        XCTAssertEqual((mem["cases"] as? [Any])?.count, 8)
    }
}

/// The exit-status mapping documented for `giantvm run` (mirrors Sources/Host/RunCommand.swift,
/// which lives in the executable target and cannot be imported).
enum RunExitStatusMirror {
    static func forGuest(_ v: UInt32) -> Int32 { v == 0 ? 0 : 32 + Int32(min(v, 95)) }
}
