import Cluster
import Config
import Foundation
import Logging
import Metrics
import PluginAPI
import XCTest

/// Unit tests of the pure parts: transport-tcp's frame parser and handshake codecs (compiled from
/// the plugin's own Wire.swift), the channel header, fault plans, the authenticator and the
/// fault-injecting decorator over a fake transport.
final class WireTests: XCTestCase {
    func testWholeFrameParses() {
        let frame = encodeFrame(kind: .data, payload: [1, 2, 3])
        XCTAssertEqual(frame, [3, 0, 0, 0, 0x47, 0x56, 0, 0, 1, 2, 3])
        XCTAssertEqual(parseFrame(frame), .frame(kind: .data, payload: 8..<11, end: 11))
    }

    func testEmptyPayloadFrame() {
        XCTAssertEqual(parseFrame(encodeFrame(kind: .verdict, payload: [])), .frame(kind: .verdict, payload: 8..<8, end: 8))
    }

    func testPartialHeaderAndPayloadNeedMore() {
        let frame = encodeFrame(kind: .data, payload: [UInt8](repeating: 7, count: 100))
        for cut in 0..<8 { XCTAssertEqual(parseFrame(Array(frame.prefix(cut))), .needMore(total: 8)) }
        for cut in 8..<108 { XCTAssertEqual(parseFrame(Array(frame.prefix(cut))), .needMore(total: 108)) }
        XCTAssertEqual(parseFrame(frame), .frame(kind: .data, payload: 8..<108, end: 108))
    }

    func testTwoFramesBackToBack() {
        let a = encodeFrame(kind: .data, payload: [9])
        let b = encodeFrame(kind: .data, payload: [8, 8])
        let both = a + b
        guard case let .frame(_, _, end) = parseFrame(both) else { return XCTFail("first frame") }
        XCTAssertEqual(end, 9)
        XCTAssertEqual(parseFrame(Array(both[end...])), .frame(kind: .data, payload: 8..<10, end: 10))
    }

    func testOversizedFrameIsRejectedFromTheHeaderAlone() {
        let header = encodeFrameHeader(kind: .data, length: maxFramePayload + 1)
        XCTAssertEqual(parseFrame(header), .malformed("oversized frame: 65537 bytes (limit 65536)"))
        let exact = encodeFrameHeader(kind: .data, length: maxFramePayload)
        XCTAssertEqual(parseFrame(exact), .needMore(total: 8 + 65536))
        XCTAssertEqual(parseFrame(encodeFrameHeader(kind: .hello, length: 2000), maxPayload: 1024),
                       .malformed("oversized frame: 2000 bytes (limit 1024)"))
    }

    func testGarbageIsMalformed() {
        XCTAssertEqual(parseFrame(Array("GET / HTTP/1.1\r\n".utf8)),
                       .malformed("bad frame magic 0x2f20 (not a giantvm transport-tcp peer?)"))
        XCTAssertEqual(parseFrame([0, 0, 0, 0, 0x47, 0x56, 9, 0]), .malformed("unknown frame kind 9"))
        XCTAssertEqual(parseFrame([0, 0, 0, 0, 0x47, 0x56, 0, 1]), .malformed("non-zero frame flags 0x01"))
    }

    func testHelloRoundTripAndRejections() throws {
        let nonce = [UInt8](repeating: 0xAB, count: nonceSize)
        let h = Hello(lane: 1, sender: 2, receiver: 5, nonce: nonce, cluster: "demo3")
        let bytes = h.encode()
        XCTAssertEqual(try Hello.decode(bytes).get(), h)
        XCTAssertEqual(bytes.count, 4 + 2 + 2 + 4 + 4 + 32 + 2 + 5)
        // Every truncation is refused, never a crash.
        for cut in 0..<bytes.count {
            XCTAssertThrowsError(try Hello.decode(Array(bytes.prefix(cut))).get(), "cut at \(cut)")
        }
        var badMagic = bytes; badMagic[0] = 0x58
        XCTAssertEqual(Hello.decode(badMagic).failureMessage, "bad hello magic")
        var badVersion = bytes; badVersion[4] = 9
        XCTAssertEqual(Hello.decode(badVersion).failureMessage, "protocol version 9 (this node speaks 1)")
        XCTAssertEqual(Hello.decode(bytes + [0]).failureMessage, "hello of wrong length \(bytes.count + 1)")
    }

