// The wire format's validation, fuzzing receive() with hostile bytes, the state table's shape,
// and settings parsing.

import XCTest
import PluginAPI
import CoherenceKit
@testable import IvyCore

final class IvyWireTests: XCTestCase {
    let map = ManagerMap(chunkPages: 2, nodeCount: 3)   // gfn 0,1 -> node 0; 2,3 -> node 1; 4,5 -> node 2

    func decode(_ m: Message, src: UInt32, selfID: UInt32, pages: UInt64 = 6, patch: ((inout [UInt8]) -> Void)? = nil) -> Result<Message, WireError> {
        var b = IvyWire.encode(m)
        if m.hasPayload && m.payload == nil { b += [UInt8](repeating: 7, count: 4096) }
        patch?(&b)
        return b.withUnsafeBytes { buf in
            Result { try IvyWire.decode(buf, src: src, selfID: selfID, nodeCount: 3, pageCount: pages, managerOf: map.manager(of:)) }
                .mapError { $0 as! WireError }
        }
    }

    func error(_ r: Result<Message, WireError>) -> String? {
        if case let .failure(e) = r { return e.message }
        return nil
    }

    func testRoundTripLittleEndian() throws {
        let m = Message(type: .fwdGetX, flags: .holdsCopy, hops: 2, node: 2, gfn: 1, txn: 0x0102_0304_0506_0708)
        let b = IvyWire.encode(m)
        XCTAssertEqual(b.count, 24)
        XCTAssertEqual(Array(b[0..<4]), [4, 1, 1, 2])
        XCTAssertEqual(Array(b[4..<8]), [2, 0, 0, 0])
        XCTAssertEqual(Array(b[8..<16]), [1, 0, 0, 0, 0, 0, 0, 0])
        XCTAssertEqual(Array(b[16..<24]), [8, 7, 6, 5, 4, 3, 2, 1])
        let d = try decode(m, src: 0, selfID: 1).get()
        XCTAssertEqual(d.type, .fwdGetX)
        XCTAssertEqual(d.flags, .holdsCopy)
        XCTAssertEqual(d.txn, m.txn)
        XCTAssertEqual(d.node, 2)
        XCTAssertEqual(d.hops, 2)
    }

    func testDataCarriesExactlyOnePageUnlessZero() throws {
        let page = [UInt8](repeating: 0x5A, count: 4096)
        let data = page.withUnsafeBytes { Message(type: .data, flags: .exclusive, node: 0, gfn: 0, txn: 3, payload: $0.baseAddress) }
        let bytes = page.withUnsafeBytes { _ in IvyWire.encode(data) }
        XCTAssertEqual(bytes.count, 24 + 4096)
        XCTAssertNil(error(decode(data, src: 0, selfID: 2)))
        XCTAssertEqual(error(decode(data, src: 0, selfID: 2) { $0.removeLast() }), "Data: 4119 bytes, expected 4120")
        let zero = Message(type: .data, flags: [.zero], node: 0, gfn: 0)
        XCTAssertEqual(IvyWire.encode(zero).count, 24)
        XCTAssertEqual(error(decode(zero, src: 0, selfID: 2) { $0 += [0] }), "Data: 25 bytes, expected 24")
    }

    func testEveryFieldIsValidated() {
        let getS = Message(type: .getS, node: 2, gfn: 0)
        XCTAssertNil(error(decode(getS, src: 2, selfID: 0)))
        XCTAssertEqual(error(decode(getS, src: 2, selfID: 0) { $0[1] = 9 }), "wire version 9, expected 1")
        XCTAssertEqual(error(decode(getS, src: 2, selfID: 0) { $0[0] = 0 }), "unknown message type 0")
        XCTAssertEqual(error(decode(getS, src: 2, selfID: 0) { $0[0] = 200 }), "unknown message type 200")
        XCTAssertEqual(error(decode(getS, src: 2, selfID: 0) { $0[2] = 0x80 }), "GetS: unknown flag bits 0x80")
        XCTAssertEqual(error(decode(getS, src: 2, selfID: 0) { $0[2] = 2 }), "GetS: flags 0x2 not allowed")
        XCTAssertEqual(error(decode(Message(type: .getS, node: 2, gfn: 6), src: 2, selfID: 0)), "GetS: gfn 6 out of range (6 pages)")
        XCTAssertEqual(error(decode(Message(type: .getS, node: 7, gfn: 0), src: 2, selfID: 0)), "GetS: node 7 out of range (3 nodes)")
        XCTAssertEqual(error(decode(Message(type: .getS, node: 1, gfn: 0), src: 2, selfID: 0)), "GetS from node 2 claims to be from node 1")
        XCTAssertEqual(error(decode(Message(type: .getS, node: 2, gfn: 2), src: 2, selfID: 0)),
                       "GetS for gfn 2 sent to node 0, but its manager is node 1")
        XCTAssertEqual(error(decode(Message(type: .fwdGetS, node: 2, gfn: 2), src: 0, selfID: 1)),
                       "FwdGetS for gfn 2 from node 0, but its manager is node 1")
        XCTAssertEqual(error(decode(Message(type: .fwdGetS, node: 1, gfn: 0), src: 0, selfID: 1)),
                       "FwdGetS for gfn 0 names this node as requester")
        XCTAssertEqual(error(decode(getS, src: 0, selfID: 0)), "message from invalid source node 0")
        XCTAssertEqual(error(decode(getS, src: 5, selfID: 0)), "message from invalid source node 5")
        XCTAssertEqual(error(decode(getS, src: 2, selfID: 0) { $0 = Array($0.prefix(23)) }),
                       "message of 23 bytes is shorter than the 24-byte header")
        XCTAssertEqual(error(decode(getS, src: 2, selfID: 0) { $0 += [1] }), "GetS: 25 bytes, expected 24")
    }

