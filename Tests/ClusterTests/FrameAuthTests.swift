import Cluster
import Foundation
import Logging
import PluginAPI
import XCTest

/// The pieces of per-frame authentication that need no sockets: the session transcript
/// transport-tcp builds (its Wire.swift) and the host's HKDF session keys and frame MACs.
final class FrameAuthTests: XCTestCase {
    private var logger: Logger { var l = Logger(label: "test"); l.logLevel = .critical; return l }
    private let n0 = [UInt8](repeating: 0xA0, count: nonceSize)
    private let n1 = [UInt8](repeating: 0xB1, count: nonceSize)

    func testSessionContextBindsDirectionLaneNoncesAndCluster() {
        let base = sessionContext(cluster: "c", sender: 0, receiver: 1, lane: 0, senderNonce: n0, receiverNonce: n1)
        let variants = [
            sessionContext(cluster: "c", sender: 1, receiver: 0, lane: 0, senderNonce: n1, receiverNonce: n0),  // other direction
            sessionContext(cluster: "c", sender: 0, receiver: 1, lane: 1, senderNonce: n0, receiverNonce: n1),  // other lane
            sessionContext(cluster: "d", sender: 0, receiver: 1, lane: 0, senderNonce: n0, receiverNonce: n1),  // other cluster
            sessionContext(cluster: "c", sender: 0, receiver: 1, lane: 0, senderNonce: n1, receiverNonce: n0),  // nonces swapped
            sessionContext(cluster: "c", sender: 0, receiver: 2, lane: 0, senderNonce: n0, receiverNonce: n1),  // other receiver
        ]
        for v in variants { XCTAssertNotEqual(v, base) }
        XCTAssertEqual(Set(variants).count, variants.count)
    }

    func testBothEndsDeriveTheSameKeyAndEveryChangeBreaksTheMAC() throws {
        let dir = try TempDir()
        let key = try dir.write("key", "0123456789abcdef0123456789abcdef\n")
        let other = try dir.write("other", "fedcba9876543210fedcba9876543210\n")
        let a = try Authenticator(cluster: "c", selfID: 0, nodeCount: 2, keyFile: key, logger: logger)
        let b = try Authenticator(cluster: "c", selfID: 1, nodeCount: 2, keyFile: key, logger: logger)
        let wrong = try Authenticator(cluster: "c", selfID: 1, nodeCount: 2, keyFile: other, logger: logger)
        let none = try Authenticator(cluster: "c", selfID: 1, nodeCount: 2, keyFile: nil, logger: logger)
        let ctx = sessionContext(cluster: "c", sender: 0, receiver: 1, lane: 0, senderNonce: n0, receiverNonce: n1)
        let back = sessionContext(cluster: "c", sender: 1, receiver: 0, lane: 0, senderNonce: n1, receiverNonce: n0)
        func session(_ x: Authenticator, _ c: [UInt8]) -> FrameSession? { c.withUnsafeBytes { x.frameSession(context: $0) } }
        XCTAssertNil(session(none, ctx), "no key: no session, frames carry no MAC")
        let tx = try XCTUnwrap(session(a, ctx))
        let rx = try XCTUnwrap(session(b, ctx))
        let header = encodeFrameHeader(kind: .data, length: 5 + frameMacSize)
        let payload: [UInt8] = [0, 1, 0, 0, 0x01]
        let mac = tx.mac(seq: 7, [header, payload])
        XCTAssertEqual(mac.count, frameMacSize)
        // The other end computes the same MAC over the same bytes, whatever the split.
        XCTAssertEqual(rx.mac(seq: 7, [header + payload]), mac)
        XCTAssertEqual(rx.mac(seq: 7, [header, [], payload]), mac)
        // A replay (other number), a modification, the other direction and the wrong key all differ.
        XCTAssertNotEqual(rx.mac(seq: 8, [header, payload]), mac)
        XCTAssertNotEqual(rx.mac(seq: 7, [header, [0, 1, 0, 0, 0x02]]), mac)
        XCTAssertNotEqual(try XCTUnwrap(session(b, back)).mac(seq: 7, [header, payload]), mac)
        XCTAssertNotEqual(try XCTUnwrap(session(wrong, ctx)).mac(seq: 7, [header, payload]), mac)
        // Constant-time comparison helper.
        mac.withUnsafeBytes { m in
            XCTAssertTrue(macEqual(m, m))
            var flipped = mac
            flipped[15] ^= 0x80
            flipped.withUnsafeBytes { XCTAssertFalse(macEqual(m, $0)) }
            [UInt8](mac.prefix(8)).withUnsafeBytes { XCTAssertFalse(macEqual(m, $0)) }
        }
    }

    /// Many threads MAC with one session at once.
    func testOneSessionIsSafeFromManyThreads() throws {
        let dir = try TempDir()
        let key = try dir.write("key", "0123456789abcdef0123456789abcdef\n")
        let a = try Authenticator(cluster: "c", selfID: 0, nodeCount: 2, keyFile: key, logger: logger)
        let ctx = sessionContext(cluster: "c", sender: 0, receiver: 1, lane: 1, senderNonce: n0, receiverNonce: n1)
        let s = try XCTUnwrap(ctx.withUnsafeBytes { a.frameSession(context: $0) })
        let page = [UInt8](repeating: 0x5A, count: 4096)
        let expected = (0..<64).map { s.mac(seq: UInt64($0), [page]) }
        let bad = ManagedCounter()
        DispatchQueue.concurrentPerform(iterations: 8) { _ in
            for i in 0..<64 where s.mac(seq: UInt64(i), [page]) != expected[i] { bad.add() }
        }
        XCTAssertEqual(bad.value, 0)
    }
}

final class ManagedCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var n = 0
    func add() { lock.withLock { n += 1 } }
    var value: Int { lock.withLock { n } }
}

/// Collects log messages (tests of warnings).
final class CapturingLog: @unchecked Sendable {
    private let lock = NSLock()
    private var lines: [String] = []
    var messages: [String] { lock.withLock { lines } }
    func append(_ s: String) { lock.withLock { lines.append(s) } }

    var logger: Logger {
        Logger(label: "capture") { _ in Handler(sink: self) }
    }

    struct Handler: LogHandler {
        let sink: CapturingLog
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }
        func log(event: LogEvent) {
            sink.append("\(event.level): \(event.message)")
        }
    }
}

final class KeyFileModeTests: XCTestCase {
    func testAKeyFileOthersCanReadIsWarnedAbout() throws {
        let dir = try TempDir()
        let key = try dir.write("key", "0123456789abcdef0123456789abcdef\n")
        chmod(key, 0o644)
        let open = CapturingLog()
        _ = try Authenticator(cluster: "c", selfID: 0, nodeCount: 2, keyFile: key, logger: open.logger)
        XCTAssertTrue(open.messages.contains { $0.contains("warning: key_file '\(key)' is readable by other users (mode 644)") },
                      "\(open.messages)")
        chmod(key, 0o600)
        let closed = CapturingLog()
        _ = try Authenticator(cluster: "c", selfID: 0, nodeCount: 2, keyFile: key, logger: closed.logger)
        XCTAssertEqual(closed.messages, [])
    }
}
