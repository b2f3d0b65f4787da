// End to end through the built artefacts: dsm-local loaded as a .so by the real plugin loader,
// and the `giantvm bench fault` command (including the message an unprivileged user gets).

import Foundation
import GuestMemory
import Logging
import Metrics
import PluginAPI
import PluginHost
import Synchronization
import TestSupport
import XCTest

final class EndToEndTests: XCTestCase {
    func testDsmLocalSharedObjectThroughThePluginLoader() throws {
        try requireUserfaultfd()
        let dir = Built.productsDirectory
        guard FileManager.default.fileExists(atPath: dir + "/libdsm-local.so") else {
            throw XCTSkip("libdsm-local.so not built in \(dir); run `swift build` first")
        }
        let loaded = try PluginLoader(searchPath: [dir]).load("dsm-local", kind: .coherence)
        XCTAssertEqual(loaded.name, "dsm-local")
        let memory = try GuestMemory(bytes: 32 * 4096, send: { _, _ in GVM_ERR_CLOSED.rawValue },
                                     sendUrgent: { _, _ in GVM_ERR_CLOSED.rawValue })
        let cluster = SingleNodeClusterInfo(memoryBytes: 32 * 4096)
        let metrics = MetricsRegistry()
        let services = HostServicesTable(pluginName: "dsm-local", metrics: metrics, logger: Logger(label: "test"),
                                         onFatal: { XCTFail("fatal: \($0)") })
        let plugin = try CoherencePluginInstance(name: "dsm-local", ops: loaded.coherenceOps!, services: services.pointer,
                                                 memory: memory, cluster: cluster.pointer)
        try plugin.start()
        try memory.start()
        defer { memory.stop(); plugin.stop() }
        // describe() reports the protocol table.
        var buf = [CChar](repeating: 0, count: 1024)
        _ = loaded.coherenceOps!.pointee.describe!(plugin.instance, &buf, buf.count)
        XCTAssertTrue(String(cString: buf).hasPrefix("dsm-local: single node"))

        try memory.write(gpa: 4096 * 3 + 10, bytes: Array("hello, guest".utf8))
        XCTAssertEqual(String(decoding: try memory.read(gpa: 4096 * 3 + 10, count: 12), as: UTF8.self), "hello, guest")
        XCTAssertEqual((memory.base + 4096 * 5).load(as: UInt8.self), 0)
        (memory.base + 4096 * 5).storeBytes(of: 7, as: UInt8.self)
        XCTAssertEqual(memory.stats.missingEvents, 1)
        XCTAssertEqual(memory.stats.writeProtectEvents, 1)
        XCTAssertEqual(memory.stats.pinFaults, 1)
        XCTAssertEqual(metrics.value(GVM_STAT_FAULT_WRITE_MISS), 1)
        XCTAssertEqual(metrics.value(GVM_STAT_FAULT_READ_MISS), 1)
        XCTAssertEqual(metrics.value(GVM_STAT_FAULT_UPGRADE), 1)
    }

    func testDsmLocalRefusesUnknownSettings() throws {
        try requireUserfaultfd()
        let dir = Built.productsDirectory
        guard FileManager.default.fileExists(atPath: dir + "/libdsm-local.so") else {
            throw XCTSkip("libdsm-local.so not built in \(dir); run `swift build` first")
        }
        let loaded = try PluginLoader(searchPath: [dir]).load("dsm-local", kind: .coherence)
        let memory = try GuestMemory(bytes: 4096, send: { _, _ in 0 }, sendUrgent: { _, _ in 0 })
        let cluster = SingleNodeClusterInfo(memoryBytes: 4096)
        let services = HostServicesTable(pluginName: "dsm-local", metrics: MetricsRegistry(), logger: Logger(label: "test"),
                                         onFatal: { _ in })
        let key = strdup("prefetch")!, value = strdup("4")!
        defer { free(key); free(value) }
        var setting = gvm_setting(key: key, value: value)
        XCTAssertThrowsError(try CoherencePluginInstance(name: "dsm-local", ops: loaded.coherenceOps!, services: services.pointer,
                                                         memory: memory, cluster: cluster.pointer,
                                                         settings: &setting, settingCount: 1)) { e in
            XCTAssertEqual("\(e)", "coherence plugin dsm-local: unknown setting 'prefetch' (accepted: none)")
        }
    }

