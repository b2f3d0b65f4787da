// coherence-hint: the guest's side of the coherence hints (ABI 3, GVM_HINT_*). A guest declares
// which memory holds only data whose synchronisation the host can see (locks and flags stay
// elsewhere), so a multiple-writer protocol (dsm-tso) may keep it relaxed, and writes a fence
// where x86 would need `mfence` between relaxed stores and loads.
//
// Registers (I/O ports from `base`, default 0x580; any access size, little endian):
//   0x00  BASE    u64  guest-physical base of the range (page aligned)
//   0x08  LENGTH  u64  length of the range in bytes (a multiple of 4096)
//   0x10  COMMAND u8   write 1 = fence, 2 = relaxed (the range), 3 = sc (the range): passed to
//                      the host's coherence_hint, which returns once every node applied it.
//                      Read: the status of the last command as a signed byte (0 ok; -6
//                      unsupported: the protocol takes no hints, e.g. dsm-ivy, where every page
//                      is sequentially consistent anyway; -1 invalid range; -4 refused, logged).
// A fence is a release point on the vCPU's own node even when this device lives elsewhere: the
// host passes GVM_FENCE_RELEASE to the protocol before every I/O exit.
//
// Threading: io() calls into one instance never overlap (the host serialises them); no timers.
import PluginKit

/// The register file, without the host (unit-tested as a value).
public struct CoherenceHintRegisters: Equatable, Sendable {
    public static let length: UInt64 = 0x11
    public var base: UInt64 = 0
    public var rangeLength: UInt64 = 0
    public var lastStatus: Int32 = 0

    public enum Command: Equatable, Sendable {
        case fence
        case relaxed(base: UInt64, length: UInt64)
        case sc(base: UInt64, length: UInt64)

        public var kind: UInt32 {
            switch self {
            case .fence: GVM_HINT_FENCE
            case .relaxed: GVM_HINT_RELAXED
            case .sc: GVM_HINT_SC
            }
        }
    }

    public init() {}

    /// A write of `bytes` at `offset`; returns the command a COMMAND write asks for (nil for
    /// register writes and unknown commands, which set the status to -1).
    public mutating func write(_ offset: UInt64, _ bytes: [UInt8]) -> Command? {
        for (i, b) in bytes.enumerated() {
            let at = offset + UInt64(i)
            switch at {
            case 0..<8: base = replaceByte(base, Int(at), b)
            case 8..<16: rangeLength = replaceByte(rangeLength, Int(at - 8), b)
            case 16 where i == 0:
                switch b {
                case 1: return .fence
                case 2: return .relaxed(base: base, length: rangeLength)
                case 3: return .sc(base: base, length: rangeLength)
                default:
                    lastStatus = GVM_ERR_INVALID.rawValue
                    return nil
                }
            default: break
            }
        }
        return nil
    }

    /// A read of `count` bytes at `offset`.
    public func read(_ offset: UInt64, _ count: Int) -> [UInt8] {
        (0..<count).map { i in
            let at = offset + UInt64(i)
            switch at {
            case 0..<8: return UInt8(truncatingIfNeeded: base >> (8 * at))
            case 8..<16: return UInt8(truncatingIfNeeded: rangeLength >> (8 * (at - 8)))
            case 16: return UInt8(bitPattern: Int8(truncatingIfNeeded: lastStatus))
            default: return 0
            }
        }
    }

    func replaceByte(_ v: UInt64, _ index: Int, _ b: UInt8) -> UInt64 {
        let shift = UInt64(index * 8)
        return (v & ~(0xFF << shift)) | (UInt64(b) << shift)
    }
}

public final class CoherenceHintDevice: DeviceModel {
    public static let modelName = "coherence-hint"
    public static let summary = "guest coherence hints at port 0x580: relaxed / sc ranges and a fence, for dsm-tso"
    public static let defaultBase: UInt64 = 0x580
    var regs = CoherenceHintRegisters()
    let host: DeviceHost
    let services: HostServices
    let name: String
    let hints: [UInt32: Counter]

    public init(services: HostServices, host: DeviceHost, config: DeviceConfig, settings: Settings) throws {
        try settings.allowOnly([])
        self.host = host
        self.services = services
        name = config.name
        hints = [GVM_HINT_FENCE: services.counter("hint.\(config.name).fence"),
                 GVM_HINT_RELAXED: services.counter("hint.\(config.name).relaxed"),
                 GVM_HINT_SC: services.counter("hint.\(config.name).sc")]
        try host.map(.pio, base: config.base ?? Self.defaultBase, length: CoherenceHintRegisters.length)
    }

    public func io(space: IOSpace, offset: UInt64, data: UnsafeMutableBufferPointer<UInt8>, isWrite: Bool) {
        guard isWrite else {
            let b = regs.read(offset, data.count)
            for i in 0..<data.count { data[i] = b[i] }
            return
        }
        guard let cmd = regs.write(offset, Array(data)) else { return }
        hints[cmd.kind]?.add()
        let st: PageStatus
        switch cmd {
        case .fence: st = host.coherenceHint(kind: cmd.kind, gpa: 0, length: 0)
        case let .relaxed(b, l), let .sc(b, l): st = host.coherenceHint(kind: cmd.kind, gpa: b, length: l)
        }
        regs.lastStatus = st.raw
        if st != .ok && st.raw != GVM_ERR_UNSUPPORTED.rawValue {
            services.log(.warning, "coherence-hint '\(name)': \(cmd) -> \(st)")
        }
    }
}
