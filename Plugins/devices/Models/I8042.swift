// i8042 keyboard controller at ports 0x60 (data) and 0x64 (status / command), enough for a
// guest to reset the machine and for Linux's i8042/atkbd probing. No keys are ever pressed and
// there is no mouse (AUX commands answer as an absent device).
//   status (0x64 read): OBF (bit 0), system flag (bit 2, after self-test), command/data (bit 3),
//   keyboard not inhibited (bit 4), AUX data (bit 5);
//   commands: 0x20 read / 0x60 write the command byte, 0xA7/0xA8 AUX off/on, 0xA9 AUX test
//   (0x00), 0xAA self-test (0x55), 0xAB keyboard test (0x00), 0xAD/0xAE keyboard off/on,
//   0xC0 input port, 0xD0/0xD1 output port, 0xD2/0xD3 echo as keyboard/AUX data, 0xD4 to AUX
//   (no device: nothing answers), 0xF0-0xFF pulse output lines: bit 0 clear = CPU RESET;
//   keyboard (0x60 writes): 0xFF reset (FA AA), 0xF2 identify (FA AB 83), 0xEE echo (EE),
//   anything else FA; a byte after a command that takes one is its argument.
// RESET (command 0xFE, or 0xD1 with output-port bit 0 clear) ends the VM through request_stop
// with guest status `I8042State.resetStatus` (0x100: even, so never an isa-debug-exit status);
// `giantvm run` reports it as "guest requested a reset".
// IRQ: keyboard data with command-byte bit 0 set raises `irq:` (1 on a PC; 12 for AUX is unused).
// Threading: io() calls into one instance never overlap (the host serialises them) and these
// models start no timers, so their state needs no lock.
import PluginKit

struct I8042State: Equatable {
    static let resetStatus: Int32 = 0x100
    static let dataPort: UInt64 = 0, commandPort: UInt64 = 4
    var output: [(byte: UInt8, aux: Bool)] = []
    var commandByte: UInt8 = 0x61       // keyboard IRQ on, system flag, translate
    var statusSystem = false
    var lastWasCommand = false
    var pendingCommand: UInt8? = nil
    var outputPort: UInt8 = 0x03        // A20 on, reset line high
    var resetRequested = false

    static func == (a: I8042State, b: I8042State) -> Bool {
        a.output.map(\.byte) == b.output.map(\.byte) && a.commandByte == b.commandByte && a.statusSystem == b.statusSystem
            && a.pendingCommand == b.pendingCommand && a.outputPort == b.outputPort
    }

    var status: UInt8 {
        var s: UInt8 = 0x10
        if let first = output.first { s |= 0x01; if first.aux { s |= 0x20 } }
        if statusSystem || commandByte & 0x04 != 0 { s |= 0x04 }
        if lastWasCommand { s |= 0x08 }
        return s
    }

    /// The interrupt line level (keyboard data pending and enabled in the command byte).
    var irqLevel: Bool { if let f = output.first, !f.aux { return commandByte & 0x01 != 0 }; return false }

    mutating func push(_ b: UInt8, aux: Bool = false) { if output.count < 16 { output.append((b, aux)) } }

    mutating func read(_ port: UInt64) -> UInt8 {
        if port == I8042State.commandPort { return status }
        guard port == I8042State.dataPort, !output.isEmpty else { return 0 }
        return output.removeFirst().byte
    }

    mutating func write(_ port: UInt64, _ v: UInt8) {
        if port == I8042State.commandPort {
            lastWasCommand = true
            pendingCommand = nil
            switch v {
            case 0x20: push(commandByte)
            case 0x60, 0xD1, 0xD2, 0xD3, 0xD4: pendingCommand = v
            case 0xA7: commandByte |= 0x20
            case 0xA8: commandByte &= ~0x20
            case 0xA9, 0xAB: push(0x00)
            case 0xAA: statusSystem = true; push(0x55)
            case 0xAD: commandByte |= 0x10
            case 0xAE: commandByte &= ~0x10
            case 0xC0: push(0x00)
            case 0xD0: push(outputPort)
            case 0xF0...0xFF: if v & 0x01 == 0 { resetRequested = true }
            default: break
            }
            return
        }
        guard port == I8042State.dataPort else { return }
        lastWasCommand = false
        if let cmd = pendingCommand {
            pendingCommand = nil
            switch cmd {
            case 0x60: commandByte = v
            case 0xD1:
                outputPort = v
                if v & 0x01 == 0 { resetRequested = true }
            case 0xD2: push(v)
            case 0xD3: push(v, aux: true)
            default: break // 0xD4: to the (absent) AUX device
            }
            return
        }
        switch v {
        case 0xFF: push(0xFA); push(0xAA)
        case 0xF2: push(0xFA); push(0xAB); push(0x83)
        case 0xEE: push(0xEE)
        default: push(0xFA)
        }
    }
}

public final class I8042: DeviceModel {
    public static let modelName = "i8042"
    public static let summary = "i8042 keyboard controller (0x60, 0x64): self-test, command byte, 0xFE resets the VM"
    let host: DeviceHost
    let irq: UInt32?
    let name: String
    var state = I8042State()
    var irqLevel = false

    public init(services: HostServices, host: DeviceHost, config: DeviceConfig, settings: Settings) throws {
        try settings.allowOnly([])
        self.host = host
        irq = config.irq
        name = config.name
        let base = config.base ?? 0x60
        try host.map(.pio, base: base, length: 1)
        try host.map(.pio, base: base + 4, length: 1)
    }

    public func io(space: IOSpace, offset: UInt64, data: UnsafeMutableBufferPointer<UInt8>, isWrite: Bool) {
        if isWrite {
            state.write(offset, data[0])
            if state.resetRequested {
                state.resetRequested = false
                host.requestStop(status: I8042State.resetStatus, reason: "\(name): guest requested a reset (i8042 CPU reset line)")
            }
        } else {
            data[0] = state.read(offset)
            for i in 1..<data.count { data[i] = 0 }
        }
        if let irq, state.irqLevel != irqLevel {
            irqLevel = state.irqLevel
            host.setIRQ(irq, level: irqLevel)
        }
    }

    public func reset() { state = I8042State() }
}
