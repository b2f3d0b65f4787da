import XCTest
import TestSupport
import PluginAPI

/// `giantvm plugins describe`: the ABI 3 self-description of every in-tree plugin, read from its
/// descriptor by the built binary.
final class PluginsDescribeTests: XCTestCase {
    override func setUpWithError() throws { try Requirement.builtGiantVM() }

    func describe(_ plugin: String) throws -> ProcessResult { try giantvm(["plugins", "describe", plugin]) }

    func testCoherencePluginPrintsItsStateTableAndSettings() throws {
        let r = try describe("dsm-ivy")
        XCTAssertEqual(r.status, 0, r.output)
        XCTAssertTrue(r.stdout.hasPrefix("dsm-ivy 0.1.0 — coherence plugin, ABI \(GVM_ABI_VERSION)"), r.stdout)
        XCTAssertTrue(r.stdout.contains("state table:"), r.stdout)
        XCTAssertTrue(r.stdout.contains("Cache controller transitions"), "the Ivy table itself: \(r.stdout)")
        let rows = r.stdout.split(separator: "\n").map { $0.split(separator: " ", omittingEmptySubsequences: true) }
        func row(_ key: String) -> [Substring]? { rows.first { $0.first.map(String.init) == key } }
        // Every key dsm-ivy accepts, with the default the plugin really uses.
        XCTAssertEqual(row("hold_time")?.dropFirst().first, "20us")
        XCTAssertEqual(row("manager_chunk")?.dropFirst().first, "auto")
        XCTAssertEqual(row("request_timeout")?.dropFirst().first, "10s")
        XCTAssertEqual(row("send_wait")?.dropFirst().first, "5s")
    }

    func testDeclaredSettingsAreExactlyTheAcceptedOnes() throws {
        // A key not declared is refused by the plugin with the declared list: what `describe`
        // prints is what the plugin accepts.
        let r = try describe("transport-tcp")
        XCTAssertEqual(r.status, 0, r.output)
        for key in ["connect_timeout", "handshake_timeout", "retry_interval", "send_queue_limit", "listen_address",
                    "nodelay", "max_pending_handshakes"] {
            XCTAssertTrue(r.stdout.contains("\n  \(key) "), "\(key) declared: \(r.stdout)")
        }
        XCTAssertTrue(r.stdout.contains("max_pending_handshakes  32 "), r.stdout)
    }

    func testDevicePluginListsModelsAndPerModelSettings() throws {
        let r = try describe("devices")
        XCTAssertEqual(r.status, 0, r.output)
        XCTAssertTrue(r.stdout.contains("models (19):"), r.stdout)
        for model in ["uart16550", "isa-debug-exit", "results", "fw-cfg", "pci-host"] {
            XCTAssertTrue(r.stdout.contains("\n  \(model)"), "\(model) listed: \(r.stdout)")
        }
        guard let exitAt = r.stdout.range(of: "  isa-debug-exit:\n") else { return XCTFail(r.stdout) }
        XCTAssertTrue(r.stdout[exitAt.upperBound...].hasPrefix("    KEY     DEFAULT  MEANING\n    iosize  4 "), r.stdout)
        XCTAssertTrue(r.stdout.contains("  uart16550:\n    (no settings)"), r.stdout)
    }

    func testCPluginsByPathDescribeThemselves() throws {
        let r = try describe(Built.plugin("example-c"))
        XCTAssertEqual(r.status, 0, r.output)
        XCTAssertTrue(r.stdout.contains("example-c 0.1.0 — device plugin, ABI \(GVM_ABI_VERSION)"), r.stdout)
        XCTAssertTrue(r.stdout.contains("  scratch:\n    KEY      DEFAULT  MEANING\n    initial  0 "), r.stdout)
        let rdma = Built.plugin("transport-rdma")
        if FileManager.default.fileExists(atPath: rdma) {
            let t = try describe(rdma)
            XCTAssertEqual(t.status, 0, t.output)
            XCTAssertTrue(t.stdout.contains("\n  cm_port_offset     1000 "), t.stdout)
        }
    }

    func testACoherencePluginDescribesItsTablesAndSettings() throws {
        // The description comes from the descriptor, not an instance (nothing is created).
        let r = try describe("dsm-tso")
        XCTAssertEqual(r.status, 0, r.output)
        XCTAssertTrue(r.stdout.contains("\n  relaxed            none "), r.stdout)
        XCTAssertTrue(r.stdout.contains("\n  flush_interval "), r.stdout)
        XCTAssertTrue(r.stdout.contains("mw transitions"), r.stdout)
        XCTAssertTrue(r.stdout.range(of: #"\n  read_ahead +0 "#, options: .regularExpression) != nil,
                      "dsm-tso reads ahead only when asked: \(r.stdout)")
        let local = try describe("dsm-local")
        XCTAssertTrue(local.stdout.contains("INVALID  + read  -> install zeros SHARED"), local.stdout)
        XCTAssertTrue(local.stdout.hasSuffix("settings: none\n"), local.stdout)
    }

    func testUnknownPluginFailsNamingWhereItLooked() throws {
        let r = try describe("no-such-plugin")
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.stderr.contains("plugin 'no-such-plugin' not found: looked for libno-such-plugin.so in"), r.stderr)
        let bad = try describe(Built.plugin("test-abi-too-old"))
        XCTAssertEqual(bad.status, 1)
        XCTAssertTrue(bad.stderr.contains("older than the oldest this giantvm supports (4)"), bad.stderr)
    }
}
