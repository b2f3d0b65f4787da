import DeviceModels
import Foundation
import PluginKit
import XCTest

/// Guest memory as an array (DMA outside it fails, as the host's does outside guest RAM).
final class ArrayDMA: GuestDMA {
    var bytes: [UInt8]
    init(size: Int) { bytes = [UInt8](repeating: 0, count: size) }
    func read(_ gpa: UInt64, into out: UnsafeMutableRawBufferPointer) -> Bool {
        guard gpa <= UInt64(bytes.count), UInt64(out.count) <= UInt64(bytes.count) - gpa else { return false }
        bytes.withUnsafeBytes { out.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[Int(gpa)..<Int(gpa) + out.count])) }
        return true
    }
    func write(_ gpa: UInt64, _ src: UnsafeRawBufferPointer) -> Bool {
        guard gpa <= UInt64(bytes.count), UInt64(src.count) <= UInt64(bytes.count) - gpa else { return false }
        bytes.withUnsafeMutableBytes { UnsafeMutableRawBufferPointer(rebasing: $0[Int(gpa)..<Int(gpa) + src.count]).copyMemory(from: src) }
        return true
    }
    func put(_ gpa: Int, _ v: UInt64, _ n: Int) { for i in 0..<n { bytes[gpa + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(i))) } }
    func get(_ gpa: Int, _ n: Int) -> UInt64 { (0..<n).reduce(0) { $0 | UInt64(bytes[gpa + $1]) << (8 * UInt64($1)) } }
}

/// A test driver: one queue of `size` at desc 0x1000, avail 0x2000, used 0x3000.
struct RingDriver {
    let mem: ArrayDMA
    var size: UInt16 = 8
    let desc = 0x1000, avail = 0x2000, used = 0x3000
    var queue: Virtqueue {
        var q = Virtqueue()
        q.size = size; q.ready = true; q.descTable = UInt64(desc); q.availRing = UInt64(avail); q.usedRing = UInt64(used)
        return q
    }
    func setDesc(_ i: Int, addr: UInt64, len: UInt32, flags: UInt16, next: UInt16 = 0) {
        let o = desc + 16 * i
        mem.put(o, addr, 8); mem.put(o + 8, UInt64(len), 4); mem.put(o + 12, UInt64(flags), 2); mem.put(o + 14, UInt64(next), 2)
    }
    func publish(_ head: UInt16) {
        let idx = Int(mem.get(avail + 2, 2))
        mem.put(avail + 4 + 2 * (idx % Int(size)), UInt64(head), 2)
        mem.put(avail + 2, UInt64((idx + 1) & 0xFFFF), 2)
    }
    var usedIdx: Int { Int(mem.get(used + 2, 2)) }
    func usedEntry(_ i: Int) -> (id: UInt32, len: UInt32) {
        (UInt32(mem.get(used + 4 + 8 * i, 4)), UInt32(mem.get(used + 8 + 8 * i, 4)))
    }
}

final class VirtqueueWalkerTests: XCTestCase {
    let limits = Virtqueue.Limits(maxBytes: 1 << 20, maxSegments: 16)

    func testWalksAChainInOrder() throws {
        let m = ArrayDMA(size: 1 << 16), d = RingDriver(mem: m)
        d.setDesc(0, addr: 0x4000, len: 16, flags: VirtqDesc.next, next: 3)
        d.setDesc(3, addr: 0x5000, len: 512, flags: VirtqDesc.next | VirtqDesc.write, next: 1)
        d.setDesc(1, addr: 0x6000, len: 1, flags: VirtqDesc.write)
        d.publish(0)
        var q = d.queue
        let head = try XCTUnwrap(q.nextHead(m))
        XCTAssertNil(try q.nextHead(m), "one chain published")
        let c = try q.walk(head: head, m, limits: limits)
        XCTAssertEqual(c.segments, [ChainSegment(gpa: 0x4000, length: 16, writable: false),
                                    ChainSegment(gpa: 0x5000, length: 512, writable: true),
                                    ChainSegment(gpa: 0x6000, length: 1, writable: true)])
        XCTAssertEqual(c.readableBytes, 16)
        XCTAssertEqual(c.writableBytes, 513)
        XCTAssertTrue(q.pushUsed(m, head: head, written: 513))
        XCTAssertEqual(d.usedIdx, 1)
        XCTAssertEqual(d.usedEntry(0).id, 0)
        XCTAssertEqual(d.usedEntry(0).len, 513)
    }

