// The ABI 4 device state hooks (gvm_device_ops.save_state / load_state) through the C ops
// tables of the built plugins: the uart16550 moves exactly (registers, FIFO, pending interrupt,
// line level) into a fresh instance; a hostile blob is refused naming the field and leaves the
// instance as it was; a model without a transfer answers the probe UNSUPPORTED; a C plugin
// without the hooks has them NULL.

import XCTest
import PluginAPI
import PluginHost
import TestSupport

extension DevicePluginABITests {
    func deviceOps(_ plugin: String) throws -> UnsafePointer<gvm_device_ops> {
        let loader = PluginLoader(searchPath: [Built.productsDirectory])
        return try XCTUnwrap(try loader.load(plugin, kind: .device).deviceOps)
    }

    func save(_ ops: UnsafePointer<gvm_device_ops>, _ dev: UnsafeMutableRawPointer) throws -> [UInt8] {
        var buf = [UInt8](repeating: 0, count: Int(GVM_DEVICE_STATE_MAX))
        var len = 0
        var err = gvm_error()
        let save = try XCTUnwrap(ops.pointee.save_state)
        let rc = buf.withUnsafeMutableBufferPointer { save(dev, $0.baseAddress, $0.count, &len, &err) }
        XCTAssertEqual(rc, GVM_OK.rawValue, errorMessage(&err))
        return Array(buf[0..<len])
    }

    func load(_ ops: UnsafePointer<gvm_device_ops>, _ dev: UnsafeMutableRawPointer, _ blob: [UInt8]) throws -> (Int32, String) {
        var err = gvm_error()
        let load = try XCTUnwrap(ops.pointee.load_state)
        let rc = blob.withUnsafeBufferPointer { load(dev, $0.baseAddress, $0.count, &err) }
        return (rc, errorMessage(&err))
    }

    func testUARTStateMovesToAFreshInstanceExactly() throws {
        try XCTSkipUnless(FileManager.default.fileExists(atPath: Built.plugin("devices")), "run swift build first")
        let ops = try deviceOps("devices")
        XCTAssertGreaterThanOrEqual(Int(ops.pointee.size), MemoryLayout<gvm_device_ops>.size)
        let host = FakeDeviceHost(), svc = services("devices")
        let (m, a0, msg) = try makeDevice(plugin: "devices", model: "uart16550", name: "com1", base: 0x3f8, settings: [], host: host, services: svc)
        let a = try XCTUnwrap(a0, msg)
        // The probe: a bound, no bytes.
        var bound = 0
        var err = gvm_error()
        XCTAssertEqual(ops.pointee.save_state!(a, nil, 0, &bound, &err), GVM_OK.rawValue)
        XCTAssertEqual(bound, 12 + 64)
        // State worth moving: divisor, line control, scratch, interrupts enabled, 3 bytes received.
        _ = io(m, a, offset: 3, write: [0x80]); _ = io(m, a, offset: 0, write: [0x01]); _ = io(m, a, offset: 1, write: [0x00])
        _ = io(m, a, offset: 3, write: [0x03]); _ = io(m, a, offset: 7, write: [0x5a]); _ = io(m, a, offset: 1, write: [0x03])
        _ = io(m, a, offset: 4, write: [0x0b])
        Array("xyz".utf8).withUnsafeBytes { m.pointee.console_input!(a, $0.baseAddress, $0.count) }
        XCTAssertEqual(io(m, a, offset: 0, readLength: 1), [UInt8(ascii: "x")])
        let blob = try save(ops, a)
        XCTAssertEqual(blob.count, 12 + 2)
        XCTAssertEqual(blob.first, 1, "version byte")

        let host2 = FakeDeviceHost()
        let (_, b0, msg2) = try makeDevice(plugin: "devices", model: "uart16550", name: "com1", base: 0x3f8, settings: [], host: host2, services: svc)
        let b = try XCTUnwrap(b0, msg2)
        XCTAssertEqual(try load(ops, b, blob).0, GVM_OK.rawValue)
        XCTAssertEqual(try save(ops, b), blob, "the loaded instance saves the same state")
        // Every register reads the same on both, and the FIFO continues where it was.
        for off: UInt64 in [1, 3, 4, 5, 7] {
            XCTAssertEqual(io(m, b, offset: off, readLength: 1), io(m, a, offset: off, readLength: 1), "register \(off)")
        }
        XCTAssertEqual(io(m, b, offset: 2, readLength: 1), [0x04], "IIR: received data pending")
        XCTAssertEqual(io(m, b, offset: 0, readLength: 1) + io(m, b, offset: 0, readLength: 1), Array("yz".utf8))
        _ = io(m, b, offset: 3, write: [0x83])
        XCTAssertEqual(io(m, b, offset: 0, readLength: 1), [0x01], "divisor latch low")
        m.pointee.destroy(a)
        m.pointee.destroy(b)
        withExtendedLifetime(svc) {}
    }

