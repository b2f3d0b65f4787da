// Per-page fault counts (GuestMemory.hottestPages), the source of live metrics' hottest pages.

import Foundation
@testable import GuestMemory
import XCTest

final class HotPagesTests: XCTestCase {
    func testHottestPagesCountsEveryFaultHandedToThePlugin() throws {
        try requireUserfaultfd()
        let h = try Harness()
        defer { h.close() }
        XCTAssertTrue(h.memory.hottestPages(5).isEmpty, "no fault yet")
        // Page 7: a read miss, then a write-protect fault (2); page 3: one read miss; page 9: one
        // write (first touch by a write: 1).
        _ = load(h.addr(7, 0))
        store(h.addr(7, 1), 1)
        _ = load(h.addr(3, 0))
        store(h.addr(9, 0), 2)
        // No more faults once the pages are held.
        _ = load(h.addr(7, 2)); store(h.addr(7, 3), 3); _ = load(h.addr(3, 5))
        let top = h.memory.hottestPages(5)
        XCTAssertEqual(top.map(\.gfn), [7, 3, 9])
        XCTAssertEqual(top.map(\.faults), [2, 1, 1])
        XCTAssertEqual(top.reduce(0) { $0 + $1.faults }, h.memory.stats.pluginFaults)
        XCTAssertEqual(h.memory.hottestPages(1).map(\.gfn), [7])
        XCTAssertTrue(h.memory.hottestPages(0).isEmpty)
    }
}
