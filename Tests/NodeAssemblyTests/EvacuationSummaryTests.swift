// The summary line of `giantvm evacuate` (Evacuation.swift): the counts of the node's `/leave`
// answer, the vCPU state bytes, and the bytes sent beside the guest's memory size.

import NodeAssembly
import XCTest

final class EvacuationSummaryTests: XCTestCase {
    func testSummaryAddsStateAndDrainBytesBesideGuestMemory() {
        let answer = "left node=2 to=0 pages_moved=92 managed_pages_moved=2730 device_homes_moved=0 bytes_sent=21714 guest_memory=33554432 drain_ns=30935881"
        let s = EvacuationSummary(node: 2, vcpus: 1, stateBytes: 5507, leaveAnswer: answer, memoryBytes: 32 << 20)
        XCTAssertEqual(s.pagesMoved, 92)
        XCTAssertEqual(s.managedPagesMoved, 2730)
        XCTAssertEqual(s.bytesSent, 27221)
        XCTAssertEqual(s.line, "evacuate: node 2 left: vcpus_moved=1 pages_moved=92 managed_pages_moved=2730 device_homes_moved=0 "
                       + "bytes_sent=27221 (vCPU state 5507, pages and directory 21714) guest_memory=33554432 "
                       + "(0.08% of what a full live migration would send)")
    }

    func testMalformedOrHugeFieldsCountZero() {
        let s = EvacuationSummary(node: 1, vcpus: 0, stateBytes: 0,
                                  leaveAnswer: "left pages_moved=x bytes_sent=99999999999999999999 managed_pages_moved=-1", memoryBytes: 0)
        XCTAssertEqual(s.pagesMoved, 0)
        XCTAssertEqual(s.drainBytes, 0)
        XCTAssertEqual(s.managedPagesMoved, 0)
        XCTAssertTrue(s.line.contains("(0.00% of what"), s.line)
    }
}