    func testFuzzedReceiveNeverCrashes() throws {
        let samples = try Conformance.sampleMessages(ivy, nodes: 3, seed: 11)
        XCTAssertGreaterThan(samples.count, 20)
        let (fatal, silent) = try Conformance.fuzzReceive(ivy, nodes: 3, seed: 99, iterations: 4000, samples: samples)
        XCTAssertEqual(fatal + silent, 4000)
        XCTAssertGreaterThan(fatal, 2000, "hostile bytes must be reported through fatal, not swallowed")
    }

    func testMalformedMessageIsReportedThroughFatalWithItsCause() throws {
        let c = try SimCluster(descriptor: ivy, nodes: 2, pages: 2, seed: 1)
        c.inject(from: 1, to: 0, [99, 1] + [UInt8](repeating: 0, count: 22))
        XCTAssertEqual(c.nodes[0].fatals, ["dsm-ivy node 0: malformed message from node 1: unknown message type 99"])
        XCTAssertEqual(c.nodes[0].counter("ivy.rx_malformed"), 1)
    }

    func testUnexpectedMessageIsAnExplicitError() throws {
        let c = try SimCluster(descriptor: ivy, nodes: 2, pages: 2, seed: 1)
        // node 0 (manager and owner of gfn 0) gets an invalidation: owners are never invalidated
        c.inject(from: 1, to: 0, IvyWire.encode(Message(type: .inv, node: 1, gfn: 0)))
        XCTAssertEqual(c.nodes[0].fatals, ["dsm-ivy node 0: gfn 0: Inv in state OZ from node 1: the owner is never invalidated"])
        // and a confirm the manager never asked for
        let c2 = try SimCluster(descriptor: ivy, nodes: 2, pages: 2, seed: 1)
        c2.inject(from: 1, to: 0, IvyWire.encode(Message(type: .confirm, flags: .exclusive, node: 1, gfn: 0, txn: 5)))
        XCTAssertEqual(c2.nodes[0].fatals, ["dsm-ivy node 0: manager gfn 0: Confirm from node 1 in Idle: confirm with no open transaction"])
    }
}

final class TableTests: XCTestCase {
    static let pinnable: Set<CacheAction> = [.p_dropCopy, .p_dropToBuffer, .p_downgradeToBuffer, .p_installData, .p_upgrade]

    func testPinnableOrReclassifyingActionsComeFirst() {
        for s in CacheState.allCases {
            for e in CacheEvent.allCases {
                guard case let .go(_, actions) = IvyTable.cache(s, e) else { continue }
                for (i, a) in actions.enumerated() where Self.pinnable.contains(a) {
                    XCTAssertEqual(i, 0, "\(s) \(e.rawValue): \(a.rawValue) must come first")
                }
            }
        }
    }

    func testEveryStateAndEventIsReachableInTheTable() {
        var targets = Set<CacheState>()
        var usedActions = Set<CacheAction>()
        var handled = Set<CacheEvent>()
        for s in CacheState.allCases {
            for e in CacheEvent.allCases {
                if case let .go(n, actions) = IvyTable.cache(s, e) {
                    if n != s { targets.insert(n) }
                    usedActions.formUnion(actions)
                    handled.insert(e)
                }
            }
        }
        XCTAssertEqual(targets, Set(CacheState.allCases).subtracting([.OZ]), "only the initial state OZ is never re-entered")
        XCTAssertEqual(usedActions, Set(CacheAction.allCases), "every action is used somewhere")
        XCTAssertEqual(handled, Set(CacheEvent.allCases))
    }

