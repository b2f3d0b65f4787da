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

/// page_downgrade_batch (ABI 5): contiguous modified pages write-protected with one call, all or
/// nothing, through the coherence host table as a plugin calls it.
final class DowngradeBatchTests: XCTestCase {
    let S = GVM_PAGE_SHARED, M = GVM_PAGE_MODIFIED, I = GVM_PAGE_INVALID

    func testModifiedRunBecomesSharedWithItsBytes() throws {
        try requireUserfaultfd()
        let h = try Harness(scripted: ScriptedCoherence(mode: .hold))
        defer { h.close() }
        let host = h.host.pointee
        for g in UInt64(10)..<14 {
            XCTAssertEqual(host.page_install(host.host, g, nil, M), GVM_OK.rawValue)
            store(h.addr(g, 7), UInt8(g))
        }
        XCTAssertEqual(host.page_downgrade_batch(host.host, 10, 4), GVM_OK.rawValue)
        for g in UInt64(10)..<14 {
            let s = try h.states(g)
            XCTAssertEqual(s.host, S, "gfn \(g)")
            XCTAssertEqual(s.kernel, S, "gfn \(g): the kernel maps it write-protected")
            XCTAssertEqual(load(h.addr(g, 7)), UInt8(g))
        }
    }

    func testAllOrNothing() throws {
        try requireUserfaultfd()
        let h = try Harness(scripted: ScriptedCoherence(mode: .hold))
        defer { h.close() }
        let host = h.host.pointee
        for g in UInt64(20)..<23 { XCTAssertEqual(host.page_install(host.host, g, nil, M), GVM_OK.rawValue) }
        XCTAssertEqual(host.page_install(host.host, 23, nil, S), GVM_OK.rawValue)
        // 23 is SHARED, 24 absent: nothing of the run changes.
        XCTAssertEqual(host.page_downgrade_batch(host.host, 20, 4), GVM_ERR_STATE.rawValue)
        XCTAssertEqual(host.page_downgrade_batch(host.host, 22, 3), GVM_ERR_STATE.rawValue)
        for g in UInt64(20)..<23 { XCTAssertEqual(try h.states(g).kernel, M, "gfn \(g)") }
        // A write pin refuses the run; a read pin does not.
        let pin = try h.memory.pin(gpa: 21 * UInt64(page), length: 8, for: .write, timeout: 5)
        XCTAssertEqual(host.page_downgrade_batch(host.host, 20, 3), GVM_ERR_PINNED.rawValue)
        XCTAssertEqual(try h.states(20).kernel, M)
        h.memory.unpin(pin)
        let rpin = try h.memory.pin(gpa: 21 * UInt64(page), length: 8, for: .read, timeout: 5)
        XCTAssertEqual(host.page_downgrade_batch(host.host, 20, 3), GVM_OK.rawValue)
        h.memory.unpin(rpin)
        XCTAssertEqual(try h.states(21).kernel, S)
        // Bad arguments.
        XCTAssertEqual(host.page_downgrade_batch(host.host, 20, 0), GVM_ERR_INVALID.rawValue)
        XCTAssertEqual(host.page_downgrade_batch(host.host, 20, 65), GVM_ERR_INVALID.rawValue)
        XCTAssertEqual(host.page_downgrade_batch(host.host, host.page_count - 1, 2), GVM_ERR_INVALID.rawValue)
    }
}

/// `installSharedHuge`: read copies of a range no vCPU has touched, backed by transparent huge
/// pages and write-protected at 2 MiB granularity (the replicated modules' middle).
final class HugeReadCopyTests: XCTestCase {
    let S = GVM_PAGE_SHARED, M = GVM_PAGE_MODIFIED, I = GVM_PAGE_INVALID
    let hugePages = GuestMemory.hugePageBytes / 4096

