// Every file in examples/ is a valid config (validate level), and the fault example selects
// messages that are really sent. Running each example is the CLI tests' job.

import Config
import Foundation
import IvyCore
import TestSupport
import XCTest

final class ExamplesTests: XCTestCase {
    var examples: String { Built.packageRoot + "/examples" }

    func exampleFiles() throws -> [String] {
        let names = try FileManager.default.contentsOfDirectory(atPath: examples).filter { $0.hasSuffix(".yaml") }.sorted()
        XCTAssertGreaterThanOrEqual(names.count, 7, "examples/ not found at \(examples)")
        return names.map { examples + "/" + $0 }
    }

    /// Images the examples boot are build products (Guests/build) or installed kernels (/boot):
    /// when one is not there, validate may say only that.
    func testEveryExampleValidates() throws {
        for path in try exampleFiles() {
            let config: ClusterConfig
            do { config = try ConfigLoader.load(path: path) } catch {
                XCTFail("\(error)")
                continue
            }
            do { _ = try ConfigLoader.validate(path: path) } catch let e as ConfigError {
                let image = config.guest?.image ?? ""
                let external = image.contains("/Guests/build/") || image.hasPrefix("/boot/")
                XCTAssertTrue(external && !FileManager.default.fileExists(atPath: image), "\(e)")
                XCTAssertEqual(e.diagnostics.map(\.path), ["guest.image"], "\(e)")
            }
            for w in config.warnings {
                XCTAssertEqual(w.path, "key_file", "unexpected warning \(w)")
            }
            if config.nodes.count > 1 && config.keyFile == nil {
                XCTAssertEqual(config.warnings.count, 1, "\(path): multi-node without key_file warns")
            }
        }
    }

    /// examples/cluster-3node-faults.yaml: each rule selects a message type its channel carries,
    /// so `bench dsm` (dsm-ivy) and `up` (heartbeats) exercise what the comments say.
    func testFaultExampleSelectsMessagesThatAreSent() throws {
        let c = try ConfigLoader.load(path: examples + "/cluster-3node-faults.yaml")
        XCTAssertEqual(c.coherence.plugin, "dsm-ivy")
        XCTAssertGreaterThanOrEqual(c.faults.rules.count, 4)
        let coherence = UInt8(FaultRule.channelNames.firstIndex(of: "coherence")!)
        let heartbeat = UInt8(FaultRule.channelNames.firstIndex(of: "heartbeat")!)
        var actions = Set<FaultRule.Action>()
        for rule in c.faults.rules {
            actions.insert(rule.action)
            XCTAssertFalse(rule.violateFIFO, "the example keeps the ABI's per-lane FIFO")
            let type = try XCTUnwrap(rule.type, "every example rule names its message type")
            switch rule.channel {
            case coherence?:
                let message = try XCTUnwrap(MessageType(rawValue: type), "coherence type \(type) is not a dsm-ivy message")
                if rule.action == .reorder {
                    // Released by traffic on the other lane: page data (bulk) for an urgent message.
                    XCTAssertNotEqual(message.urgent, MessageType.data.urgent, "\(message.name) shares the data lane")
                }
            case heartbeat?:
                XCTAssertEqual(type, 0x01, "the node runtime's heartbeat is type 0x01 (Sources/Cluster/Node.swift)")
                XCTAssertEqual(rule.action, .drop)
                let failure = c.timeouts.failureNanoseconds, beat = c.timeouts.heartbeatNanoseconds
                XCTAssertLessThan(UInt64(rule.count ?? Int.max) * beat * 2, failure, "dropping these must not lose a peer")
            default:
                XCTFail("rule on channel \(String(describing: rule.channel)) that the example's runs do not exercise")
            }
        }
        XCTAssertEqual(actions, Set(FaultRule.Action.allCases), "the example shows drop, delay and reorder")
    }
}
