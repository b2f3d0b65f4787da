// System control port A (port 0x92, "fast A20 and reset" of PS/2 and every later PC chipset):
//   bit 0  fast reset: writing 1 (from 0) resets the machine — the VM stops through
//          request_stop with I8042State.resetStatus, as the i8042's reset line does;
//          the bit reads back 0 (the reset has happened)
//   bit 1  A20 gate: stored and read back (this machine never masks A20: RAM is always
//          addressed in full, as on every CPU since Haswell)
//   bits 2-7  stored and read back (bit 3 is the power-on password lock, bits 6-7 the disk
//          activity LEDs: no effect here).
// Power-on value 0x02 (A20 on).
// Threading: io() calls into one instance never overlap (the host serialises them) and this
// model starts no timers, so its state needs no lock.
import PluginKit

struct Port92State: Equatable {
    static let resetBit: UInt8 = 0x01
    static let a20Bit: UInt8 = 0x02
    var value: UInt8 = a20Bit

    var a20: Bool { value & Port92State.a20Bit != 0 }

    func read() -> UInt8 { value & ~Port92State.resetBit }

    /// A write; returns true when it asks for a machine reset (bit 0 going from 0 to 1).
    mutating func write(_ v: UInt8) -> Bool {
        let reset = v & Port92State.resetBit != 0 && value & Port92State.resetBit == 0
        value = v & ~Port92State.resetBit
        return reset
    }
}

public final class Port92: DeviceModel {
    public static let modelName = "port92"
    public static let summary = "system control port A (0x92): fast A20 gate (read back), bit 0 resets the VM"
    let host: DeviceHost
    let name: String
    var state = Port92State()
    let resets: Counter

    public init(services: HostServices, host: DeviceHost, config: DeviceConfig, settings: Settings) throws {
        try settings.allowOnly([])
        self.host = host
        name = config.name
        resets = services.counter("port92.\(config.name).resets")
        try host.map(.pio, base: config.base ?? 0x92, length: 1)
    }

    public func io(space: IOSpace, offset: UInt64, data: UnsafeMutableBufferPointer<UInt8>, isWrite: Bool) {
        if isWrite {
            if state.write(data[0]) {
                resets.add()
                host.requestStop(status: I8042State.resetStatus, reason: "\(name): guest requested a reset (port 0x92 fast reset)")
            }
        } else {
            data[0] = state.read()
            for i in 1..<data.count { data[i] = 0 }
        }
    }

    public func reset() { state = Port92State() }

    /// State transfer (ABI 4): [version 1, value]; the stored value never has the reset bit.
    public static var stateCapacity: Int? { 2 }

    public func saveState() throws -> [UInt8] { [1, state.value] }

    public func loadState(_ blob: UnsafeRawBufferPointer) throws {
        guard blob.count == 2 else { throw PluginError("port92 state: \(blob.count) bytes (expected 2)") }
        guard blob[0] == 1 else { throw PluginError("port92 state: version \(blob[0]) (this model reads version 1)") }
        guard blob[1] & Port92State.resetBit == 0 else { throw PluginError("port92 state: value 0x\(String(blob[1], radix: 16)) has the reset bit") }
        state.value = blob[1]
    }
}
