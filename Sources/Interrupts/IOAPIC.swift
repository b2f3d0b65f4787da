// IOAPIC: the 82093AA I/O APIC, emulated in user space on its home node (`ioapic_node:`).
// Device interrupt lines from any node arrive here (`setLine`); each redirection entry turns a line
// into an interrupt message that the caller delivers to the target vCPUs' local APICs, possibly on
// other nodes. Level-triggered entries stay "remote IRR" until the target's EOI comes back (`eoi`).
//
// Threading: every method takes the internal lock; `deliver` is called with the lock released, on
// the calling thread, so it may forward over the network.

import Synchronization

/// An interrupt message with its destination, as the IOAPIC (or an MSI) sends it to local APICs;
/// `InterruptRouter.deliver(_:)` resolves the destination to vCPUs.
public struct AddressedInterrupt: Equatable, Sendable {
    public var vector: UInt8
    /// Fixed, lowest priority, SMI, NMI, INIT or ExtINT (the reserved modes 3 and 6 of a
    /// redirection entry are sent as fixed).
    public var deliveryMode: DeliveryMode
    /// true: logical destination (matched against LDR/DFR); false: physical APIC id.
    public var logical: Bool
    public var destination: UInt8
    public var levelTriggered: Bool
    public init(vector: UInt8, deliveryMode: DeliveryMode, logical: Bool, destination: UInt8, levelTriggered: Bool) {
        self.vector = vector; self.deliveryMode = deliveryMode; self.logical = logical
        self.destination = destination; self.levelTriggered = levelTriggered
    }

    /// What each target vCPU receives.
    public var message: InterruptMessage {
        InterruptMessage(mode: deliveryMode, vector: vector, levelTriggered: levelTriggered)
    }
}

public final class IOAPIC: @unchecked Sendable {
    public static let defaultBase: UInt64 = 0xFEC0_0000
    public static let mmioLength: UInt64 = 0x1000
    public static let pinCount = 24
    /// Version 0x20 (has the directed EOI register at 0x40), 24 entries.
    public static let version: UInt32 = 0x0017_0020

    // MMIO offsets.
    public enum Offset {
        public static let ioregsel: UInt64 = 0x00
        public static let iowin: UInt64 = 0x10
        public static let eoi: UInt64 = 0x40
    }

    // Indirect register indices.
    public enum Register {
        public static let id: UInt32 = 0x00
        public static let version: UInt32 = 0x01
        public static let arbitration: UInt32 = 0x02
        public static let redirectionBase: UInt32 = 0x10
    }

    // Redirection entry bits.
    static let maskBit: UInt64 = 1 << 16
    static let triggerLevelBit: UInt64 = 1 << 15
    static let remoteIRRBit: UInt64 = 1 << 14
    static let polarityLowBit: UInt64 = 1 << 13
    static let deliveryStatusBit: UInt64 = 1 << 12
    static let logicalBit: UInt64 = 1 << 11
    /// Bits the guest can write (remote IRR and delivery status are read-only).
    static let writableMask: UInt64 = ~(remoteIRRBit | deliveryStatusBit)

    struct State {
        var select: UInt32 = 0
        var id: UInt32 = 0
        var entries = [UInt64](repeating: IOAPIC.maskBit, count: IOAPIC.pinCount)
        /// Electrical level of each pin as driven by its device (true = asserted, before polarity).
        var lines = [Bool](repeating: false, count: IOAPIC.pinCount)
    }

    private let state = Mutex(State())
    private let deliver: (AddressedInterrupt) -> Void
    /// Called once per access the guest makes outside the defined registers (for a log line).
    private let onBadAccess: (String) -> Void

    public init(deliver: @escaping (AddressedInterrupt) -> Void, onBadAccess: @escaping (String) -> Void = { _ in }) {
        self.deliver = deliver
        self.onBadAccess = onBadAccess
    }

    // MARK: - device side

    /// A device drives pin `pin` to `asserted`. Edge entries fire on the rising edge; level entries
    /// fire while asserted and not already waiting for an EOI.
    public func setLine(_ pin: Int, asserted: Bool) {
        guard (0..<Self.pinCount).contains(pin) else {
            onBadAccess("interrupt line \(pin) does not exist (0-\(Self.pinCount - 1))")
            return
        }
        let message: AddressedInterrupt? = state.withLock { s in
            let was = s.lines[pin]
            s.lines[pin] = asserted
            let entry = s.entries[pin]
            if entry & Self.triggerLevelBit != 0 {
                return Self.fireLevel(&s, pin)
            }
            // Edge: a rising edge of the active level.
            let activeNow = Self.active(entry, asserted), activeBefore = Self.active(entry, was)
            guard activeNow && !activeBefore && entry & Self.maskBit == 0 else { return nil }
            return Self.message(entry)
        }
        if let message { deliver(message) }
    }

    /// A local APIC's EOI for `vector` (broadcast EOI, or the directed EOI register).
    public func eoi(vector: UInt8) {
        let messages: [AddressedInterrupt] = state.withLock { s in
            var out: [AddressedInterrupt] = []
            for pin in 0..<Self.pinCount {
                let e = s.entries[pin]
                guard e & Self.triggerLevelBit != 0, e & Self.remoteIRRBit != 0, UInt8(truncatingIfNeeded: e) == vector else { continue }
                s.entries[pin] &= ~Self.remoteIRRBit
                if let m = Self.fireLevel(&s, pin) { out.append(m) }
            }
            return out
        }
        messages.forEach(deliver)
    }

