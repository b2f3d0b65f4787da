// Durations and sizes on the host side: the config reader and the CLI use the one grammar of
// giantvm_units.h (units.c), the same functions plugins use, so "10" is 10 s everywhere.
//
// Every duration the config or the CLI accepts has a stated range (below); values are carried as
// nanoseconds and converted from seconds only through checked paths, so no Double -> UInt64
// conversion can trap.

import PluginAPI

/// A refused duration or size: the gvm_unit_status and the message (without the field's name).
public struct UnitError: Error, CustomStringConvertible, Equatable, Sendable {
    public var status: Int32
    public var message: String
    public var description: String { message }
}

public enum Durations {
    public static let nanosecond: UInt64 = 1
    public static let microsecond: UInt64 = GVM_NS_PER_US
    public static let millisecond: UInt64 = GVM_NS_PER_MS
    public static let second: UInt64 = GVM_NS_PER_S
    public static let minute: UInt64 = 60 * GVM_NS_PER_S
    public static let hour: UInt64 = 3600 * GVM_NS_PER_S
    public static let day: UInt64 = GVM_NS_PER_DAY

    /// `timeouts.connect`, `timeouts.heartbeat`, `timeouts.failure`.
    public static let timeoutRange: ClosedRange<UInt64> = millisecond...day
    /// Fault rules' `delay` and `jitter`.
    public static let faultDelayRange: ClosedRange<UInt64> = 0...hour
    /// CLI options such as `--duration` and `--timeout`.
    public static let cliRange: ClosedRange<UInt64> = millisecond...(30 * day)

    /// Parses a duration (bare number = seconds) into nanoseconds within `range`.
    public static func parse(_ text: String, range: ClosedRange<UInt64>) -> Result<UInt64, UnitError> {
        unitCall(text, GVM_UNIT_DURATION, range) { gvm_parse_duration($0, range.lowerBound, range.upperBound, $1) }
    }

    /// Checks a CLI option given in seconds (`--duration 5`, `--timeout 2.5`) and returns it in
    /// nanoseconds. Throws `UnitError` with a message naming the option and the range, e.g.
    /// "--timeout: '1e+10 s' is above the maximum 720h (range 1ms to 720h)": never traps.
    @discardableResult
    public static func checkCLI(_ seconds: Double, option: String, range: ClosedRange<UInt64> = cliRange) throws -> UInt64 {
        var ns: UInt64 = 0
        let rc = gvm_check_seconds(seconds, range.lowerBound, range.upperBound, &ns)
        if rc == GVM_UNIT_OK.rawValue { return ns }
        let text = "\(seconds) s"
        let message = text.withCString { t in
            unitText { gvm_unit_message(rc, GVM_UNIT_DURATION, t, range.lowerBound, range.upperBound, $0, $1) }
        }
        throw UnitError(status: rc, message: "\(option): \(message)")
    }

    /// Seconds to nanoseconds for a value already range-checked (the loaded config's timeouts):
    /// saturating, so a value built in code outside any range cannot trap either (NaN and
    /// negatives give 0, anything past 2^64 ns gives UInt64.max).
    public static func nanoseconds(fromSeconds seconds: Double) -> UInt64 {
        var ns: UInt64 = 0
        switch gvm_check_seconds(seconds, 0, UInt64.max, &ns) {
        case GVM_UNIT_OK.rawValue: return ns
        case GVM_UNIT_OVERFLOW.rawValue: return UInt64.max
        case GVM_UNIT_NOT_FINITE.rawValue: return seconds > 0 ? UInt64.max : 0
        default: return 0
        }
    }

    /// "24h", "200ms", "1500ms": exact, in the largest unit that divides the value.
    public static func format(_ ns: UInt64) -> String { unitText { gvm_format_duration(ns, $0, $1) } }
}

public enum Sizes {
    public static let kib: UInt64 = 1 << 10
    public static let mib: UInt64 = 1 << 20
    public static let gib: UInt64 = 1 << 30
    public static let tib: UInt64 = 1 << 40

    /// Parses a size (bare number = bytes) within `range`.
    public static func parse(_ text: String, range: ClosedRange<UInt64>) -> Result<UInt64, UnitError> {
        unitCall(text, GVM_UNIT_SIZE, range) { gvm_parse_size($0, range.lowerBound, range.upperBound, $1) }
    }

    /// "3GiB", "64MiB", "100B".
    public static func format(_ bytes: UInt64) -> String { unitText { gvm_format_size(bytes, $0, $1) } }
}

private func unitCall(_ text: String, _ kind: gvm_unit_kind, _ range: ClosedRange<UInt64>,
                      _ parse: (UnsafePointer<CChar>, UnsafeMutablePointer<UInt64>) -> Int32) -> Result<UInt64, UnitError> {
    var value: UInt64 = 0
    let rc = text.withCString { parse($0, &value) }
    if rc == GVM_UNIT_OK.rawValue { return .success(value) }
    let message = text.withCString { t in
        unitText { gvm_unit_message(rc, kind, t, range.lowerBound, range.upperBound, $0, $1) }
    }
    return .failure(UnitError(status: rc, message: message))
}

private func unitText(_ write: (UnsafeMutablePointer<CChar>, Int) -> Int) -> String {
    var buf = [CChar](repeating: 0, count: 256)
    _ = buf.withUnsafeMutableBufferPointer { write($0.baseAddress!, $0.count) }
    return String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
