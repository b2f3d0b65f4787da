// A split virtqueue (virtio 1.x, section 2.7) as the device sees it, and the descriptor-chain
// walker that turns a guest's chain into byte ranges. Every number read from the guest (ring
// indices, descriptor addresses, lengths, next links) is range-checked here before use: a chain
// that loops, links past the table, mixes readable after writable descriptors, sums past a
// device's limit or uses an unnegotiated indirect table is a `ChainError`, which the transport
// turns into DEVICE_NEEDS_RESET (a guest error, never a host failure).
//
// Layout in guest memory (little endian):
//   descriptor table: size x { u64 addr; u32 len; u16 flags; u16 next }   (16 bytes each)
//   available ring:   u16 flags; u16 idx; u16 ring[size]; (u16 used_event)
//   used ring:        u16 flags; u16 idx; { u32 id; u32 len } ring[size]; (u16 avail_event)
// Threading: a value type; the owning device serialises access.

/// Guest-physical memory as a device reaches it (the device host's dma_read/dma_write, or an
/// array in the unit tests). Returns false when the range is not guest RAM.
public protocol GuestDMA {
    func read(_ gpa: UInt64, into out: UnsafeMutableRawBufferPointer) -> Bool
    func write(_ gpa: UInt64, _ bytes: UnsafeRawBufferPointer) -> Bool
}

extension GuestDMA {
    func readU16(_ gpa: UInt64) -> UInt16? {
        var v: UInt16 = 0
        return withUnsafeMutableBytes(of: &v) { read(gpa, into: $0) } ? UInt16(littleEndian: v) : nil
    }
    func writeU16(_ gpa: UInt64, _ value: UInt16) -> Bool {
        var v = value.littleEndian
        return withUnsafeBytes(of: &v) { write(gpa, $0) }
    }
    func readBytes(_ gpa: UInt64, count: Int) -> [UInt8]? {
        var b = [UInt8](repeating: 0, count: count)
        return b.withUnsafeMutableBytes { read(gpa, into: $0) } ? b : nil
    }
}

/// One buffer of a chain: guest-physical address and length, readable or writable by the device.
public struct ChainSegment: Equatable, Sendable {
    public var gpa: UInt64
    public var length: UInt32
    public var writable: Bool
    public init(gpa: UInt64, length: UInt32, writable: Bool) { self.gpa = gpa; self.length = length; self.writable = writable }
}

/// A walked descriptor chain: its head (the id the used ring returns) and its segments, the
/// device-readable ones first.
public struct DescriptorChain: Equatable, Sendable {
    public var head: UInt16
    public var segments: [ChainSegment]
    public var readable: [ChainSegment] { segments.filter { !$0.writable } }
    public var writable: [ChainSegment] { segments.filter { $0.writable } }
    public var readableBytes: Int { readable.reduce(0) { $0 + Int($1.length) } }
    public var writableBytes: Int { writable.reduce(0) { $0 + Int($1.length) } }
}

/// Why a chain (or a ring) is malformed. The description is the logged guest error.
public enum ChainError: Error, Equatable, CustomStringConvertible {
    case headOutOfRange(index: UInt16, size: UInt16)
    case nextOutOfRange(index: UInt16, size: UInt16)
    case loop(length: Int)
    case readableAfterWritable(index: UInt16)
    case tooLong(bytes: UInt64, limit: UInt64)
    case tooManySegments(limit: Int)
    case indirectNotNegotiated(index: UInt16)
    case badIndirect(reason: String)
    case addressWraps(index: UInt16, gpa: UInt64, length: UInt32)
    case unreadable(what: String, gpa: UInt64)
    case availIndexJump(avail: UInt16, lastSeen: UInt16, size: UInt16)

    public var description: String {
        func h(_ v: UInt64) -> String { "0x" + String(v, radix: 16) }
        switch self {
        case let .headOutOfRange(i, s): return "chain head \(i) is outside the descriptor table (size \(s))"
        case let .nextOutOfRange(i, s): return "descriptor next \(i) is outside the descriptor table (size \(s))"
        case let .loop(n): return "descriptor chain loops (more than \(n) descriptors)"
        case let .readableAfterWritable(i): return "descriptor \(i) is device-readable after a device-writable one"
        case let .tooLong(b, l): return "descriptor chain carries \(b) bytes, over the device's limit of \(l)"
        case let .tooManySegments(l): return "descriptor chain has more than \(l) buffers"
        case let .indirectNotNegotiated(i): return "descriptor \(i) is indirect but VIRTIO_F_INDIRECT_DESC was not negotiated"
        case let .badIndirect(r): return "indirect descriptor table: \(r)"
        case let .addressWraps(i, g, l): return "descriptor \(i) buffer \(h(g))+\(l) wraps the address space"
        case let .unreadable(w, g): return "\(w) at \(h(g)) is not guest RAM"
        case let .availIndexJump(a, l, s): return "available index \(a) is more than the queue size \(s) ahead of the last seen \(l)"
        }
    }
}

