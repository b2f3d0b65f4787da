// `transport.faults`: read once by Config into typed rules (Cluster's injector applies them).

import Config
import PluginAPI
import XCTest

final class FaultRulesTests: XCTestCase {
    func testParsesTypedRules() throws {
        let yaml = """
            seed: 7
            rules:
              - {channel: coherence, type: 3, to: 1, action: delay, delay: 5ms, jitter: 1ms, probability: 0.5}
              - {channel: io, action: drop, after: 2, count: 1}
              - {lane: bulk, action: reorder}
              - {channel: 4, type: 0x10, from: 2, action: delay, delay: 1us, violate_fifo: true}
            """
        let plan = try FaultPlan.parse(yaml: yaml, nodeCount: 3)
        XCTAssertEqual(plan.seed, 7)
        XCTAssertEqual(plan.rules.count, 4)
        var r0 = FaultRule(action: .delay)
        r0.channel = 1; r0.type = 3; r0.to = 1
        r0.delayNanoseconds = 5_000_000; r0.jitterNanoseconds = 1_000_000; r0.probability = 0.5
        XCTAssertEqual(plan.rules[0], r0)
        XCTAssertEqual(plan.rules[1].channel, 3)
        XCTAssertEqual(plan.rules[1].after, 2)
        XCTAssertEqual(plan.rules[1].count, 1)
        XCTAssertEqual(plan.rules[2].lane, GVM_LANE_BULK)
        XCTAssertEqual(plan.rules[2].delayNanoseconds, 50_000_000, "reorder holds 50ms at most by default")
        XCTAssertFalse(plan.rules[2].violateFIFO)
        XCTAssertEqual(plan.rules[3].channel, 4)
        XCTAssertEqual(plan.rules[3].type, 0x10)
        XCTAssertEqual(plan.rules[3].from, 2)
        XCTAssertEqual(plan.rules[3].delayNanoseconds, 1_000)
        XCTAssertTrue(plan.rules[3].violateFIFO)
        XCTAssertEqual(try FaultPlan.parse(yaml: "- {action: drop}", nodeCount: 1).seed, 1, "a bare list: default seed")
    }

    func testRulesInTheClusterConfigAreTyped() throws {
        let c = try ConfigLoader.parse(yaml: """
            cluster: f
            nodes: [{id: 0, address: 127.0.0.1, port: 19640}, {id: 1, address: 127.0.0.1, port: 19641}]
            transport:
              plugin: transport-tcp
              settings: {nodelay: true}
              faults: [{channel: coherence, type: 6, action: delay, delay: 2ms}]
            coherence: dsm-ivy
            """, path: "/cfg/f.yaml")
        XCTAssertEqual(c.faults.rules.count, 1)
        XCTAssertEqual(c.faults.rules[0].type, 6)
        XCTAssertEqual(c.transport.settings.map(\.key), ["nodelay"], "no hidden setting carries the rules any more")
    }

    func testRejectsBadRulesNamingRuleFieldAndLine() {
        func msg(_ y: String, nodes: Int = 2) -> [String] {
            do { _ = try FaultPlan.parse(yaml: y, nodeCount: nodes); return ["accepted"] } catch let e as ConfigError {
                return e.diagnostics.map { "\($0.line): \($0.path): \($0.message)" }
            } catch { return ["\(error)"] }
        }
        XCTAssertEqual(msg("- {action: explode}"), ["1: transport.faults.rules[0].action: 'explode' is not one of drop, delay, reorder"])
        XCTAssertEqual(msg("- {channel: disk}"), ["1: transport.faults.rules[0].action: missing (drop, delay or reorder)"])
        XCTAssertEqual(msg("- {action: drop, channel: disk}"),
                       ["1: transport.faults.rules[0].channel: 'disk' is not one of control, coherence, cpu, io, heartbeat"])
        XCTAssertEqual(msg("- {action: drop, to: 5}"), ["1: transport.faults.rules[0].to: 5 is not a node id of this cluster (0-1)"])
        XCTAssertEqual(msg("- {action: drop, type: 256}"), ["1: transport.faults.rules[0].type: 256 is not a message type (0-255)"])
        XCTAssertEqual(msg("- {action: delay}"), ["1: transport.faults.rules[0].delay: a delay rule needs delay (or jitter) > 0"])
        XCTAssertEqual(msg("- {action: delay, delay: 0s}"), ["1: transport.faults.rules[0].delay: a delay rule needs delay (or jitter) > 0"])
        XCTAssertEqual(msg("- {action: drop, probability: 2}"), ["1: transport.faults.rules[0].probability: '2' is not a number between 0 and 1"])
        XCTAssertEqual(msg("- {action: drop, count: 0}"), ["1: transport.faults.rules[0].count: 0 is not a count (1-2147483647)"])
        XCTAssertEqual(msg("- {action: drop, violate_fifo: maybe}"), ["1: transport.faults.rules[0].violate_fifo: 'maybe' is not true or false"])
        XCTAssertEqual(msg("- {action: drop, lane: fast}"), ["1: transport.faults.rules[0].lane: 'fast' is not urgent or bulk"])
        XCTAssertEqual(msg("- {action: drop, colour: red}"),
                       ["1: transport.faults.rules[0].colour: unknown field 'colour' (expected one of: channel, type, from, to, lane, action, delay, jitter, probability, after, count, violate_fifo)"])
        XCTAssertEqual(msg("seed: -1\nrules: []"), ["1: transport.faults.seed: -1 is not a seed"])
        XCTAssertEqual(msg("rules: {action: drop}"), ["1: transport.faults.rules: expected a list of rules, got a mapping"])
        XCTAssertEqual(msg("- {action: drop}\n- {action: delay, delay: 1 fortnight}\n- {action: reorder, delay: 2h}"),
                       ["2: transport.faults.rules[1].delay: '1 fortnight' has an unknown unit or trailing text (duration units: ns, us, ms, s, m, h; a bare number is seconds)",
                        "3: transport.faults.rules[2].delay: '2h' is above the maximum 1h (range 0s to 1h)"],
                       "every bad rule is reported, not only the first")
    }
}
