// page_install_batch (ABI 3): contiguous absent pages installed with one UFFDIO_COPY, all or
// nothing, through the coherence host table as a plugin calls it.

import Foundation
@testable import GuestMemory
import PluginAPI
import XCTest

final class InstallBatchTests: XCTestCase {
    let S = GVM_PAGE_SHARED, M = GVM_PAGE_MODIFIED, I = GVM_PAGE_INVALID

    func testContiguousPagesInstallWithTheirOwnBytesAndState() throws {
        try requireUserfaultfd()
        let h = try Harness(scripted: ScriptedCoherence(mode: .hold))
        defer { h.close() }
        let host = h.host.pointee
        var bytes = [UInt8](repeating: 0, count: 4 * page)
        for i in 0..<4 { for b in 0..<page { bytes[i * page + b] = UInt8(truncatingIfNeeded: 0x40 + i * 7 + b) } }
        XCTAssertEqual(bytes.withUnsafeBytes { host.page_install_batch(host.host, 20, 4, $0.baseAddress, S) }, GVM_OK.rawValue)
        for i in 0..<4 {
            let s = try h.states(UInt64(20 + i))
            XCTAssertEqual(s.host, S)
            XCTAssertEqual(s.kernel, S, "the kernel maps page \(20 + i) write-protected")
            XCTAssertEqual(load(h.addr(UInt64(20 + i), 5)), UInt8(truncatingIfNeeded: 0x40 + i * 7 + 5))
        }
        XCTAssertEqual(h.memory.stats.missingEvents, 0, "installed pages do not fault")
    }

    func testAllOrNothing() throws {
        try requireUserfaultfd()
        let h = try Harness(scripted: ScriptedCoherence(mode: .hold))
        defer { h.close() }
        let host = h.host.pointee
        let bytes = [UInt8](repeating: 0x5C, count: 3 * page)
        XCTAssertEqual(host.page_install(host.host, 31, nil, M), GVM_OK.rawValue)
        // Page 31 is present: nothing of 30...32 is installed.
        XCTAssertEqual(bytes.withUnsafeBytes { host.page_install_batch(host.host, 30, 3, $0.baseAddress, S) }, GVM_ERR_STATE.rawValue)
        XCTAssertEqual(try h.states(30).kernel, I)
        XCTAssertEqual(try h.states(32).kernel, I)
        // A pinned page refuses the whole run (checked before presence).
        XCTAssertEqual(host.page_install(host.host, 41, nil, S), GVM_OK.rawValue)
        let pin = try h.memory.pin(gpa: 41 * UInt64(page), length: 8, for: .read, timeout: 5)
        XCTAssertEqual(bytes.withUnsafeBytes { host.page_install_batch(host.host, 40, 3, $0.baseAddress, S) }, GVM_ERR_PINNED.rawValue)
        XCTAssertEqual(try h.states(40).kernel, I)
        h.memory.unpin(pin)
        // Bad arguments.
        XCTAssertEqual(bytes.withUnsafeBytes { host.page_install_batch(host.host, 30, 0, $0.baseAddress, S) }, GVM_ERR_INVALID.rawValue)
        XCTAssertEqual(bytes.withUnsafeBytes { host.page_install_batch(host.host, 30, 65, $0.baseAddress, S) }, GVM_ERR_INVALID.rawValue)
        XCTAssertEqual(bytes.withUnsafeBytes { host.page_install_batch(host.host, 30, 3, $0.baseAddress, I) }, GVM_ERR_INVALID.rawValue)
        XCTAssertEqual(host.page_install_batch(host.host, 30, 3, nil, S), GVM_ERR_INVALID.rawValue)
        XCTAssertEqual(bytes.withUnsafeBytes { host.page_install_batch(host.host, host.page_count - 1, 2, $0.baseAddress, S) },
                       GVM_ERR_INVALID.rawValue)
    }
}
