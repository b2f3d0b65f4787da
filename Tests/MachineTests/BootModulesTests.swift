// Boot info version 2: the module table the VMM writes when the VM has guest.modules.
import XCTest
@testable import Machine

final class BootModulesTests: XCTestCase {
    func testVersionTwoListsTheModulesAfterTheNodeTable() {
        let b = BootLayout.bootInfo(totalVCPUs: 2, nodeCount: 1, memoryBytes: 64 << 20, cmdlineLength: 0, thisVCPU: 0,
                                    vcpuNode: [0, 0], modules: [(0x20_0000, 0x1234), (0x20_2000, 7)])
        XCTAssertEqual(b.count, BootLayout.bootInfoModulesSize)
        XCTAssertEqual(b.count, 296 + 8 + 16 * 16)
        XCTAssertEqual(b[4], 2, "version 2 with modules")
        func u64(_ o: Int) -> UInt64 { (0..<8).reduce(0) { $0 | UInt64(b[o + $1]) << (8 * UInt64($1)) } }
        XCTAssertEqual(b[296], 2, "module count")
        XCTAssertEqual(u64(304), 0x20_0000); XCTAssertEqual(u64(312), 0x1234)
        XCTAssertEqual(u64(320), 0x20_2000); XCTAssertEqual(u64(328), 7)
        XCTAssertEqual(u64(336), 0, "unused slots are zero")
        let v1 = BootLayout.bootInfo(totalVCPUs: 2, nodeCount: 1, memoryBytes: 64 << 20, cmdlineLength: 0, thisVCPU: 0, vcpuNode: [0, 0])
        XCTAssertEqual(v1.count, 296, "no modules: version 1, unchanged")
        XCTAssertEqual(v1[4], 1)
        XCTAssertEqual(Array(b[0..<296]).enumerated().filter { $0.offset != 4 }.map(\.element),
                       v1.enumerated().filter { $0.offset != 4 }.map(\.element), "the version 1 part is the same")
    }
}
