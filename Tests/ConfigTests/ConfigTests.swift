import XCTest
import Config
import TestSupport

final class ConfigTests: XCTestCase {
    let good = """
        cluster: demo
        nodes:
          - {id: 0, address: 127.0.0.1, port: 17100, vcpus: 2}
          - {id: 1, address: 127.0.0.1, port: 17101, vcpus: 1}
        memory: 128MiB
        transport: {plugin: transport-tcp, settings: {nodelay: true, retries: 5}}
        coherence: dsm-ivy
        devices:
          - {name: com1, model: uart16550, node: 1, base: 0x3f8, irq: 4}
        guest: {image: guest.elf, cmdline: "counter iters=10"}
        timeouts: {connect: 5s, heartbeat: 100ms, failure: 1}
        """

    func diagnostics(_ yaml: String) -> [Diagnostic] {
        do {
            _ = try ConfigLoader.parse(yaml: yaml, path: "/cfg/test.yaml")
            XCTFail("expected a ConfigError")
            return []
        } catch let e as ConfigError {
            return e.diagnostics
        } catch {
            XCTFail("unexpected error \(error)")
            return []
        }
    }

    func testGoodConfigParsesEveryField() throws {
        let c = try ConfigLoader.parse(yaml: good, path: "/cfg/test.yaml")
        XCTAssertEqual(c.cluster, "demo")
        XCTAssertEqual(c.nodes, [NodeConfig(id: 0, address: "127.0.0.1", port: 17100, vcpus: 2),
                                 NodeConfig(id: 1, address: "127.0.0.1", port: 17101, vcpus: 1)])
        XCTAssertEqual(c.memoryBytes, 128 << 20)
        XCTAssertEqual(c.transport.plugin, "transport-tcp")
        XCTAssertEqual(c.transport.setting("nodelay"), "true")
        XCTAssertEqual(c.transport.setting("retries"), "5")
        XCTAssertEqual(c.coherence.plugin, "dsm-ivy")
        XCTAssertEqual(c.devices.count, 1)
        XCTAssertEqual(c.devices[0].plugin, "devices")
        XCTAssertEqual(c.devices[0].base, 0x3f8)
        XCTAssertEqual(c.devices[0].irq, 4)
        XCTAssertEqual(c.devices[0].node, 1)
        XCTAssertEqual(c.guest?.image, "/cfg/guest.elf", "relative paths resolve against the config's directory")
        XCTAssertEqual(c.guest?.cmdline, "counter iters=10")
        XCTAssertEqual(c.timeouts.connect, 5)
        XCTAssertEqual(c.timeouts.heartbeat, 0.1, accuracy: 1e-9)
        XCTAssertEqual(c.timeouts.failure, 1)
        XCTAssertEqual(c.totalVCPUs, 3)
        XCTAssertEqual(c.firstVCPU(of: 1), 2)
        XCTAssertEqual(c.node(ofVCPU: 1), 0)
        XCTAssertEqual(c.node(ofVCPU: 2), 1)
        XCTAssertNil(c.node(ofVCPU: 3))
    }

    func testPortOutOfRangeNamesFieldLineAndColumn() {
        let d = diagnostics(good.replacingOccurrences(of: "port: 17101", with: "port: 70000"))
        XCTAssertEqual(d.map(\.description), ["/cfg/test.yaml:4:39: nodes[1].port: 70000 is not a port"])
    }

    func testYAMLSyntaxErrorHasLineAndColumn() {
        let d = diagnostics("cluster: demo\nnodes: [\n  {id: 0\n")
        XCTAssertEqual(d.count, 1)
        XCTAssertTrue(d[0].message.hasPrefix("YAML syntax error"), d[0].message)
        XCTAssertGreaterThan(d[0].line, 1)
        XCTAssertGreaterThan(d[0].column, 0)
    }

    func testWrongType() {
        let d = diagnostics(good.replacingOccurrences(of: "vcpus: 2", with: "vcpus: many"))
        XCTAssertEqual(d.map(\.description), ["/cfg/test.yaml:3:53: nodes[0].vcpus: expected an integer, got 'many'"])
        let d2 = diagnostics(good.replacingOccurrences(of: "nodes:\n", with: "nodes: 3\nx:\n"))
        XCTAssertTrue(d2.contains { $0.path == "nodes" && $0.message.contains("expected a list of nodes") }, "\(d2)")
    }

    func testDuplicateNodeID() {
        let d = diagnostics(good.replacingOccurrences(of: "id: 1,", with: "id: 0,"))
        XCTAssertTrue(d.contains { $0.description == "/cfg/test.yaml:4:10: nodes[1].id: duplicate node id 0 (also nodes[0])" }, "\(d)")
    }

