import XCTest
@testable import Distributed

final class WireTests: XCTestCase {
    func testCPUMessagesRoundTrip() throws {
        let all: [CPUMessage] = [
            .ipi(target: 3, source: -1, mode: 6, vector: 0x10, level: false),
            .apicAddress(vcpu: 2, id: 2, ldr: 0x0400_0000, dfr: 0xFFFF_FFFF),
            .irqLine(line: 4, level: true, device: "com1"),
            .eoi(vector: 0x34),
            .timeRequest(seq: 7),
            .timeReply(seq: 7, hostClock: 123_456_789, guestOffset: -5, realGuestOffset: Int64.min),
        ]
        for m in all { XCTAssertEqual(try CPUMessage.decode(m.encode()), m) }
    }
}
