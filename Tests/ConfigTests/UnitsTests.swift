// The one duration and size grammar (giantvm_units.h, units.c): per unit, per error class, the
// C functions, the host wrapper (Config) and the plugin wrapper (PluginKit) agreeing, and a bare
// number meaning seconds (durations) / bytes (sizes) in EVERY field and setting.

import Config
import IvyCore
import PluginAPI
import PluginKit
import XCTest

final class UnitsGrammarTests: XCTestCase {
    let any: ClosedRange<UInt64> = 0...UInt64.max

    func d(_ text: String) -> UInt64? { try? Durations.parse(text, range: any).get() }
    func s(_ text: String) -> UInt64? { try? Sizes.parse(text, range: any).get() }
    func dStatus(_ text: String, _ range: ClosedRange<UInt64> = 0...UInt64.max) -> Int32 {
        var v: UInt64 = 0
        return gvm_parse_duration(text, range.lowerBound, range.upperBound, &v)
    }
    func sStatus(_ text: String, _ range: ClosedRange<UInt64> = 0...UInt64.max) -> Int32 {
        var v: UInt64 = 0
        return gvm_parse_size(text, range.lowerBound, range.upperBound, &v)
    }

    func testEveryDurationUnit() {
        XCTAssertEqual(d("7ns"), 7)
        XCTAssertEqual(d("7us"), 7_000)
        XCTAssertEqual(d("7µs"), 7_000)           // MICRO SIGN
        XCTAssertEqual(d("7μs"), 7_000)           // GREEK SMALL LETTER MU
        XCTAssertEqual(d("7ms"), 7_000_000)
        XCTAssertEqual(d("7s"), 7_000_000_000)
        XCTAssertEqual(d("7m"), 420_000_000_000)
        XCTAssertEqual(d("7h"), 25_200_000_000_000)
        XCTAssertEqual(d("7"), 7_000_000_000, "a bare number is seconds")
        XCTAssertEqual(d("1.5s"), 1_500_000_000, "exact decimal, no float rounding")
        XCTAssertEqual(d("0.1s"), 100_000_000)
        XCTAssertEqual(d(".25"), 250_000_000)
        XCTAssertEqual(d("2e-3"), 2_000_000)
        XCTAssertEqual(d("1E3ms"), 1_000_000_000)
        XCTAssertEqual(d("  200 ms  "), 200_000_000, "spaces around and between")
        XCTAssertEqual(d("0"), 0)
        XCTAssertEqual(d("1.4ns"), 1, "rounded to the nearest nanosecond")
        XCTAssertEqual(d("1.5ns"), 2)
        XCTAssertEqual(d("18446744073.70955161s"), 18_446_744_073_709_551_610, "19 significant digits, exact")
    }

    func testEverySizeUnit() {
        XCTAssertEqual(s("5B"), 5)
        XCTAssertEqual(s("5KiB"), 5 << 10)
        XCTAssertEqual(s("5MiB"), 5 << 20)
        XCTAssertEqual(s("5GiB"), 5 << 30)
        XCTAssertEqual(s("5TiB"), 5 << 40)
        XCTAssertEqual(s("5K"), 5 << 10)
        XCTAssertEqual(s("5M"), 5 << 20)
        XCTAssertEqual(s("5G"), 5 << 30)
        XCTAssertEqual(s("5T"), 5 << 40)
        XCTAssertEqual(s("4096"), 4096, "a bare number is bytes")
        XCTAssertEqual(s("1.5KiB"), 1536)
        XCTAssertEqual(s("0.5 MiB"), 512 << 10)
        XCTAssertEqual(s("16EiB"), nil, "no exbibytes")
        XCTAssertEqual(s("15.99999999999999999999TiB"), nil, "digits past 19 are not silently dropped from a size")
    }

