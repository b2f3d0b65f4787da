// The coherence-hint device's registers, without a VM: the range registers take any access
// size, COMMAND asks for the hint, the status reads back as a signed byte.
import XCTest
import PluginKit
@testable import DeviceModels

final class CoherenceHintTests: XCTestCase {
    func testRangeAndCommands() {
        var r = CoherenceHintRegisters()
        XCTAssertNil(r.write(0, [0x00, 0x10, 0x20, 0x00]))           // base low dword
        XCTAssertNil(r.write(4, [0x01, 0, 0, 0]))                     // base high dword
        XCTAssertNil(r.write(8, [0x00, 0x20, 0, 0, 0, 0, 0, 0]))     // length, one 8-byte access
        XCTAssertEqual(r.base, 0x1_0020_1000)
        XCTAssertEqual(r.rangeLength, 0x2000)
        XCTAssertEqual(r.read(0, 8), [0x00, 0x10, 0x20, 0x00, 0x01, 0, 0, 0])
        XCTAssertEqual(r.write(16, [2]), .relaxed(base: 0x1_0020_1000, length: 0x2000))
        XCTAssertEqual(r.write(16, [3, 0, 0, 0]), .sc(base: 0x1_0020_1000, length: 0x2000))
        XCTAssertEqual(r.write(16, [1]), .fence)
        XCTAssertEqual(CoherenceHintRegisters.Command.fence.kind, GVM_HINT_FENCE)
        XCTAssertNil(r.write(16, [9]))
        XCTAssertEqual(r.read(16, 1), [0xFF], "an unknown command reads back as -1 (invalid)")
        r.lastStatus = GVM_ERR_UNSUPPORTED.rawValue
        XCTAssertEqual(r.read(16, 1), [0xFA])
    }
}
