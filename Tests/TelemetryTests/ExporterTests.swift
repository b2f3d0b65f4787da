// The live metrics of a node: the exporter's Prometheus text (swift-prometheus), the HTTP
// listener, the text reader and `giantvm top`'s screen.

import Config
import Foundation
import Metrics
@testable import Telemetry
import XCTest

final class ExporterTests: XCTestCase {
    func counter(_ samples: [PrometheusSample], _ name: String) -> Double? {
        samples.first { $0.name == name }?.value
    }

    func testStandardCountersHistogramsAndHotPagesRise() throws {
        let m = MetricsRegistry()
        let readMiss = m.counter("dsm.fault.read_miss"), ipi = m.counter("cpu.ipi_forwarded")
        let lat = m.histogram("dsm.fault_latency")
        m.add(readMiss, 3)
        m.record(lat, nanoseconds: 999)     // before the exporter: not mirrored
        final class Pages: @unchecked Sendable { var top: [(gfn: UInt64, faults: UInt64)] = [(0x10, 7), (0x2, 5)] }
        let pages = Pages()
        let e = NodeExporter(nodeID: 3, metrics: m, hotPages: 2, memoryCounters: { ["memory.uffd_missing": 11] },
                             hottest: { n in Array(pages.top.prefix(n)) })
        m.record(lat, nanoseconds: 30_000)
        m.record(lat, nanoseconds: 3_000_000)
        let text1 = e.render()
        XCTAssertTrue(text1.contains("# TYPE giantvm_dsm_fault_read_miss_total counter"), text1)
        XCTAssertTrue(text1.contains(#"giantvm_dsm_fault_read_miss_total{node="3"} 3"#), text1)
        XCTAssertTrue(text1.contains(#"giantvm_cpu_ipi_forwarded_total{node="3"} 0"#), text1)
        XCTAssertTrue(text1.contains(#"giantvm_memory_uffd_missing_total{node="3"} 11"#), text1)
        XCTAssertTrue(text1.contains("# TYPE giantvm_dsm_fault_latency_seconds histogram"), text1)
        XCTAssertTrue(text1.contains(#"giantvm_dsm_fault_latency_seconds_bucket{node="3",le="0.00002"} 0"#), text1)
        XCTAssertTrue(text1.contains(#"giantvm_dsm_fault_latency_seconds_bucket{node="3",le="0.00005"} 1"#), text1)
        XCTAssertTrue(text1.contains(#"giantvm_dsm_fault_latency_seconds_count{node="3"} 2"#), text1)
        XCTAssertTrue(text1.contains(#"giantvm_page_faults{node="3",gfn="0x10"} 7.0"#), text1)
        XCTAssertTrue(text1.contains(#"giantvm_page_faults{node="3",gfn="0x2"} 5.0"#), text1)
        let s1 = PrometheusText.parse(text1)
        // More faults; page 0x2 leaves the top, 0x33 enters.
        m.add(readMiss, 4); m.add(ipi)
        pages.top = [(0x33, 40), (0x10, 9)]
        let s2 = PrometheusText.parse(e.render())
        XCTAssertEqual(counter(s2, "giantvm_dsm_fault_read_miss_total"), 7)
        XCTAssertGreaterThan(counter(s2, "giantvm_dsm_fault_read_miss_total")!, counter(s1, "giantvm_dsm_fault_read_miss_total")!)
        XCTAssertEqual(counter(s2, "giantvm_cpu_ipi_forwarded_total"), 1)
        let hot = s2.filter { $0.name == "giantvm_page_faults" }.map { $0.labels["gfn"]! }
        XCTAssertEqual(Set(hot), ["0x33", "0x10"])
    }

    func testExportNames() {
        XCTAssertEqual(NodeExporter.exportName("dsm.fault.read_miss", suffix: "_total"), "giantvm_dsm_fault_read_miss_total")
        XCTAssertEqual(NodeExporter.exportName("io.forward_round_trip", suffix: "_seconds"), "giantvm_io_forward_round_trip_seconds")
        XCTAssertEqual(NodeExporter.exportName("ivy.x-y 9", suffix: ""), "giantvm_ivy_x_y_9")
    }

    func testTextReader() {
        let s = PrometheusText.parse("""
            # HELP a help
            # TYPE a counter
            a_total{node="0",gfn="0x1f"} 12
            b 3.5
            c{le="+Inf",q="say \\"hi\\""} 2
            d{x="1"} +Inf
            garbage line
            """)
        XCTAssertEqual(s.count, 4)
        XCTAssertEqual(s[0], PrometheusSample(name: "a_total", labels: ["node": "0", "gfn": "0x1f"], value: 12))
        XCTAssertEqual(s[1], PrometheusSample(name: "b", labels: [:], value: 3.5))
        XCTAssertEqual(s[2].labels, ["le": "+Inf", "q": "say \"hi\""])
        XCTAssertEqual(s[3].value, .infinity)
    }

    func testServerAnswersMetricsOnlyAndStops() throws {
        let calls = CallCounter()
        let server = try MetricsServer(address: "127.0.0.1", port: 0) { calls.bump(); return "x_total 1\n" }
        let port = server.port
        XCTAssertNotEqual(port, 0)
        let r = try HTTPGet.get(host: "127.0.0.1", port: port, timeout: 2)
        XCTAssertEqual(r.status, 200)
        XCTAssertEqual(r.body, "x_total 1\n")
        XCTAssertEqual(try HTTPGet.get(host: "127.0.0.1", port: port, path: "/", timeout: 2).status, 404)
        XCTAssertEqual(try HTTPGet.get(host: "localhost", port: port, timeout: 2).status, 200, "a host name resolves")
        XCTAssertEqual(calls.value, 2, "only /metrics builds the body")
        // A second listener on the same port is refused with the address named.
        XCTAssertThrowsError(try MetricsServer(address: "127.0.0.1", port: port) { "" }) { e in
            XCTAssertTrue("\(e)".contains("cannot listen on 127.0.0.1:\(port): Address already in use"), "\(e)")
        }
        server.stop()
        XCTAssertThrowsError(try HTTPGet.get(host: "127.0.0.1", port: port, timeout: 1)) { e in
            XCTAssertTrue("\(e)".contains("Connection refused"), "\(e)")
        }
    }

    func testTopScreenShowsRatesPerNodeAndHottestPages() throws {
        let m = MetricsRegistry()
        let rm = m.counter("dsm.fault.read_miss"), wm = m.counter("dsm.fault.write_miss"), tx = m.counter("dsm.bytes.sent")
        let lat = m.histogram("dsm.fault_latency")
        let e = NodeExporter(nodeID: 0, metrics: m, hotPages: 3, hottest: { _ in [(0x42, 100)] })
        let a = NodeScrape(node: 0, endpoint: "127.0.0.1:9400", time: 10, samples: PrometheusText.parse(e.render()))
        m.add(rm, 200); m.add(wm, 50); m.add(tx, 2048)
        for _ in 0..<100 { m.record(lat, nanoseconds: 40_000) }
        let b = NodeScrape(node: 0, endpoint: "127.0.0.1:9400", time: 12, samples: PrometheusText.parse(e.render()))
        let down = NodeScrape(node: 1, endpoint: "127.0.0.1:9401", time: 12, samples: [], error: "127.0.0.1:9401: Connection refused")
        let r = NodeRates(previous: a, current: b)
        XCTAssertEqual(r.readMiss, 100)
        XCTAssertEqual(r.writeMiss, 25)
        XCTAssertEqual(r.txBytes, 1024)
        XCTAssertEqual(r.p50Micros, 50)
        let screen = TopSession.render(cluster: "demo", previous: [0: a], current: [b, down], hotRows: 3)
        XCTAssertTrue(screen.hasPrefix("giantvm top: cluster demo, 2 nodes"), screen)
        let row = screen.split(separator: "\n").first { $0.hasPrefix("0     127.0.0.1:9400") }.map(String.init) ?? ""
        XCTAssertEqual(row.split(separator: " ").dropFirst(2).prefix(3), ["100", "25", "0"], screen)
        XCTAssertTrue(row.contains("≤50"), row)
        XCTAssertTrue(screen.contains("1     127.0.0.1:9401         unreachable: 127.0.0.1:9401: Connection refused"), screen)
        XCTAssertTrue(screen.contains("node 0 hottest: 0x42 0/s (100)"), screen)
    }

    func testTopNeedsMetricsSection() throws {
        let cfg = ClusterConfig(cluster: "x", nodes: [NodeConfig(id: 0, address: "127.0.0.1", port: 1, vcpus: 1)])
        XCTAssertThrowsError(try TopSession(config: cfg)) { e in XCTAssertTrue("\(e)".contains("metrics: not set"), "\(e)") }
    }
}

final class CallCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var n = 0
    func bump() { lock.lock(); n += 1; lock.unlock() }
    var value: Int { lock.lock(); defer { lock.unlock() }; return n }
}
