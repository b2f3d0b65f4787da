import XCTest
import TestSupport

/// Duration options of every command are range-checked before any arithmetic (a huge value used
/// to trap converting Double to UInt64).
final class DurationOptionTests: XCTestCase {
    override func setUpWithError() throws { try Requirement.builtGiantVM() }

    func config() -> String {
        temporaryFile("""
            cluster: d
            nodes:
              - {id: 0, address: 127.0.0.1, port: 21980}
              - {id: 1, address: 127.0.0.1, port: 21981}
            transport: {plugin: transport-tcp}
            coherence: {plugin: dsm-ivy}
            """)
    }

    func testHugeAndNonsenseDurationsAreClearErrorsNotCrashes() throws {
        let cfg = config()
        let cases: [[String]] = [
            ["node", "--config", cfg, "--id", "0", "--duration", "1e300"],
            ["node", "--config", cfg, "--id", "0", "--timeout", "1e10"],
            ["up", cfg, "--duration", "1e300"],
            ["up", cfg, "--timeout", "-5"],
            ["run", "--config", cfg, "--timeout", "1e10"],
            ["bench", "dsm", "--config", cfg, "--workload", "counter", "--timeout", "1e12"],
            ["node", "--config", cfg, "--id", "0", "--duration", "nan"],
        ]
        for args in cases {
            let r = try giantvm(args, timeout: 20)
            XCTAssertTrue(r.status > 0 && r.status < 128, "\(args): status \(r.status) (a crash is >= 128): \(r.output)")
            let option = args.first { $0.hasPrefix("--duration") || $0.hasPrefix("--timeout") }!
            XCTAssertTrue(r.stderr.contains(option), "\(args): the message names the option: \(r.stderr)")
            XCTAssertFalse(r.stderr.contains("Fatal error"), r.stderr)
        }
    }
}
