import XCTest
import TestSupport
import PluginAPI

/// Runs the built `giantvm` binary as a user would.
final class CLITests: XCTestCase {
    override func setUpWithError() throws { try Requirement.builtGiantVM() }

    func testHelpTeachesTheSubcommands() throws {
        let r = try giantvm(["--help"])
        XCTAssertEqual(r.status, 0)
        for word in ["validate", "plugins", "USAGE: giantvm"] {
            XCTAssertTrue(r.stdout.contains(word), "help mentions \(word): \(r.stdout)")
        }
    }

    func testValidateEveryExample() throws {
        let dir = Built.packageRoot + "/examples"
        for f in try FileManager.default.contentsOfDirectory(atPath: dir) where f.hasSuffix(".yaml") {
            let r = try giantvm(["validate", dir + "/" + f])
            // validate checks that guest.image exists: an image that is a build product
            // (Guests/build, `make -C Guests`) or an installed kernel (/boot) may be absent here.
            let problems = r.stdout.split(separator: "\n").filter { !$0.hasPrefix("warning: ") && !$0.hasSuffix("1 problem") }
            if r.status == 1, problems.count == 1, problems[0].contains("guest.image: cannot read '"),
               problems[0].hasSuffix("': it does not exist"), problems[0].contains("/Guests/build/") || problems[0].contains("'/boot/") {
                continue
            }
            XCTAssertEqual(r.status, 0, "\(f): \(r.output)")
            XCTAssertTrue(r.stdout.contains("OK"), r.stdout)
        }
    }

    func testValidateReportsEveryProblemAndFails() throws {
        let path = temporaryFile("""
            cluster: x
            nodes:
              - {id: 0, address: a, port: 70000}
            transport: tcp
            coherence: ivy
            colour: blue
            """)
        let r = try giantvm(["validate", path])
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.stdout.contains("\(path):3:31: nodes[0].port: 70000 is not a port"), r.stdout)
        XCTAssertTrue(r.stdout.contains("\(path):6:1: colour: unknown field 'colour'"), r.stdout)
        XCTAssertTrue(r.stdout.contains("2 problems"), r.stdout)
        XCTAssertFalse(r.output.contains("Fatal error"), "no stack trace")
    }

    func testValidateWithPluginsChecksKindsAndModels() throws {
        let path = temporaryFile("""
            cluster: x
            nodes: [{id: 0, address: 127.0.0.1, port: 17999}]
            transport: example-c
            coherence: no-such-plugin
            devices:
              - {name: s, plugin: example-c, model: nope}
            """)
        let r = try giantvm(["validate", "--plugins", path])
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.stdout.contains("transport.plugin: plugin 'example-c'"), r.stdout)
        XCTAssertTrue(r.stdout.contains("is a device plugin, but a transport plugin is needed here"), r.stdout)
        XCTAssertTrue(r.stdout.contains("coherence.plugin: plugin 'no-such-plugin' not found"), r.stdout)
        XCTAssertTrue(r.stdout.contains("devices[0].model: plugin 'example-c' has no model 'nope' (it offers: scratch)"), r.stdout)
    }

    func testPluginsListShowsNameKindVersionABIPath() throws {
        let r = try giantvm(["plugins", "list"])
        XCTAssertEqual(r.status, 0, r.output)
        let line = r.stdout.split(separator: "\n").first { $0.hasPrefix("example-c ") }
        XCTAssertNotNil(line, r.stdout)
        let cols = line.map { $0.split(separator: " ", omittingEmptySubsequences: true).map(String.init) } ?? []
        XCTAssertEqual(Array(cols.prefix(4)), ["example-c", "device", "0.1.0", String(GVM_ABI_VERSION)])
        XCTAssertEqual(cols.last, Built.plugin("example-c"))
        XCTAssertFalse(r.stdout.contains("test-abi-too-old"), "fixtures hidden by default")
        let all = try giantvm(["plugins", "list", "--include-test-fixtures"])
        XCTAssertTrue(all.stdout.contains("older than the oldest this giantvm supports"), all.stdout)
    }

    func testBadLogLevelIsAClearError() throws {
        let r = try giantvm(["plugins", "list", "--log-level", "loud"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("--log-level 'loud' is not one of"), r.stderr)
    }
}
