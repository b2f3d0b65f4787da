import XCTest
import PluginAPI
import PluginHost
import Metrics
import Logging
import TestSupport

/// A minimal host side of gvm_device_host, to drive device plugins through their C ops tables.
final class FakeDeviceHost {
    var mapped: [(space: UInt32, base: UInt64, length: UInt64)] = []
    var table = gvm_device_host()

    init() {
        table.size = UInt32(MemoryLayout<gvm_device_host>.size)
        table.host = OpaquePointer(Unmanaged.passUnretained(self).toOpaque())
        table.map_io = { host, space, base, length in
            let me = Unmanaged<FakeDeviceHost>.fromOpaque(UnsafeRawPointer(host!)).takeUnretainedValue()
            if me.mapped.contains(where: { $0.space == space && base < $0.base + $0.length && $0.base < base + length }) {
                return GVM_ERR_INVALID.rawValue
            }
            me.mapped.append((space, base, length))
            return GVM_OK.rawValue
        }
        table.set_irq = { _, _, _ in }
        table.console_write = { _, _, _ in }
        table.request_stop = { _, _, _ in }
        table.dma_read = { _, _, _, _ in GVM_ERR_UNSUPPORTED.rawValue }
        table.dma_write = { _, _, _, _ in GVM_ERR_UNSUPPORTED.rawValue }
    }
}

final class DevicePluginABITests: XCTestCase {
    let metrics = MetricsRegistry()
    var fatalMessages: [String] = []

    func makeDevice(plugin: String, model: String, name: String, base: UInt64?,
                    settings: [(key: String, value: String)], host: FakeDeviceHost,
                    services: HostServicesTable) throws -> (UnsafePointer<gvm_device_model>, UnsafeMutableRawPointer?, String) {
        let loader = PluginLoader(searchPath: [Built.productsDirectory])
        let p = try loader.load(plugin, kind: .device)
        let m = try XCTUnwrap(p.deviceModel(named: model))
        let st = SettingsTable(settings)
        var cfg = gvm_device_config()
        let cname = strdup(name)!
        defer { free(cname) }
        cfg.instance_name = UnsafePointer(cname)
        cfg.base = base ?? 0
        cfg.has_base = base == nil ? 0 : 1
        cfg.irq = GVM_NO_IRQ
        var err = gvm_error()
        let dev = withUnsafePointer(to: &host.table) { dh in
            m.pointee.create(services.pointer, dh, &cfg, st.pointer, st.count, &err)
        }
        return (m, dev, errorMessage(&err))
    }

    func io(_ m: UnsafePointer<gvm_device_model>, _ dev: UnsafeMutableRawPointer, offset: UInt64, write: [UInt8]? = nil, readLength: Int = 0) -> [UInt8] {
        var buf = write ?? [UInt8](repeating: 0, count: readLength)
        buf.withUnsafeMutableBufferPointer { b in
            m.pointee.io(dev, GVM_SPACE_PIO, offset, b.baseAddress, UInt32(b.count), write == nil ? 0 : 1)
        }
        return buf
    }

    func services(_ name: String) -> HostServicesTable {
        HostServicesTable(pluginName: name, metrics: metrics, logger: Logger(label: "test")) { [weak self] in
            self?.fatalMessages.append($0)
        }
    }

    func testCPluginAnswersThroughItsOpsTable() throws {
        try XCTSkipUnless(FileManager.default.fileExists(atPath: Built.plugin("example-c")), "run swift build first")
        let host = FakeDeviceHost()
        let svc = services("example-c")
        let (m, dev, msg) = try makeDevice(plugin: "example-c", model: "scratch", name: "s0", base: 0x610,
                                           settings: [("initial", "0x1122334455667788")], host: host, services: svc)
        let d = try XCTUnwrap(dev, msg)
        XCTAssertEqual(host.mapped.count, 1)
        XCTAssertEqual(host.mapped.first?.base, 0x610)
        XCTAssertEqual(host.mapped.first?.length, 8)
        XCTAssertEqual(io(m, d, offset: 0, readLength: 8), [0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11])
        _ = io(m, d, offset: 2, write: [0xAB, 0xCD])
        XCTAssertEqual(io(m, d, offset: 0, readLength: 4), [0x88, 0x77, 0xAB, 0xCD])
        XCTAssertEqual(io(m, d, offset: 7, readLength: 2), [0xFF, 0xFF], "out-of-range reads are all-ones, not a crash")
        m.pointee.reset(d)
        XCTAssertEqual(io(m, d, offset: 2, readLength: 2), [0x66, 0x55])
        XCTAssertEqual(metrics.value("s0.accesses"), 5, "the plugin counted through the host services")
        m.pointee.destroy(d)
    }

