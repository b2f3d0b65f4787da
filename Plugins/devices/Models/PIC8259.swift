// The PC's cascaded 8259A interrupt controllers: master at 0x20-0x21, slave at 0xA0-0xA1 (its
// INT on master input 2). ICW1-ICW4, OCW1 (IMR), OCW2 (non-specific / specific EOI, rotation,
// set priority), OCW3 (read IRR / ISR, poll); edge-triggered inputs, auto-EOI.
//
// Wiring (documented convention; the host side is not built yet):
// - inputs: the host raises PIC input n with a 2-byte write [n, level] at offset
//   `PIC8259.hostInputOffset` (a window no guest access can reach: the guest's ports give
//   offsets 0, 1, 0x80, 0x81 from the lowest mapped base 0x20);
// - output: the master's INT pin goes to the host as interrupt line `PIC8259.lint0Line`
//   ("LINT0 of the boot vCPU, ExtINT": the host delivers it when the BSP's LVT LINT0 is
//   unmasked in ExtINT mode or its APIC is disabled — virtual wire mode);
// - acknowledge: when the vCPU takes the ExtINT, the host does the INTA cycle as a 1-byte read
//   at offset `PIC8259.hostAckOffset`, which returns the vector (IRR -> ISR, cascade resolved).
// Until the host routes device lines into the PIC, its inputs stay low: guests that program and
// mask it (Linux with an IOAPIC, the test guest) see a complete register model.
// Threading: io() calls into one instance never overlap (the host serialises them) and these
// models start no timers, so their state needs no lock.
import PluginKit

struct PICChip: Equatable {
    var irr: UInt8 = 0, isr: UInt8 = 0, imr: UInt8 = 0
    var levels: UInt8 = 0
    var vectorBase: UInt8 = 0
    var initStep = 0          // 0 = ready; 2, 3, 4 = expecting ICW2/3/4
    var icw1: UInt8 = 0
    var icw3: UInt8 = 0
    var autoEOI = false
    var rotateOnAutoEOI = false
    var readISR = false
    var pollNext = false
    var lowestPriority: UInt8 = 7
    var specialMask = false

    func priority(of irq: Int) -> Int { (irq - Int(lowestPriority) - 1 + 8) & 7 } // 0 = highest

    /// Highest-priority bit set in `bits` (by the rotation), or nil.
    func highest(_ bits: UInt8) -> Int? {
        var best: Int?
        for i in 0..<8 where bits & (1 << i) != 0 {
            if best == nil || priority(of: i) < priority(of: best!) { best = i }
        }
        return best
    }

    /// The IRQ this chip would present to its output now.
    var pending: Int? {
        guard let p = highest(irr & ~imr) else { return nil }
        let inService = specialMask ? highest(isr & ~imr) : highest(isr)
        if let s = inService, priority(of: s) <= priority(of: p) { return nil }
        return p
    }

    mutating func setInput(_ irq: Int, _ level: Bool) {
        let bit = UInt8(1) << irq
        if level {
            if levels & bit == 0 { irr |= bit } // edge-triggered: rising edge latches
            levels |= bit
        } else {
            levels &= ~bit
        }
    }

    /// INTA for this chip: returns the IRQ acknowledged (IRR -> ISR), or 7 (spurious).
    mutating func acknowledge() -> Int {
        guard let p = pending else { return 7 }
        let bit = UInt8(1) << p
        irr &= ~bit
        if autoEOI {
            if rotateOnAutoEOI { lowestPriority = UInt8(p) }
        } else {
            isr |= bit
        }
        return p
    }

    mutating func eoi(specific: Int?, rotate: Bool) {
        guard let irq = specific ?? highest(isr) else { return }
        isr &= ~(1 << irq)
        if rotate { lowestPriority = UInt8(irq) }
    }

