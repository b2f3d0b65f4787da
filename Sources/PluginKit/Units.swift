// Durations and sizes in plugin settings: a thin wrapper over the one grammar of
// giantvm_units.h (units.c), so a Swift plugin, a C plugin and the host's config reader read
// "10" (10 s), "200ms" and "64MiB" the same way and refuse the same values with the same words.
//
//   let ns = try settings.duration("retry_interval", default: 100 * Units.millisecond,
//                                  range: Units.millisecond...Units.day)
//   let bytes = try settings.size("chunk", default: 2 << 20, range: 4096...(1 << 30))

import PluginAPI

public enum Units {
    public static let nanosecond: UInt64 = 1
    public static let microsecond: UInt64 = GVM_NS_PER_US
    public static let millisecond: UInt64 = GVM_NS_PER_MS
    public static let second: UInt64 = GVM_NS_PER_S
    public static let day: UInt64 = GVM_NS_PER_DAY

    /// A refused value: the gvm_unit_status and the shared message (without the setting's name).
    public struct Failure: Error, CustomStringConvertible, Equatable, Sendable {
        public var status: Int32
        public var message: String
        public var description: String { message }
    }

    /// Parses a duration (bare number = seconds) into nanoseconds within `range`.
    public static func duration(_ text: String, range: ClosedRange<UInt64>) -> Result<UInt64, Failure> {
        run(text, GVM_UNIT_DURATION, range) { gvm_parse_duration($0, range.lowerBound, range.upperBound, $1) }
    }

    /// Parses a size (bare number = bytes) into bytes within `range`.
    public static func size(_ text: String, range: ClosedRange<UInt64>) -> Result<UInt64, Failure> {
        run(text, GVM_UNIT_SIZE, range) { gvm_parse_size($0, range.lowerBound, range.upperBound, $1) }
    }

    /// "24h", "1500ms", "0s": exact, in the largest unit that divides the value.
    public static func format(nanoseconds: UInt64) -> String {
        formatted { gvm_format_duration(nanoseconds, $0, $1) }
    }

    /// "3GiB", "4KiB", "100B".
    public static func format(bytes: UInt64) -> String {
        formatted { gvm_format_size(bytes, $0, $1) }
    }

    private static func run(_ text: String, _ kind: gvm_unit_kind, _ range: ClosedRange<UInt64>,
                            _ parse: (UnsafePointer<CChar>, UnsafeMutablePointer<UInt64>) -> Int32)
        -> Result<UInt64, Failure> {
        var value: UInt64 = 0
        let rc = text.withCString { parse($0, &value) }
        if rc == GVM_UNIT_OK.rawValue { return .success(value) }
        let message = text.withCString { t in
            formatted { gvm_unit_message(rc, kind, t, range.lowerBound, range.upperBound, $0, $1) }
        }
        return .failure(Failure(status: rc, message: message))
    }

    private static func formatted(_ write: (UnsafeMutablePointer<CChar>, Int) -> Int) -> String {
        var buf = [CChar](repeating: 0, count: 256)
        _ = buf.withUnsafeMutableBufferPointer { write($0.baseAddress!, $0.count) }
        return String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

extension Settings {
    /// A duration setting in nanoseconds (bare number = seconds), `def` when absent. Throws a
    /// `PluginError` naming the setting, the value and the range.
    public func duration(_ key: String, default def: UInt64, range: ClosedRange<UInt64>) throws -> UInt64 {
        guard let text = values[key] else { return def }
        switch Units.duration(text, range: range) {
        case .success(let ns): return ns
        case .failure(let f): throw PluginError("setting '\(key)': \(f.message)")
        }
    }

    /// A size setting in bytes (bare number = bytes), `def` when absent.
    public func size(_ key: String, default def: UInt64, range: ClosedRange<UInt64>) throws -> UInt64 {
        guard let text = values[key] else { return def }
        switch Units.size(text, range: range) {
        case .success(let b): return b
        case .failure(let f): throw PluginError("setting '\(key)': \(f.message)")
        }
    }
}
