import XCTest
@testable import ABTest
import TestSupport

/// report.html renders in a real browser: Chromium headless (Debian package `chromium`,
/// scripts/deps/chromium.sh) loads a report built from known runs, dumps its DOM (every chart and
/// every run's dot must be there) and takes a screenshot that must not be blank.
final class HTMLRenderTests: XCTestCase {
    /// A two-config report: 8 runs each of two metrics plus fault latencies, B clearly faster.
    func sampleReport() -> ABReport {
        var runs: [RunRecord] = []
        for i in 0..<16 {
            let c = i % 2
            let v = Double(1000 + (i * 37) % 50) * (c == 1 ? 1.4 : 1)
            runs.append(RunRecord(index: i, config: c, warmup: false,
                                  metrics: ["ops_per_s": v, "wall_time": 2 - Double(c) * 0.5 + Double(i % 3) * 0.01,
                                            "fault_latency.p50": 4 + Double(i % 4)],
                                  faultLatency: [[3_000, 50], [250_000 / UInt64(1 + c), 30], [4_000_000, 3]], result: nil))
        }
        let labels = ["A", "B"]
        let cmp = Analysis.compare(base: 0, other: 1, runs: runs, labels: labels, settings: AnalysisSettings())
        let env = RunEnvironment(gitCommit: "abc", gitDirty: false, giantvm: FileIdentity(name: "giantvm", path: "/g", sha256: "00"),
                                 plugins: [[], []], kernel: "Linux", machine: "x86_64", hostname: "h", cpus: 2)
        return ABReport(created: "now", command: ["giantvm", "ab"], workload: "counter <iters>", runsPerConfig: 8, warmup: 0, seed: 1,
                        analysis: AnalysisSettings(),
                        configs: labels.map { ConfigEntry(label: $0, path: "/tmp/\($0).yaml", sha256: nil, coherence: "dsm-ivy") },
                        differences: [[], [ConfigDifference(path: "coherence.settings.hold_time", base: nil, other: "0")]],
                        environment: env, runs: runs, metrics: Analysis.metrics(of: runs), comparisons: [cmp])
    }

    func testReportIsSelfContained() {
        let html = HTMLReport.render(sampleReport())
        XCTAssertEqual(html.components(separatedBy: "<svg class=\"chart").count - 1, 4, "3 distributions + 1 CDF")
        XCTAssertFalse(html.contains("http://") && html.replacingOccurrences(of: "http://www.w3.org/2000/svg", with: "").contains("http://"),
                       "no network reference but the SVG namespace")
        XCTAssertFalse(html.contains("https://"))
        XCTAssertFalse(html.contains("<script"))
        XCTAssertTrue(html.contains("counter &lt;iters&gt;"), "text is escaped")
        XCTAssertTrue(html.contains("B better (+39.7%)"), "the verdict is on the page")
    }

    static var chromium: String? {
        ["/usr/bin/chromium", "/usr/bin/chromium-browser"].first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    func headless(_ args: [String], profile: String) throws -> ProcessResult {
        try TestSupport.run(Self.chromium!, ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
                                 "--no-first-run", "--user-data-dir=\(profile)", "--window-size=1200,2400"] + args, timeout: 90)
    }

    func testChromiumRendersTheCharts() throws {
        if Self.chromium == nil {
            if getuid() != 0 { throw XCTSkip("chromium is not installed (scripts/deps/chromium.sh installs it as root)") }
            return XCTFail("chromium is missing: run scripts/deps/chromium.sh (CI runs it before the tests)")
        }
        let report = sampleReport()
        let dir = NSTemporaryDirectory() + "giantvm-ab-html-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try HTMLReport.render(report).write(toFile: dir + "/report.html", atomically: true, encoding: .utf8)
        try "<!DOCTYPE html><html><body></body></html>".write(toFile: dir + "/blank.html", atomically: true, encoding: .utf8)

        // The DOM as the browser built it: every chart, every run's dot, the CDF lines.
        let dom = try headless(["--dump-dom", "file://\(dir)/report.html"], profile: dir + "/profile")
        XCTAssertEqual(dom.status, 0, dom.stderr)
        XCTAssertEqual(dom.stdout.components(separatedBy: "<svg class=\"chart").count - 1, 4, dom.stdout.prefix(2000).description)
        XCTAssertEqual(dom.stdout.components(separatedBy: "<circle class=\"run\"").count - 1, 3 * 16, "one dot per run per metric")
        XCTAssertEqual(dom.stdout.components(separatedBy: "<polyline class=\"cdf-line\"").count - 1, 2, "one CDF per config")

        // The screenshot is not blank: PNG, and far larger than the same browser's blank page.
        let shot = dir + "/report.png", blank = dir + "/blank.png"
        for (page, png) in [("report.html", shot), ("blank.html", blank)] {
            let r = try headless(["--screenshot=\(png)", "file://\(dir)/\(page)"], profile: dir + "/profile")
            XCTAssertEqual(r.status, 0, r.stderr)
        }
        let image = try Data(contentsOf: URL(fileURLWithPath: shot)), empty = try Data(contentsOf: URL(fileURLWithPath: blank))
        XCTAssertEqual(Array(image.prefix(8)), [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A], "a PNG")
        XCTAssertGreaterThan(image.count, 8 * empty.count, "report \(image.count) bytes vs blank page \(empty.count) bytes")
    }
}