    func testCPluginRejectsBadSettingsWithItsOwnMessage() throws {
        try XCTSkipUnless(FileManager.default.fileExists(atPath: Built.plugin("example-c")), "run swift build first")
        let (_, dev, msg) = try makeDevice(plugin: "example-c", model: "scratch", name: "s1", base: nil,
                                           settings: [("colour", "red")], host: FakeDeviceHost(), services: services("example-c"))
        XCTAssertNil(dev)
        XCTAssertEqual(msg, "unknown setting 'colour' (accepted: initial)")
    }

    func testSwiftPluginAnswersThroughItsOpsTable() throws {
        try XCTSkipUnless(FileManager.default.fileExists(atPath: Built.plugin("test-swift-device")), "run swift build first")
        let host = FakeDeviceHost()
        let svc = services("test-swift-device") // must outlive the device instance
        let (m, dev, msg) = try makeDevice(plugin: "test-swift-device", model: "echo", name: "e0", base: 0x700,
                                           settings: [("add", "3")], host: host, services: svc)
        let d = try XCTUnwrap(dev, msg)
        _ = io(m, d, offset: 0, write: [40])
        XCTAssertEqual(io(m, d, offset: 0, readLength: 1), [43])
        XCTAssertEqual(metrics.value("echo.io"), 2)
        m.pointee.destroy(d)
        withExtendedLifetime(svc) {}

        let (_, bad, badMsg) = try makeDevice(plugin: "test-swift-device", model: "echo", name: "e1", base: 0x701,
                                              settings: [("add", "999")], host: host, services: svc)
        XCTAssertNil(bad)
        XCTAssertEqual(badMsg, "setting 'add': 999 is out of range 0...255")
    }

    func testOverlappingMapIsRefused() throws {
        try XCTSkipUnless(FileManager.default.fileExists(atPath: Built.plugin("example-c")), "run swift build first")
        let host = FakeDeviceHost()
        let svc = services("example-c")
        let (_, first, _) = try makeDevice(plugin: "example-c", model: "scratch", name: "a", base: 0x610, settings: [], host: host, services: svc)
        XCTAssertNotNil(first)
        let (_, second, msg) = try makeDevice(plugin: "example-c", model: "scratch", name: "b", base: 0x614, settings: [], host: host, services: svc)
        XCTAssertNil(second)
        XCTAssertEqual(msg, "ports 0x614-0x61b are taken")
    }

    /// PluginKit refuses a host table shorter than the plugin was built for, with a message.
    func testSwiftPluginRefusesAShorterHostTable() throws {
        try XCTSkipUnless(FileManager.default.fileExists(atPath: Built.plugin("test-swift-device")), "run swift build first")
        let host = FakeDeviceHost()
        host.table.size = 16
        let (_, dev, msg) = try makeDevice(plugin: "test-swift-device", model: "echo", name: "e2", base: 0x702,
                                           settings: [], host: host, services: services("test-swift-device"))
        XCTAssertNil(dev)
        XCTAssertEqual(msg, "the host's gvm_device_host table is 16 bytes, this plugin needs \(MemoryLayout<gvm_device_host>.size) "
                       + "(ABI \(GVM_ABI_VERSION)): use a giantvm built from the same giantvm_plugin.h")
        XCTAssertTrue(host.mapped.isEmpty)
    }
}
