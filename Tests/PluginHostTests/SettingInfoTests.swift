import XCTest
import PluginAPI
@testable import PluginHost
import TestSupport

/// ABI 3 self-description: the settings table is bounded and checked at load time, and the
/// in-tree plugins' declarations are read back.
final class SettingInfoTests: XCTestCase {
    /// A coherence descriptor whose ops table passes the checks, with the given settings table.
    func descriptor(count: UInt32, table: UnsafePointer<gvm_setting_info>?) -> UnsafePointer<gvm_plugin_descriptor> {
        let ops = UnsafeMutableRawPointer.allocate(byteCount: 512, alignment: 8)
        for i in 0..<64 { ops.storeBytes(of: UInt(0x1000 + i), toByteOffset: i * 8, as: UInt.self) }
        ops.storeBytes(of: UInt32(MemoryLayout<gvm_coherence_ops>.size), as: UInt32.self)
        let d = UnsafeMutablePointer<gvm_plugin_descriptor>.allocate(capacity: 1)
        d.initialize(to: gvm_plugin_descriptor(abi_version: GVM_ABI_VERSION, kind: GVM_PLUGIN_COHERENCE.rawValue,
                                               name: strdup("t"), version: nil, summary: nil, ops: ops,
                                               description: strdup("S + Load -> S"), setting_count: count, settings: table))
        return UnsafePointer(d)
    }

    func table(_ rows: [(String?, String?, String?, String?)]) -> UnsafePointer<gvm_setting_info> {
        let t = UnsafeMutablePointer<gvm_setting_info>.allocate(capacity: rows.count)
        for (i, r) in rows.enumerated() {
            t[i] = gvm_setting_info(key: r.0.map { UnsafePointer(strdup($0)!) }, default_value: r.1.map { UnsafePointer(strdup($0)!) },
                                    meaning: r.2.map { UnsafePointer(strdup($0)!) }, model: r.3.map { UnsafePointer(strdup($0)!) })
        }
        return UnsafePointer(t)
    }

    func problem(_ d: UnsafePointer<gvm_plugin_descriptor>) -> String? {
        do { _ = try PluginLoader.check(d, path: "/x.so"); return nil } catch let PluginLoadError.badDescriptor(_, p) { return p } catch {
            return "\(error)"
        }
    }

    func testSettingsAreReadWithDefaultsAndModels() throws {
        let p = try PluginLoader.check(descriptor(count: 2, table: table([("a", "1", "first", nil), ("b", nil, "second", "m")])),
                                       path: "/x.so")
        XCTAssertEqual(p.settings, [PluginSettingInfo(key: "a", defaultValue: "1", meaning: "first", model: nil),
                                    PluginSettingInfo(key: "b", defaultValue: nil, meaning: "second", model: "m")])
        XCTAssertEqual(p.descriptionText, "S + Load -> S")
        XCTAssertTrue(p.describeText.contains("state table:\n  S + Load -> S"), p.describeText)
        XCTAssertTrue(p.describeText.contains("  a  1        first"), p.describeText)
        XCTAssertTrue(p.describeText.contains("  b  -        second"), p.describeText)
    }

    func testMalformedTablesAreRefused() {
        XCTAssertEqual(problem(descriptor(count: GVM_MAX_SETTING_INFO + 1, table: table([("a", nil, "x", nil)]))),
                       "setting_count 1025 is more than 1024")
        XCTAssertEqual(problem(descriptor(count: 3, table: nil)), "setting_count is 3 but the settings table is NULL")
        XCTAssertEqual(problem(descriptor(count: 1, table: table([(nil, nil, "x", nil)]))), "settings[0] has no key")
        XCTAssertEqual(problem(descriptor(count: 1, table: table([("k", nil, nil, nil)]))), "settings[0] has no meaning")
        XCTAssertEqual(problem(descriptor(count: 2, table: table([("k", nil, "x", nil), ("k", "2", "y", nil)]))),
                       "settings[1]: key 'k' is empty or declared twice")
        // The same key for two device models is fine.
        XCTAssertNil(problem(descriptor(count: 2, table: table([("k", nil, "x", "m1"), ("k", nil, "y", "m2")]))))
    }

    func testInTreePluginsDeclareTheirSettings() throws {
        let loader = PluginLoader(searchPath: [Built.productsDirectory])
        let ivy = try loader.load("dsm-ivy")
        XCTAssertEqual(ivy.settings.map(\.key), ["manager_chunk", "hold_time", "read_ahead", "replicated", "zero_ahead", "request_timeout", "send_wait"])
        XCTAssertEqual(ivy.settings.first { $0.key == "hold_time" }?.defaultValue, "20us")
        XCTAssertTrue(ivy.descriptionText?.contains("Cache controller states") ?? false)
        let devices = try loader.load("devices")
        XCTAssertEqual(devices.settings.filter { $0.model == "isa-debug-exit" }.map(\.key), ["iosize"])
        XCTAssertTrue(devices.settings.allSatisfy { s in devices.deviceModels.contains { $0.name == s.model } })
        let c = try loader.load("example-c")
        XCTAssertEqual(c.settings, [PluginSettingInfo(key: "initial", defaultValue: "0",
                                                      meaning: "power-on value of the 8-byte register (an integer, C notation: 42, 0x2a)",
                                                      model: "scratch")])
    }
}
