import XCTest
import PluginAPI
import PluginHost
import Metrics
import Logging
import Config
import TestSupport

/// transport-rdma is real verbs code; on a machine without an RDMA device its create() must fail
/// with a message naming the cause, never crash. Where a device exists, create must succeed.
final class TransportRDMATests: XCTestCase {
    func testCreateFailsCleanlyWithoutAnRDMADevice() throws {
        try XCTSkipUnless(FileManager.default.fileExists(atPath: Built.plugin("transport-rdma")), "run swift build first")
        let loader = PluginLoader(searchPath: [Built.productsDirectory])
        let p = try loader.load("transport-rdma", kind: .transport)
        let ops = try XCTUnwrap(p.transportOps)
        let svc = HostServicesTable(pluginName: p.name, metrics: MetricsRegistry(), logger: Logger(label: "t")) { _ in }
        let cluster = ClusterInfoTable(config: ClusterConfigFixture.make(), selfID: 0)
        var th = gvm_transport_host()
        th.size = UInt32(MemoryLayout<gvm_transport_host>.size)
        th.deliver = { _, _, _, _, _ in }
        th.peer_state = { _, _, _, _ in }
        th.auth_sign = { _, _, _, _, _ in 0 }
        th.auth_verify = { _, _, _, _, _, _, _ in GVM_OK.rawValue }
        var err = gvm_error()
        let hasDevice = (try? FileManager.default.contentsOfDirectory(atPath: "/sys/class/infiniband"))?.isEmpty == false
        let inst = ops.pointee.create(svc.pointer, &th, cluster.pointer, nil, 0, &err)
        if hasDevice {
            XCTAssertNotNil(inst, errorMessage(&err))
            if let inst { ops.pointee.destroy(inst) }
        } else {
            XCTAssertNil(inst)
            let msg = errorMessage(&err)
            XCTAssertTrue(msg.hasPrefix("no RDMA device found"), msg)
            XCTAssertTrue(msg.contains("use transport-tcp instead"), msg)
        }
        // Bad settings are refused before any device is touched.
        let st = SettingsTable([("ib_port", "zero")])
        var err2 = gvm_error()
        XCTAssertNil(ops.pointee.create(svc.pointer, &th, cluster.pointer, st.pointer, st.count, &err2))
        XCTAssertEqual(errorMessage(&err2), "setting 'ib_port': 'zero' is not a valid value")
        // Durations and sizes follow the config's one grammar (a bare number is seconds, bytes).
        for (key, value, expect) in [("connect_timeout", "10 parsecs", "unknown unit"), ("handshake_timeout", "2h", "above the maximum"),
                                     ("send_queue_limit", "1KB", "ambiguous"), ("connect_timeout_ms", "5000", "unknown setting")] {
            let bad = SettingsTable([(key, value)])
            var e = gvm_error()
            XCTAssertNil(ops.pointee.create(svc.pointer, &th, cluster.pointer, bad.pointer, bad.count, &e))
            let m = errorMessage(&e)
            XCTAssertTrue(m.contains(key) && m.contains(expect), "\(key): \(m)")
        }
    }
}
