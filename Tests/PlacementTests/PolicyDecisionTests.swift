// The in-tree placement policies' decisions on synthetic interval figures.

import XCTest
import PluginKit
@testable import PlacementCore

/// Figures for V vCPUs on N nodes: faults[(v, n)] and symmetric sharing[(i, j)].
func figures(nodes: [UInt32], nodeCount: Int, faults: [(Int, Int, UInt64)] = [],
             sharing: [(Int, Int, UInt64)] = []) -> PlacementStats {
    let v = nodes.count
    var f = [UInt64](repeating: 0, count: v * nodeCount)
    for (c, n, x) in faults { f[c * nodeCount + n] = x }
    var s = [UInt64](repeating: 0, count: v * v)
    for (i, j, x) in sharing { s[i * v + j] = x; s[j * v + i] = x }
    return PlacementStats(vcpuNode: nodes, nodeCount: nodeCount, faults: f, sharing: s)
}

final class CoLocateTests: XCTestCase {
    func testTwoSharingVCPUsOnTwoNodesEndOnOne() {
        var p = CoLocate(CoLocate.Options())
        let moves = p.decide(figures(nodes: [0, 1], nodeCount: 2, sharing: [(0, 1, 500)]))
        // Equal gains: the higher-numbered vCPU moves to the other's node.
        XCTAssertEqual(moves, [PlacementMove(vcpu: 1, node: 0)])
    }

    func testBelowMinSharedNothingMoves() {
        var p = CoLocate(CoLocate.Options())
        XCTAssertEqual(p.decide(figures(nodes: [0, 1], nodeCount: 2, sharing: [(0, 1, 63)])), [])
    }

    func testTheLessAnchoredVCPUMoves() {
        // vCPU 0 (node 0) shares with 1 (node 1) and strongly with 2 (node 0): moving 1 to node 0
        // gains 300; moving 0 to node 1 gains 300 - 1000 < 0.
        var p = CoLocate(CoLocate.Options())
        let moves = p.decide(figures(nodes: [0, 1, 0], nodeCount: 2, sharing: [(0, 1, 300), (0, 2, 1000)]))
        XCTAssertEqual(moves, [PlacementMove(vcpu: 1, node: 0)])
    }

    func testAMoveThatBreaksAStrongerPairIsNotMade() {
        // 0 and 1 share 100 across nodes, but 1 shares 900 with 2 on its own node and 0 shares
        // 900 with 3 on its own: neither move gains.
        var p = CoLocate(CoLocate.Options())
        let st = figures(nodes: [0, 1, 1, 0], nodeCount: 2, sharing: [(0, 1, 100), (1, 2, 900), (0, 3, 900)])
        XCTAssertEqual(p.decide(st), [])
    }

    func testPerNodeCapSendsTheOtherWay() {
        // Node 0 already holds 2 vCPUs (cap 2): vCPU 2 cannot join 0; 0 moves to node 1 only if
        // it gains, which it does not (it shares 400 with 1 on node 0)... so nothing moves.
        var o = CoLocate.Options()
        o.maxPerNode = 2
        var p = CoLocate(o)
        XCTAssertEqual(p.decide(figures(nodes: [0, 0, 1], nodeCount: 2, sharing: [(0, 2, 300), (0, 1, 400)])), [])
        // Without the pair on node 0, vCPU 0 may go to vCPU 2's node (node 1 has room).
        var q = CoLocate(o)
        XCTAssertEqual(q.decide(figures(nodes: [0, 0, 1], nodeCount: 2, sharing: [(0, 2, 300)])),
                       [PlacementMove(vcpu: 0, node: 1)])
    }

    func testInFlightAndCooldown() {
        var o = CoLocate.Options()
        o.cooldown = 2
        var p = CoLocate(o)
        let st = figures(nodes: [0, 1], nodeCount: 2, sharing: [(0, 1, 500)])
        XCTAssertEqual(p.decide(st), [PlacementMove(vcpu: 1, node: 0)])
        // In flight: vCPU 1 is not moved again; vCPU 0 would gain as much by going to node 1,
        // but vCPU 1's move is pending, so its pair is skipped only if 1 is migrating.
        var migrating = st
        migrating.vcpuNode[1] = PlacementStats.migrating
        XCTAssertEqual(p.decide(migrating), [])
        p.finished(PlacementMove(vcpu: 1, node: 0), ok: false)
        // The move failed (1 is still on node 1): vCPU 1 cools down for 2 intervals, so vCPU 0
        // moves instead.
        XCTAssertEqual(p.decide(st), [PlacementMove(vcpu: 0, node: 1)])
    }

    func testFullNodesTakeNobody() {
        var o = CoLocate.Options()
        o.maxPerNode = 2
        var p = CoLocate(o)
        XCTAssertEqual(p.decide(figures(nodes: [0, 1, 0, 1], nodeCount: 2, sharing: [(0, 1, 800)])), [])
    }