    func testProofAndVerdictCodecs() throws {
        let proof = [UInt8](repeating: 3, count: 32)
        XCTAssertEqual(try decodeProof(encodeProof(proof)).get(), proof)
        XCTAssertEqual(try decodeProof(encodeProof([])).get(), [])
        XCTAssertThrowsError(try decodeProof([70, 0] + [UInt8](repeating: 0, count: 70)).get())  // over maxProof
        XCTAssertThrowsError(try decodeProof([4, 0, 1]).get())                                    // truncated
        let (ok, why) = try decodeVerdict(encodeVerdict(ok: false, reason: "wrong key")).get()
        XCTAssertFalse(ok)
        XCTAssertEqual(why, "wrong key")
        XCTAssertThrowsError(try decodeVerdict([2, 0, 0]).get())
    }

    func testAuthMaterialBindsEveryField() {
        let a = [UInt8](repeating: 1, count: 32), b = [UInt8](repeating: 2, count: 32)
        let base = authMaterial(cluster: "c", signer: 0, verifier: 1, lane: 0, verifierNonce: a, signerNonce: b)
        XCTAssertNotEqual(base, authMaterial(cluster: "d", signer: 0, verifier: 1, lane: 0, verifierNonce: a, signerNonce: b))
        XCTAssertNotEqual(base, authMaterial(cluster: "c", signer: 1, verifier: 0, lane: 0, verifierNonce: a, signerNonce: b))
        XCTAssertNotEqual(base, authMaterial(cluster: "c", signer: 0, verifier: 1, lane: 1, verifierNonce: a, signerNonce: b))
        XCTAssertNotEqual(base, authMaterial(cluster: "c", signer: 0, verifier: 1, lane: 0, verifierNonce: b, signerNonce: a))
    }

    /// transport-tcp's durations use the shared grammar (giantvm_units.h): a bare number is
    /// seconds, as in every config field (it was milliseconds here before).
    func testDurationSetting() {
        XCTAssertEqual(parseDurationNanoseconds("250ms"), 250_000_000)
        XCTAssertEqual(parseDurationNanoseconds("2s"), 2_000_000_000)
        XCTAssertEqual(parseDurationNanoseconds("1.5s"), 1_500_000_000)
        XCTAssertEqual(parseDurationNanoseconds("100"), 100_000_000_000)
        XCTAssertNil(parseDurationNanoseconds("soon"))
        XCTAssertNil(parseDurationNanoseconds("-1s"))
        XCTAssertEqual(try TCPDurationSetting.retryInterval.parse("0.25").get(), 250_000_000)
        XCTAssertEqual(TCPDurationSetting.handshakeTimeout.parse("2e10s"),
                       .failure(TCPSettingError(message: "setting 'handshake_timeout': '2e10s' is above the maximum 24h (range 1ms to 24h)")))
    }
}

extension Result where Failure == HandshakeError {
    var failureMessage: String? {
        if case let .failure(e) = self { return e.message }
        return nil
    }
}

final class ChannelHeaderTests: XCTestCase {
    func testEncodeParse() {
        for c in Channel.allCases {
            let frame = ChannelHeader.encode(c) + [0x81, 1, 2]
            XCTAssertEqual(ChannelHeader.parse(frame), .message(c, payload: 4..<7))
        }
        XCTAssertEqual(Channel.coherence.defaultLane, GVM_LANE_BULK)
        XCTAssertEqual(Channel.heartbeat.defaultLane, GVM_LANE_URGENT)
        XCTAssertEqual(Channel.control.defaultLane, GVM_LANE_URGENT)
    }

    func testMalformedHeaders() {
        XCTAssertEqual(ChannelHeader.parse([0, 1, 0]), .malformed("frame of 3 bytes is shorter than the channel header"))
        XCTAssertEqual(ChannelHeader.parse([9, 1, 0, 0]), .malformed("unknown channel 9"))
        XCTAssertEqual(ChannelHeader.parse([0, 2, 0, 0]), .malformed("channel header version 2 (expected 1)"))
        XCTAssertEqual(ChannelHeader.parse([0, 1, 0, 1]), .malformed("non-zero reserved bytes in the channel header"))
    }

