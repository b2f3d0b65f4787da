// dsm-tso and replicated ranges (ABI 4, GVM_HINT_REPLICATED): sc pages start as dsm-ivy read
// copies on every node; a range touching a relaxed (mw) range is UNSUPPORTED (the host then
// loads it on one node), the same answer on every node.

import XCTest
import PluginAPI
import PluginKit
import CoherenceKit
@testable import TSOCore

final class ReplicatedTSOTests: XCTestCase {
    func testScPagesStartAsReadCopiesAndAWriteIsSeenEverywhere() throws {
        let c = try cluster(nodes: 2, pages: 16, relaxed: [12, 13], seed: 4, extra: [("replicated", "on")])
        let words: (UInt64) -> [Int: UInt64] = { [0: 0x7E57_0000 | $0] }
        XCTAssertEqual(c.replicate(pages: 2..<10, words: words), [GVM_OK.rawValue, GVM_OK.rawValue])
        for i in 0..<2 {
            for g in 2..<10 { XCTAssertEqual(c.nodes[i].pageState[g], GVM_PAGE_SHARED) }
            XCTAssertEqual(engine(c, i).ivy.cacheState(3), engine(c, i).ivy.managerOf(3) == UInt32(i) ? .OS : .S)
        }
        c.addThread(node: 0, ClosureProgram { t in t.load(3, 0) == nil })
        c.addThread(node: 1, ClosureProgram { t in t.load(9, 0) == nil })
        var r = c.run()
        XCTAssertTrue(r.ok, "\(r)")
        XCTAssertEqual(c.total("dsm.fault.read_miss"), 0)
        var wrote = false
        c.addThread(node: 1, ClosureProgram { t in
            if !wrote { wrote = t.store(3, 0, 0xABCD) }
            return !wrote
        })
        r = c.run()
        XCTAssertTrue(r.ok, "\(r)")
        XCTAssertEqual(c.nodes[0].pageState[3], GVM_PAGE_INVALID)
        var seen: UInt64?
        c.addThread(node: 0, ClosureProgram { t in
            seen = t.load(3, 0)
            return seen == nil
        })
        r = c.run()
        XCTAssertTrue(r.ok, "\(r)")
        XCTAssertEqual(seen, 0xABCD)
    }

    func testARangeOverARelaxedPageIsUnsupportedOnEveryNode() throws {
        let c = try cluster(nodes: 2, pages: 16, relaxed: [12, 13], seed: 5, extra: [("replicated", "on")])
        XCTAssertEqual(c.replicate(pages: 10..<14, words: { _ in [:] }),
                       [GVM_ERR_UNSUPPORTED.rawValue, GVM_ERR_UNSUPPORTED.rawValue])
        for i in 0..<2 { for g in 10..<14 { XCTAssertEqual(c.nodes[i].pageState[g], GVM_PAGE_INVALID) } }
    }
}
