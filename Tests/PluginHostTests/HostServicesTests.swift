import XCTest
import PluginAPI
import PluginHost
import Metrics
import Logging

final class HostServicesTests: XCTestCase {
    func testCountersHistogramsAndFatalThroughTheCTable() {
        let metrics = MetricsRegistry()
        var fatal: [String] = []
        let t = HostServicesTable(pluginName: "p", metrics: metrics, logger: Logger(label: "t")) { fatal.append($0) }
        let s = t.pointer.pointee
        let c = s.counter(s.host, "p.events")
        XCTAssertEqual(s.counter(s.host, "p.events"), c, "same name, same handle")
        s.counter_add(s.host, c, 5)
        s.counter_add(s.host, c, 2)
        let h = s.histogram(s.host, "p.latency")
        for v in [1000, 2000, 3000, 4000] as [UInt64] { s.histogram_record(s.host, h, v) }
        s.fatal(s.host, "disk on fire")
        let snap = metrics.snapshot()
        XCTAssertEqual(snap.counters["p.events"], 7)
        XCTAssertEqual(snap.histograms["p.latency"]?.count, 4)
        XCTAssertEqual(Double(snap.histograms["p.latency"]!.p50), 2000, accuracy: 2)
        XCTAssertEqual(fatal, ["p: disk on fire"])
        XCTAssertTrue(snap.table(title: "node 0").contains("p.events"))
        XCTAssertTrue(snap.json().contains("\"p.events\" : 7"))
    }

    func testTimersFireAndCancelStopsThem() {
        let metrics = MetricsRegistry()
        let t = HostServicesTable(pluginName: "p", metrics: metrics, logger: Logger(label: "t")) { _ in }
        let s = t.pointer.pointee
        let fired = UnsafeMutablePointer<Int>.allocate(capacity: 1)
        fired.initialize(to: 0)
        let id = s.timer_start(s.host, 1_000_000, 2_000_000, { ctx in
            ctx!.assumingMemoryBound(to: Int.self).pointee += 1
        }, fired)
        XCTAssertGreaterThan(id, 0)
        usleep(60_000)
        s.timer_cancel(s.host, id)
        let atCancel = fired.pointee
        XCTAssertGreaterThan(atCancel, 5, "a 2 ms periodic timer fires many times in 60 ms")
        usleep(20_000)
        XCTAssertEqual(fired.pointee, atCancel, "no call after cancel returned")
        fired.deallocate()
    }

    func testClusterAndSettingsTables() {
        let cfg = ClusterConfigFixture.make()
        let ci = ClusterInfoTable(config: cfg, selfID: 1)
        let p = ci.pointer.pointee
        XCTAssertEqual(String(cString: p.cluster_name), "t")
        XCTAssertEqual(p.self_id, 1)
        XCTAssertEqual(p.node_count, 2)
        XCTAssertEqual(p.nodes[1].first_vcpu, 2)
        XCTAssertEqual(String(cString: p.nodes[1].address), "10.0.0.2")
        XCTAssertEqual(p.total_vcpus, 3)
        let st = SettingsTable([("a", "1"), ("b", "two")])
        XCTAssertEqual(st.count, 2)
        XCTAssertEqual(String(cString: st.pointer![1].value), "two")
        XCTAssertNil(SettingsTable([]).pointer)
    }
}

import Config
enum ClusterConfigFixture {
    static func make() -> ClusterConfig {
        ClusterConfig(cluster: "t", nodes: [NodeConfig(id: 0, address: "10.0.0.1", port: 1, vcpus: 2),
                                           NodeConfig(id: 1, address: "10.0.0.2", port: 2, vcpus: 1)])
    }
}
