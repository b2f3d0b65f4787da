// A 16550A UART (8 registers from its base, COM1 = 0x3f8, IRQ 4). Output goes to the host
// console as it is written (the transmitter is always empty); input typed on the host console
// lands in a receive FIFO. Interrupts: received data (IER bit 0), transmitter empty (bit 1),
// line status (bit 2), modem status (bit 3), prioritised as the datasheet says; the line is
// driven level-style through set_irq. Loopback (MCR bit 4) routes THR to RBR and MCR to MSR.
// Like QEMU's model, the interrupt line is not gated by MCR.OUT2.
import PluginKit

/// The register file and its logic, free of the plugin ABI (unit-tested directly).
/// Threading: a value type; the plugin serialises access (io calls never overlap).
struct UARTRegisters: Equatable {
    enum Offset {
        static let rbrThrDll: UInt64 = 0, ierDlm: UInt64 = 1, iirFcr: UInt64 = 2, lcr: UInt64 = 3
        static let mcr: UInt64 = 4, lsr: UInt64 = 5, msr: UInt64 = 6, scr: UInt64 = 7
    }
    static let lsrDataReady: UInt8 = 0x01, lsrOverrun: UInt8 = 0x02, lsrTHRE: UInt8 = 0x20, lsrTEMT: UInt8 = 0x40
    static let ierRDA: UInt8 = 0x01, ierTHRE: UInt8 = 0x02, ierRLS: UInt8 = 0x04, ierMSI: UInt8 = 0x08
    static let iirNone: UInt8 = 0x01, iirRLS: UInt8 = 0x06, iirRDA: UInt8 = 0x04, iirTHRE: UInt8 = 0x02, iirMSI: UInt8 = 0x00
    static let fifoCapacity = 64

    var ier: UInt8 = 0
    var lcr: UInt8 = 0
    var mcr: UInt8 = 0
    var lsr: UInt8 = lsrTHRE | lsrTEMT
    var msr: UInt8 = 0xB0 // DCD, DSR, CTS
    var scr: UInt8 = 0
    var dll: UInt8 = 0x0C // 9600 baud
    var dlm: UInt8 = 0
    var fcr: UInt8 = 0
    var rx: [UInt8] = []
    /// THR-empty interrupt pending (set when THR empties with ETBEI on, cleared by IIR read or THR write).
    var thrInterrupt = false
    /// Modem-status change pending (delta bits in MSR).
    var msrDelta = false

    var dlab: Bool { lcr & 0x80 != 0 }
    var loopback: Bool { mcr & 0x10 != 0 }

    /// The interrupt the IIR would report now (highest priority first).
    var pendingInterrupt: UInt8 {
        if ier & UARTRegisters.ierRLS != 0 && lsr & UARTRegisters.lsrOverrun != 0 { return UARTRegisters.iirRLS }
        if ier & UARTRegisters.ierRDA != 0 && !rx.isEmpty { return UARTRegisters.iirRDA }
        if ier & UARTRegisters.ierTHRE != 0 && thrInterrupt { return UARTRegisters.iirTHRE }
        if ier & UARTRegisters.ierMSI != 0 && msrDelta { return UARTRegisters.iirMSI }
        return UARTRegisters.iirNone
    }

    /// The interrupt line level.
    var irqLevel: Bool { pendingInterrupt != UARTRegisters.iirNone }