    // MARK: - guest side (MMIO)

    /// A guest read of `length` bytes at `offset` in the IOAPIC page.
    public func read(offset: UInt64, length: Int) -> UInt64 {
        guard length == 4 else {
            onBadAccess("\(length)-byte read at IOAPIC offset 0x\(String(offset, radix: 16)) (only 32-bit accesses are defined)")
            return UInt64.max >> (64 - 8 * UInt64(min(max(length, 1), 8)))
        }
        return state.withLock { s in
            switch offset {
            case Offset.ioregsel: return UInt64(s.select)
            case Offset.iowin: return UInt64(Self.readRegister(&s, s.select))
            default: return 0xFFFF_FFFF
            }
        }
    }

    /// A guest write of `length` bytes at `offset` in the IOAPIC page.
    public func write(offset: UInt64, length: Int, value: UInt64) {
        guard length == 4 else {
            onBadAccess("\(length)-byte write at IOAPIC offset 0x\(String(offset, radix: 16)) ignored (only 32-bit accesses are defined)")
            return
        }
        let v = UInt32(truncatingIfNeeded: value)
        switch offset {
        case Offset.ioregsel:
            state.withLock { $0.select = v & 0xFF }
        case Offset.iowin:
            let fired: AddressedInterrupt? = state.withLock { s in Self.writeRegister(&s, s.select, v) }
            if let fired { deliver(fired) }
        case Offset.eoi:
            eoi(vector: UInt8(truncatingIfNeeded: v))
        default:
            onBadAccess("write to undefined IOAPIC offset 0x\(String(offset, radix: 16)) ignored")
        }
    }

    /// The 64-bit redirection entry of `pin` (for tests and the monitor).
    public func entry(_ pin: Int) -> UInt64 { state.withLock { $0.entries[pin] } }

    // MARK: - internals (called with the lock held)

    static func active(_ entry: UInt64, _ line: Bool) -> Bool {
        entry & polarityLowBit != 0 ? !line : line
    }

    static func message(_ entry: UInt64) -> AddressedInterrupt {
        AddressedInterrupt(vector: UInt8(truncatingIfNeeded: entry),
                         deliveryMode: redirectionMode(entry),
                         logical: entry & logicalBit != 0,
                         destination: UInt8(truncatingIfNeeded: entry >> 56),
                         levelTriggered: entry & triggerLevelBit != 0)
    }

    /// Delivery mode bits 8-10 of a redirection entry; the reserved values 3 and 6 act as fixed.
    static func redirectionMode(_ entry: UInt64) -> DeliveryMode {
        switch DeliveryMode(rawValue: UInt8((entry >> 8) & 7)) {
        case .reserved3?, .startup?, nil: return .fixed
        case let m?: return m
        }
    }

    /// Level entries: deliver when active, unmasked and not awaiting EOI; sets remote IRR.
    static func fireLevel(_ s: inout State, _ pin: Int) -> AddressedInterrupt? {
        let e = s.entries[pin]
        guard e & triggerLevelBit != 0, e & maskBit == 0, e & remoteIRRBit == 0, active(e, s.lines[pin]) else { return nil }
        s.entries[pin] |= remoteIRRBit
        return message(s.entries[pin])
    }

    static func readRegister(_ s: inout State, _ index: UInt32) -> UInt32 {
        switch index {
        case Register.id: return (s.id & 0xF) << 24
        case Register.version: return version
        case Register.arbitration: return (s.id & 0xF) << 24
        case Register.redirectionBase..<(Register.redirectionBase + UInt32(2 * pinCount)):
            let pin = Int(index - Register.redirectionBase) / 2
            let high = (index - Register.redirectionBase) % 2 == 1
            return UInt32(truncatingIfNeeded: high ? s.entries[pin] >> 32 : s.entries[pin])
        default: return 0xFFFF_FFFF
        }
    }

    static func writeRegister(_ s: inout State, _ index: UInt32, _ value: UInt32) -> AddressedInterrupt? {
        switch index {
        case Register.id:
            s.id = (value >> 24) & 0xF
            return nil
        case Register.redirectionBase..<(Register.redirectionBase + UInt32(2 * pinCount)):
            let pin = Int(index - Register.redirectionBase) / 2
            let high = (index - Register.redirectionBase) % 2 == 1
            let old = s.entries[pin]
            var new = high ? (old & 0xFFFF_FFFF) | (UInt64(value) << 32)
                           : (old & 0xFFFF_FFFF_0000_0000) | UInt64(value)
            new = (new & writableMask) | (old & (remoteIRRBit | deliveryStatusBit))
            if new & triggerLevelBit == 0 { new &= ~remoteIRRBit }
            s.entries[pin] = new
            // Unmasking a level entry whose line is asserted delivers at once.
            return fireLevel(&s, pin)
        default:
            return nil // version/arbitration are read-only
        }
    }
}
