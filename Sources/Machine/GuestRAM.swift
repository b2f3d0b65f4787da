// Guest RAM as the machine sees it: a host mapping for the KVM slot, and pin/unpin for every
// access the host makes itself (image loading, boot structures, device DMA).
//
// Until the GuestMemory target (userfaultfd + coherence) lands, `AnonymousGuestRAM` backs RAM
// with a plain anonymous mmap; switching is one conformance (GuestMemory's region adopts
// `GuestRAM`) and one line where the machine is built.
import Glibc

public enum GuestRAMError: Error, CustomStringConvertible, Equatable {
    case outOfRange(gpa: UInt64, length: Int, size: UInt64)
    case mapFailed(bytes: UInt64, errno: Int32)
    case pinFailed(gpa: UInt64, reason: String)

    public var description: String {
        switch self {
        case let .outOfRange(gpa, length, size):
            return "guest-physical range 0x\(String(gpa, radix: 16))+\(length) is outside guest RAM (\(size) bytes)"
        case let .mapFailed(bytes, e):
            return "cannot map \(bytes) bytes of guest RAM: \(String(cString: strerror(e)))"
        case let .pinFailed(gpa, reason):
            return "cannot pin guest page at 0x\(String(gpa, radix: 16)): \(reason)"
        }
    }
}

/// Guest RAM starting at guest-physical 0. Threading: any thread; `withPinned` may block until
/// the memory layer has made the range coherent.
public protocol GuestRAM: AnyObject {
    /// Bytes of RAM (a multiple of 4096); valid guest-physical addresses are 0 ..< size.
    var size: UInt64 { get }
    /// The host mapping given to KVM as memory slot 0.
    var hostBase: UnsafeMutableRawPointer { get }
    /// Pins [gpa, gpa+length) for reading (or writing), runs body on the host bytes, unpins.
    func withPinned<R>(gpa: UInt64, length: Int, write: Bool,
                       _ body: (UnsafeMutableRawBufferPointer) throws -> R) throws -> R
}

extension GuestRAM {
    /// Copies bytes into guest RAM through pin/unpin.
    public func write(_ bytes: UnsafeRawBufferPointer, at gpa: UInt64) throws {
        if bytes.isEmpty { return }
        try withPinned(gpa: gpa, length: bytes.count, write: true) { dst in
            dst.copyMemory(from: bytes)
        }
    }

    public func write(_ bytes: [UInt8], at gpa: UInt64) throws {
        try bytes.withUnsafeBytes { try write($0, at: gpa) }
    }

    /// Copies bytes out of guest RAM through pin/unpin.
    public func read(_ gpa: UInt64, count: Int) throws -> [UInt8] {
        try withPinned(gpa: gpa, length: count, write: false) { Array($0) }
    }

    public func checkRange(_ gpa: UInt64, _ length: Int) throws {
        let (end, overflow) = gpa.addingReportingOverflow(UInt64(length))
        if overflow || end > size { throw GuestRAMError.outOfRange(gpa: gpa, length: length, size: size) }
    }
}

/// RAM in one private anonymous mapping with transparent huge pages, no coherence (single node,
/// no DSM). Pinning is a range check.
public final class AnonymousGuestRAM: GuestRAM, @unchecked Sendable {
    public let size: UInt64
    public let hostBase: UnsafeMutableRawPointer

    public init(size: UInt64) throws {
        let p = mmap(nil, Int(size), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
        if p == MAP_FAILED || p == nil { throw GuestRAMError.mapFailed(bytes: size, errno: errno) }
        // Transparent huge pages, as QEMU advises for guest RAM: KVM maps 2 MiB of guest memory
        // per fault where the guest's page tables do too (advice only: 4 KiB pages are as correct).
        _ = madvise(p, Int(size), MADV_HUGEPAGE)
        self.size = size
        self.hostBase = p!
    }

    deinit { munmap(hostBase, Int(size)) }

    public func withPinned<R>(gpa: UInt64, length: Int, write: Bool,
                              _ body: (UnsafeMutableRawBufferPointer) throws -> R) throws -> R {
        try checkRange(gpa, length)
        return try body(UnsafeMutableRawBufferPointer(start: hostBase + Int(gpa), count: length))
    }
}