    /// A read; may change state (RBR pops the FIFO, IIR clears THRE, LSR clears overrun).
    mutating func read(_ offset: UInt64) -> UInt8 {
        switch offset {
        case Offset.rbrThrDll:
            if dlab { return dll }
            guard !rx.isEmpty else { return 0 }
            let b = rx.removeFirst()
            if rx.isEmpty { lsr &= ~UARTRegisters.lsrDataReady }
            return b
        case Offset.ierDlm:
            return dlab ? dlm : ier
        case Offset.iirFcr:
            let iir = pendingInterrupt
            if iir == UARTRegisters.iirTHRE { thrInterrupt = false }
            return iir | (fcr & 0x01 != 0 ? 0xC0 : 0)
        case Offset.lcr: return lcr
        case Offset.mcr: return mcr
        case Offset.lsr:
            let v = lsr
            lsr &= ~UARTRegisters.lsrOverrun
            return v
        case Offset.msr:
            msrDelta = false
            if loopback {
                // DTR->DSR, RTS->CTS, OUT1->RI, OUT2->DCD
                let m = mcr
                return (m & 0x01 != 0 ? 0x20 : 0) | (m & 0x02 != 0 ? 0x10 : 0) | (m & 0x04 != 0 ? 0x40 : 0)
                    | (m & 0x08 != 0 ? 0x80 : 0)
            }
            let v = msr
            msr &= 0xF0
            return v
        case Offset.scr: return scr
        default: return 0xFF
        }
    }

    /// A write; returns the byte to transmit to the console, if any.
    mutating func write(_ offset: UInt64, _ value: UInt8) -> UInt8? {
        switch offset {
        case Offset.rbrThrDll:
            if dlab { dll = value; return nil }
            thrInterrupt = false
            // Transmission is instantaneous: THR is empty again at once.
            let out: UInt8?
            if loopback { receive([value]); out = nil } else { out = value }
            lsr |= UARTRegisters.lsrTHRE | UARTRegisters.lsrTEMT
            thrInterrupt = true
            return out
        case Offset.ierDlm:
            if dlab { dlm = value; return nil }
            let enablingTHRE = ier & UARTRegisters.ierTHRE == 0 && value & UARTRegisters.ierTHRE != 0
            ier = value & 0x0F
            if enablingTHRE && lsr & UARTRegisters.lsrTHRE != 0 { thrInterrupt = true }
        case Offset.iirFcr:
            fcr = value & 0xC9
            if value & 0x02 != 0 { rx.removeAll(); lsr &= ~UARTRegisters.lsrDataReady }
        case Offset.lcr: lcr = value
        case Offset.mcr:
            if (value ^ mcr) & 0x0F != 0 && loopback { msrDelta = true }
            mcr = value & 0x1F
        case Offset.scr: scr = value
        default: break // LSR and MSR are read-only
        }
        return nil
    }

    /// Bytes from the host console into the receive FIFO (overrun past its capacity).
    mutating func receive(_ bytes: [UInt8]) {
        for b in bytes {
            if rx.count >= UARTRegisters.fifoCapacity {
                lsr |= UARTRegisters.lsrOverrun
                continue
            }
            rx.append(b)
        }
        if !rx.isEmpty { lsr |= UARTRegisters.lsrDataReady }
    }
}

/// The state transfer (ABI 4, gvm_device_ops.save_state/load_state): the register file, the
/// pending-interrupt flags, the line level and the receive FIFO, so the UART continues on another
/// node exactly where it was. Blob, version 1 (22 + FIFO bytes at most 75):
///   version=1, ier, lcr, mcr, lsr, msr, scr, dll, dlm, fcr, flags (bit 0 THRE interrupt pending,
///   bit 1 modem-status change pending, bit 2 line asserted), fifo count, fifo bytes.
/// A blob from a peer is untrusted: every field is range-checked and a bad one is named.
extension UARTRegisters {
    static let stateVersion: UInt8 = 1
    static let stateHeader = 12
    static let stateCapacity = stateHeader + fifoCapacity

    func encodeState(lineAsserted: Bool) -> [UInt8] {
        let flags: UInt8 = (thrInterrupt ? 1 : 0) | (msrDelta ? 2 : 0) | (lineAsserted ? 4 : 0)
        return [UARTRegisters.stateVersion, ier, lcr, mcr, lsr, msr, scr, dll, dlm, fcr, flags, UInt8(rx.count)] + rx
    }

