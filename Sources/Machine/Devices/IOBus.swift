// The I/O bus: maps port-I/O and MMIO ranges to device instances.
//
// Threading: ranges are added during setup (one thread); after `seal()` the bus is read-only
// and lookups run concurrently on every vCPU thread without locks.

import Interrupts

/// An address space of the bus.
public enum IOSpaceKind: UInt32, Sendable, CustomStringConvertible {
    case pio = 1, mmio = 2
    public var description: String { self == .pio ? "port I/O" : "MMIO" }
}

/// Something that answers guest accesses. Calls into one device never overlap: the bus holds
/// the device's own lock around each call.
public protocol IODevice: AnyObject {
    var name: String { get }
    /// `data` holds `data.count` (1, 2, 4 or 8) bytes, little endian: fill it for reads.
    func io(space: IOSpaceKind, offset: UInt64, data: UnsafeMutableRawBufferPointer, isWrite: Bool)
}

/// [dist hook] A device that takes a string (rep ins/outs) access whole: `data` holds
/// `data.count / itemSize` items of `itemSize` bytes at the same offset (forwarded devices send
/// them in one message).
public protocol IOStringDevice: IODevice {
    func ioString(space: IOSpaceKind, offset: UInt64, itemSize: Int, data: UnsafeMutableRawBufferPointer, isWrite: Bool)
}

public enum IOBusError: Error, CustomStringConvertible, Equatable {
    case overlap(space: IOSpaceKind, base: UInt64, length: UInt64, device: String, existingBase: UInt64,
                 existingLength: UInt64, existingDevice: String)
    case badRange(space: IOSpaceKind, base: UInt64, length: UInt64, device: String, reason: String)
    case sealed(device: String)

    public var description: String {
        switch self {
        case let .overlap(space, base, length, device, eb, el, ed):
            return "\(space) range 0x\(String(base, radix: 16))+0x\(String(length, radix: 16)) of device '\(device)' overlaps 0x\(String(eb, radix: 16))+0x\(String(el, radix: 16)) of device '\(ed)'"
        case let .badRange(space, base, length, device, reason):
            return "\(space) range 0x\(String(base, radix: 16))+0x\(String(length, radix: 16)) of device '\(device)': \(reason)"
        case let .sealed(device):
            return "device '\(device)' tried to map an I/O range after setup"
        }
    }
}

public final class IOBus: @unchecked Sendable {
    public struct Range {
        public let base: UInt64
        public let length: UInt64
        public let device: IODevice
        var end: UInt64 { base + length }
    }

    private var ranges: [IOSpaceKind: [Range]] = [.pio: [], .mmio: []]
    private var isSealed = false

    public init() {}

    /// Adds a range; overlapping an existing one is an error naming both devices.
    public func map(_ space: IOSpaceKind, base: UInt64, length: UInt64, device: IODevice) throws {
        if isSealed { throw IOBusError.sealed(device: device.name) }
        guard length > 0 else {
            throw IOBusError.badRange(space: space, base: base, length: length, device: device.name, reason: "length is 0")
        }
        let (_, overflow) = base.addingReportingOverflow(length)
        if overflow || (space == .pio && base + length > 0x10000) {
            throw IOBusError.badRange(space: space, base: base, length: length, device: device.name,
                                      reason: space == .pio ? "ports end at 0xffff" : "wraps the address space")
        }
        if space == .mmio && base < localAPICBase + localAPICSize && base + length > localAPICBase {
            throw IOBusError.badRange(space: space, base: base, length: length, device: device.name,
                                      reason: "overlaps the local APIC page 0xfee00000")
        }
        for r in ranges[space]! where base < r.end && r.base < base + length {
            throw IOBusError.overlap(space: space, base: base, length: length, device: device.name,
                                     existingBase: r.base, existingLength: r.length, existingDevice: r.device.name)
        }
        ranges[space]!.append(Range(base: base, length: length, device: device))
        ranges[space]!.sort { $0.base < $1.base }
    }

    /// No more ranges: from here on the bus is read-only and lock-free.
    public func seal() { isSealed = true }

    /// The range containing `address`, if any (binary search).
    public func lookup(_ space: IOSpaceKind, _ address: UInt64) -> Range? {
        let list = ranges[space]!
        var lo = 0, hi = list.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if list[mid].end <= address { lo = mid + 1 } else { hi = mid }
        }
        if lo < list.count && list[lo].base <= address { return list[lo] }
        return nil
    }

    public func allRanges(_ space: IOSpaceKind) -> [Range] { ranges[space]! }
}