    /// AnonHugePages (KiB) of the mapping holding `address`, from /proc/self/smaps.
    func anonHugeKiB(at address: UnsafeMutableRawPointer) throws -> Int {
        let a = UInt(bitPattern: address)
        var inside = false
        // Read to the end: a /proc file reports size 0, so a read by size would stop short.
        guard let file = fopen("/proc/self/smaps", "r") else { throw CocoaError(.fileReadUnknown) }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = fread(&chunk, 1, chunk.count, file)
            if n <= 0 { break }
            bytes += chunk[0..<n]
        }
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") {
            let f = line.split(separator: " ", omittingEmptySubsequences: true)
            if let r = f.first, r.contains("-"), !r.hasSuffix(":") {
                let b = r.split(separator: "-")
                if b.count == 2, let lo = UInt(b[0], radix: 16), let hi = UInt(b[1], radix: 16) { inside = lo <= a && a < hi }
                continue
            }
            if inside, f.first == "AnonHugePages:", f.count >= 2, let k = Int(f[1]) { return k }
        }
        return 0
    }

    func testHugeReadCopiesHoldTheirBytesWriteProtectedAndSplitPerPage() throws {
        try requireUserfaultfd()
        let h = try Harness(pages: 4 * hugePages, scripted: ScriptedCoherence(mode: .hold))
        defer { h.close() }
        XCTAssertEqual(UInt(bitPattern: h.memory.base) % UInt(GuestMemory.hugePageBytes), 0, "guest RAM is 2 MiB aligned")
        let first = UInt64(hugePages), count = 2 * hugePages
        var calls = 0
        let status = try h.memory.installSharedHuge(first, count: count) { buf in
            calls += 1
            XCTAssertEqual(buf.count, count * page)
            for p in 0..<count { buf[p * page + 9] = UInt8(truncatingIfNeeded: p &* 13 &+ 1) }
        }
        XCTAssertEqual(status, GVM_OK)
        XCTAssertEqual(calls, 1)
        for p in 0..<count {
            let g = first + UInt64(p)
            let s = try h.states(g)
            XCTAssertEqual(s.host, S, "gfn \(g)")
            XCTAssertEqual(s.kernel, S, "gfn \(g): the kernel maps it write-protected")
            XCTAssertEqual(load(h.addr(g, 9)), UInt8(truncatingIfNeeded: p &* 13 &+ 1), "gfn \(g)")
        }
        XCTAssertEqual(try h.states(first - 1).kernel, I, "before the range")
        XCTAssertEqual(try h.states(first + UInt64(count)).kernel, I, "after the range")
        XCTAssertEqual(h.memory.stats.missingEvents, 0, "filling the range faulted nothing to the protocol")
        let thp = (try? String(contentsOfFile: "/sys/kernel/mm/transparent_hugepage/enabled", encoding: .utf8)) ?? ""
        if !thp.contains("[never]") {
            XCTAssertGreaterThan(try anonHugeKiB(at: h.addr(first)), 0, "the range is backed by huge pages")
        }
        // One page's upgrade and another's drop split their huge page; the neighbours keep their
        // state and bytes, and a write to the range is caught until upgraded.
        let host = h.host.pointee
        XCTAssertEqual(host.page_upgrade(host.host, first + 5), GVM_OK.rawValue)
        XCTAssertEqual(try h.states(first + 5).kernel, M)
        store(h.addr(first + 5, 100), 0xAB)
        XCTAssertEqual(host.page_drop(host.host, first + 7, nil), GVM_OK.rawValue)
        XCTAssertEqual(try h.states(first + 7).kernel, I)
        for g in [first + 4, first + 6, first + 8, first + UInt64(count) - 1] {
            XCTAssertEqual(try h.states(g).kernel, S, "gfn \(g)")
            XCTAssertEqual(load(h.addr(g, 9)), UInt8(truncatingIfNeeded: Int(g - first) &* 13 &+ 1), "gfn \(g)")
        }
        XCTAssertEqual(load(h.addr(first + 5, 100)), 0xAB)
    }

    /// page_install_zeros (ABI 5): a 2 MiB-aligned run of 512 pages is one writable huge page of
    /// zeros; any other run is copied in 4 KiB pages; all or nothing.
    func testZeroRunsAreModifiedZerosAndAWholeAlignedRunIsOneHugePage() throws {
        try requireUserfaultfd()
        let h = try Harness(pages: 4 * hugePages, scripted: ScriptedCoherence(mode: .hold))
        defer { h.close() }
        let host = h.host.pointee
        let first = UInt64(hugePages)
        XCTAssertEqual(host.page_install_zeros(host.host, first, UInt32(hugePages)), GVM_OK.rawValue)
        for g in [first, first + 1, first + 200, first + UInt64(hugePages) - 1] {
            XCTAssertEqual(try h.states(g).host, M, "gfn \(g)")
            XCTAssertEqual(try h.states(g).kernel, M, "gfn \(g): writable")
            XCTAssertEqual(load(h.addr(g, 77)), 0)
            store(h.addr(g, 77), 0x42)
        }
        XCTAssertEqual(h.memory.stats.missingEvents, 0, "no page of the run faulted")
        let thp = (try? String(contentsOfFile: "/sys/kernel/mm/transparent_hugepage/enabled", encoding: .utf8)) ?? ""
        if !thp.contains("[never]") { XCTAssertGreaterThan(try anonHugeKiB(at: h.addr(first)), 0, "one huge page") }
        // A later drop of one page splits it; the page faults to the protocol again.
        XCTAssertEqual(host.page_drop(host.host, first + 3, nil), GVM_OK.rawValue)
        XCTAssertEqual(try h.states(first + 3).kernel, I)
        XCTAssertEqual(load(h.addr(first + 200, 77)), 0x42)
        // Not aligned: 4 KiB copies, same states.
        XCTAssertEqual(host.page_install_zeros(host.host, 3 * first + 5, 70), GVM_OK.rawValue)
        XCTAssertEqual(try h.states(3 * first + 5).kernel, M)
        XCTAssertEqual(try h.states(3 * first + 74).kernel, M)
        XCTAssertEqual(try h.states(3 * first + 75).kernel, I)
        // All or nothing, and the bounds.
        XCTAssertEqual(host.page_install_zeros(host.host, 3 * first, 10), GVM_ERR_STATE.rawValue, "page +5 is present")
        XCTAssertEqual(try h.states(3 * first).kernel, I)
        XCTAssertEqual(host.page_install_zeros(host.host, 0, 0), GVM_ERR_INVALID.rawValue)
        XCTAssertEqual(host.page_install_zeros(host.host, 0, GVM_ZERO_RUN_MAX + 1), GVM_ERR_INVALID.rawValue)
        XCTAssertEqual(host.page_install_zeros(host.host, host.page_count - 1, 2), GVM_ERR_INVALID.rawValue)
    }

    func testRefusalsChangeNothing() throws {
        try requireUserfaultfd()
        let h = try Harness(pages: 4 * hugePages, scripted: ScriptedCoherence(mode: .hold))
        defer { h.close() }
        var filled = false
        let fill: (UnsafeMutableRawBufferPointer) throws -> Void = { _ in filled = true }
        XCTAssertEqual(try h.memory.installSharedHuge(1, count: hugePages, fill: fill), GVM_ERR_INVALID, "not aligned")
        XCTAssertEqual(try h.memory.installSharedHuge(0, count: hugePages - 1, fill: fill), GVM_ERR_INVALID, "not whole huge pages")
        XCTAssertEqual(try h.memory.installSharedHuge(UInt64(3 * hugePages), count: 2 * hugePages, fill: fill), GVM_ERR_INVALID, "past the end")
        let host = h.host.pointee
        XCTAssertEqual(host.page_install(host.host, UInt64(hugePages) + 3, nil, M), GVM_OK.rawValue)
        XCTAssertEqual(try h.memory.installSharedHuge(UInt64(hugePages), count: hugePages, fill: fill), GVM_ERR_STATE, "a page is present")
        XCTAssertFalse(filled)
        XCTAssertEqual(try h.states(UInt64(hugePages)).kernel, I)
        XCTAssertEqual(try h.states(UInt64(hugePages) + 3).kernel, M)
        // A failing fill leaves the range absent and registered: a later access faults to the protocol.
        struct Boom: Error {}
        XCTAssertThrowsError(try h.memory.installSharedHuge(UInt64(2 * hugePages), count: hugePages) { buf in
            buf[0] = 1
            throw Boom()
        })
        XCTAssertEqual(try h.states(UInt64(2 * hugePages)).kernel, I)
        XCTAssertEqual(h.memory.pageState(UInt64(2 * hugePages)), I)
        XCTAssertEqual(host.page_install(host.host, UInt64(2 * hugePages), nil, S), GVM_OK.rawValue, "still under userfaultfd")
    }
}