    /// The registers and the line level of a blob, or an error naming the bad field.
    static func decodeState(_ b: UnsafeRawBufferPointer) throws -> (UARTRegisters, lineAsserted: Bool) {
        func bad(_ why: String) -> PluginError { PluginError("uart16550 state: \(why)") }
        guard b.count >= stateHeader else { throw bad("\(b.count) bytes, shorter than its \(stateHeader)-byte header") }
        guard b[0] == stateVersion else { throw bad("version \(b[0]) (this model reads version \(stateVersion))") }
        var r = UARTRegisters()
        r.ier = b[1]; r.lcr = b[2]; r.mcr = b[3]; r.lsr = b[4]; r.msr = b[5]; r.scr = b[6]; r.dll = b[7]; r.dlm = b[8]; r.fcr = b[9]
        let flags = b[10], count = Int(b[11])
        guard r.ier & ~0x0F == 0 else { throw bad("ier 0x\(String(r.ier, radix: 16)) has bits outside 0x0f") }
        guard r.mcr & ~0x1F == 0 else { throw bad("mcr 0x\(String(r.mcr, radix: 16)) has bits outside 0x1f") }
        guard r.fcr & ~0xC9 == 0 else { throw bad("fcr 0x\(String(r.fcr, radix: 16)) has bits outside 0xc9") }
        guard flags & ~0x07 == 0 else { throw bad("flags 0x\(String(flags, radix: 16)) has bits outside 0x07") }
        guard count <= fifoCapacity else { throw bad("fifo count \(count) exceeds the FIFO's \(fifoCapacity) bytes") }
        guard b.count == stateHeader + count else { throw bad("\(b.count) bytes for a fifo of \(count) (expected \(stateHeader + count))") }
        guard (r.lsr & lsrDataReady != 0) == (count > 0) else { throw bad("lsr data-ready bit disagrees with a fifo of \(count) bytes") }
        r.rx = Array(b[stateHeader...])
        r.thrInterrupt = flags & 1 != 0
        r.msrDelta = flags & 2 != 0
        return (r, flags & 4 != 0)
    }
}

public final class UART16550: DeviceModel {
    public static let modelName = "uart16550"
    public static let summary = "16550A UART (COM1 default 0x3f8, irq 4): output to the console, interrupts"
    let host: DeviceHost
    let irq: UInt32?
    var regs = UARTRegisters()
    var irqLevel = false
    let txCounter: Counter

    public init(services: HostServices, host: DeviceHost, config: DeviceConfig, settings: Settings) throws {
        try settings.allowOnly([])
        self.host = host
        irq = config.irq
        txCounter = services.counter("uart.\(config.name).tx_bytes")
        try host.map(.pio, base: config.base ?? 0x3F8, length: 8)
    }

    public func io(space: IOSpace, offset: UInt64, data: UnsafeMutableBufferPointer<UInt8>, isWrite: Bool) {
        if isWrite {
            if offset == UARTRegisters.Offset.rbrThrDll && !regs.dlab, let irq, irqLevel {
                // Writing THR clears the THRE interrupt before the (instant) transmission sets it
                // again: pulse the line so edge-triggered routing sees a new edge.
                irqLevel = false
                host.setIRQ(irq, level: false)
            }
            if let out = regs.write(offset, data[0]) {
                host.console([out])
                txCounter.add()
            }
        } else {
            data[0] = regs.read(offset)
            for i in 1..<data.count { data[i] = 0 }
        }
        updateIRQ()
    }

    public func consoleInput(_ bytes: UnsafeRawBufferPointer) {
        regs.receive(Array(bytes))
        updateIRQ()
    }

    public func reset() {
        regs = UARTRegisters()
        updateIRQ()
    }

    public static var stateCapacity: Int? { UARTRegisters.stateCapacity }

    public func saveState() throws -> [UInt8] { regs.encodeState(lineAsserted: irqLevel) }

    /// The line stays where the saving instance left it: only the remembered level is taken.
    public func loadState(_ blob: UnsafeRawBufferPointer) throws {
        let (r, asserted) = try UARTRegisters.decodeState(blob)
        regs = r
        irqLevel = irq != nil && asserted
    }

    func updateIRQ() {
        guard let irq else { return }
        let level = regs.irqLevel
        if level != irqLevel {
            irqLevel = level
            host.setIRQ(irq, level: level)
        }
    }
}