    func testMalformedChainsAreErrorsNotCrashes() throws {
        let m = ArrayDMA(size: 1 << 16), d = RingDriver(mem: m)
        let q = d.queue
        func walk() throws -> DescriptorChain { try q.walk(head: 0, m, limits: limits) }
        // a loop 0 -> 1 -> 0
        d.setDesc(0, addr: 0x4000, len: 16, flags: VirtqDesc.next, next: 1)
        d.setDesc(1, addr: 0x4000, len: 16, flags: VirtqDesc.next, next: 0)
        XCTAssertThrowsError(try walk()) { XCTAssertEqual($0 as? ChainError, .loop(length: 8)) }
        // next outside the table
        d.setDesc(0, addr: 0x4000, len: 16, flags: VirtqDesc.next, next: 8)
        XCTAssertThrowsError(try walk()) { XCTAssertEqual($0 as? ChainError, .nextOutOfRange(index: 8, size: 8)) }
        // head outside the table
        XCTAssertThrowsError(try q.walk(head: 9, m, limits: limits)) { XCTAssertEqual($0 as? ChainError, .headOutOfRange(index: 9, size: 8)) }
        // readable after writable
        d.setDesc(0, addr: 0x4000, len: 1, flags: VirtqDesc.next | VirtqDesc.write, next: 1)
        d.setDesc(1, addr: 0x4000, len: 16, flags: 0)
        XCTAssertThrowsError(try walk()) { XCTAssertEqual($0 as? ChainError, .readableAfterWritable(index: 1)) }
        // oversized: lengths summing past the limit (and past 4 GiB)
        d.setDesc(0, addr: 0x4000, len: 0xFFFF_FFFF, flags: VirtqDesc.next, next: 1)
        d.setDesc(1, addr: 0x4000, len: 0xFFFF_FFFF, flags: 0)
        XCTAssertThrowsError(try walk()) { XCTAssertEqual($0 as? ChainError, .tooLong(bytes: 0xFFFF_FFFF, limit: 1 << 20)) }
        // an address range that wraps
        d.setDesc(0, addr: UInt64.max - 10, len: 16, flags: 0)
        XCTAssertThrowsError(try walk()) { XCTAssertEqual($0 as? ChainError, .addressWraps(index: 0, gpa: UInt64.max - 10, length: 16)) }
        // too many segments
        for i in 0..<8 { d.setDesc(i, addr: 0x4000, len: 1, flags: VirtqDesc.next, next: UInt16(i + 1)) }
        d.setDesc(7, addr: 0x4000, len: 1, flags: 0)
        XCTAssertThrowsError(try q.walk(head: 0, m, limits: .init(maxBytes: 100, maxSegments: 4))) {
            XCTAssertEqual($0 as? ChainError, .tooManySegments(limit: 4))
        }
        // descriptor table outside memory
        var far = q
        far.descTable = 0xFFFF_0000
        XCTAssertThrowsError(try far.walk(head: 0, m, limits: limits)) { XCTAssertEqual($0 as? ChainError, .unreadable(what: "descriptor 0", gpa: 0xFFFF_0000)) }
    }