    func testMessageReaderIsBoundsChecked() {
        var w = MessageWriter(type: 1)
        w.u32(7); w.u64(9); w.text("hi")
        w.bytes.withUnsafeBytes { raw in
            var r = MessageReader(raw)
            XCTAssertEqual(r.u8(), 1)
            XCTAssertEqual(r.u32(), 7)
            XCTAssertEqual(r.u64(), 9)
            XCTAssertEqual(r.text(), "hi")
            XCTAssertNil(r.u8())
        }
        [UInt8]([1, 0xFF, 0xFF, 0, 0]).withUnsafeBytes { raw in
            var r = MessageReader(raw)
            _ = r.u8()
            XCTAssertNil(r.text())  // claims 65535 bytes
        }
    }
}

final class FaultPlanTests: XCTestCase {
    /// The Config target reads the rules (Tests/ConfigTests); its channel table must be this
    /// target's channel bytes.
    func testConfigChannelNamesAreTheWireChannels() {
        XCTAssertEqual(FaultRule.channelNames, Channel.allCases.map(\.description))
        XCTAssertEqual(Channel.allCases.map(\.rawValue), Array(0..<UInt8(Channel.allCases.count)))
    }
}

/// Records what reaches it; stands in for a transport plugin.
final class RecordingTransport: FrameTransport, @unchecked Sendable {
    let lock = NSLock()
    var sent: [(dst: UInt32, lane: UInt32, bytes: [UInt8])] = []
    func start() throws {}
    func stop() {}
    func send(to node: UInt32, lane: UInt32, _ iov: UnsafeBufferPointer<gvm_iovec>) -> Int32 {
        var b: [UInt8] = []
        for v in iov { b += UnsafeRawBufferPointer(start: v.base, count: v.len) }
        lock.lock(); sent.append((node, lane, b)); lock.unlock()
        return 0
    }
    var types: [UInt8] { lock.lock(); defer { lock.unlock() }; return sent.map { $0.bytes[4] } }
}

final class FaultInjectionTests: XCTestCase {
    private func frame(_ c: Channel, _ type: UInt8) -> [UInt8] { ChannelHeader.encode(c) + [type, 0xEE] }

    private func send(_ t: FrameTransport, _ bytes: [UInt8], to: UInt32 = 1, lane: UInt32 = 0) {
        bytes.withUnsafeBytes { raw in
            var v = gvm_iovec(base: raw.baseAddress, len: raw.count)
            XCTAssertEqual(withUnsafePointer(to: &v) { t.send(to: to, lane: lane, UnsafeBufferPointer(start: $0, count: 1)) }, 0)
        }
    }

    func testDropsOnlyTheChosenTypeAfterAndCount() throws {
        let inner = RecordingTransport()
        let plan = try FaultPlan.parse(yaml: "- {channel: coherence, type: 2, action: drop, after: 1, count: 2}", nodeCount: 2)
        let t = FaultInjectingTransport(wrapping: inner, plan: plan, selfID: 0, metrics: MetricsRegistry())
        try t.start()
        defer { t.stop() }
        for i in 0..<5 { send(t, frame(.coherence, 2)); send(t, frame(.coherence, UInt8(10 + i))) }
        send(t, frame(.io, 2))
        // 5 type-2 frames: the first passes (after: 1), the next two are dropped (count: 2), two pass.
        XCTAssertEqual(inner.types, [2, 10, 11, 12, 2, 13, 2, 14, 2])
        XCTAssertEqual(inner.sent.last?.bytes[0], Channel.io.rawValue)
    }

    private func injector(_ rules: String, nodes: Int = 2) throws -> (RecordingTransport, FaultInjectingTransport) {
        let inner = RecordingTransport()
        let plan = try FaultPlan.parse(yaml: rules, nodeCount: nodes)
        let t = FaultInjectingTransport(wrapping: inner, plan: plan, selfID: 0, metrics: MetricsRegistry())
        try t.start()
        return (inner, t)
    }

    private func waitFor(_ inner: RecordingTransport, count: Int, seconds: Double = 3) {
        let t0 = clusterTestNow()
        while inner.types.count < count && clusterTestNow() - t0 < seconds { usleep(2_000) }
    }

