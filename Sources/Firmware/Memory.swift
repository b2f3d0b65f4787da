// The Firmware target: boot loaders (multiboot v1, Linux boot protocol, GiantVM-independent)
// and the firmware tables a PC guest expects (e820, MP, ACPI). Everything here is pure byte
// building plus writes through `FirmwareMemory`, so it plugs into whatever RAM type the machine
// uses (pin/unpin happens behind `write`).
//
// Threading: loaders and builders are values used on one thread (the machine's setup thread).

/// Guest RAM as the loaders see it: RAM starts at guest-physical 0 and is `memoryBytes` long.
public protocol FirmwareMemory: AnyObject {
    var memoryBytes: UInt64 { get }
    /// Copies bytes to guest-physical `gpa`; throws if the range is outside RAM.
    func write(gpa: UInt64, bytes: [UInt8]) throws
}

/// An in-process byte array standing in for guest RAM (tests, tools). Threading: one thread.
public final class ByteArrayMemory: FirmwareMemory {
    public private(set) var bytes: [UInt8]
    public var memoryBytes: UInt64 { UInt64(bytes.count) }
    public init(size: Int) { bytes = [UInt8](repeating: 0, count: size) }

    public func write(gpa: UInt64, bytes src: [UInt8]) throws {
        guard gpa <= UInt64(bytes.count), UInt64(src.count) <= UInt64(bytes.count) - gpa else {
            throw FirmwareError(file: "guest RAM", message: "write of \(src.count) bytes at 0x\(hex(gpa)) is outside \(bytes.count) bytes of RAM")
        }
        bytes.replaceSubrange(Int(gpa)..<Int(gpa) + src.count, with: src)
    }

    public func read(_ gpa: UInt64, _ count: Int) -> [UInt8] { Array(bytes[Int(gpa)..<Int(gpa) + count]) }
    public func u8(_ gpa: UInt64) -> UInt8 { bytes[Int(gpa)] }
    public func u16(_ gpa: UInt64) -> UInt16 { UInt16(bytes[Int(gpa)]) | UInt16(bytes[Int(gpa) + 1]) << 8 }
    public func u32(_ gpa: UInt64) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(bytes[Int(gpa) + $1]) << (8 * UInt32($1)) } }
    public func u64(_ gpa: UInt64) -> UInt64 { (0..<8).reduce(0) { $0 | UInt64(bytes[Int(gpa) + $1]) << (8 * UInt64($1)) } }
}

/// A bad image or an impossible placement: names the file (or table) and what is wrong.
public struct FirmwareError: Error, CustomStringConvertible, Equatable {
    public var file: String
    public var message: String
    public init(file: String, message: String) { self.file = file; self.message = message }
    public var description: String { "\(file): \(message)" }
}

@inline(__always) func hex<T: BinaryInteger>(_ v: T) -> String { String(v, radix: 16) }

/// Little-endian byte building and reading.
struct Bytes {
    var b: [UInt8]
    init(count: Int = 0) { b = [UInt8](repeating: 0, count: count) }
    init(_ bytes: [UInt8]) { b = bytes }

    mutating func put8(_ o: Int, _ v: UInt8) { b[o] = v }
    mutating func put16(_ o: Int, _ v: UInt16) { for i in 0..<2 { b[o + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt16(i))) } }
    mutating func put32(_ o: Int, _ v: UInt32) { for i in 0..<4 { b[o + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt32(i))) } }
    mutating func put64(_ o: Int, _ v: UInt64) { for i in 0..<8 { b[o + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(i))) } }
    mutating func putASCII(_ o: Int, _ s: String, width: Int, pad: UInt8 = 0x20) {
        let u = Array(s.utf8)
        for i in 0..<width { b[o + i] = i < u.count ? u[i] : pad }
    }
    mutating func append8(_ v: UInt8) { b.append(v) }
    mutating func append16(_ v: UInt16) { b += le16(v) }
    mutating func append32(_ v: UInt32) { b += le32(v) }
    mutating func append64(_ v: UInt64) { b += le64(v) }

    /// The byte that makes the sum of `range` zero (written at `at`, which lies inside range).
    mutating func fixChecksum(_ range: Range<Int>, at: Int) {
        b[at] = 0
        let sum = b[range].reduce(UInt8(0)) { $0 &+ $1 }
        b[at] = 0 &- sum
    }
}

func le16(_ v: UInt16) -> [UInt8] { [UInt8(v & 0xFF), UInt8(v >> 8)] }
func le32(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: v >> (8 * UInt32($0))) } }
func le64(_ v: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: v >> (8 * UInt64($0))) } }
func be16(_ v: UInt16) -> [UInt8] { [UInt8(v >> 8), UInt8(v & 0xFF)] }
func be32(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: v >> (8 * UInt32(3 - $0))) } }

/// Bounds-checked little-endian reads from an image, failing with the file name.
struct ImageReader {
    let bytes: [UInt8]
    let file: String
    func fail(_ m: String) -> FirmwareError { FirmwareError(file: file, message: m) }
    func need(_ o: Int, _ n: Int, _ what: String) throws {
        guard o >= 0, n >= 0, o <= bytes.count, n <= bytes.count - o else {
            throw fail("truncated: \(what) at offset 0x\(hex(o)) (+\(n) bytes) is past the end of the file (\(bytes.count) bytes)")
        }
    }
    /// A range of the file given by an offset and a size read from the image (any 64-bit values):
    /// checked without overflow, so the result can be used as Int indices.
    func span(_ offset: UInt64, _ size: UInt64, _ what: String) throws -> Range<Int> {
        let count = UInt64(bytes.count)
        guard offset <= count, size <= count - offset else {
            throw fail("truncated: \(what) at offset 0x\(hex(offset)) (+\(size) bytes) is past the end of the file (\(bytes.count) bytes)")
        }
        return Int(offset)..<Int(offset + size)
    }
    /// The file offsets of an ELF program header table (e_phoff, e_phentsize, e_phnum as read),
    /// checked to lie wholly inside the file.
    func programHeaders(phoff: UInt64, entrySize: UInt64, count n: UInt64) throws -> [Int] {
        let table = try span(phoff, entrySize * n, "program header table (e_phoff 0x\(hex(phoff)), e_phnum \(n) x e_phentsize \(entrySize))")
        return (0..<Int(n)).map { table.lowerBound + $0 * Int(entrySize) }
    }
    func u8(_ o: Int, _ what: String) throws -> UInt8 { try need(o, 1, what); return bytes[o] }
    func u16(_ o: Int, _ what: String) throws -> UInt16 { try need(o, 2, what); return UInt16(bytes[o]) | UInt16(bytes[o + 1]) << 8 }
    func u32(_ o: Int, _ what: String) throws -> UInt32 {
        try need(o, 4, what); return (0..<4).reduce(0) { $0 | UInt32(bytes[o + $1]) << (8 * UInt32($1)) }
    }
    func u64(_ o: Int, _ what: String) throws -> UInt64 {
        try need(o, 8, what); return (0..<8).reduce(0) { $0 | UInt64(bytes[o + $1]) << (8 * UInt64($1)) }
    }
}
