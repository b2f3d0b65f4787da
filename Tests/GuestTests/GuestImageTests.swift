// GuestImageTests: builds the SMP test guest (make -C Guests) and boots it
//   - on /dev/kvm through Guests/build/kvm-smoke, a minimal one-process runner of the guest
//     entry contract (not the VMM: it checks the guest's own boot path, trampoline and
//     workloads on this machine's KVM), and
//   - under QEMU TCG when qemu-system-x86_64 is installed,
// asserting the RESULT line of each workload exactly. The VMM's tests assert the same lines
// under giantvm. Every child runs under a timeout and is killed when it expires.
//
// Threading: each test runs its children synchronously on the test thread.
import Foundation
import XCTest

final class GuestImageTests: XCTestCase {
    /// Guests/ of this checkout (or $GIANTVM_GUESTS_DIR).
    static let guests: URL = ProcessInfo.processInfo.environment["GIANTVM_GUESTS_DIR"].map { URL(fileURLWithPath: $0) }
        ?? URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Guests")
    static let elf = guests.appendingPathComponent("build/testguest.elf").path
    static let smoke = guests.appendingPathComponent("build/kvm-smoke").path
    nonisolated(unsafe) static var built: Result<Void, Error>?

    struct Run {
        var status: Int32
        var output: String
        var results: [[String: Any]]
    }

    struct Failure: Error, CustomStringConvertible { var description: String }

    /// Runs `argv` with a timeout; stdout+stderr go to a temporary file (no pipe to fill up).
    static func run(_ argv: [String], timeout: TimeInterval, cwd: URL? = nil) throws -> (Int32, String) {
        let out = FileManager.default.temporaryDirectory
            .appendingPathComponent("guest-test-\(UUID().uuidString).log")
        _ = FileManager.default.createFile(atPath: out.path, contents: nil)
        defer { try? FileManager.default.removeItem(at: out) }
        let handle = try FileHandle(forWritingTo: out)
        defer { try? handle.close() }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = argv
        p.standardOutput = handle
        p.standardError = handle
        p.standardInput = FileHandle.nullDevice
        if let cwd { p.currentDirectoryURL = cwd }
        let done = DispatchSemaphore(value: 0)
        p.terminationHandler = { _ in done.signal() }
        try p.run()
        if done.wait(timeout: .now() + timeout) == .timedOut {
            kill(p.processIdentifier, SIGKILL)
            _ = done.wait(timeout: .now() + 5)
            let text = (try? String(contentsOf: out, encoding: .isoLatin1)) ?? ""
            throw Failure(description: "\(argv.joined(separator: " ")) did not finish in \(Int(timeout)) s; output:\n\(text)")
        }
        let text = (try? String(contentsOf: out, encoding: .isoLatin1)) ?? ""
        return (p.terminationStatus, text)
    }

    static func buildOnce() throws {
        if built == nil {
            built = Result {
                for target in ["all", "kvm-smoke"] {
                    let (st, out) = try run(["make", "-s", "-C", guests.path, target], timeout: 120)
                    if st != 0 { throw Failure(description: "make -C Guests \(target) failed (\(st)):\n\(out)") }
                }
            }
        }
        try built!.get()
    }

    static func parse(_ status: Int32, _ out: String) -> Run {
        let results = out.split(separator: "\n", omittingEmptySubsequences: true).compactMap { line -> [String: Any]? in
            let l = line.hasSuffix("\r") ? line.dropLast() : line[...]
            guard l.hasPrefix("RESULT ") else { return nil }
            let json = Data(l.dropFirst("RESULT ".count).utf8)
            return (try? JSONSerialization.jsonObject(with: json)) as? [String: Any]
        }
        return Run(status: status, output: out, results: results)
    }

    func smoke(_ cmdline: String, vcpus: Int = 4, nodes: Int = 1) throws -> Run {
        guard FileManager.default.isWritableFile(atPath: "/dev/kvm") else {
            throw XCTSkip("/dev/kvm is missing or not writable: cannot run the guest on KVM")
        }
        try Self.buildOnce()
        let (st, out) = try Self.run([Self.smoke, Self.elf, cmdline, "\(vcpus)", "64", "\(nodes)"], timeout: 60)
        return Self.parse(st, out)
    }

    func qemu(_ cmdline: String, smp: Int = 4) throws -> Run {
        let (found, _) = try Self.run(["sh", "-c", "command -v qemu-system-x86_64"], timeout: 10)
        guard found == 0 else { throw XCTSkip("qemu-system-x86_64 not installed (apt-get install qemu-system-x86)") }
        try Self.buildOnce()
        let (st, out) = try Self.run(["qemu-system-x86_64", "-kernel", Self.elf, "-smp", "\(smp)", "-m", "64",
                                      "-nographic", "-no-reboot", "-device", "isa-debug-exit,iobase=0xf4,iosize=4",
                                      "-accel", "tcg", "-append", cmdline], timeout: 60)
        return Self.parse(st, out)
    }

    /// The one RESULT object of a run, with the run's output in the failure message.
    func result(_ r: Run, file: StaticString = #filePath, line: UInt = #line) throws -> [String: Any] {
        guard r.results.count == 1 else {
            XCTFail("expected exactly one RESULT line, got \(r.results.count); output:\n\(r.output)", file: file, line: line)
            throw Failure(description: "no result")
        }
        return r.results[0]
    }

