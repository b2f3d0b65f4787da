// Metrics.DSMStatistics reads only the standard coherence statistics (GVM_STAT_*) out of a
// snapshot, whatever else the snapshot holds; extras are listed apart by prefix.

import XCTest
import Foundation
import PluginAPI
import PluginHost
import Metrics
import Logging

final class DSMStatisticsTests: XCTestCase {
    /// A registry filled through a plugin's host-services table, as a plugin would.
    func reported(_ counters: [String: UInt64], latencies: [String: [UInt64]] = [:], register all: Bool = true) -> MetricsSnapshot {
        let metrics = MetricsRegistry()
        let svc = HostServicesTable(pluginName: "dsm-test", metrics: metrics, logger: Logger(label: "test"), onFatal: { _ in })
        let t = svc.pointer.pointee
        if all { for name in DSMStatistics.counterNames { _ = t.counter(t.host, name) } }
        for (name, v) in counters { t.counter_add(t.host, t.counter(t.host, name), v) }
        for (name, values) in latencies {
            let h = t.histogram(t.host, name)
            for v in values { t.histogram_record(t.host, h, v) }
        }
        return withExtendedLifetime(svc) { metrics.snapshot() }
    }

    func testTheNamesAreTheHeadersList() {
        XCTAssertEqual(DSMStatistics.counterNames.count, Int(GVM_STAT_COUNTER_COUNT))
        XCTAssertEqual(Set(DSMStatistics.counterNames).count, DSMStatistics.counterNames.count, "duplicate names")
        XCTAssertTrue(DSMStatistics.counterNames.allSatisfy { $0.hasPrefix("dsm.") })
        XCTAssertEqual(DSMStatistics.histogramNames, [GVM_STAT_FAULT_LATENCY, GVM_STAT_FAULT_LATENCY_READ_MISS,
                                                      GVM_STAT_FAULT_LATENCY_WRITE_MISS, GVM_STAT_FAULT_LATENCY_UPGRADE])
        XCTAssertNil(gvm_stat_counter_name(GVM_STAT_COUNTER_COUNT))
        XCTAssertNil(gvm_stat_histogram_name(GVM_STAT_HISTOGRAM_COUNT))
    }

    func testReadsOnlyTheStandardNames() {
        let snap = reported([GVM_STAT_FAULT_READ_MISS: 3, GVM_STAT_FAULT_WRITE_MISS: 5, GVM_STAT_FAULT_UPGRADE: 1,
                             GVM_STAT_PAGES_SENT_DATA: 4, GVM_STAT_PAGES_SENT_NODATA: 2, GVM_STAT_INV_SENT: 7,
                             GVM_STAT_MSG_SENT: 12, GVM_STAT_BYTES_SENT: 16_672,
                             "ivy.fault.read_miss": 99, "ivy.held": 8, "cpu.ipi_forwarded": 6],
                            latencies: [GVM_STAT_FAULT_LATENCY: [40_000, 41_000, 80_000], "ivy.latency.hops_2": [1]])
        let s = DSMStatistics(snapshot: snap)
        XCTAssertEqual(s, snap.dsm)
        XCTAssertEqual(s.readMisses, 3)
        XCTAssertEqual(s.faults, 9)
        XCTAssertEqual(s.pagesMoved, 6)
        XCTAssertEqual(s.invalidationsSent, 7)
        XCTAssertEqual(s.missing, [])
        XCTAssertEqual(Set(s.counters.keys), Set(DSMStatistics.counterNames), "only the standard names, every one")
        XCTAssertEqual(Set(s.histograms.keys), [GVM_STAT_FAULT_LATENCY])
        XCTAssertEqual(s.faultLatency?.count, 3)
        XCTAssertNil(s.readMissLatency)
        XCTAssertTrue(s.summaryLine.hasPrefix("read_miss=3 write_miss=5 upgrade=1 coalesced=0 stale=0 pages_sent=4 "
                                              + "pages_sent_nodata=2 invalidations_sent=7 invalidations_received=0 "
                                              + "msgs_sent=12 bytes_sent=16672 fault_p50_us=41.0 fault_p99_us=80."), s.summaryLine)
        XCTAssertFalse(s.summaryLine.contains("diffs"), "no diff words for a protocol without diffs")
        // JSON: the standard names and nothing else.
        let json = try? JSONSerialization.jsonObject(with: Data(s.json().utf8)) as? [String: Any]
        let counters = json?["counters"] as? [String: Int]
        XCTAssertEqual(counters?[GVM_STAT_INV_SENT], 7)
        XCTAssertEqual(counters?.count, DSMStatistics.counterNames.count)
        XCTAssertNil(counters?["ivy.held"])
        XCTAssertEqual(json?["missing"] as? [String], [])
        // Extras by prefix, as the plugin's own.
        XCTAssertEqual(DSMStatistics.extrasPrefix(plugin: "dsm-ivy"), "ivy.")
        XCTAssertEqual(DSMStatistics.extrasPrefix(plugin: "mine"), "mine.")
        let extras = snap.extras(prefix: DSMStatistics.extrasPrefix(plugin: "dsm-ivy"))
        XCTAssertEqual(extras.counters, ["ivy.fault.read_miss": 99, "ivy.held": 8])
        XCTAssertEqual(Array(extras.histograms.keys), ["ivy.latency.hops_2"])
    }

    func testAPluginWithoutTheStandardNamesShowsAsMissingNotAsSilentZeros() {
        let s = reported(["ivy.fault.read_miss": 4], register: false).dsm
        XCTAssertEqual(s.faults, 0)
        XCTAssertEqual(s.missing, DSMStatistics.counterNames)
        XCTAssertTrue(s.summaryLine.hasSuffix("(plugin reports no standard statistics)"), s.summaryLine)
        // Reported zeros are not missing.
        XCTAssertEqual(reported([:]).dsm.missing, [])
    }

    func testTotalsAddUpAcrossNodes() {
        let a = reported([GVM_STAT_FAULT_READ_MISS: 3, GVM_STAT_MSG_SENT: 10], latencies: [GVM_STAT_FAULT_LATENCY: [5]]).dsm
        let b = reported([GVM_STAT_FAULT_READ_MISS: 4, GVM_STAT_DIFF_MADE: 2]).dsm
        let t = DSMStatistics.total([a, b])
        XCTAssertEqual(t.readMisses, 7)
        XCTAssertEqual(t.messagesSent, 10)
        XCTAssertEqual(t.diffsMade, 2)
        XCTAssertTrue(t.summaryLine.contains("diffs_made=2 diffs_applied=0"), t.summaryLine)
        XCTAssertTrue(t.histograms.isEmpty, "percentiles do not add")
        XCTAssertEqual(t.missing, [])
        let withMissing = DSMStatistics.total([a, DSMStatistics(counters: [:])])
        XCTAssertEqual(withMissing.missing, DSMStatistics.counterNames)
        XCTAssertEqual(DSMStatistics.total([]).missing, DSMStatistics.counterNames)
    }
}