/// Descriptor flags.
public enum VirtqDesc {
    public static let next: UInt16 = 1, write: UInt16 = 2, indirect: UInt16 = 4
    public static let size = 16
}

/// One split virtqueue: the addresses the driver configured and the device's progress.
public struct Virtqueue: Equatable, Sendable {
    public var size: UInt16 = 0
    public var ready = false
    public var descTable: UInt64 = 0
    public var availRing: UInt64 = 0
    public var usedRing: UInt64 = 0
    /// Next available-ring slot the device will consume (free-running, mod 2^16).
    public var lastAvail: UInt16 = 0
    /// Next used-ring index the device will publish (free-running).
    public var usedIdx: UInt16 = 0
    public init() {}

    /// Limits a device puts on one chain.
    public struct Limits: Equatable, Sendable {
        public var maxBytes: UInt64
        public var maxSegments: Int
        public var indirect: Bool
        public init(maxBytes: UInt64, maxSegments: Int, indirect: Bool = false) {
            self.maxBytes = maxBytes; self.maxSegments = maxSegments; self.indirect = indirect
        }
    }

    /// The next available chain head, or nil when the driver has published none. Throws when
    /// the driver's index is further ahead than the ring holds (a corrupt or hostile ring).
    public mutating func nextHead(_ mem: GuestDMA) throws -> UInt16? {
        guard let availIdx = mem.readU16(availRing &+ 2) else { throw ChainError.unreadable(what: "available ring index", gpa: availRing &+ 2) }
        let pending = availIdx &- lastAvail
        if pending == 0 { return nil }
        guard pending <= size else { throw ChainError.availIndexJump(avail: availIdx, lastSeen: lastAvail, size: size) }
        let slot = availRing &+ 4 &+ UInt64(lastAvail % size) * 2
        guard let head = mem.readU16(slot) else { throw ChainError.unreadable(what: "available ring entry", gpa: slot) }
        lastAvail &+= 1
        return head
    }

    /// Walks the chain starting at `head` (direct descriptors, or one indirect table when
    /// `limits.indirect`).
    public func walk(head: UInt16, _ mem: GuestDMA, limits: Limits) throws -> DescriptorChain {
        guard head < size else { throw ChainError.headOutOfRange(index: head, size: size) }
        var segments: [ChainSegment] = []
        var total: UInt64 = 0
        var sawWritable = false
        func add(_ d: RawDescriptor, index: UInt16) throws {
            let writable = d.flags & VirtqDesc.write != 0
            if !writable && sawWritable { throw ChainError.readableAfterWritable(index: index) }
            sawWritable = sawWritable || writable
            let (_, wraps) = d.addr.addingReportingOverflow(UInt64(d.len))
            if wraps { throw ChainError.addressWraps(index: index, gpa: d.addr, length: d.len) }
            total += UInt64(d.len)
            if total > limits.maxBytes { throw ChainError.tooLong(bytes: total, limit: limits.maxBytes) }
            if d.len == 0 { return }
            if segments.count >= limits.maxSegments { throw ChainError.tooManySegments(limit: limits.maxSegments) }
            segments.append(ChainSegment(gpa: d.addr, length: d.len, writable: writable))
        }
        var index = head
        var steps = 0
        while true {
            steps += 1
            if steps > Int(size) { throw ChainError.loop(length: Int(size)) }
            let d = try RawDescriptor.read(mem, table: descTable, index: index)
            if d.flags & VirtqDesc.indirect != 0 {
                guard limits.indirect else { throw ChainError.indirectNotNegotiated(index: index) }
                guard d.flags & VirtqDesc.next == 0, segments.isEmpty else {
                    throw ChainError.badIndirect(reason: "descriptor \(index) is indirect but not alone in its chain")
                }
                try walkIndirect(d, mem, add: add)
                break
            }
            try add(d, index: index)
            guard d.flags & VirtqDesc.next != 0 else { break }
            guard d.next < size else { throw ChainError.nextOutOfRange(index: d.next, size: size) }
            index = d.next
        }
        return DescriptorChain(head: head, segments: segments)
    }

