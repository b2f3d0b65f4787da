// The isa-debug-exit and results device models (target DeviceModels, exported by libdevices.so).
import PluginKit

/// QEMU's isa-debug-exit: a write of value v ends the VM with guest status (v << 1) | 1.
/// Settings: `iosize` (1, 2 or 4 bytes; default 4). Reads return 0.
public final class ExitDevice: DeviceModel {
    public static let modelName = "isa-debug-exit"
    public static let summary = "QEMU's isa-debug-exit (port 0xf4): value v ends the VM with status (v<<1)|1"
    public static let settingInfo = [SettingInfo("iosize", default: "4", "bytes of the port range it claims: 1, 2 or 4")]
    let host: DeviceHost
    let name: String

    static func status(for value: UInt32) -> Int32 { Int32(bitPattern: (value << 1) | 1) }

    public init(services: HostServices, host: DeviceHost, config: DeviceConfig, settings: Settings) throws {
        try settings.allowOnly(declared: Self.settingInfo)
        let size = try settings.int("iosize", default: 4, range: 1...4)
        guard [1, 2, 4].contains(size) else { throw PluginError("setting 'iosize': \(size) is not 1, 2 or 4") }
        self.host = host
        name = config.name
        try host.map(.pio, base: config.base ?? 0xF4, length: UInt64(size))
    }

    public func io(space: IOSpace, offset: UInt64, data: UnsafeMutableBufferPointer<UInt8>, isWrite: Bool) {
        guard isWrite else {
            for i in 0..<data.count { data[i] = 0 }
            return
        }
        var v: UInt32 = 0
        for (i, b) in data.prefix(4).enumerated() { v |= UInt32(b) << (8 * UInt32(i)) }
        let status = ExitDevice.status(for: v)
        host.requestStop(status: status, reason: "\(name): guest wrote \(v) to isa-debug-exit (status \(status))")
    }
}

/// Collects the guest's result lines (one JSON object per line, bytes written to port 0xe0) and
/// prints each on the console as `{"result":<line>}`; a line that is not an object is printed as
/// `{"result_text":"<escaped line>"}`. Lines longer than 4096 bytes are cut there.
struct ResultLines: Equatable {
    static let maxLine = 4096
    var buffer: [UInt8] = []

    /// Adds bytes; returns the console lines completed by them.
    mutating func add(_ bytes: [UInt8]) -> [String] {
        var out: [String] = []
        for b in bytes {
            if b == 0x0A {
                out.append(ResultLines.render(buffer))
                buffer.removeAll(keepingCapacity: true)
            } else if b != 0x0D {
                buffer.append(b)
                if buffer.count >= ResultLines.maxLine {
                    out.append(ResultLines.render(buffer))
                    buffer.removeAll(keepingCapacity: true)
                }
            }
        }
        return out
    }

    static func render(_ line: [UInt8]) -> String {
        let text = String(decoding: line, as: UTF8.self)
        let trimmed = text.drop { $0 == " " || $0 == "\t" }
        if trimmed.first == "{" && text.reversed().drop(while: { $0 == " " || $0 == "\t" }).first == "}" {
            return "{\"result\":\(trimmed)}\n"
        }
        return "{\"result_text\":\"\(escape(text))\"}\n"
    }

    static func escape(_ s: String) -> String {
        var r = ""
        for u in s.unicodeScalars {
            switch u {
            case "\"": r += "\\\""
            case "\\": r += "\\\\"
            case "\n": r += "\\n"
            case "\t": r += "\\t"
            default:
                if u.value < 0x20 {
                    let h = String(u.value, radix: 16)
                    r += "\\u" + String(repeating: "0", count: 4 - h.count) + h
                } else {
                    r.unicodeScalars.append(u)
                }
            }
        }
        return r
    }
}

public final class ResultsDevice: DeviceModel {
    public static let modelName = "results"
    public static let summary = "result port (0xe0): one JSON object per line, printed as {\"result\":...}"
    let host: DeviceHost
    var lines = ResultLines()
    let counter: Counter

    public init(services: HostServices, host: DeviceHost, config: DeviceConfig, settings: Settings) throws {
        try settings.allowOnly([])
        self.host = host
        counter = services.counter("results.lines")
        try host.map(.pio, base: config.base ?? 0xE0, length: 1)
    }

    public func io(space: IOSpace, offset: UInt64, data: UnsafeMutableBufferPointer<UInt8>, isWrite: Bool) {
        guard isWrite else {
            for i in 0..<data.count { data[i] = 0 }
            return
        }
        for line in lines.add(Array(data)) {
            host.console(Array(line.utf8))
            counter.add()
        }
    }

    public func shutdown() {
        if !lines.buffer.isEmpty { host.console(Array(ResultLines.render(lines.buffer).utf8)) }
    }
}