    /// A delayed frame holds back the later frames of its lane to the same node (per-lane FIFO,
    /// as the ABI promises); the other lane and other nodes overtake it.
    func testDelayKeepsTheLaneInOrder() throws {
        let (inner, t) = try injector("- {channel: cpu, type: 1, action: delay, delay: 150ms}", nodes: 3)
        defer { t.stop() }
        let t0 = clusterTestNow()
        send(t, frame(.cpu, 1), to: 1, lane: GVM_LANE_URGENT)
        send(t, frame(.cpu, 2), to: 1, lane: GVM_LANE_URGENT)    // same lane: waits behind 1
        send(t, frame(.cpu, 3), to: 1, lane: GVM_LANE_BULK)      // other lane: overtakes
        send(t, frame(.cpu, 4), to: 2, lane: GVM_LANE_URGENT)    // other node: overtakes
        XCTAssertEqual(inner.types, [3, 4])
        waitFor(inner, count: 4)
        XCTAssertEqual(inner.types, [3, 4, 1, 2])
        XCTAssertGreaterThanOrEqual(clusterTestNow() - t0, 0.14)
        send(t, frame(.cpu, 5), to: 1, lane: GVM_LANE_URGENT)    // lane empty again: at once
        XCTAssertEqual(inner.types, [3, 4, 1, 2, 5])
    }

    /// Many frames, random delays and jitter on some of them: every lane's order is the send order.
    func testJitteredDelaysNeverReorderALane() throws {
        let (inner, t) = try injector("""
            seed: 3
            rules:
              - {type: 1, action: delay, delay: 0ms, jitter: 4ms, probability: 0.5}
              - {type: 2, action: reorder, delay: 3ms, probability: 0.3}
            """)
        defer { t.stop() }
        var sent: [UInt32: [UInt8]] = [:]
        for i in 0..<300 {
            let lane = UInt32(i % 3 == 0 ? 1 : 0)
            var f = frame(.coherence, UInt8(1 + i % 3))
            f.append(UInt8(i & 0xff)); f.append(UInt8(i >> 8))
            send(t, f, to: 1, lane: lane)
            sent[lane, default: []].append(UInt8(i & 0xff))
            if i % 50 == 0 { usleep(2_000) }
        }
        waitFor(inner, count: 300)
        inner.lock.lock(); let got = inner.sent; inner.lock.unlock()
        XCTAssertEqual(got.count, 300)
        for lane: UInt32 in [0, 1] {
            XCTAssertEqual(got.filter { $0.lane == lane }.map { $0.bytes[6] }, sent[lane], "lane \(lane) out of order")
        }
    }

    /// `violate_fifo: true`: the delayed frame is overtaken by later frames of its own lane.
    func testViolateFIFODelayLetsLaterFramesOvertake() throws {
        let (inner, t) = try injector("- {channel: cpu, type: 1, action: delay, delay: 150ms, violate_fifo: true}")
        defer { t.stop() }
        let t0 = clusterTestNow()
        send(t, frame(.cpu, 1))
        send(t, frame(.cpu, 2))
        XCTAssertEqual(inner.types, [2])
        waitFor(inner, count: 2)
        XCTAssertEqual(inner.types, [2, 1])
        XCTAssertGreaterThanOrEqual(clusterTestNow() - t0, 0.14)
    }

    /// reorder (FIFO kept): the frame is held until a frame to the same node on the other lane has
    /// gone; frames of its own lane wait behind it.
    func testReorderLetsTheOtherLaneOvertake() throws {
        let (inner, t) = try injector("- {channel: coherence, type: 5, action: reorder, count: 1, delay: 10s}", nodes: 3)
        defer { t.stop() }
        send(t, frame(.coherence, 5), to: 1, lane: GVM_LANE_URGENT)
        send(t, frame(.coherence, 6), to: 2, lane: GVM_LANE_BULK)     // another node: does not release it
        send(t, frame(.coherence, 7), to: 1, lane: GVM_LANE_URGENT)   // same lane: waits behind 5
        XCTAssertEqual(inner.types, [6])
        send(t, frame(.coherence, 8), to: 1, lane: GVM_LANE_BULK)     // other lane, same node: overtakes, releases
        XCTAssertEqual(inner.types, [6, 8, 5, 7])
        XCTAssertEqual(inner.sent.map(\.dst), [2, 1, 1, 1])
    }