    func testIndirectTables() throws {
        let m = ArrayDMA(size: 1 << 16), d = RingDriver(mem: m)
        let q = d.queue
        // indirect table at 0x8000 with 2 entries
        let t = 0x8000
        func setEntry(_ i: Int, addr: UInt64, len: UInt32, flags: UInt16, next: UInt16) {
            m.put(t + 16 * i, addr, 8); m.put(t + 16 * i + 8, UInt64(len), 4); m.put(t + 16 * i + 12, UInt64(flags), 2); m.put(t + 16 * i + 14, UInt64(next), 2)
        }
        setEntry(0, addr: 0x4000, len: 16, flags: VirtqDesc.next, next: 1)
        setEntry(1, addr: 0x5000, len: 64, flags: VirtqDesc.write, next: 0)
        d.setDesc(0, addr: UInt64(t), len: 32, flags: VirtqDesc.indirect)
        XCTAssertThrowsError(try q.walk(head: 0, m, limits: limits)) { XCTAssertEqual($0 as? ChainError, .indirectNotNegotiated(index: 0)) }
        var ind = limits
        ind.indirect = true
        let c = try q.walk(head: 0, m, limits: ind)
        XCTAssertEqual(c.readableBytes, 16)
        XCTAssertEqual(c.writableBytes, 64)
        // a loop inside the table, a link past it, a nested indirect, a bad length
        setEntry(1, addr: 0x5000, len: 64, flags: VirtqDesc.next, next: 0)
        XCTAssertThrowsError(try q.walk(head: 0, m, limits: ind)) { XCTAssertEqual($0 as? ChainError, .loop(length: 2)) }
        setEntry(1, addr: 0x5000, len: 64, flags: VirtqDesc.next, next: 5)
        XCTAssertThrowsError(try q.walk(head: 0, m, limits: ind))
        setEntry(1, addr: 0x5000, len: 64, flags: VirtqDesc.indirect, next: 0)
        XCTAssertThrowsError(try q.walk(head: 0, m, limits: ind))
        d.setDesc(0, addr: UInt64(t), len: 20, flags: VirtqDesc.indirect)
        XCTAssertThrowsError(try q.walk(head: 0, m, limits: ind))
    }

    func testAvailableIndexTooFarAheadIsAnError() throws {
        let m = ArrayDMA(size: 1 << 16), d = RingDriver(mem: m)
        var q = d.queue
        m.put(d.avail + 2, 9, 2)
        XCTAssertThrowsError(try q.nextHead(m)) { XCTAssertEqual($0 as? ChainError, .availIndexJump(avail: 9, lastSeen: 0, size: 8)) }
        // the free-running index wraps at 2^16
        q.lastAvail = 0xFFFF
        m.put(d.avail + 2, 0, 2)
        m.put(d.avail + 4 + 2 * 7, 3, 2)
        XCTAssertEqual(try q.nextHead(m), 3)
        XCTAssertEqual(q.lastAvail, 0)
    }
}

func reg(_ t: VirtioTransport, _ off: UInt64) -> UInt32 {
    var b = [UInt8](repeating: 0, count: 4)
    b.withUnsafeMutableBufferPointer { t.access(offset: off, data: $0, isWrite: false) }
    return b.enumerated().reduce(0) { $0 | UInt32($1.element) << (8 * UInt32($1.offset)) }
}
func set(_ t: VirtioTransport, _ off: UInt64, _ v: UInt32) {
    var b = (0..<4).map { UInt8(truncatingIfNeeded: v >> (8 * UInt32($0))) }
    b.withUnsafeMutableBufferPointer { t.access(offset: off, data: $0, isWrite: true) }
}

func bringUp(_ t: VirtioTransport, features hi: UInt32 = 1) {
    set(t, 0x70, 1); set(t, 0x70, 3)
    set(t, 0x24, 1); set(t, 0x20, hi)
    set(t, 0x70, 11)
    set(t, 0x30, 0); set(t, 0x38, 8)
    set(t, 0x80, 0x1000); set(t, 0x90, 0x2000); set(t, 0xA0, 0x3000)
    set(t, 0x44, 1)
    set(t, 0x70, 15)
}


/// A backend that records notifications and can be told to fail.
final class NullBackend: VirtioBackend {
    var deviceID: UInt32 { 42 }
    var features: UInt64 { 1 << 3 }
    var queueMaxSizes: [UInt16] { [8] }
    var notified = 0
    func configBytes() -> [UInt8] { [1, 2, 3, 4] }
    func notify(queue q: Int, _ t: VirtioTransport) throws {
        notified += 1
        while let c = try t.nextChain(q, limits: .init(maxBytes: 4096, maxSegments: 64)) { try t.complete(q, head: c.head, written: 0) }
        t.notifyDriver(q)
    }
    func reset() {}
}

