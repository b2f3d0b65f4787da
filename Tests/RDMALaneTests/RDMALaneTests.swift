import PluginAPI
import RDMALane
import XCTest

/// transport-rdma's send slots, overflow queue and handshake material (Plugins/transport-rdma/
/// rdma_lane.c), without an RDMA device: a fake "device" here posts and completes SENDs.
final class RDMALaneTests: XCTestCase {
    /// Submits `bytes` as one frame (split in two iovecs to exercise gathering).
    func submit(_ q: inout gvm_rdma_lane_queue, _ bytes: [UInt8]) -> (gvm_rdma_submit, UInt32) {
        var slot: UInt32 = 99
        let mid = bytes.count / 2
        let r = bytes.withUnsafeBytes { b -> gvm_rdma_submit in
            var iov = [gvm_iovec(base: b.baseAddress, len: mid), gvm_iovec(base: b.baseAddress.map { $0 + mid }, len: bytes.count - mid)]
            return iov.withUnsafeMutableBufferPointer { gvm_rdma_lane_submit(&q, $0.baseAddress, 2, bytes.count, &slot) }
        }
        return (r, slot)
    }

    func complete(_ q: inout gvm_rdma_lane_queue, _ slot: UInt32) -> (Int32, [UInt8]?) {
        var next: UnsafeMutablePointer<gvm_rdma_pending>?
        let rc = gvm_rdma_lane_complete(&q, slot, &next)
        guard let p = next else { return (rc, nil) }
        defer { free(p) }
        let len = p.pointee.len
        let bytes = Array(UnsafeRawBufferPointer(start: UnsafeRawPointer(p) + MemoryLayout<gvm_rdma_pending>.size, count: len))
        return (rc, bytes)
    }

    func testSlotsThenQueueInOrderThenSlotsAgain() {
        var q = gvm_rdma_lane_queue()
        gvm_rdma_lane_init(&q, 3, 1 << 20)
        defer { gvm_rdma_lane_destroy(&q) }
        // Three free slots, handed out round robin.
        for i in 0..<3 {
            let (r, slot) = submit(&q, [UInt8(i)])
            XCTAssertEqual(r, GVM_RDMA_POST)
            XCTAssertEqual(slot, UInt32(i))
        }
        XCTAssertEqual(gvm_rdma_lane_busy_count(&q), 3)
        // Every slot in flight: frames queue, without waiting.
        for i in 3..<6 { XCTAssertEqual(submit(&q, [UInt8(i), 0xEE]).0, GVM_RDMA_QUEUED) }
        XCTAssertEqual(q.queued_bytes, 6)
        XCTAssertEqual(q.queued_total, 3)
        // Completions hand the freed slot to the queued frames, oldest first, bytes intact.
        XCTAssertEqual(complete(&q, 1).1, [3, 0xEE])
        XCTAssertEqual(complete(&q, 0).1, [4, 0xEE])
        // A frame submitted while none is free queues behind the one still waiting.
        XCTAssertEqual(submit(&q, [9]).0, GVM_RDMA_QUEUED)
        XCTAssertEqual(complete(&q, 2).1, [5, 0xEE])
        XCTAssertEqual(complete(&q, 1).1, [9])
        XCTAssertEqual(gvm_rdma_lane_busy_count(&q), 3, "each completion handed its slot on")
        // Queue empty: completions free slots.
        XCTAssertEqual(complete(&q, 0).0, 0)
        XCTAssertNil(complete(&q, 2).1)
        XCTAssertEqual(gvm_rdma_lane_busy_count(&q), 1)
        XCTAssertEqual(q.queued_bytes, 0)
        XCTAssertEqual(submit(&q, [7]).0, GVM_RDMA_POST)
        // A completion for a slot not in flight is refused.
        XCTAssertEqual(complete(&q, 0).0, 0)
        XCTAssertEqual(complete(&q, 0).0, -1)
        XCTAssertEqual(complete(&q, 64).0, -1)
    }

    func testQueueLimitRefusesWithoutCopying() {
        var q = gvm_rdma_lane_queue()
        gvm_rdma_lane_init(&q, 1, 10)
        defer { gvm_rdma_lane_destroy(&q) }
        XCTAssertEqual(submit(&q, [1]).0, GVM_RDMA_POST)
        XCTAssertEqual(submit(&q, [UInt8](repeating: 2, count: 6)).0, GVM_RDMA_QUEUED)
        XCTAssertEqual(submit(&q, [UInt8](repeating: 3, count: 5)).0, GVM_RDMA_FULL, "6 + 5 > 10")
        XCTAssertEqual(submit(&q, [UInt8](repeating: 4, count: 4)).0, GVM_RDMA_QUEUED, "6 + 4 = 10 fits")
        XCTAssertEqual(submit(&q, [5]).0, GVM_RDMA_FULL)
        XCTAssertEqual(submit(&q, [UInt8](repeating: 0, count: 11)).0, GVM_RDMA_FULL, "larger than the limit itself")
        XCTAssertEqual(q.queued_bytes, 10)
        XCTAssertEqual(complete(&q, 0).1, [UInt8](repeating: 2, count: 6))
        XCTAssertEqual(submit(&q, [6]).0, GVM_RDMA_QUEUED)
        XCTAssertEqual(gvm_rdma_lane_drop_queued(&q), 2)
        XCTAssertEqual(q.queued_bytes, 0)
        XCTAssertNil(complete(&q, 0).1)
        XCTAssertEqual(gvm_rdma_lane_busy_count(&q), 0)
    }

