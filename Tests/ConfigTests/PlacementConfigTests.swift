// The `placement:` section: the placement-policy plugin, its interval and page-set bound.

import Config
import XCTest

final class PlacementConfigTests: XCTestCase {
    func yaml(_ placement: String) -> String {
        "cluster: p\nnodes:\n  - {id: 0, address: 127.0.0.1, port: 20000, vcpus: 1}\n"
            + "  - {id: 1, address: 127.0.0.1, port: 20001, vcpus: 1}\ntransport: transport-tcp\ncoherence: dsm-ivy\n" + placement
    }

    func problems(_ text: String) -> [String] {
        do { _ = try ConfigLoader.parse(yaml: text, path: "/cfg/p.yaml"); return [] } catch let e as ConfigError {
            return e.diagnostics.map(\.description)
        } catch { XCTFail("\(error)"); return [] }
    }

    func testAbsentAndDefaults() throws {
        XCTAssertNil(try ConfigLoader.parse(yaml: yaml(""), path: "t").placement)
        let p = try XCTUnwrap(try ConfigLoader.parse(yaml: yaml("placement: {plugin: placement}\n"), path: "t").placement)
        XCTAssertEqual(p.plugin.plugin, "placement")
        XCTAssertEqual(p.intervalNanoseconds, 1_000_000_000)
        XCTAssertEqual(p.samplePages, 4096)
        XCTAssertTrue(p.plugin.settings.isEmpty)
    }

    func testEveryField() throws {
        let text = yaml("placement: {plugin: placement, interval: 250ms, sample_pages: 512, settings: {policy: follow-memory, threshold: 100}}\n")
        let p = try XCTUnwrap(try ConfigLoader.parse(yaml: text, path: "t").placement)
        XCTAssertEqual(p.intervalNanoseconds, 250_000_000)
        XCTAssertEqual(p.samplePages, 512)
        XCTAssertEqual(p.plugin.setting("policy"), "follow-memory")
        XCTAssertEqual(p.plugin.setting("threshold"), "100")
    }

    func testProblemsNameFieldAndCause() {
        let d = problems(yaml("placement: {interval: 10ms, sample_pages: 9000, colour: red}\n"))
        XCTAssertTrue(d.contains { $0.contains("placement.plugin: missing") }, "\(d)")
        XCTAssertTrue(d.contains { $0.contains("placement.interval") && $0.contains("10ms") }, "\(d)")
        XCTAssertTrue(d.contains { $0.contains("placement.sample_pages: 9000 is not a page count") }, "\(d)")
        XCTAssertTrue(d.contains { $0.contains("unknown field 'colour'") }, "\(d)")
        XCTAssertTrue(d.allSatisfy { $0.hasPrefix("/cfg/p.yaml:7:") }, "\(d)")
    }
}
