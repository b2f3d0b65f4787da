// `giantvm conformance` through the built binary: dsm-ivy passes --model sc with a certificate that
// names the plugin's SHA-256; each deliberately broken fixture (templates/coherence-c plus one bug,
// Tests/Fixtures/broken-*) fails, and the replay command printed for its failure reproduces it step
// by step, messages included.

import Foundation
import XCTest
import TestSupport

final class ConformanceCLITests: XCTestCase {
    override func setUpWithError() throws { try Requirement.builtGiantVM() }

    func scratch() -> String {
        let dir = NSTemporaryDirectory() + "giantvm-conformance-" + UUID().uuidString
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    func certificate(_ path: String) throws -> [String: Any] {
        let data = try XCTUnwrap(FileManager.default.contents(atPath: path), "no certificate at \(path)")
        return try XCTUnwrap(JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    func sha256(_ path: String) throws -> String {
        let r = try TestSupport.run("/usr/bin/sha256sum", [path])
        return String(r.stdout.prefix(64))
    }

    func testDsmIvyPassesSequentialConsistencyWithACertificate() throws {
        let out = scratch() + "/ivy.json"
        let r = try giantvm(["conformance", "dsm-ivy", "--model", "sc", "--seeds", "8", "--out", out], timeout: 300)
        XCTAssertEqual(r.status, 0, r.output)
        for name in ["locked-counter", "random-rw", "ping-pong", "pin-deferral", "receive-fuzz", "standard-statistics",
                     "litmus-MP", "litmus-SB", "litmus-LB", "litmus-2+2W", "litmus-IRIW"] {
            XCTAssertTrue(r.stdout.contains("PASS  \(name)"), "\(name) passes: \(r.stdout)")
        }
        let c = try certificate(out)
        XCTAssertEqual(c["passed"] as? Bool, true)
        XCTAssertEqual(c["model"] as? String, "sc")
        XCTAssertEqual(c["seeds"] as? Int, 8)
        XCTAssertEqual(c["giantvmVersion"] as? String, try giantvm(["--version"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines))
        let plugin = try XCTUnwrap(c["plugin"] as? [String: Any])
        XCTAssertEqual(plugin["name"] as? String, "dsm-ivy")
        let path = try XCTUnwrap(plugin["path"] as? String)
        XCTAssertEqual(plugin["sha256"] as? String, try sha256(path))
        let scenarios = try XCTUnwrap(c["scenarios"] as? [[String: Any]])
        XCTAssertEqual(scenarios.count, 11)
        for s in scenarios {
            XCTAssertEqual(s["passed"] as? Bool, true, "\(s)")
            XCTAssertEqual((s["seeds"] as? [Int])?.count, 8, "\(s)")
        }
        // Litmus outcomes are tallied, and only SC outcomes appear: never SB's r0=0 r1=0.
        let sb = try XCTUnwrap(scenarios.first { $0["name"] as? String == "litmus-SB" }?["outcomes"] as? [String: Int])
        XCTAssertEqual(sb.values.reduce(0, +), 8)
        XCTAssertNil(sb["r0=0 r1=0"])
    }

    /// dsm-tso with relaxed ranges (issue 13): the kit reads the `relaxed` setting, runs every SC
    /// scenario on the pages outside it and the relaxed scenarios on the pages inside; all pass.
    func testDsmTSOWithRelaxedRangesPassesTheKit() throws {
        let out = scratch() + "/tso.json"
        let r = try giantvm(["conformance", "dsm-tso", "--model", "tso", "--seeds", "6", "--setting", "relaxed=0x1000:8KiB", "--out", out],
                            timeout: 300)
        XCTAssertEqual(r.status, 0, r.output)
        for name in ["locked-counter", "random-rw", "ping-pong", "pin-deferral", "receive-fuzz", "standard-statistics",
                     "litmus-MP", "litmus-IRIW", "mw-locked-data", "mw-disjoint", "mw-racy", "mw-pin"] {
            XCTAssertTrue(r.stdout.contains("PASS  \(name)"), "\(name) passes: \(r.stdout)")
        }
        XCTAssertEqual(try certificate(out)["passed"] as? Bool, true)
        let l = try giantvm(["conformance", "dsm-tso", "--model", "tso", "--list"])
        XCTAssertFalse(l.stdout.contains("mw-"), "the relaxed scenarios need relaxed ranges: \(l.stdout)")
        let bad = try giantvm(["conformance", "dsm-tso", "--model", "tso", "--setting", "relaxed=0x1000"])
        XCTAssertEqual(bad.status, 2, bad.output)
        XCTAssertTrue(bad.stderr.contains("setting 'relaxed'"), bad.stderr)
    }

    /// Each broken fixture fails; the printed replay line reproduces the failure with a trace.
    func testBrokenPluginsFailWithAReplayableSeed() throws {
        let expected = ["no-invalidate": "single-writer violated", "lost-writeback": "lost update", "no-wake": "stuck"]
        for (fixture, symptom) in expected.sorted(by: { $0.key < $1.key }) {
            let so = Built.plugin("test-broken-" + fixture)
            let out = scratch() + "/cert.json"
            let r = try giantvm(["conformance", so, "--model", "sc", "--seeds", "2", "--out", out], timeout: 300)
            XCTAssertEqual(r.status, 1, "\(fixture) must fail: \(r.output)")
            XCTAssertTrue(r.stdout.contains("FAILED:"), r.stdout)
            XCTAssertTrue(r.stdout.contains(symptom), "\(fixture): expected '\(symptom)' in \(r.stdout)")
            let c = try certificate(out)
            XCTAssertEqual(c["passed"] as? Bool, false)
            let failures = (c["scenarios"] as? [[String: Any]] ?? []).compactMap { $0["failure"] as? [String: Any] }
            XCTAssertFalse(failures.isEmpty)
            // The shrunk schedule is no longer than the one first found.
            for f in failures { XCTAssertLessThanOrEqual(f["steps"] as? Int ?? .max, f["foundSteps"] as? Int ?? 0, "\(f)") }

            // Replay the first failure: the printed line, as a user would paste it.
            let line = try XCTUnwrap(r.stdout.split(separator: "\n").first { $0.contains("replay: giantvm conformance") })
            let args = line.components(separatedBy: "replay: giantvm ")[1].split(separator: " ").map(String.init)
            XCTAssertTrue(args.contains("--replay"), String(line))
            let replay = try giantvm(args, timeout: 120)
            XCTAssertEqual(replay.status, 1, "\(fixture) replay: \(replay.output)")
            XCTAssertTrue(replay.stdout.contains(" FAILS at seed "), replay.stdout)
            XCTAssertTrue(replay.stdout.contains("deliver node "), "the replay prints the messages: \(replay.stdout.prefix(2000))")
            XCTAssertTrue(replay.stdout.contains("!! "), "the replay marks the first problem")
            // Deterministic: the same seed gives the same schedule.
            XCTAssertEqual(try giantvm(args, timeout: 120).stdout, replay.stdout)
        }
    }

    func testUsageAndLoadErrors() throws {
        var r = try giantvm(["conformance", "no-such-plugin"])
        XCTAssertEqual(r.status, 2, r.output)
        XCTAssertTrue(r.stderr.contains("plugin 'no-such-plugin' not found"), r.stderr)
        r = try giantvm(["conformance", "transport-tcp"])
        XCTAssertEqual(r.status, 2, r.output)
        XCTAssertTrue(r.stderr.contains("is a transport plugin, but a coherence plugin is needed"), r.stderr)
        r = try giantvm(["conformance", "dsm-ivy", "--model", "pso"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("--model 'pso' is not sc or tso"), r.stderr)
        r = try giantvm(["conformance", "dsm-ivy", "--nodes", "1..5"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("2 <= LO <= HI <= 4"), r.stderr)
        r = try giantvm(["conformance", "dsm-ivy", "--scenario", "nope"])
        XCTAssertEqual(r.status, 2, r.output)
        XCTAssertTrue(r.stderr.contains("no scenario 'nope'"), r.stderr)
        r = try giantvm(["conformance", "dsm-ivy", "--list"])
        XCTAssertEqual(r.status, 0)
        XCTAssertTrue(r.stdout.contains("litmus-IRIW"), r.stdout)
        r = try giantvm(["conformance", "--help"])
        XCTAssertTrue(r.stdout.contains("--replay"), r.stdout)
    }
}