    /// The deadlock of the first version: the completion poller delivers a frame, and the host
    /// answers from inside deliver on the same lane while every slot is in flight. Only the
    /// poller frees slots, so a send that waited for one never returned. Here the poller (this
    /// thread) answers every delivered frame with two frames; each send returns at once, and
    /// every answer reaches the "wire" exactly once, in order.
    func testRepliesFromInsideDeliveryNeverWaitForTheirOwnPoller() {
        var q = gvm_rdma_lane_queue()
        gvm_rdma_lane_init(&q, 4, 64 << 20)
        defer { gvm_rdma_lane_destroy(&q) }
        var inFlight: [(slot: UInt32, bytes: [UInt8])] = []   // posted SENDs, completed in order
        var wire: [[UInt8]] = []
        var next: UInt16 = 0
        func send(_ bytes: [UInt8]) {
            let (r, slot) = submit(&q, bytes)
            switch r {
            case GVM_RDMA_POST: inFlight.append((slot, bytes))
            case GVM_RDMA_QUEUED: break
            default: XCTFail("send refused: \(r)")
            }
        }
        func frame() -> [UInt8] { defer { next += 1 }; return [UInt8(next & 0xff), UInt8(next >> 8)] }
        for _ in 0..<4 { send(frame()) }   // every slot in flight
        // The poller: each completion is a delivered frame (a request) answered at once.
        var polls = 0
        while let done = inFlight.first, polls < 10_000 {
            polls += 1
            inFlight.removeFirst()
            wire.append(done.bytes)
            if wire.count < 200 { send(frame()); send(frame()) }   // replies from inside deliver
            let (rc, queued) = complete(&q, done.slot)
            XCTAssertEqual(rc, 0)
            if let queued { inFlight.append((done.slot, queued)) }   // posted from the completion
        }
        XCTAssertTrue(inFlight.isEmpty)
        XCTAssertEqual(q.queued_bytes, 0)
        XCTAssertEqual(gvm_rdma_lane_busy_count(&q), 0)
        XCTAssertEqual(wire.count, Int(next), "every frame sent exactly once")
        XCTAssertEqual(wire.map { UInt16($0[0]) | UInt16($0[1]) << 8 }, (0..<next).map { $0 }, "in submission order")
        XCTAssertGreaterThan(q.queued_total, 100, "the replies found every slot busy")
    }

    func testAuthMaterialBindsBothHellosBothIdsAndTheCluster() {
        func material(_ cluster: String, _ signer: UInt32, _ verifier: UInt32, _ vh: [UInt8], _ sh: [UInt8], cap: Int = 4096) -> [UInt8] {
            var out = [UInt8](repeating: 0, count: cap)
            let n = vh.withUnsafeBytes { v in
                sh.withUnsafeBytes { s in
                    gvm_rdma_auth_material(&out, cap, cluster, signer, verifier, v.baseAddress, v.count, s.baseAddress, s.count)
                }
            }
            return Array(out[0..<n])
        }
        let a = [UInt8](repeating: 0xA, count: 40), b = [UInt8](repeating: 0xB, count: 40)
        let base = material("c", 1, 0, a, b)
        XCTAssertFalse(base.isEmpty)
        XCTAssertEqual(material("c", 1, 0, a, b), base, "deterministic")
        var a2 = a
        a2[39] ^= 1
        let variants = [material("d", 1, 0, a, b), material("c", 2, 0, a, b), material("c", 1, 2, a, b),
                        material("c", 1, 0, a2, b), material("c", 1, 0, a, a2),
                        material("c", 0, 1, b, a)]   // the same hellos with the roles reflected
        for v in variants { XCTAssertNotEqual(v, base) }
        XCTAssertEqual(material("c", 1, 0, a, b, cap: 50), [], "too small a buffer writes nothing")
    }

    func testNonceComesFromTheKernel() {
        var x = [UInt8](repeating: 0, count: 32), y = [UInt8](repeating: 0, count: 32)
        XCTAssertEqual(gvm_rdma_random(&x, 32), 0)
        XCTAssertEqual(gvm_rdma_random(&y, 32), 0)
        XCTAssertNotEqual(x, y)
        XCTAssertNotEqual(x, [UInt8](repeating: 0, count: 32))
    }
}