    private func walkIndirect(_ d: RawDescriptor, _ mem: GuestDMA, add: (RawDescriptor, UInt16) throws -> Void) throws {
        guard d.len > 0, d.len % UInt32(VirtqDesc.size) == 0 else {
            throw ChainError.badIndirect(reason: "length \(d.len) is not a positive multiple of 16")
        }
        let count = d.len / UInt32(VirtqDesc.size)
        guard count <= 1024 else { throw ChainError.badIndirect(reason: "\(count) entries (at most 1024)") }
        var index: UInt32 = 0
        var steps: UInt32 = 0
        while true {
            steps += 1
            if steps > count { throw ChainError.loop(length: Int(count)) }
            let e = try RawDescriptor.read(mem, table: d.addr, index: UInt16(index))
            if e.flags & VirtqDesc.indirect != 0 { throw ChainError.badIndirect(reason: "entry \(index) is itself indirect") }
            try add(e, UInt16(index))
            guard e.flags & VirtqDesc.next != 0 else { break }
            guard UInt32(e.next) < count else { throw ChainError.badIndirect(reason: "entry \(index) links to \(e.next), past \(count) entries") }
            index = UInt32(e.next)
        }
    }

    /// Publishes a completed chain: used-ring entry, then the index (the order the driver relies on).
    public mutating func pushUsed(_ mem: GuestDMA, head: UInt16, written: UInt32) -> Bool {
        var entry = [UInt8](repeating: 0, count: 8)
        for i in 0..<4 { entry[i] = UInt8(truncatingIfNeeded: UInt32(head) >> (8 * UInt32(i))) }
        for i in 0..<4 { entry[4 + i] = UInt8(truncatingIfNeeded: written >> (8 * UInt32(i))) }
        let slot = usedRing &+ 4 &+ UInt64(usedIdx % size) * 8
        guard entry.withUnsafeBytes({ mem.write(slot, $0) }) else { return false }
        usedIdx &+= 1
        return mem.writeU16(usedRing &+ 2, usedIdx)
    }

    /// Whether the driver asked for no interrupt (VIRTQ_AVAIL_F_NO_INTERRUPT).
    public func interruptSuppressed(_ mem: GuestDMA) -> Bool { (mem.readU16(availRing) ?? 0) & 1 != 0 }
}

/// A descriptor table entry as read from the guest.
struct RawDescriptor {
    var addr: UInt64
    var len: UInt32
    var flags: UInt16
    var next: UInt16

    static func read(_ mem: GuestDMA, table: UInt64, index: UInt16) throws -> RawDescriptor {
        let gpa = table &+ UInt64(index) * UInt64(VirtqDesc.size)
        guard let b = mem.readBytes(gpa, count: VirtqDesc.size) else { throw ChainError.unreadable(what: "descriptor \(index)", gpa: gpa) }
        return RawDescriptor(bytes: b)
    }

    init(bytes b: [UInt8]) {
        func le(_ o: Int, _ n: Int) -> UInt64 { (0..<n).reduce(0) { $0 | UInt64(b[o + $1]) << (8 * UInt64($1)) } }
        addr = le(0, 8)
        len = UInt32(le(8, 4))
        flags = UInt16(le(12, 2))
        next = UInt16(le(14, 2))
    }
}

/// Copies between a chain's segments and host buffers (gather from readable, scatter to writable).
public enum ChainIO {
    /// Reads `count` bytes of the readable segments starting `offset` bytes into them.
    public static func gather(_ mem: GuestDMA, _ segs: [ChainSegment], offset: Int, into out: UnsafeMutableRawBufferPointer) -> Bool {
        var skip = offset, done = 0
        for s in segs where done < out.count {
            let len = Int(s.length)
            if skip >= len { skip -= len; continue }
            let n = min(len - skip, out.count - done)
            guard mem.read(s.gpa + UInt64(skip), into: UnsafeMutableRawBufferPointer(rebasing: out[done..<done + n])) else { return false }
            done += n
            skip = 0
        }
        return done == out.count
    }

    /// Writes `bytes` into the writable segments starting `offset` bytes into them.
    public static func scatter(_ mem: GuestDMA, _ segs: [ChainSegment], offset: Int, _ bytes: UnsafeRawBufferPointer) -> Bool {
        var skip = offset, done = 0
        for s in segs where done < bytes.count {
            let len = Int(s.length)
            if skip >= len { skip -= len; continue }
            let n = min(len - skip, bytes.count - done)
            guard mem.write(s.gpa + UInt64(skip), UnsafeRawBufferPointer(rebasing: bytes[done..<done + n])) else { return false }
            done += n
            skip = 0
        }
        return done == bytes.count
    }
}
