import XCTest
import Machine
@testable import Distributed

final class WireTests: XCTestCase {
    func testCPUMessagesRoundTrip() throws {
        let all: [CPUMessage] = [
            .ipi(target: 3, source: -1, mode: 6, vector: 0x10, level: false),
            .apicAddress(vcpu: 2, id: 2, ldr: 0x0400_0000, dfr: 0xFFFF_FFFF),
            .apicAddress(vcpu: 17, id: 17, ldr: 0x0001_0002, dfr: 0xFFFF_FFFF, mode: 2),   // x2APIC
            .apicAddress(vcpu: 1, id: 1, ldr: 0, dfr: 0xFFFF_FFFF, mode: 0),               // disabled
            .irqLine(line: 4, level: true, device: "com1"),
            .eoi(vector: 0x34),
            .timeRequest(seq: 7),
            .timeReply(seq: 7, hostClock: 123_456_789, guestOffset: -5, realGuestOffset: Int64.min),
            .timeReply(seq: 8, hostClock: 1, guestOffset: 2, realGuestOffset: 3, kvmclock: 4_000_000_123),
        ]
        for m in all { XCTAssertEqual(try CPUMessage.decode(m.encode()), m) }
    }

    func testATimeReplyWithoutItsKVMClockFieldReadsZero() throws {
        var bytes = CPUMessage.timeReply(seq: 1, hostClock: 2, guestOffset: 3, realGuestOffset: 4, kvmclock: 5).encode()
        bytes.removeLast(8)
        XCTAssertEqual(try CPUMessage.decode(bytes), .timeReply(seq: 1, hostClock: 2, guestOffset: 3, realGuestOffset: 4, kvmclock: 0))
    }

    func testAnAPICAddressWithoutItsModeByteIsXAPICAndABadModeIsRefused() throws {
        var bytes = CPUMessage.apicAddress(vcpu: 2, id: 2, ldr: 0x0400_0000, dfr: 0xFFFF_FFFF, mode: 2).encode()
        bytes.removeLast()
        XCTAssertEqual(try CPUMessage.decode(bytes), .apicAddress(vcpu: 2, id: 2, ldr: 0x0400_0000, dfr: 0xFFFF_FFFF, mode: 1))
        bytes.append(3)
        XCTAssertThrowsError(try CPUMessage.decode(bytes))
    }
}

final class IOWireTests: XCTestCase {
    func testCPUFeaturesRefuseOutOfRangeFields() throws {
        var bad = IOMessage.cpuFeatures(HostCPUFeatures(hidden: [.init(name: "x", leaf: 1, subleaf: 0, register: 4, bit: 1)], kvmFeatures: 0)).encode()
        XCTAssertThrowsError(try IOMessage.decode(bad)) { XCTAssertTrue("\($0)".contains("register 4"), "\($0)") }
        bad = IOMessage.cpuFeatures(HostCPUFeatures(hidden: [.init(name: "x", leaf: 1, subleaf: 0, register: 1, bit: 32)], kvmFeatures: 0)).encode()
        XCTAssertThrowsError(try IOMessage.decode(bad))
        var count = IOMessage.cpuFeatures(HostCPUFeatures(hidden: [], kvmFeatures: 0)).encode()
        count[5] = 0xFF   // 255 features announced, none present
        XCTAssertThrowsError(try IOMessage.decode(count))
    }

    func testMergeIsTheUnionOfHiddenAndTheCommonKVMClock() {
        let cx16 = HostCPUFeatures.Feature(name: "cx16", leaf: 1, subleaf: 0, register: 2, bit: 13)
        let clwb = HostCPUFeatures.Feature(name: "clwb", leaf: 7, subleaf: 0, register: 1, bit: 24)
        let a = HostCPUFeatures(hidden: [cx16], kvmFeatures: 8 | 1 << 24), b = HostCPUFeatures(hidden: [clwb, cx16], kvmFeatures: 8)
        XCTAssertEqual(HostCPUFeatures.merge([a, b]), HostCPUFeatures(hidden: [cx16, clwb], kvmFeatures: 8))
        XCTAssertEqual(HostCPUFeatures.merge([a, HostCPUFeatures(hidden: [], kvmFeatures: 0)]).kvmFeatures, 0, "one node without kvmclock: none")
        XCTAssertEqual(HostCPUFeatures.merge([HostCPUFeatures(hidden: [], kvmFeatures: 1 << 24)]).kvmFeatures, 0, "no CLOCKSOURCE2: no kvmclock")
        XCTAssertEqual(HostCPUFeatures.merge([a]), a)
    }

    func testIOMessagesRoundTrip() throws {
        let all: [IOMessage] = [
            .deviceMap([DeviceRange(space: 1, base: 0x3F8, length: 8, name: "com1"),
                        DeviceRange(space: 2, base: 0xFEC0_0000, length: 0x1000, name: "ioapic")]),
            .deviceMap([]),
            .request(id: 42, space: 1, address: 0x3F8, itemSize: 1, count: 3, isWrite: true, data: [0x61, 0x62, 0x0A]),
            .request(id: 43, space: 2, address: 0xFEC0_0010, itemSize: 4, count: 1, isWrite: false, data: []),
            .reply(id: 43, status: 0, data: [1, 2, 3, 4]),
            .reply(id: 42, status: 0, data: []),
            .ready,
            .cpuFeatures(HostCPUFeatures(hidden: [.init(name: "cx16", leaf: 1, subleaf: 0, register: 2, bit: 13),
                                                  .init(name: "clwb", leaf: 7, subleaf: 0, register: 1, bit: 24)], kvmFeatures: 8)),
            .cpuFeatures(HostCPUFeatures(hidden: [], kvmFeatures: 0)),
        ]
        for m in all { XCTAssertEqual(try IOMessage.decode(m.encode()), m) }
    }

    func testMalformedIOMessagesAreRejectedWithAReason() {
        func reject(_ bytes: [UInt8], _ fragment: String, line: UInt = #line) {
            XCTAssertThrowsError(try IOMessage.decode(bytes), line: line) { e in
                XCTAssertTrue("\(e)".contains(fragment), "\(e)", line: line)
            }
        }
        reject([], "empty")
        reject([0x7F], "unknown io message type 0x7f")
        var req = IOMessage.request(id: 1, space: 1, address: 0x3F8, itemSize: 1, count: 2, isWrite: true, data: [1, 2]).encode()
        reject(Array(req.dropLast()), "1 data bytes, expected 2")
        req[18] = 3  // item size 3 (type 1 + id 8 + space 1 + address 8)
        reject(req, "truncated or invalid")
        let big = IOMessage.request(id: 1, space: 1, address: 0, itemSize: 8, count: UInt32(IOMessage.maxData), isWrite: false, data: []).encode()
        reject(big, "exceeds")
        reject(IOMessage.ready.encode() + [0], "trailing")
        var map = IOMessage.deviceMap([DeviceRange(space: 1, base: 0, length: 1, name: "x")]).encode()
        map[5] = 9  // space 9
        reject(map, "range 0")
    }

    func testMalformedCPUMessages() {
        XCTAssertThrowsError(try CPUMessage.decode([0x01, 0, 0]))
        XCTAssertThrowsError(try CPUMessage.decode(CPUMessage.eoi(vector: 1).encode() + [0]))
        XCTAssertThrowsError(try CPUMessage.decode([0x55]))
        // Delivery mode 8 does not exist.
        var ipi = CPUMessage.ipi(target: 1, source: 0, mode: 0, vector: 0x40, level: false).encode()
        ipi[9] = 8
        XCTAssertThrowsError(try CPUMessage.decode(ipi))
    }
}