    func testEveryErrorClass() {
        XCTAssertEqual(dStatus(""), GVM_UNIT_EMPTY.rawValue)
        XCTAssertEqual(dStatus("   "), GVM_UNIT_EMPTY.rawValue)
        XCTAssertEqual(dStatus("soon"), GVM_UNIT_NOT_NUMBER.rawValue)
        XCTAssertEqual(dStatus("ms"), GVM_UNIT_NOT_NUMBER.rawValue)
        XCTAssertEqual(dStatus("."), GVM_UNIT_NOT_NUMBER.rawValue)
        XCTAssertEqual(dStatus("+5s"), GVM_UNIT_NOT_NUMBER.rawValue)
        XCTAssertEqual(dStatus("-1s"), GVM_UNIT_NEGATIVE.rawValue)
        XCTAssertEqual(dStatus("-0"), GVM_UNIT_NEGATIVE.rawValue)
        for t in ["nan", "NaN", "inf", "-inf", ".inf", ".NaN", "Infinity", "infs"] where t != "-inf" && t != "infs" {
            XCTAssertEqual(dStatus(t), GVM_UNIT_NOT_FINITE.rawValue, t)
        }
        XCTAssertEqual(dStatus("-inf"), GVM_UNIT_NEGATIVE.rawValue)
        XCTAssertEqual(dStatus("5 parsecs"), GVM_UNIT_BAD_UNIT.rawValue)
        XCTAssertEqual(dStatus("5s later"), GVM_UNIT_BAD_UNIT.rawValue)
        XCTAssertEqual(dStatus("5 m s"), GVM_UNIT_BAD_UNIT.rawValue)
        XCTAssertEqual(dStatus("1.2.3"), GVM_UNIT_BAD_UNIT.rawValue)
        XCTAssertEqual(dStatus("5S"), GVM_UNIT_BAD_UNIT.rawValue, "units are case-sensitive")
        XCTAssertEqual(dStatus("5d"), GVM_UNIT_BAD_UNIT.rawValue)
        XCTAssertEqual(dStatus("1e300s"), GVM_UNIT_OVERFLOW.rawValue)
        XCTAssertEqual(dStatus("18446744074s"), GVM_UNIT_OVERFLOW.rawValue)
        XCTAssertEqual(dStatus("99999999999999999999999999999h"), GVM_UNIT_OVERFLOW.rawValue)
        XCTAssertEqual(dStatus("1e-300s"), GVM_UNIT_OK.rawValue, "tiny is 0 ns, then a range question")
        XCTAssertEqual(dStatus("1e-300s", 1...10), GVM_UNIT_TOO_SMALL.rawValue)
        XCTAssertEqual(dStatus("11ns", 1...10), GVM_UNIT_TOO_LARGE.rawValue)
        XCTAssertEqual(sStatus("1.3KiB"), GVM_UNIT_FRACTION.rawValue)
        XCTAssertEqual(sStatus("0.5B"), GVM_UNIT_FRACTION.rawValue)
        XCTAssertEqual(sStatus("4KB"), GVM_UNIT_AMBIGUOUS.rawValue)
        XCTAssertEqual(sStatus("4kB"), GVM_UNIT_AMBIGUOUS.rawValue)
        XCTAssertEqual(sStatus("4GB"), GVM_UNIT_AMBIGUOUS.rawValue)
        XCTAssertEqual(sStatus("16384PiB"), GVM_UNIT_BAD_UNIT.rawValue)
        XCTAssertEqual(sStatus("16777216TiB"), GVM_UNIT_OVERFLOW.rawValue)
        XCTAssertEqual(sStatus("4s"), GVM_UNIT_BAD_UNIT.rawValue, "a duration unit is not a size unit")
        XCTAssertEqual(dStatus("4MiB"), GVM_UNIT_BAD_UNIT.rawValue, "and the other way round")
        var v: UInt64 = 0
        XCTAssertEqual(gvm_parse_duration(nil, 0, 1, &v), GVM_UNIT_INVALID.rawValue)
        XCTAssertEqual(gvm_parse_duration("1", 5, 1, &v), GVM_UNIT_INVALID.rawValue)
        XCTAssertEqual(gvm_parse_duration("1", 0, UInt64.max, nil), GVM_UNIT_INVALID.rawValue)
    }