final class VirtioTransportTests: XCTestCase {
    func make(_ m: ArrayDMA, irqs: UnsafeMutablePointer<[Bool]>? = nil, logs: UnsafeMutablePointer<[String]>? = nil) -> (VirtioTransport, NullBackend) {
        let b = NullBackend()
        let t = VirtioTransport(name: "test", backend: b, mem: m, log: { logs?.pointee.append($0) }, irq: { irqs?.pointee.append($0) })
        return (t, b)
    }

    func testIdentityRegistersAndFeatures() {
        let m = ArrayDMA(size: 1 << 16)
        let (t, _) = make(m)
        XCTAssertEqual(reg(t, 0x000), 0x7472_6976)
        XCTAssertEqual(reg(t, 0x004), 2)
        XCTAssertEqual(reg(t, 0x008), 42)
        XCTAssertEqual(reg(t, 0x034), 8)
        set(t, 0x14, 0); XCTAssertEqual(reg(t, 0x10), 1 << 3)
        set(t, 0x14, 1); XCTAssertEqual(reg(t, 0x10), 1, "VERSION_1 is offered")
        XCTAssertEqual(reg(t, 0x100), 0x0403_0201, "config space")
        // FEATURES_OK without VERSION_1 is refused; with it, accepted
        set(t, 0x70, 3); set(t, 0x70, 11)
        XCTAssertEqual(reg(t, 0x70) & 8, 0)
        bringUp(t)
        XCTAssertEqual(reg(t, 0x70), 15)
        XCTAssertTrue(t.isLive)
        // a feature that was not offered is refused too
        set(t, 0x70, 0)
        set(t, 0x70, 3); set(t, 0x24, 0); set(t, 0x20, 1 << 4); set(t, 0x24, 1); set(t, 0x20, 1); set(t, 0x70, 11)
        XCTAssertEqual(reg(t, 0x70) & 8, 0)
    }

    func testNotifyCompletesAndInterrupts() {
        let m = ArrayDMA(size: 1 << 16)
        var irqs: [Bool] = []
        let (t, b) = make(m, irqs: &irqs)
        bringUp(t)
        let d = RingDriver(mem: m)
        d.setDesc(0, addr: 0x4000, len: 16, flags: 0)
        d.publish(0)
        set(t, 0x50, 0)
        XCTAssertEqual(b.notified, 1)
        XCTAssertEqual(d.usedIdx, 1)
        XCTAssertEqual(reg(t, 0x60), 1)
        XCTAssertEqual(irqs, [true])
        set(t, 0x64, 1)
        XCTAssertEqual(reg(t, 0x60), 0)
        XCTAssertEqual(irqs, [true, false])
    }

    func testGuestErrorSetsNeedsResetAndResetRecovers() {
        let m = ArrayDMA(size: 1 << 16)
        var logs: [String] = []
        let (t, b) = make(m, logs: &logs)
        bringUp(t)
        let d = RingDriver(mem: m)
        d.setDesc(0, addr: 0x4000, len: 16, flags: VirtqDesc.next, next: 0)   // loops on itself
        d.publish(0)
        set(t, 0x50, 0)
        XCTAssertEqual(reg(t, 0x70) & VirtioStatus.needsReset, VirtioStatus.needsReset)
        XCTAssertEqual(reg(t, 0x60) & 2, 2, "configuration-change interrupt")
        XCTAssertEqual(d.usedIdx, 0, "nothing returned to the driver")
        XCTAssertEqual(logs.count, 1)
        XCTAssertTrue(logs[0].contains("test: guest error: descriptor chain loops"), logs[0])
        // stays halted until reset; then works
        set(t, 0x50, 0)
        XCTAssertEqual(b.notified, 1)
        XCTAssertEqual(logs.count, 1, "logged once")
        set(t, 0x70, 0)
        XCTAssertEqual(reg(t, 0x70), 0)
        m.put(d.avail + 2, 0, 2)
        d.setDesc(0, addr: 0x4000, len: 16, flags: 0)
        bringUp(t)
        d.publish(0)
        set(t, 0x50, 0)
        XCTAssertEqual(d.usedIdx, 1)
        XCTAssertEqual(reg(t, 0x70), 15)
        // notify of a queue that does not exist is a guest error too
        set(t, 0x50, 7)
        XCTAssertNotEqual(reg(t, 0x70) & VirtioStatus.needsReset, 0)
    }

