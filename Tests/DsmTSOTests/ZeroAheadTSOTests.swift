// dsm-tso with dsm-ivy's zero-fill ahead (off by default here): when set, only sc pages are
// made present ahead; relaxed pages keep faulting one by one into dsm-tso's own table.

import XCTest
import PluginAPI
import CoherenceKit
@testable import TSOCore

/// Stores one word to each page in order.
private final class Toucher: SimProgram {
    let pages: [UInt64]
    var i = 0
    init(_ pages: [UInt64]) { self.pages = pages }
    func step(_ t: SimThread) -> Bool {
        guard i < pages.count else { return false }
        guard t.store(pages[i], 0, UInt64(i) + 1) else { return true }
        i += 1
        return i < pages.count
    }
}

final class ZeroAheadTSOTests: XCTestCase {
    func testOffByDefault() throws {
        let c = try cluster(nodes: 2, pages: 64, relaxed: [], seed: 1)
        c.addThread(node: 0, Toucher([0]))
        let r = c.run(maxSteps: 100_000)
        XCTAssertTrue(r.ok, "\(r)")
        XCTAssertEqual(c.nodes[0].counter("ivy.zero_ahead.pages"), 0)
        XCTAssertEqual(c.nodes[0].pageState[1], GVM_PAGE_INVALID)
    }

    func testOnlyScPagesAreZeroFilledAhead() throws {
        let relaxed = Array(UInt64(8)..<16)
        let c = try cluster(nodes: 2, pages: 64, relaxed: relaxed, seed: 2, extra: [("zero_ahead", "16")])
        c.addThread(node: 0, Toucher([0]))
        let r = c.run(maxSteps: 100_000)
        XCTAssertTrue(r.ok, "\(r)")
        for g in 1..<8 { XCTAssertEqual(c.nodes[0].pageState[g], GVM_PAGE_MODIFIED, "sc gfn \(g)") }
        for g in relaxed { XCTAssertEqual(c.nodes[0].pageState[Int(g)], GVM_PAGE_INVALID, "relaxed gfn \(g)") }
        XCTAssertEqual(c.nodes[0].counter("ivy.zero_ahead.pages"), 7)
    }
}