    func testTransientStatesStallOrCoalesceLocalFaultsNeverDropThem() {
        for s in CacheState.allCases where s.isTransient {
            for e in [CacheEvent.load, .store] {
                guard case let .go(_, actions) = IvyTable.cache(s, e) else { return XCTFail("\(s) \(e)") }
                XCTAssertTrue(actions.contains(.r_coalesce) || actions.contains(.z_stall) || actions.contains(.w_wakeStale), "\(s) \(e)")
            }
        }
    }

    func testDescribePrintsBothTables() throws {
        let c = try SimCluster(descriptor: ivy, nodes: 2, pages: 2, seed: 1)
        let text = c.nodes[0].describe()
        XCTAssertTrue(text.contains("OI_A  LastInvAck      -> I     o_countAck, o_handOver"), text)
        XCTAssertTrue(text.contains("SM_G  Grant           -> OM    p_upgrade, r_complete, r_sendConfirm, r_sendRelease"), text)
        XCTAssertTrue(text.contains("Busy_C  Confirm  -> Idle    m_checkConfirm, m_recordOwner, m_serveNext"), text)
        XCTAssertTrue(text.contains("I     Inv             -> error: a node without a copy is never in a copyset"), text)
        XCTAssertEqual(text.components(separatedBy: "\n").filter { $0.hasPrefix("  ") && $0.contains(" -> ") }.count,
                       CacheState.allCases.count * CacheEvent.allCases.count + 2 * 4
                       + DrainState.allCases.count * DrainEvent.allCases.count)   // the drain's table (Drain.swift)
        XCTAssertTrue(text.contains("Pulling    Settled         -> Handing    d_handOverZeroPages, d_sendManagerState"), text)
    }
}

final class SettingsTests: XCTestCase {
    func testManagerChunkAndHoldTime() throws {
        let auto = try IvyConfig.parse([:], pageCount: 100, nodeCount: 3)
        XCTAssertEqual(auto.managerMap.chunkPages, 34)
        XCTAssertEqual(auto.managerMap.manager(of: 33), 0)
        XCTAssertEqual(auto.managerMap.manager(of: 34), 1)
        XCTAssertEqual(auto.managerMap.manager(of: 99), 2)
        XCTAssertEqual(auto.holdNanoseconds, 20_000)
        let inter = try IvyConfig.parse(["manager_chunk": "8KiB", "hold_time": "5us"], pageCount: 100, nodeCount: 3)
        XCTAssertEqual(inter.managerMap.chunkPages, 2)
        XCTAssertEqual((0..<8).map { inter.managerMap.manager(of: $0) }, [0, 0, 1, 1, 2, 2, 0, 0])
        XCTAssertEqual(inter.holdNanoseconds, 5000)
        XCTAssertEqual(try IvyConfig.parse(["manager_chunk": "2MiB"], pageCount: 100, nodeCount: 3).managerMap.chunkPages, 512)
        XCTAssertEqual(try IvyConfig.parse(["hold_time": "0"], pageCount: 1, nodeCount: 1).holdNanoseconds, 0)
    }

    func testBadSettingsAreRefusedByName() {
        func message(_ s: [String: String]) -> String {
            do { _ = try IvyConfig.parse(s, pageCount: 100, nodeCount: 3); return "" } catch { return "\(error)" }
        }
        XCTAssertEqual(message(["manager_chunk": "3000"]), "setting 'manager_chunk': 3000 bytes is not a positive multiple of 4096")
        XCTAssertEqual(message(["manager_chunk": "lots"]), "setting 'manager_chunk': 'lots' is not 'auto' or a size like 4KiB, 64KiB, 2MiB")
        XCTAssertEqual(message(["hold_time": "forever"]), "setting 'hold_time': 'forever' is not a duration up to 1s like 0, 20us, 1ms")
        XCTAssertEqual(message(["colour": "red"]), "unknown setting 'colour' (accepted: manager_chunk, hold_time, read_ahead, replicated, zero_ahead, request_timeout, send_wait)")
    }

    func testPluginCreateReportsBadSettings() {
        XCTAssertThrowsError(try SimCluster(descriptor: ivy, nodes: 2, pages: 2, seed: 1, settings: [("manager_chunk", "1")])) { e in
            XCTAssertEqual("\(e)", "node 0: plugin create failed: setting 'manager_chunk': 1 bytes is not a positive multiple of 4096")
        }
    }
}