    func testUARTRefusesAHostileBlobNamingTheField() throws {
        try XCTSkipUnless(FileManager.default.fileExists(atPath: Built.plugin("devices")), "run swift build first")
        let ops = try deviceOps("devices")
        let host = FakeDeviceHost(), svc = services("devices")
        let (m, d0, msg) = try makeDevice(plugin: "devices", model: "uart16550", name: "com1", base: 0x3f8, settings: [], host: host, services: svc)
        let d = try XCTUnwrap(d0, msg)
        _ = io(m, d, offset: 7, write: [0x77])
        let good = try save(ops, d)
        var cases: [(String, [UInt8])] = []
        var v = good; v[0] = 9; cases.append(("version 9", v))
        cases.append(("shorter than its 12-byte header", Array(good.prefix(5))))
        v = good; v[11] = 200; cases.append(("fifo count 200 exceeds", v))
        v = good; v[11] = 2; cases.append(("lsr data-ready bit disagrees", v + [1, 2]))   // lsr says empty
        v = good; v[11] = 3; cases.append(("12 bytes for a fifo of 3", v))
        v = good; v[1] = 0xF0; cases.append(("ier 0xf0", v))
        v = good; v[10] = 0x80; cases.append(("flags 0x80", v))
        for (want, blob) in cases {
            let (rc, why) = try load(ops, d, blob)
            XCTAssertEqual(rc, GVM_ERR_INVALID.rawValue, want)
            XCTAssertTrue(why.hasPrefix("uart16550 state: ") && why.contains(want),
                          "\(want): \(why)")
        }
        // A blob over the bound never reaches the model's parser.
        let (rc, why) = try load(ops, d, [UInt8](repeating: 1, count: Int(GVM_DEVICE_STATE_MAX) + 1))
        XCTAssertEqual(rc, GVM_ERR_INVALID.rawValue)
        XCTAssertTrue(why.contains("exceeds GVM_DEVICE_STATE_MAX"), why)
        // Nothing changed: the instance still has its own state.
        XCTAssertEqual(try save(ops, d), good)
        XCTAssertEqual(io(m, d, offset: 7, readLength: 1), [0x77])
        m.pointee.destroy(d)
        withExtendedLifetime(svc) {}
    }

    func testPort92StateMovesAndAHostileBlobIsRefused() throws {
        try XCTSkipUnless(FileManager.default.fileExists(atPath: Built.plugin("devices")), "run swift build first")
        let ops = try deviceOps("devices")
        let host = FakeDeviceHost(), host2 = FakeDeviceHost(), svc = services("devices")
        let (m, a0, msg) = try makeDevice(plugin: "devices", model: "port92", name: "a20", base: nil, settings: [], host: host, services: svc)
        let (_, b0, msg2) = try makeDevice(plugin: "devices", model: "port92", name: "a20", base: nil, settings: [], host: host2, services: svc)
        let a = try XCTUnwrap(a0, msg), b = try XCTUnwrap(b0, msg2)
        _ = io(m, a, offset: 0, write: [0xc0])   // A20 off, the LED bits on
        let blob = try save(ops, a)
        XCTAssertEqual(blob, [1, 0xc0])
        XCTAssertEqual(try load(ops, b, blob).0, GVM_OK.rawValue)
        XCTAssertEqual(io(m, b, offset: 0, readLength: 1), [0xc0])
        for (bad, want) in [([2, 0xc0], "version 2"), ([1, 0x03], "has the reset bit"), ([1], "1 bytes")] as [([UInt8], String)] {
            let (rc, why) = try load(ops, b, bad)
            XCTAssertEqual(rc, GVM_ERR_INVALID.rawValue, want)
            XCTAssertTrue(why.contains(want), why)
        }
        XCTAssertEqual(io(m, b, offset: 0, readLength: 1), [0xc0], "a refused blob changes nothing")
        m.pointee.destroy(a)
        m.pointee.destroy(b)
        withExtendedLifetime(svc) {}
    }

    func testModelsWithoutATransferSayUnsupported() throws {
        try XCTSkipUnless(FileManager.default.fileExists(atPath: Built.plugin("devices")), "run swift build first")
        let ops = try deviceOps("devices")
        let host = FakeDeviceHost(), svc = services("devices")
        let (m, d0, msg) = try makeDevice(plugin: "devices", model: "irq-lines", name: "lines", base: nil, settings: [], host: host, services: svc)
        let d = try XCTUnwrap(d0, msg)
        var len = 0
        var err = gvm_error()
        XCTAssertEqual(ops.pointee.save_state!(d, nil, 0, &len, &err), GVM_ERR_UNSUPPORTED.rawValue)
        XCTAssertTrue(errorMessage(&err).contains("irq-lines has no state transfer"), errorMessage(&err))
        m.pointee.destroy(d)
        withExtendedLifetime(svc) {}
        // A C plugin built without the hooks: NULL in a table whose size covers them.
        try XCTSkipUnless(FileManager.default.fileExists(atPath: Built.plugin("example-c")), "run swift build first")
        let c = try deviceOps("example-c")
        XCTAssertNil(c.pointee.save_state)
        XCTAssertNil(c.pointee.load_state)
    }
}