    func testMessagesNameTheValueAndTheRange() {
        func msg(_ text: String, _ range: ClosedRange<UInt64>) -> String {
            if case .failure(let e) = Durations.parse(text, range: range) { return e.message }
            return "accepted"
        }
        XCTAssertEqual(msg("2e10s", Durations.timeoutRange), "'2e10s' is above the maximum 24h (range 1ms to 24h)")
        XCTAssertEqual(msg("0.5ms", Durations.timeoutRange), "'0.5ms' is below the minimum 1ms (range 1ms to 24h)")
        XCTAssertEqual(msg("1e300s", Durations.timeoutRange), "'1e300s' is above the maximum 24h (range 1ms to 24h)",
                       "past 64 bits (GVM_UNIT_OVERFLOW) reads as above the maximum")
        XCTAssertEqual(msg("-3s", Durations.timeoutRange), "'-3s' is negative: expected a duration >= 1ms")
        XCTAssertEqual(msg("nan", Durations.timeoutRange), "'nan' is not a finite number (range 1ms to 24h)")
        XCTAssertEqual(msg("", Durations.timeoutRange), "empty: expected a duration (e.g. 500ms, 10s)")
        XCTAssertEqual(msg("3 fortnights", Durations.timeoutRange),
                       "'3 fortnights' has an unknown unit or trailing text (duration units: ns, us, ms, s, m, h; a bare number is seconds)")
        XCTAssertTrue(msg("soon", Durations.timeoutRange).hasPrefix("'soon' is not a duration (e.g. 500ms, 10s)"))
        let long = String(repeating: "9", count: 100) + "\u{1}x"
        XCTAssertEqual(msg(long, Durations.timeoutRange),
                       "'\(String(repeating: "9", count: 40))...' has an unknown unit or trailing text (duration units: ns, us, ms, s, m, h; a bare number is seconds)",
                       "long values are shortened")
        if case .failure(let e) = Sizes.parse("4GB", range: 0...UInt64.max) {
            XCTAssertEqual(e.message, "'4GB': KB, MB, GB and TB are ambiguous (1000 or 1024?): write KiB, MiB, GiB, TiB")
        } else { XCTFail("4GB accepted") }
        if case .failure(let e) = Sizes.parse("1.3KiB", range: 0...UInt64.max) {
            XCTAssertEqual(e.message, "'1.3KiB' is not a whole number of bytes")
        } else { XCTFail("1.3KiB accepted") }
    }

    func testFormatting() {
        XCTAssertEqual(Durations.format(Durations.day), "24h")
        XCTAssertEqual(Durations.format(1_500_000_000), "1500ms")
        XCTAssertEqual(Durations.format(90 * Durations.second), "90s")
        XCTAssertEqual(Durations.format(0), "0s")
        XCTAssertEqual(Durations.format(7), "7ns")
        XCTAssertEqual(Sizes.format(3 << 30), "3GiB")
        XCTAssertEqual(Sizes.format(4097), "4097B")
        XCTAssertEqual(Sizes.format(0), "0B")
        XCTAssertEqual(Units.format(nanoseconds: 20_000), "20us")
        XCTAssertEqual(Units.format(bytes: 1 << 40), "1TiB")
    }

    /// The CLI's --duration/--timeout values (seconds as Double) through the same checks.
    func testCLISecondsNeverTrap() throws {
        XCTAssertEqual(try Durations.checkCLI(2.5, option: "--timeout"), 2_500_000_000)
        XCTAssertEqual(try Durations.checkCLI(0.001, option: "--duration"), 1_000_000)
        func msg(_ v: Double, _ option: String) -> String {
            do { _ = try Durations.checkCLI(v, option: option); return "accepted" } catch { return "\(error)" }
        }
        XCTAssertEqual(msg(1e300, "--duration"), "--duration: '1e+300 s' is above the maximum 720h (range 1ms to 720h)")
        XCTAssertEqual(msg(1e10, "--timeout"), "--timeout: '10000000000.0 s' is above the maximum 720h (range 1ms to 720h)")
        XCTAssertEqual(msg(-1, "--timeout"), "--timeout: '-1.0 s' is negative: expected a duration >= 1ms")
        XCTAssertEqual(msg(.nan, "--timeout"), "--timeout: 'nan s' is not a finite number (range 1ms to 720h)")
        XCTAssertEqual(msg(.infinity, "--timeout"), "--timeout: 'inf s' is not a finite number (range 1ms to 720h)")
        XCTAssertEqual(msg(0, "--duration"), "--duration: '0.0 s' is below the minimum 1ms (range 1ms to 720h)")
        XCTAssertEqual(Durations.nanoseconds(fromSeconds: 1e300), UInt64.max)
        XCTAssertEqual(Durations.nanoseconds(fromSeconds: -5), 0)
        XCTAssertEqual(Durations.nanoseconds(fromSeconds: .nan), 0)
        XCTAssertEqual(Durations.nanoseconds(fromSeconds: 0.2), 200_000_000)
    }