    func testBenchFaultCommandPrintsFloorAndRatio() throws {
        try requireUserfaultfd()
        let exe = Built.giantvm
        guard FileManager.default.isExecutableFile(atPath: exe) else { throw XCTSkip("giantvm not built at \(exe)") }
        for mode in ["poll", "spin"] {
            let r = try TestSupport.run(exe, ["bench", "fault", "--mode", mode, "--iterations", "300", "--rounds", "3"])
            XCTAssertFalse(r.timedOut)
            let (status, out, err) = (r.status, r.stdout, r.stderr)
            XCTAssertEqual(status, 0, err)
            let lines = out.split(separator: "\n").map(String.init)
            XCTAssertEqual(lines.count, 5, out)
            XCTAssertTrue(lines[0].contains("handler wake mode \(mode)"), out)
            XCTAssertTrue(lines[2].hasPrefix("floor: C handler, UFFDIO_COPY   300 "), out)
            XCTAssertTrue(lines[3].hasPrefix("GuestMemory + dsm-local         300 "), out)
            XCTAssertTrue(lines[4].hasPrefix("ratio GuestMemory/floor: p50 "), out)
        }
        let bad = try TestSupport.run(exe, ["bench", "fault", "--mode", "busy"])
        let (status, err) = (bad.status, bad.stderr)
        XCTAssertNotEqual(status, 0)
        XCTAssertTrue(err.contains("--mode 'busy' is not one of poll, spin, spin:<microseconds>"), err)
    }

    /// The whole path a user sees: giantvm run as nobody (no right to userfaultfd) says why.
    /// The checkout may sit where user 65534 cannot go (a parent directory of mode 700, as under
    /// `mktemp -d`), so the binary and the plugin it loads are copied to a fresh world-readable
    /// directory first; the test skips, saying why, only if even that cannot be executed.
    func testUnprivilegedBenchSaysWhatRightIsMissing() throws {
        let exe = Built.giantvm
        guard FileManager.default.isExecutableFile(atPath: exe) else { throw XCTSkip("giantvm not built at \(exe)") }
        guard getuid() == 0 else { throw XCTSkip("not root: cannot drop to another user to test the no-right case") }
        let setpriv = ["/usr/bin/setpriv", "/bin/setpriv"].first { FileManager.default.isExecutableFile(atPath: $0) }
        guard let setpriv else { throw XCTSkip("setpriv not installed") }
        let plugin = Built.plugin("dsm-local")
        guard FileManager.default.fileExists(atPath: plugin) else { throw XCTSkip("libdsm-local.so not built at \(plugin)") }
        let fm = FileManager.default
        let dir = fm.temporaryDirectory.appendingPathComponent("giantvm-unprivileged-\(getpid())-\(UInt32.random(in: 0 ... .max))").path
        try fm.createDirectory(atPath: dir, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o755])
        defer { try? fm.removeItem(atPath: dir) }
        for file in [exe, plugin] {
            let to = dir + "/" + (file as NSString).lastPathComponent
            try fm.copyItem(atPath: file, toPath: to)
            try fm.setAttributes([.posixPermissions: 0o755], ofItemAtPath: to)
        }
        let r = try TestSupport.run(setpriv, ["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
                                              dir + "/giantvm", "bench", "fault", "--iterations", "10"], directory: dir)
        XCTAssertFalse(r.timedOut)
        let (status, err) = (r.status, r.stderr)
        if !err.contains("giantvm: error:") && (status == 126 || status == 127 || err.contains("Permission denied")) {
            // e.g. the temporary directory itself lies under a directory user 65534 cannot enter,
            // or is mounted noexec.
            throw XCTSkip("user 65534 cannot execute a copy of giantvm in \(dir) (status \(status)): \(err)")
        }
        XCTAssertNotEqual(status, 0)
        XCTAssertTrue(err.contains("giantvm: error: userfaultfd: permission denied:"), err)
        XCTAssertTrue(err.contains("/dev/userfaultfd"), err)
        XCTAssertTrue(err.contains("root"), err)
    }
}
