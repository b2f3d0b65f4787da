// Fuzz target "virtio-chain": arbitrary bytes as a guest's virtqueue. Bytes 0-7 pick the queue
// size (a power of two up to 256), the ring addresses and the limits; the rest is 16 KiB of guest
// memory (zero-padded) holding descriptor table, available ring and indirect tables. The walker
// must return a chain within the limits (readable buffers first) or a ChainError, never trap
// or loop; then the same memory drives virtio-net's transmit and receive paths through the
// virtio-mmio transport, which may set NEEDS_RESET but must not trap.
#if !FUZZING
@testable import DeviceModels
#endif

final class FuzzMemory: GuestDMA {
    var bytes: [UInt8]
    init(_ b: [UInt8]) { bytes = b }
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
}

enum VirtioChainFuzz {
    static let memSize = 1 << 14

    static func exercise(_ input: [UInt8]) {
        guard input.count >= 8 else { return }
        let p = Array(input.prefix(8))
        var memBytes = Array(input.dropFirst(8).prefix(memSize))
        memBytes += [UInt8](repeating: 0, count: memSize - memBytes.count)
        let mem = FuzzMemory(memBytes)
        var q = Virtqueue()
        q.size = UInt16(1) << (p[0] % 9)
        q.ready = true
        q.descTable = UInt64(p[1]) << 6
        q.availRing = UInt64(p[2]) << 6
        q.usedRing = UInt64(p[3]) << 6 | 0x2000
        q.lastAvail = UInt16(p[4])
        let limits = Virtqueue.Limits(maxBytes: UInt64(p[5]) << 10 | 1, maxSegments: Int(p[6] % 64) + 1, indirect: p[7] & 1 != 0)
        // walk at most a queue's worth of chains
        for _ in 0..<Int(q.size) {
            guard let head = try? q.nextHead(mem) else { break }
            guard let c = try? q.walk(head: head, mem, limits: limits) else { continue }
            precondition(c.segments.count <= limits.maxSegments, "too many segments")
            precondition(UInt64(c.readableBytes + c.writableBytes) <= limits.maxBytes, "over the byte limit")
            precondition(!c.segments.drop { !$0.writable }.contains { !$0.writable }, "readable after writable")
            _ = q.pushUsed(mem, head: head, written: UInt32(c.writableBytes))
        }
        // the same memory as virtio-net's queues, through the transport
        let net = VirtioNetBackend(mac: [2, 0, 0, 0, 0, 1], backlog: 4) { frame in precondition(frame.count <= VirtioNetBackend.maxFrame) }
        let t = VirtioTransport(name: "fuzz", backend: net, mem: mem, log: { _ in }, irq: { _ in })
        func set(_ off: UInt64, _ v: UInt32) {
            var b = (0..<4).map { UInt8(truncatingIfNeeded: v >> (8 * UInt32($0))) }
            b.withUnsafeMutableBufferPointer { t.access(offset: off, data: $0, isWrite: true) }
        }
        set(0x70, 1); set(0x70, 3); set(0x24, 1); set(0x20, 1); set(0x24, 0); set(0x20, UInt32(p[7] & 1) << 28); set(0x70, 11)
        for (i, base) in [(0, UInt32(p[1]) << 6), (1, UInt32(p[2]) << 6)] {
            set(0x30, UInt32(i)); set(0x38, UInt32(q.size))
            set(0x80, base); set(0x90, base ^ 0x1000); set(0xA0, (base ^ 0x2000) & 0x3FFC)
            set(0x44, 1)
        }
        set(0x70, 15)
        set(0x50, 1)
        let frame = [UInt8](repeating: 0xAB, count: Int(p[5]) * 8 + 14)
        t.locked { frame.withUnsafeBytes { net.receive($0, t) } }
        set(0x50, 0)
        set(0x50, UInt32(p[6]))
    }
}