    /// The plugin-side wrapper returns exactly what the host-side one does.
    func testPluginKitAgreesWithConfig() {
        for text in ["10", "200ms", "1.5", "2e10s", "-1", "nan", "5 parsecs", "", "0.0000001ns"] {
            let host = Durations.parse(text, range: Durations.timeoutRange)
            let plugin = Units.duration(text, range: Durations.timeoutRange)
            switch (host, plugin) {
            case (.success(let a), .success(let b)): XCTAssertEqual(a, b, text)
            case (.failure(let a), .failure(let b)): XCTAssertEqual(a.message, b.message, text); XCTAssertEqual(a.status, b.status)
            default: XCTFail("host and plugin disagree on '\(text)'")
            }
        }
        for text in ["4096", "64MiB", "1.3KiB", "4KB", "x"] {
            let host = Sizes.parse(text, range: 0...UInt64.max)
            let plugin = Units.size(text, range: 0...UInt64.max)
            switch (host, plugin) {
            case (.success(let a), .success(let b)): XCTAssertEqual(a, b, text)
            case (.failure(let a), .failure(let b)): XCTAssertEqual(a.message, b.message, text)
            default: XCTFail("host and plugin disagree on '\(text)'")
            }
        }
    }
}

/// A bare number means seconds in every duration field and every plugin setting, bytes in every
/// size field and setting (it meant 10 s in `timeouts`, 10 ms in transport-tcp settings and an
/// error in dsm-ivy settings before).
final class BareNumberPerFieldTests: XCTestCase {
    func config(timeouts: String = "", faults: String = "", memory: String = "64MiB") -> String {
        """
        cluster: bare
        nodes:
          - {id: 0, address: 127.0.0.1, port: 19600, vcpus: 1}
          - {id: 1, address: 127.0.0.1, port: 19601, vcpus: 1}
        memory: \(memory)
        transport:
          plugin: transport-tcp
        \(faults.isEmpty ? "" : "  faults:\n" + faults)
        coherence: dsm-ivy
        \(timeouts)
        """
    }

    func testTimeouts() throws {
        let c = try ConfigLoader.parse(yaml: config(timeouts: "timeouts: {connect: 7, heartbeat: 0.5, failure: 2}"), path: "/cfg/a.yaml")
        XCTAssertEqual(c.timeouts.connectNanoseconds, 7 * Durations.second)
        XCTAssertEqual(c.timeouts.heartbeatNanoseconds, 500 * Durations.millisecond)
        XCTAssertEqual(c.timeouts.failureNanoseconds, 2 * Durations.second)
    }

    func testFaultRuleDelayAndJitter() throws {
        let c = try ConfigLoader.parse(yaml: config(faults: "    - {action: delay, delay: 2, jitter: 0.5}\n"), path: "/cfg/a.yaml")
        XCTAssertEqual(c.faults.rules.first?.delayNanoseconds, 2 * Durations.second)
        XCTAssertEqual(c.faults.rules.first?.jitterNanoseconds, 500 * Durations.millisecond)
        let r = try ConfigLoader.parse(yaml: config(faults: "    - {action: reorder, delay: 0.02}\n"), path: "/cfg/a.yaml")
        XCTAssertEqual(r.faults.rules.first?.delayNanoseconds, 20 * Durations.millisecond)
    }

    func testTransportTCPSettings() throws {
        for setting in TCPDurationSetting.allCases {
            XCTAssertEqual(try setting.parse("2").get(), 2 * Durations.second, setting.rawValue)
            XCTAssertEqual(try setting.parse("2s").get(), try setting.parse("2").get(), setting.rawValue)
        }
    }

    func testDsmIvySettings() throws {
        XCTAssertEqual(try IvyConfig.parse(["hold_time": "0.5"], pageCount: 4, nodeCount: 2).holdNanoseconds, 500 * Durations.millisecond)
        XCTAssertEqual(try IvyConfig.parse(["hold_time": "1"], pageCount: 4, nodeCount: 2).holdNanoseconds, Durations.second)
        XCTAssertEqual(try IvyConfig.parse(["manager_chunk": "8192"], pageCount: 4, nodeCount: 2).managerMap.chunkPages, 2)
    }

    func testPluginKitSettings() throws {
        let s = PluginKit.Settings(["t": "3", "b": "4096"])
        XCTAssertEqual(try s.duration("t", default: 0, range: 0...Units.day), 3 * Units.second)
        XCTAssertEqual(try s.size("b", default: 0, range: 0...(1 << 40)), 4096)
        XCTAssertEqual(try s.duration("absent", default: 42, range: 0...Units.day), 42)
    }

    func testMemory() throws {
        XCTAssertEqual(try ConfigLoader.parse(yaml: config(memory: "67108864"), path: "/cfg/a.yaml").memoryBytes, 64 << 20)
    }

    func testCLI() throws {
        XCTAssertEqual(try Durations.checkCLI(2, option: "--duration"), 2 * Durations.second)
    }
}