    func testAGuestBreakingItsRingsInALoopIsLoggedBoundedly() {
        let m = ArrayDMA(size: 1 << 16)
        var logs: [String] = []
        let (t, _) = make(m, logs: &logs)
        for _ in 0..<2000 {
            bringUp(t)
            set(t, 0x50, 9)          // a queue that does not exist
            set(t, 0x70, 0)
        }
        XCTAssertEqual(t.guestErrors, 2000)
        XCTAssertEqual(logs.count, 22, "20, then one per 1000")
        XCTAssertTrue(logs[19].hasSuffix("(further guest errors: one line per 1000)"), logs[19])
        XCTAssertTrue(logs[21].hasSuffix("(guest error 2000)"), logs[21])
    }

    func testQueueRegistersAreFrozenWhileReady() {
        let m = ArrayDMA(size: 1 << 16)
        let (t, _) = make(m)
        bringUp(t)
        set(t, 0x80, 0x9000)
        XCTAssertEqual(t.queues[0].descTable, 0x1000)
        set(t, 0x38, 3)   // not a power of two, and the queue is ready anyway
        XCTAssertEqual(t.queues[0].size, 8)
    }
}

final class VirtioBlkTests: XCTestCase {
    var dir = ""
    override func setUp() {
        dir = NSTemporaryDirectory() + "virtio-blk-\(getpid())-\(UUID().uuidString)"
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }
    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    func image(_ bytes: [UInt8]) -> String {
        let p = dir + "/disk.img"
        FileManager.default.createFile(atPath: p, contents: Data(bytes))
        return p
    }

    /// Sends one request: header at 0x4000, data at 0x10000, status at 0x5000.
    func request(_ t: VirtioTransport, _ d: RingDriver, type: UInt32, sector: UInt64, dataLen: UInt32, write: Bool) -> UInt8 {
        let m = d.mem
        m.put(0x4000, UInt64(type), 4); m.put(0x4008, sector, 8)
        m.bytes[0x5000] = 0xEE
        d.setDesc(0, addr: 0x4000, len: 16, flags: VirtqDesc.next, next: dataLen > 0 ? 1 : 2)
        d.setDesc(1, addr: 0x10000, len: dataLen, flags: VirtqDesc.next | (write ? 0 : VirtqDesc.write), next: 2)
        d.setDesc(2, addr: 0x5000, len: 1, flags: VirtqDesc.write)
        d.publish(0)
        var b: [UInt8] = [0, 0, 0, 0]
        b.withUnsafeMutableBufferPointer { t.access(offset: 0x50, data: $0, isWrite: true) }
        return m.bytes[0x5000]
    }

    func live(_ backend: VirtioBlkBackend, _ m: ArrayDMA) -> VirtioTransport {
        let t = VirtioTransport(name: "blk", backend: backend, mem: m, log: { _ in }, irq: { _ in })
        bringUp(t)
        return t
    }