    func int(_ v: Any?) -> Int? { (v as? NSNumber)?.intValue }

    // --- on /dev/kvm (kvm-smoke) -----------------------------------------------------------

    func testSmokeHelloEveryVCPUGreetsAndTicks() throws {
        let r = try smoke("hello", vcpus: 4)
        XCTAssertEqual(r.status, 0, r.output)
        let j = try result(r)
        XCTAssertEqual(j["ok"] as? Bool, true)
        XCTAssertEqual(int(j["greeted"]), 4)
        XCTAssertGreaterThanOrEqual(int(j["ticks_min"]) ?? 0, 2)
        for i in 0..<4 { XCTAssertTrue(r.output.contains("hello from vCPU \(i)\n"), "vCPU \(i) did not greet") }
    }

    func testSmokeOneVCPU() throws {
        let r = try smoke("counter iters=1000", vcpus: 1)
        XCTAssertEqual(r.status, 0, r.output)
        let j = try result(r)
        XCTAssertEqual(int(j["expected"]), 1000)
        XCTAssertEqual(int(j["total"]), 1000)
    }

    func testSmokeCounterIsExact() throws {
        let r = try smoke("counter iters=50000")
        XCTAssertEqual(r.status, 0, r.output)
        let j = try result(r)
        XCTAssertEqual(int(j["expected"]), 200_000)
        XCTAssertEqual(int(j["total"]), 200_000)
        XCTAssertEqual(j["ok"] as? Bool, true)
    }

    func testSmokeIPICountsMatchExactly() throws {
        let r = try smoke("ipi ipis=20")
        XCTAssertEqual(r.status, 0, r.output)
        let j = try result(r)
        XCTAssertEqual(int(j["expected"]), 240)
        XCTAssertEqual(int(j["total"]), 240)
        XCTAssertEqual(j["ok"] as? Bool, true)
    }

    func testSmokeLitmusNoForbiddenOutcomeAcrossNodes() throws {
        let r = try smoke("litmus trials=200", vcpus: 4, nodes: 2)
        XCTAssertEqual(r.status, 0, r.output)
        let j = try result(r)
        XCTAssertEqual(int(j["forbidden"]), 0)
        let tests = try XCTUnwrap(j["tests"] as? [String: [String: Any]])
        XCTAssertEqual(Set(tests.keys), ["MP", "SB", "LB", "2+2W", "IRIW"])
        for (name, t) in tests {
            let outcomes = try XCTUnwrap(t["outcomes"] as? [String: Any])
            let sum = outcomes.values.compactMap { int($0) }.reduce(0, +)
            XCTAssertEqual(sum, (int(t["groups"]) ?? -1) * 200, "\(name): outcomes must sum to groups x trials")
            XCTAssertEqual(int(t["forbidden"]), 0, name)
            XCTAssertEqual(int(t["cross_node"]), int(t["groups"]), "\(name): every group spans both nodes")
        }
    }

    func testSmokeMemoryMutexCPU() throws {
        let m = try result(try smoke("memory total=8"))
        XCTAssertEqual((m["cases"] as? [Any])?.count, 8)
        let x = try result(try smoke("mutex ops=5000"))
        XCTAssertEqual(int(x["expected"]), 20000)
        for c in (x["cases"] as? [[String: Any]]) ?? [] { XCTAssertEqual(int(c["total"]), 20000) }
        let c = try result(try smoke("cpu events=4"))
        XCTAssertEqual(int(c["primes"]), 1229)
        XCTAssertEqual(int(c["bad_events"]), 0)
    }

    func testSmokeBadCommandLineIsReported() throws {
        let r = try smoke("counter iters=12x", vcpus: 2)
        XCTAssertEqual(r.status, 1, r.output)
        let j = try result(r)
        XCTAssertEqual(j["ok"] as? Bool, false)
        XCTAssertTrue((j["error"] as? String ?? "").contains("bad option 'iters=12x'"), r.output)
    }

    func testSmokeRing3FaultIsReportedWithRegisters() throws {
        let r = try smoke("fault", vcpus: 2)
        XCTAssertEqual(r.status, 3, r.output)
        let e = try result(r)["error"] as? String ?? ""
        XCTAssertTrue(e.contains("exception 14 #PF on vCPU 0") && e.contains("cr2=0x100000"), e)
    }

    // --- under QEMU TCG (multiboot entry) ---------------------------------------------------

    func testQEMUCounterAndLitmus() throws {
        let c = try qemu("counter iters=20000")
        XCTAssertEqual(c.status, 1, "QEMU exits (0 << 1) | 1 on success\n" + c.output)
        XCTAssertEqual(int(try result(c)["total"]), 80000)
        let l = try qemu("litmus trials=100")
        XCTAssertEqual(l.status, 1, l.output)
        XCTAssertEqual(int(try result(l)["forbidden"]), 0)
    }

    func testQEMUHelloOneVCPU() throws {
        let r = try qemu("hello", smp: 1)
        XCTAssertEqual(r.status, 1, r.output)
        XCTAssertEqual(int(try result(r)["greeted"]), 1)
    }
}
