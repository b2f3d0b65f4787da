// The typed stop causes, their exit statuses and messages, and the guest image checks: no KVM.

import Config
import Foundation
import NodeAssembly
import TestSupport
import XCTest

final class StopCauseTests: XCTestCase {
    func testExitStatusOfEveryCause() {
        XCTAssertEqual(StopCause.guestExit(status: 1, detail: "exit").exitStatus, 0)
        XCTAssertEqual(StopCause.guestExit(status: 7, detail: "exit").exitStatus, 35)
        XCTAssertEqual(StopCause.guestExit(status: Int32(bitPattern: 0xFFFF_FFFF), detail: "exit").exitStatus, 127)
        XCTAssertEqual(StopCause.guestExit(status: 0x100, detail: "kbd").exitStatus, 3)
        XCTAssertEqual(StopCause.guestExit(status: 4, detail: "odd").exitStatus, 127)
        XCTAssertEqual(StopCause.timeout(seconds: 1).exitStatus, 124)
        XCTAssertEqual(StopCause.finished("done").exitStatus, 0)
        XCTAssertEqual(StopCause.peerLost(node: 2, cause: "no heartbeat").exitStatus, 1)
        XCTAssertEqual(StopCause.setupFailed(node: 0, "bad").exitStatus, 1)
        XCTAssertEqual(StopCause.vcpuFailure(node: 1, "triple fault").exitStatus, 2)
        XCTAssertEqual(StopCause.pluginFatal(plugin: "dsm-ivy", "x").exitStatus, 2)
        XCTAssertEqual(StopCause.signal(2).exitStatus, 130)
        XCTAssertEqual(StopCause.signal(15).exitStatus, 143)
    }

    func testMessagesNameWhatHappened() {
        XCTAssertEqual("\(StopCause.guestExit(status: 1, detail: "exit: guest wrote 0"))",
                       "guest passed (isa-debug-exit value 0, status 1) [exit: guest wrote 0]")
        XCTAssertTrue("\(StopCause.guestExit(status: 7, detail: "e"))".contains("isa-debug-exit value 3 (status 7); giantvm exits 35"))
        XCTAssertEqual("\(StopCause.timeout(seconds: 1.0))", "timed out after 1.0 s")
        XCTAssertEqual("\(StopCause.signal(2))", "interrupted (SIGINT)")
        XCTAssertEqual("\(StopCause.peerLost(node: 3, cause: "no heartbeat"))", "lost node 3: no heartbeat")
        let r = StopCause.peerLost(node: 3, cause: "x").stopReason(origin: 1)
        XCTAssertEqual(r.lostNode, 3)
        XCTAssertEqual(r.origin, 1)
        XCTAssertEqual(r.status, 1)
    }

    func testProcessStatusStaysInRange() {
        XCTAssertEqual(StopCause.processStatus(0), 0)
        XCTAssertEqual(StopCause.processStatus(124), 124)
        XCTAssertEqual(StopCause.processStatus(-3), 1)
        XCTAssertEqual(StopCause.processStatus(300), 1)
    }

    func config(image: String) throws -> ClusterConfig {
        try ConfigLoader.parse(yaml: """
            cluster: img
            nodes:
              - {id: 0, address: 127.0.0.1, port: 21990, vcpus: 1}
            memory: 4MiB
            transport: {plugin: transport-tcp}
            coherence: {plugin: dsm-local}
            guest: {image: \(image)}
            """, path: "/tmp/img.yaml")
    }

    func imageError(_ path: String) -> String {
        do {
            _ = try GuestImage(config: try config(image: path))
            return "no error"
        } catch { return "\(error)" }
    }

    func testBadImagePathsGetClearMessages() throws {
        let dir = NSTemporaryDirectory() + "giantvm-img-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let e1 = imageError(dir)
        XCTAssertTrue(e1.contains("guest.image") && e1.contains(dir) && e1.contains("is a directory"), e1)
        let e2 = imageError("/dev/zero")
        XCTAssertTrue(e2.contains("guest.image") && e2.contains("/dev/zero") && e2.contains("not a regular file"), e2)
        let e3 = imageError(dir + "/missing.elf")
        XCTAssertTrue(e3.contains("no such file"), e3)
        let big = dir + "/big.img"
        FileManager.default.createFile(atPath: big, contents: Data(count: 5 << 20))
        let e4 = imageError(big)
        XCTAssertTrue(e4.contains("larger than guest memory"), e4)
        let junk = dir + "/junk.img"
        FileManager.default.createFile(atPath: junk, contents: Data(repeating: 0x41, count: 64))
        let e5 = imageError(junk)
        XCTAssertTrue(e5.contains("guest.image:") && e5.contains(junk), e5)
    }
}