    mutating func write(_ port: Int, _ v: UInt8) {
        if port == 0 {
            if v & 0x10 != 0 { // ICW1
                icw1 = v
                imr = 0; isr = 0; irr = 0; levels = 0
                lowestPriority = 7; readISR = false; pollNext = false; specialMask = false; autoEOI = false
                initStep = 2
                return
            }
            if v & 0x08 != 0 { // OCW3
                if v & 0x04 != 0 { pollNext = true }
                if v & 0x02 != 0 { readISR = v & 0x01 != 0 }
                if v & 0x40 != 0 { specialMask = v & 0x20 != 0 }
                return
            }
            // OCW2
            let level = Int(v & 7)
            switch v >> 5 {
            case 1: eoi(specific: nil, rotate: false)
            case 3: eoi(specific: level, rotate: false)
            case 5: eoi(specific: nil, rotate: true)
            case 7: eoi(specific: level, rotate: true)
            case 4: rotateOnAutoEOI = true
            case 0: rotateOnAutoEOI = false
            case 6: lowestPriority = UInt8(level)
            default: break
            }
            return
        }
        switch initStep {
        case 2:
            vectorBase = v & 0xF8
            initStep = icw1 & 0x02 != 0 ? (icw1 & 0x01 != 0 ? 4 : 0) : 3
        case 3:
            icw3 = v
            initStep = icw1 & 0x01 != 0 ? 4 : 0
        case 4:
            autoEOI = v & 0x02 != 0
            initStep = 0
        default:
            imr = v
        }
    }

    mutating func read(_ port: Int) -> UInt8 {
        if pollNext {
            pollNext = false
            if pending != nil { return 0x80 | UInt8(acknowledge()) }
            return 0
        }
        if port == 1 { return imr }
        return readISR ? isr : irr
    }
}

struct PICPair: Equatable {
    var master = PICChip()
    var slave = PICChip()

    mutating func updateCascade() { master.setInput(2, slave.pending != nil) }

    /// The master's INT output.
    var output: Bool { master.pending != nil }

    mutating func setInput(_ irq: Int, _ level: Bool) {
        if irq < 8 { master.setInput(irq, level) } else { slave.setInput(irq - 8, level) }
        updateCascade()
    }

    /// INTA: the vector to deliver.
    mutating func acknowledge() -> UInt8 {
        let m = master.acknowledge()
        var vector: UInt8
        if m == 2 {
            let s = slave.acknowledge()
            vector = slave.vectorBase | UInt8(s)
        } else {
            vector = master.vectorBase | UInt8(m)
        }
        updateCascade()
        return vector
    }

    /// Offsets from 0x20: 0, 1 master; 0x80, 0x81 slave.
    mutating func write(_ offset: UInt64, _ v: UInt8) {
        if offset >= 0x80 { slave.write(Int(offset - 0x80), v) } else { master.write(Int(offset), v) }
        updateCascade()
    }

    mutating func read(_ offset: UInt64) -> UInt8 {
        let v = offset >= 0x80 ? slave.read(Int(offset - 0x80)) : master.read(Int(offset))
        updateCascade()
        return v
    }
}

public final class PIC8259: DeviceModel {
    public static let modelName = "i8259"
    public static let summary = "8259A PIC pair (0x20-0x21, 0xA0-0xA1): ICW/OCW, IMR/IRR/ISR, EOI; INT as ExtINT on LINT0"
    static let lint0Line: UInt32 = 0xFFFF_0000
    static let hostInputOffset: UInt64 = 0x1_0000
    static let hostAckOffset: UInt64 = 0x1_0001
    let host: DeviceHost
    var pair = PICPair()
    var outputLevel = false

    public init(services: HostServices, host: DeviceHost, config: DeviceConfig, settings: Settings) throws {
        try settings.allowOnly([])
        self.host = host
        let base = config.base ?? 0x20
        try host.map(.pio, base: base, length: 2)
        try host.map(.pio, base: base + 0x80, length: 2)
    }

    public func io(space: IOSpace, offset: UInt64, data: UnsafeMutableBufferPointer<UInt8>, isWrite: Bool) {
        switch (offset, isWrite) {
        case (PIC8259.hostInputOffset, true) where data.count >= 2:
            pair.setInput(Int(data[0] & 15), data[1] != 0)
        case (PIC8259.hostAckOffset, false):
            data[0] = pair.acknowledge()
        case (_, true):
            pair.write(offset, data[0])
        case (_, false):
            data[0] = pair.read(offset)
            for i in 1..<data.count { data[i] = 0 }
        }
        if pair.output != outputLevel {
            outputLevel = pair.output
            host.setIRQ(PIC8259.lint0Line, level: outputLevel)
        }
    }

    public func reset() { pair = PICPair() }
}