/// Every duration field's range, checked when the file is read, named in the message.
final class DurationRangeTests: XCTestCase {
    func diagnostics(_ yaml: String) -> [String] {
        do { _ = try ConfigLoader.parse(yaml: yaml, path: "/cfg/r.yaml"); return [] } catch let e as ConfigError {
            return e.diagnostics.map(\.description)
        } catch { return ["\(error)"] }
    }

    let head = """
        cluster: r
        nodes: [{id: 0, address: 127.0.0.1, port: 19610}, {id: 1, address: 127.0.0.1, port: 19611}]
        coherence: dsm-ivy

        """

    func testTimeoutRanges() {
        XCTAssertEqual(diagnostics(head + "transport: transport-tcp\ntimeouts: {failure: 2e10s}"),
                       ["/cfg/r.yaml:5:21: timeouts.failure: '2e10s' is above the maximum 24h (range 1ms to 24h)"])
        XCTAssertEqual(diagnostics(head + "transport: transport-tcp\ntimeouts: {failure: 25h}"),
                       ["/cfg/r.yaml:5:21: timeouts.failure: '25h' is above the maximum 24h (range 1ms to 24h)"])
        XCTAssertEqual(diagnostics(head + "transport: transport-tcp\ntimeouts: {heartbeat: 1e10s, failure: 1e300s}"),
                       ["/cfg/r.yaml:5:23: timeouts.heartbeat: '1e10s' is above the maximum 24h (range 1ms to 24h)",
                        "/cfg/r.yaml:5:39: timeouts.failure: '1e300s' is above the maximum 24h (range 1ms to 24h)"])
        XCTAssertEqual(diagnostics(head + "transport: transport-tcp\ntimeouts: {connect: 0.1ms}"),
                       ["/cfg/r.yaml:5:21: timeouts.connect: '0.1ms' is below the minimum 1ms (range 1ms to 24h)"])
        XCTAssertEqual(diagnostics(head + "transport: transport-tcp\ntimeouts: {connect: .nan}"),
                       ["/cfg/r.yaml:5:21: timeouts.connect: '.nan' is not a finite number (range 1ms to 24h)"])
        XCTAssertEqual(diagnostics(head + "transport: transport-tcp\ntimeouts: {connect: [1]}"),
                       ["/cfg/r.yaml:5:21: timeouts.connect: expected a duration like 3s or 200ms, got a list"])
        XCTAssertEqual(diagnostics(head + "transport: transport-tcp\ntimeouts: {connect: 24h, heartbeat: 1ms, failure: 24h}"), [])
    }

    func testFaultDelayRanges() {
        XCTAssertEqual(diagnostics(head + "transport: {plugin: transport-tcp, faults: [{action: delay, delay: 2h}]}"),
                       ["/cfg/r.yaml:4:68: transport.faults.rules[0].delay: '2h' is above the maximum 1h (range 0s to 1h)"])
        XCTAssertEqual(diagnostics(head + "transport: {plugin: transport-tcp, faults: [{action: delay, jitter: -1ms}]}"),
                       ["/cfg/r.yaml:4:69: transport.faults.rules[0].jitter: '-1ms' is negative: expected a duration >= 0s"])
    }

    func testPluginSettingRanges() {
        XCTAssertEqual(TCPDurationSetting.retryInterval.range, Durations.millisecond...Durations.hour)
        XCTAssertEqual(TCPDurationSetting.connectTimeout.range, Durations.millisecond...Durations.day)
        if case .failure(let e) = TCPDurationSetting.retryInterval.parse("0.0005") {
            XCTAssertEqual(e.message, "setting 'retry_interval': '0.0005' is below the minimum 1ms (range 1ms to 1h)",
                           "0.0005 is 0.5 ms: seconds, not milliseconds")
        } else { XCTFail("0.0005 s accepted as a retry interval") }
        XCTAssertThrowsError(try IvyConfig.parse(["hold_time": "2"], pageCount: 4, nodeCount: 2)) { e in
            XCTAssertEqual("\(e)", "setting 'hold_time': '2' is above the maximum 1s (range 0s to 1s)")
        }
        XCTAssertThrowsError(try IvyConfig.parse(["manager_chunk": "4KB"], pageCount: 4, nodeCount: 2)) { e in
            XCTAssertEqual("\(e)", "setting 'manager_chunk': '4KB': KB, MB, GB and TB are ambiguous (1000 or 1024?): write KiB, MiB, GiB, TiB")
        }
        XCTAssertThrowsError(try PluginKit.Settings(["x": "inf"]).duration("x", default: 0, range: 0...Units.day)) { e in
            XCTAssertEqual("\(e)", "setting 'x': 'inf' is not a finite number (range 0s to 24h)")
        }
    }
}