    /// `violate_fifo: true` reorder: swaps with the next frame to the same node and lane.
    func testViolateFIFOReorderSwapsWithTheNextFrameOnTheSameLane() throws {
        let (inner, t) = try injector("- {channel: coherence, type: 5, action: reorder, count: 1, delay: 10s, violate_fifo: true}", nodes: 3)
        defer { t.stop() }
        send(t, frame(.coherence, 5), to: 1)
        send(t, frame(.coherence, 6), to: 2)      // another destination: does not release it
        send(t, frame(.coherence, 7), to: 1)      // same destination and lane: goes first, then 5
        send(t, frame(.coherence, 5), to: 1)      // count exhausted: passes
        XCTAssertEqual(inner.types, [6, 7, 5, 5])
        XCTAssertEqual(inner.sent.map(\.dst), [2, 1, 1, 1])
    }

    func testReorderedFrameIsReleasedAfterItsDelayWhenNothingFollows() throws {
        let inner = RecordingTransport()
        let plan = try FaultPlan.parse(yaml: "- {type: 9, action: reorder, delay: 100ms}", nodeCount: 2)
        let t = FaultInjectingTransport(wrapping: inner, plan: plan, selfID: 0, metrics: MetricsRegistry())
        try t.start()
        defer { t.stop() }
        send(t, frame(.control, 9))
        XCTAssertEqual(inner.types, [])
        let t0 = clusterTestNow()
        while inner.types.isEmpty && clusterTestNow() - t0 < 3 { usleep(5_000) }
        XCTAssertEqual(inner.types, [9])
    }
}

final class AuthenticatorTests: XCTestCase {
    private var logger: Logger { var l = Logger(label: "test"); l.logLevel = .critical; return l }

    func testHMACProofsAndRefusals() throws {
        let dir = try TempDir()
        let key = try dir.write("key", "0123456789abcdef0123456789abcdef\n")
        let other = try dir.write("other", "fedcba9876543210fedcba9876543210\n")
        let a = try Authenticator(cluster: "c", selfID: 0, nodeCount: 3, keyFile: key, logger: logger)
        let b = try Authenticator(cluster: "c", selfID: 1, nodeCount: 3, keyFile: key, logger: logger)
        let wrong = try Authenticator(cluster: "c", selfID: 1, nodeCount: 3, keyFile: other, logger: logger)
        let none = try Authenticator(cluster: "c", selfID: 1, nodeCount: 3, keyFile: nil, logger: logger)
        let challenge = Array("challenge".utf8)
        challenge.withUnsafeBytes { ch in
            let proof = b.sign(ch)
            XCTAssertEqual(proof.count, 32)
            proof.withUnsafeBytes { p in
                XCTAssertNil(a.verify(peer: 1, peerCluster: "c", challenge: ch, proof: p))
                XCTAssertEqual(a.verify(peer: 1, peerCluster: "x", challenge: ch, proof: p),
                               "refused a peer claiming node 1: it belongs to cluster 'x', this is cluster 'c'")
                XCTAssertEqual(a.verify(peer: 7, peerCluster: "c", challenge: ch, proof: p),
                               "refused a peer claiming node 7: not a peer id of cluster 'c' (3 nodes, this is node 0)")
                XCTAssertEqual(none.verify(peer: 0, peerCluster: "c", challenge: ch, proof: p),
                               "refused node 0: it proves a key but this node has no key_file")
            }
            wrong.sign(ch).withUnsafeBytes { p in
                XCTAssertEqual(a.verify(peer: 1, peerCluster: "c", challenge: ch, proof: p),
                               "refused node 1: wrong key (its HMAC proof does not match this node's key_file)")
            }
            XCTAssertEqual(none.sign(ch), [])
            [UInt8]().withUnsafeBytes { empty in
                XCTAssertEqual(a.verify(peer: 1, peerCluster: "c", challenge: ch, proof: empty),
                               "refused node 1: unauthenticated (it proved no key; key_file must be set on every node)")
                XCTAssertNil(none.verify(peer: 0, peerCluster: "c", challenge: ch, proof: empty))
            }
        }
    }

    func testShortKeyIsRefused() throws {
        let dir = try TempDir()
        let key = try dir.write("key", "short\n")
        XCTAssertThrowsError(try Authenticator(cluster: "c", selfID: 0, nodeCount: 2, keyFile: key, logger: logger)) { e in
            XCTAssertTrue("\(e)".contains("the key has 5 bytes; use at least 16"), "\(e)")
        }
    }
}
