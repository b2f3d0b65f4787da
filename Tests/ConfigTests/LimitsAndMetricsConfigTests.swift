// The node and vCPU limits of one VM, and the `metrics:` section.

import Config
import XCTest

final class LimitsAndMetricsConfigTests: XCTestCase {
    func yaml(nodes: Int, vcpus: Int, metrics: String = "") -> String {
        var text = "cluster: big\nnodes:\n"
        for i in 0..<nodes { text += "  - {id: \(i), address: 127.0.0.1, port: \(20000 + i), vcpus: \(vcpus)}\n" }
        text += "transport: transport-tcp\ncoherence: dsm-ivy\n" + metrics
        return text
    }

    func problems(_ text: String) -> [Diagnostic] {
        do { _ = try ConfigLoader.parse(yaml: text, path: "/cfg/big.yaml"); return [] } catch let e as ConfigError {
            return e.diagnostics
        } catch { XCTFail("\(error)"); return [] }
    }

    func testLimitsOnNodesAndVCPUs() throws {
        XCTAssertEqual(ClusterConfig.maxNodes, 64)
        XCTAssertEqual(ClusterConfig.maxVCPUs, 255)
        // At the limits: 64 nodes; 255 vCPUs (85 x 3 would be too many nodes, so 51 x 5).
        XCTAssertEqual(try ConfigLoader.parse(yaml: yaml(nodes: 64, vcpus: 1), path: "t").nodes.count, 64)
        XCTAssertEqual(try ConfigLoader.parse(yaml: yaml(nodes: 51, vcpus: 5), path: "t").totalVCPUs, 255)
        // Past them: refused, naming the field and the reason.
        let tooMany = problems(yaml(nodes: 65, vcpus: 1))
        XCTAssertEqual(tooMany.map(\.description),
                       ["/cfg/big.yaml:3:3: nodes: 65 nodes: a VM has at most 64 (the coherence protocol keeps a page's sharers as a 64-bit mask)"])
        let cpus = problems(yaml(nodes: 4, vcpus: 64))
        XCTAssertEqual(cpus.map(\.description),
                       ["/cfg/big.yaml:3:3: nodes: 256 vCPUs in all: a VM has at most 255 (xAPIC ids are 8 bits; 0xFF is broadcast)"])
        // The 8-node and 4 x 2 layouts the many-node tests run are well inside.
        XCTAssertEqual(try ConfigLoader.parse(yaml: yaml(nodes: 8, vcpus: 1), path: "t").totalVCPUs, 8)
    }

    func testMetricsSection() throws {
        XCTAssertNil(try ConfigLoader.parse(yaml: yaml(nodes: 2, vcpus: 1), path: "t").metrics)
        let c = try ConfigLoader.parse(yaml: yaml(nodes: 3, vcpus: 1, metrics: "metrics: {address: 127.0.0.1, port: 9400}\n"), path: "t")
        XCTAssertEqual(c.metrics, MetricsConfig(address: "127.0.0.1", port: 9400, hotPages: 10))
        XCTAssertEqual(c.metrics?.port(of: 2), 9402)
        XCTAssertEqual(c.metrics.map { $0.endpoint(of: c.nodes[1]) }.map { "\($0.host):\($0.port)" }, "127.0.0.1:9401")
        // Every interface: clients reach each node at its own address.
        let anyText = yaml(nodes: 2, vcpus: 1, metrics: "metrics: {address: 0.0.0.0, port: 9500, hot_pages: 3}\n")
            .replacingOccurrences(of: "address: 127.0.0.1, port: 20001", with: "address: 10.0.0.2, port: 20001")
        let any = try ConfigLoader.parse(yaml: anyText, path: "t")
        XCTAssertEqual(any.metrics?.hotPages, 3)
        XCTAssertEqual(any.metrics.map { $0.endpoint(of: any.nodes[1]) }.map { "\($0.host):\($0.port)" }, "10.0.0.2:9501")
        // Defaults.
        XCTAssertEqual(try ConfigLoader.parse(yaml: yaml(nodes: 1, vcpus: 1, metrics: "metrics: {}\n"), path: "t").metrics, MetricsConfig())
    }

    func testMetricsProblemsNameFieldAndCause() {
        let d = problems(yaml(nodes: 4, vcpus: 1, metrics: "metrics: {address: localhost, port: 65534, hot_pages: 500, colour: red}\n"))
        let text = d.map(\.description)
        XCTAssertTrue(text.contains { $0.contains("metrics.address: 'localhost' is not an IPv4 address") }, "\(text)")
        XCTAssertTrue(text.contains { $0.contains("metrics.port: node 3 would listen on 65537: the base port plus the node id must be a port") }, "\(text)")
        XCTAssertTrue(text.contains { $0.contains("metrics.hot_pages: 500 is not a page count (0-100)") }, "\(text)")
        XCTAssertTrue(text.contains { $0.contains("unknown field 'colour'") }, "\(text)")
        XCTAssertTrue(text.allSatisfy { $0.hasPrefix("/cfg/big.yaml:9:") }, "\(text)")
        // Metrics ports that are cluster ports (nodes listen on 20000 + i).
        let clash = problems(yaml(nodes: 3, vcpus: 1, metrics: "metrics: {port: 20001}\n")).map(\.description)
        XCTAssertEqual(clash, ["/cfg/big.yaml:8:17: metrics.port: node 0 would serve metrics on 127.0.0.1:20001, the cluster port of nodes[1]"])
    }
}