    func testReadWriteFlushGetIDAndRangeErrors() throws {
        var content = [UInt8](repeating: 0, count: 4096)
        for i in 0..<content.count { content[i] = UInt8(truncatingIfNeeded: i * 7) }
        let path = image(content)
        var ioErrors: [String] = []
        let b = try VirtioBlkBackend(name: "disk0", path: path, readOnly: false, maxRequest: 65536) { ioErrors.append($0) }
        XCTAssertEqual(b.configBytes().prefix(8), [8, 0, 0, 0, 0, 0, 0, 0], "capacity 8 sectors")
        let m = ArrayDMA(size: 1 << 20)
        let t = live(b, m)
        let d = RingDriver(mem: m)
        XCTAssertEqual(request(t, d, type: 0, sector: 2, dataLen: 1024, write: false), 0)
        XCTAssertEqual(Array(m.bytes[0x10000..<0x10400]), Array(content[1024..<2048]))
        XCTAssertEqual(d.usedEntry(0).len, 1025, "data + status written")
        for i in 0..<512 { m.bytes[0x10000 + i] = 0xA5 }
        XCTAssertEqual(request(t, d, type: 1, sector: 7, dataLen: 512, write: true), 0)
        XCTAssertEqual(request(t, d, type: 4, sector: 0, dataLen: 0, write: false), 0)
        let onDisk = try Array(Data(contentsOf: URL(fileURLWithPath: path)))
        XCTAssertEqual(Array(onDisk[3584..<4096]), [UInt8](repeating: 0xA5, count: 512))
        XCTAssertEqual(request(t, d, type: 8, sector: 0, dataLen: 20, write: false), 0)
        XCTAssertEqual(Array(m.bytes[0x10000..<0x10005]), Array("disk0".utf8))
        // past the end, partly past the end, not whole sectors: IOERR, the device stays live
        XCTAssertEqual(request(t, d, type: 0, sector: 8, dataLen: 512, write: false), 1)
        XCTAssertEqual(request(t, d, type: 0, sector: 7, dataLen: 1024, write: false), 1)
        XCTAssertEqual(request(t, d, type: 0, sector: UInt64.max, dataLen: 512, write: false), 1)
        XCTAssertEqual(request(t, d, type: 0, sector: 0, dataLen: 100, write: false), 1)
        XCTAssertEqual(request(t, d, type: 99, sector: 0, dataLen: 0, write: false), 2, "unsupported type")
        XCTAssertEqual(ioErrors.count, 4)
        XCTAssertTrue(ioErrors[0].contains("past the end of '\(path)'"), ioErrors[0])
        XCTAssertTrue(t.isLive)
        // a data buffer outside guest memory is a malformed request: NEEDS_RESET
        d.setDesc(1, addr: 0xFFFF_0000, len: 512, flags: VirtqDesc.next | VirtqDesc.write, next: 2)
        d.setDesc(0, addr: 0x4000, len: 16, flags: VirtqDesc.next, next: 1)
        m.put(0x4000, 0, 4); m.put(0x4008, 0, 8)
        d.publish(0)
        var w: [UInt8] = [0, 0, 0, 0]
        w.withUnsafeMutableBufferPointer { t.access(offset: 0x50, data: $0, isWrite: true) }
        XCTAssertFalse(t.isLive)
        XCTAssertNotEqual(t.status & VirtioStatus.needsReset, 0)
    }

    func testReadOnlyDiskRefusesWrites() throws {
        let path = image([UInt8](repeating: 1, count: 1024))
        let b = try VirtioBlkBackend(name: "ro", path: path, readOnly: true, maxRequest: 4096)
        XCTAssertNotEqual(b.features & (1 << 5), 0, "VIRTIO_BLK_F_RO offered")
        let m = ArrayDMA(size: 1 << 20)
        let t = live(b, m)
        let d = RingDriver(mem: m)
        XCTAssertEqual(request(t, d, type: 1, sector: 0, dataLen: 512, write: true), 1)
        XCTAssertEqual(try Array(Data(contentsOf: URL(fileURLWithPath: path))), [UInt8](repeating: 1, count: 1024))
    }

    func testImageChecksNameTheDeviceAndFile() {
        let odd = image([UInt8](repeating: 0, count: 1000))
        XCTAssertThrowsError(try VirtioBlkBackend(name: "d1", path: odd, readOnly: true, maxRequest: 4096)) {
            XCTAssertTrue("\($0)".contains("virtio-blk 'd1': disk image '\(odd)' is 1000 bytes"), "\($0)")
        }
        XCTAssertThrowsError(try VirtioBlkBackend(name: "d2", path: dir + "/missing.img", readOnly: false, maxRequest: 4096)) {
            XCTAssertTrue("\($0)".contains("virtio-blk 'd2': cannot open disk image '\(self.dir)/missing.img' read-write"), "\($0)")
        }
    }
}