    func testGroupsMergeOnOneNode() {
        // Four vCPUs on two nodes in two sharing pairs across nodes: (0,1) and (2,3).
        var p = CoLocate(CoLocate.Options())
        let moves = p.decide(figures(nodes: [0, 1, 0, 1], nodeCount: 2, sharing: [(0, 1, 800), (2, 3, 700)]))
        XCTAssertEqual(moves, [PlacementMove(vcpu: 1, node: 0), PlacementMove(vcpu: 3, node: 0)])
        // With a cap of 3 per node, the second pair goes to node 1 instead.
        var o = CoLocate.Options()
        o.maxPerNode = 3
        var q = CoLocate(o)
        XCTAssertEqual(q.decide(figures(nodes: [0, 1, 0, 1], nodeCount: 2, sharing: [(0, 1, 800), (2, 3, 700)])),
                       [PlacementMove(vcpu: 1, node: 0), PlacementMove(vcpu: 2, node: 1)])
    }
}

final class FollowMemoryTests: XCTestCase {
    func testMovesAfterPersistIntervals() {
        var p = FollowMemory(FollowMemory.Options())
        let st = figures(nodes: [0, 1], nodeCount: 2, faults: [(0, 1, 1000), (0, 0, 100)])
        XCTAssertEqual(p.decide(st), [], "one interval is not enough (persist 2)")
        XCTAssertEqual(p.decide(st), [PlacementMove(vcpu: 0, node: 1)])
    }

    func testThresholdAndMargin() {
        var o = FollowMemory.Options()
        o.persist = 1
        var p = FollowMemory(o)
        XCTAssertEqual(p.decide(figures(nodes: [0], nodeCount: 2, faults: [(0, 1, 255)])), [], "below threshold")
        // 1000 remote vs 700 local: 1000 <= 700 * 1.5, no move.
        XCTAssertEqual(p.decide(figures(nodes: [0], nodeCount: 2, faults: [(0, 1, 1000), (0, 0, 700)])), [])
        XCTAssertEqual(p.decide(figures(nodes: [0], nodeCount: 2, faults: [(0, 1, 1051), (0, 0, 700)])),
                       [PlacementMove(vcpu: 0, node: 1)])
    }

    func testStreakResetsWhenAnotherNodeWins() {
        var p = FollowMemory(FollowMemory.Options())
        XCTAssertEqual(p.decide(figures(nodes: [0], nodeCount: 3, faults: [(0, 1, 900)])), [])
        XCTAssertEqual(p.decide(figures(nodes: [0], nodeCount: 3, faults: [(0, 2, 900)])), [])
        XCTAssertEqual(p.decide(figures(nodes: [0], nodeCount: 3, faults: [(0, 2, 900)])), [PlacementMove(vcpu: 0, node: 2)])
    }

    func testNoPingPongWithinCooldown() {
        var o = FollowMemory.Options()
        o.persist = 1
        o.cooldown = 3
        var p = FollowMemory(o)
        XCTAssertEqual(p.decide(figures(nodes: [0], nodeCount: 2, faults: [(0, 1, 900)])), [PlacementMove(vcpu: 0, node: 1)])
        p.finished(PlacementMove(vcpu: 0, node: 1), ok: true)
        // Its pages now fault from node 0 (they stayed behind): it must not bounce back at once.
        let back = figures(nodes: [1], nodeCount: 2, faults: [(0, 0, 900)])
        XCTAssertEqual(p.decide(back), [])
        XCTAssertEqual(p.decide(back), [])
        XCTAssertEqual(p.decide(back), [])
        XCTAssertEqual(p.decide(back), [PlacementMove(vcpu: 0, node: 0)], "after the cool-down it may move")
    }

    func testNoSwap() {
        // vCPU 0 (node 0) faults on node 1's pages and vCPU 1 (node 1) on node 0's: only the
        // one with more remote faults moves, so they end on one node instead of swapping.
        var o = FollowMemory.Options()
        o.persist = 1
        var p = FollowMemory(o)
        XCTAssertEqual(p.decide(figures(nodes: [0, 1], nodeCount: 2, faults: [(0, 1, 800), (1, 0, 900)])),
                       [PlacementMove(vcpu: 1, node: 0)])
    }

    func testCap() {
        var o = FollowMemory.Options()
        o.persist = 1
        o.maxPerNode = 1
        var p = FollowMemory(o)
        XCTAssertEqual(p.decide(figures(nodes: [0, 1], nodeCount: 2, faults: [(0, 1, 900)])), [])
    }
}

final class PlacementSettingsTests: XCTestCase {
    func testSelectsPolicyAndRefusesWrongKeys() throws {
        XCTAssertTrue(try PlacementPolicyPlugin.decider(Settings([:]), vcpus: 2) is CoLocate)
        let f = try PlacementPolicyPlugin.decider(Settings(["policy": "follow-memory", "threshold": "10", "persist": "1"]), vcpus: 2)
        XCTAssertEqual((f as? FollowMemory)?.options.threshold, 10)
        XCTAssertThrowsError(try PlacementPolicyPlugin.decider(Settings(["policy": "random"]), vcpus: 2)) {
            XCTAssertTrue("\($0)".contains("'random' is not a policy"), "\($0)")
        }
        XCTAssertThrowsError(try PlacementPolicyPlugin.decider(Settings(["threshold": "5"]), vcpus: 2)) {
            XCTAssertTrue("\($0)".contains("belongs to policy follow-memory"), "\($0)")
        }
        XCTAssertThrowsError(try PlacementPolicyPlugin.decider(Settings(["min_shared": "0"]), vcpus: 2))
        XCTAssertThrowsError(try PlacementPolicyPlugin.decider(Settings(["bogus": "1"]), vcpus: 2)) {
            XCTAssertTrue("\($0)".contains("unknown setting 'bogus'"), "\($0)")
        }
    }
}