    func testGapInNodeIDs() {
        let d = diagnostics(good.replacingOccurrences(of: "id: 1,", with: "id: 2,"))
        XCTAssertTrue(d.contains { $0.path == "nodes" && $0.message.contains("missing id 1") }, "\(d)")
    }

    func testDuplicateKey() {
        let d = diagnostics(good + "\ncluster: again\n")
        XCTAssertEqual(d.count, 1)
        XCTAssertTrue(d[0].message.contains("duplicate key 'cluster'"), d[0].message)
        XCTAssertEqual(d[0].line, 1)
    }

    func testUnknownField() {
        let d = diagnostics(good.replacingOccurrences(of: "memory: 128MiB", with: "memroy: 128MiB"))
        XCTAssertEqual(d.count, 1)
        XCTAssertEqual(d[0].path, "memroy")
        XCTAssertEqual(d[0].line, 5)
        XCTAssertEqual(d[0].column, 1)
        XCTAssertTrue(d[0].message.contains("unknown field 'memroy'"))
        XCTAssertTrue(d[0].message.contains("memory"), "lists the accepted fields")
    }

    func testEmptyFile() {
        for text in ["", "\n\n", "# only a comment\n"] {
            let d = diagnostics(text)
            XCTAssertEqual(d.count, 1)
            XCTAssertTrue(d[0].message.contains("empty"), d[0].message)
        }
    }

    func testNotAMapping() {
        let d = diagnostics("- just\n- a list\n")
        XCTAssertEqual(d.first?.message, "expected a mapping, got a list")
    }

    func testMissingRequiredSections() {
        let d = diagnostics("cluster: x\n")
        XCTAssertEqual(Set(d.map(\.path)), ["nodes", "transport", "coherence"])
    }

    func testEveryProblemIsReportedNotJustTheFirst() {
        let bad = good.replacingOccurrences(of: "port: 17101", with: "port: -1")
            .replacingOccurrences(of: "memory: 128MiB", with: "memory: 1000")
            .replacingOccurrences(of: "irq: 4", with: "irq: 99")
            .replacingOccurrences(of: "node: 1,", with: "node: 7,")
        let d = diagnostics(bad)
        XCTAssertEqual(d.map(\.path), ["nodes[1].port", "memory", "devices[0].node", "devices[0].irq"], "\(d)")
        XCTAssertEqual(d.map(\.line), d.map(\.line).sorted(), "sorted by position")
    }

    func testSizesAndDurations() throws {
        for (text, bytes) in [("1GiB", UInt64(1) << 30), ("4096", 4096 * 256), ("2M", 2 << 20)] {
            let yaml = good.replacingOccurrences(of: "128MiB", with: text == "4096" ? "1048576" : text)
            XCTAssertEqual(try ConfigLoader.parse(yaml: yaml, path: "t").memoryBytes, text == "4096" ? 1 << 20 : bytes)
        }
        let d = diagnostics(good.replacingOccurrences(of: "heartbeat: 100ms", with: "heartbeat: soon"))
        XCTAssertEqual(d.first?.path, "timeouts.heartbeat")
        let d2 = diagnostics(good.replacingOccurrences(of: "failure: 1", with: "failure: 150ms"))
        XCTAssertEqual(d2.first?.path, "timeouts")
    }

    func testDeviceChecks() {
        let twice = good.replacingOccurrences(of: "devices:\n", with: "devices:\n  - {name: com1, model: x}\n")
        let d = diagnostics(twice)
        XCTAssertTrue(d.contains { $0.message.contains("duplicate device name 'com1'") }, "\(d)")
        let noModel = good.replacingOccurrences(of: "model: uart16550, ", with: "")
        XCTAssertTrue(diagnostics(noModel).contains { $0.path == "devices[0].model" })
    }

    func testNestedSettingIsRejected() {
        let d = diagnostics(good.replacingOccurrences(of: "retries: 5", with: "retries: {a: 1}"))
        XCTAssertEqual(d.first?.path, "transport.settings.retries")
    }

    func testMissingFileAndDirectory() {
        XCTAssertThrowsError(try ConfigLoader.load(path: "/nonexistent/giantvm.yaml")) { e in
            XCTAssertEqual("\(e)", "/nonexistent/giantvm.yaml: no such file")
        }
    }

    func testEveryExampleValidates() throws {
        let dir = Built.packageRoot + "/examples"
        let files = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasSuffix(".yaml") }
        XCTAssertFalse(files.isEmpty)
        for f in files {
            XCTAssertNoThrow(try ConfigLoader.load(path: dir + "/" + f), f)
        }
    }
}