final class VirtioNetTests: XCTestCase {
    func testTransmitStripsHeaderAndReceiveFillsPostedBuffers() throws {
        var sent: [[UInt8]] = []
        let b = VirtioNetBackend(mac: [2, 0, 0, 0, 0, 1], backlog: 2) { sent.append(Array($0)) }
        XCTAssertEqual(b.configBytes(), [2, 0, 0, 0, 0, 1, 1, 0])
        let m = ArrayDMA(size: 1 << 20)
        let t = VirtioTransport(name: "net", backend: b, mem: m, log: { _ in }, irq: { _ in })
        // two queues: rx at 0x1000/0x2000/0x3000, tx at 0x11000/0x12000/0x13000
        set(t, 0x70, 1); set(t, 0x70, 3); set(t, 0x24, 1); set(t, 0x20, 1); set(t, 0x70, 11)
        for (q, base) in [(0, 0x0), (1, 0x10000)] {
            set(t, 0x30, UInt32(q)); set(t, 0x38, 8)
            set(t, 0x80, UInt32(0x1000 + base)); set(t, 0x90, UInt32(0x2000 + base)); set(t, 0xA0, UInt32(0x3000 + base))
            set(t, 0x44, 1)
        }
        set(t, 0x70, 15)
        let rx = RingDriver(mem: m)
        // transmit: 12-byte header + 60-byte frame
        let tx = TXRing(mem: m)
        for i in 0..<72 { m.bytes[0x40000 + i] = UInt8(i) }
        tx.setDesc(0, addr: 0x40000, len: 72, flags: 0)
        tx.publish(0)
        set(t, 0x50, 1)
        XCTAssertEqual(sent, [Array((12..<72).map { UInt8($0) })])
        // receive before any buffer is posted: held (backlog 2), the third dropped
        let frame = [UInt8](repeating: 0x5A, count: 100)
        t.locked { for _ in 0..<3 { frame.withUnsafeBytes { b.receive($0, t) } } }
        XCTAssertEqual(b.stats.rxDropped, 1)
        rx.setDesc(0, addr: 0x50000, len: 2048, flags: VirtqDesc.write)
        rx.publish(0)
        rx.setDesc(1, addr: 0x60000, len: 50, flags: VirtqDesc.write)   // too small for header + 100
        rx.publish(1)
        set(t, 0x50, 0)
        XCTAssertEqual(rx.usedIdx, 2)
        XCTAssertEqual(rx.usedEntry(0).len, 112)
        XCTAssertEqual(Array(m.bytes[0x50000..<0x5000C]), [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0], "header: num_buffers 1")
        XCTAssertEqual(Array(m.bytes[0x5000C..<0x50070]), frame)
        XCTAssertEqual(rx.usedEntry(1).len, 0, "frame that does not fit: buffer returned empty")
        XCTAssertEqual(b.stats.rxFrames, 1)
        XCTAssertEqual(b.stats.rxDropped, 2)
        // a receive chain with a device-readable buffer is malformed
        rx.setDesc(2, addr: 0x50000, len: 2048, flags: 0)
        rx.publish(2)
        t.locked { frame.withUnsafeBytes { b.receive($0, t) } }
        XCTAssertFalse(t.isLive)
    }
}

/// The transmit queue of the net test (rings at 0x11000, 0x12000, 0x13000).
struct TXRing {
    let mem: ArrayDMA
    func setDesc(_ i: Int, addr: UInt64, len: UInt32, flags: UInt16, next: UInt16 = 0) {
        let o = 0x11000 + 16 * i
        mem.put(o, addr, 8); mem.put(o + 8, UInt64(len), 4); mem.put(o + 12, UInt64(flags), 2); mem.put(o + 14, UInt64(next), 2)
    }
    func publish(_ head: UInt16) {
        let idx = Int(mem.get(0x12002, 2))
        mem.put(0x12004 + 2 * (idx % 8), UInt64(head), 2)
        mem.put(0x12002, UInt64((idx + 1) & 0xFFFF), 2)
    }
}
