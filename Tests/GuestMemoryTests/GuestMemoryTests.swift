// Guest memory driven by host threads (no KVM), through the coherence ABI: dsm-local for end to
// end runs, ScriptedCoherence where a test must see or control each hook call. Every check of a
// page's state also reads what the kernel holds (/proc/self/pagemap) and requires the two agree.

import CSystem
import Foundation
@testable import GuestMemory
import PluginAPI
import Synchronization
import XCTest

final class GuestMemoryTests: XCTestCase {
    let S = GVM_PAGE_SHARED, M = GVM_PAGE_MODIFIED, I = GVM_PAGE_INVALID

    func assertState(_ h: Harness, _ gfn: UInt64, _ want: UInt32, file: StaticString = #filePath, line: UInt = #line) throws {
        let s = try h.states(gfn)
        XCTAssertEqual(s.host, want, "host state of page \(gfn)", file: file, line: line)
        XCTAssertEqual(s.kernel, want, "kernel state of page \(gfn)", file: file, line: line)
    }

    // MARK: many threads

    func testManyThreadsOnSameAndDifferentPagesWakeWithTheRightBytes() throws {
        try requireUserfaultfd()
        let scripted = ScriptedCoherence(mode: .serve)
        let h = try Harness(pages: 64, handlers: 2, scripted: scripted)
        defer { h.close() }
        let base = UInt(bitPattern: h.memory.base)
        let bad = Atomic<Int>(0)
        // 12 threads on page 5 (same), 12 threads each on its own page 10..21, all at once.
        onThreads(24) { i in
            let gfn: UInt64 = i < 12 ? 5 : UInt64(10 + i - 12)
            let p = UnsafeMutableRawPointer(bitPattern: base)! + Int(gfn) * page
            for o in stride(from: i % 7, to: page, by: 397) where load(p + o) != pattern(gfn, o) {
                bad.add(1, ordering: .relaxed)
            }
        }
        XCTAssertEqual(bad.load(ordering: .relaxed), 0, "a thread woke to wrong bytes")
        try assertState(h, 5, S)
        for g in UInt64(10)...21 { try assertState(h, g, S) }
        // One install per page: faults on page 5 beyond the first were stale or coalesced.
        let st = h.memory.stats
        XCTAssertEqual(st.missingEvents, st.staleEvents + st.pluginFaults)
        XCTAssertGreaterThanOrEqual(st.pluginFaults, 13)
        XCTAssertEqual(Set(scripted.faults.map(\.gfn)), Set([5] + Array(10...21)))
    }

    func testManyWritersOnOnePageThroughDsmLocalKeepEveryStore() throws {
        try requireUserfaultfd()
        let h = try Harness(pages: 16, wakeMode: .spin(nanoseconds: 100_000), handlers: 2)
        defer { h.close() }
        let base = UInt(bitPattern: h.memory.base)
        // 16 threads: each writes its own 64-byte slot of page 3 (one thread first reads, so the
        // page goes through SHARED), and its own page 4+i/2; then everything is read back.
        onThreads(16) { i in
            let p = UnsafeMutableRawPointer(bitPattern: base)!
            if i == 0 { _ = load(p + 3 * page) }
            for o in 0..<64 { store(p + 3 * page + i * 64 + o, UInt8(i + 1)) }
            store(p + (4 + i / 2) * page + (i % 2) * 100, UInt8(0x80 | i))
        }
        for i in 0..<16 {
            for o in 0..<64 { XCTAssertEqual(load(h.addr(3, i * 64 + o)), UInt8(i + 1)) }
            XCTAssertEqual(load(h.addr(UInt64(4 + i / 2), (i % 2) * 100)), UInt8(0x80 | i))
        }
        XCTAssertEqual(load(h.addr(3, 16 * 64)), 0, "untouched bytes are zero-filled")
        try assertState(h, 3, M)
        for g in UInt64(4)...11 { try assertState(h, g, M) }
    }

    /// Writers store while another thread keeps taking their pages away (drop with copy-out, or
    /// downgrade): with write-protect-then-copy no store may be lost, and every page faulted back
    /// in carries the last value each writer stored.
    func testNoStoreIsLostWhilePagesAreDroppedAndDowngraded() throws {
        try requireUserfaultfd()
        let scripted = ScriptedCoherence(mode: .serve)
        let h = try Harness(pages: 8, wakeMode: .spin(nanoseconds: 50_000), handlers: 2, scripted: scripted)
        defer { h.close() }
        let base = UInt(bitPattern: h.memory.base)
        let writers = 3, rounds = 3000
        let running = Atomic<Int>(writers)
        let evictions = Atomic<Int>(0)
        let group = DispatchGroup()
        group.enter()
        Thread {
            var k = 0
            while running.load(ordering: .acquiring) > 0 {
                let g = UInt64(k % 8)
                let rc = k % 3 == 0 ? scripted.downgrade(g) : scripted.evict(g)
                if rc == GVM_OK.rawValue { evictions.add(1, ordering: .relaxed) }
                k += 1
                usleep(20)
            }
            group.leave()
        }.start()
        let lastWritten = Mutex<[[UInt32]]>(Array(repeating: Array(repeating: 0, count: 8), count: writers))
        onThreads(writers, timeout: 40) { i in
            let p = UnsafeMutableRawPointer(bitPattern: base)!
            var last = [UInt32](repeating: 0, count: 8)
            let deadline = Date().addingTimeInterval(10)
            var r = 0
            // At least `rounds` stores, and on until the evictor has taken pages away 300 times.
            while r < rounds || (evictions.load(ordering: .relaxed) < 300 && Date() < deadline) {
                r += 1
                (p + (r % 8) * page + i * 8).storeBytes(of: UInt32(r), as: UInt32.self)
                last[r % 8] = UInt32(r)
                if r % 64 == 0 { usleep(10) }
            }
            lastWritten.withLock { $0[i] = last }
            running.add(-1, ordering: .releasing)
        }
        XCTAssertEqual(group.wait(timeout: .now() + 10), .success)
        XCTAssertGreaterThanOrEqual(evictions.load(ordering: .relaxed), 300, "the evictor barely ran")
        let expected = lastWritten.withLock { $0 }
        for g in 0..<8 {
            for i in 0..<writers {
                XCTAssertEqual(h.addr(UInt64(g), i * 8).load(as: UInt32.self), expected[i][g], "page \(g) writer \(i)")
            }
            let s = try h.states(UInt64(g))
            XCTAssertEqual(s.host, s.kernel, "page \(g)")
        }
    }

    // MARK: one page through the states

    func testReadThenWriteGoesMissingSharedModifiedWithOneFaultEach() throws {
        try requireUserfaultfd()
        let h = try Harness()
        defer { h.close() }
        try assertState(h, 7, I)
        XCTAssertEqual(load(h.addr(7, 100)), 0)
        try assertState(h, 7, S)
        XCTAssertEqual(h.memory.stats.missingEvents, 1)
        XCTAssertEqual(h.memory.stats.writeProtectEvents, 0)
        store(h.addr(7, 100), 0x42)
        try assertState(h, 7, M)
        var st = h.memory.stats
        XCTAssertEqual(st.missingEvents, 1)
        XCTAssertEqual(st.writeProtectEvents, 1)
        XCTAssertEqual(st.pluginFaults, 2)
        XCTAssertEqual(st.staleEvents, 0)
        // Further accesses do not fault.
        store(h.addr(7, 101), 0x43)
        XCTAssertEqual(load(h.addr(7, 100)), 0x42)
        st = h.memory.stats
        XCTAssertEqual(st.missingEvents + st.writeProtectEvents, 2)
        // dsm-local's standard statistics: one read miss, then one upgrade (no write miss).
        let counters = h.metrics.snapshot().counters
        XCTAssertEqual(counters[GVM_STAT_FAULT_READ_MISS], 1)
        XCTAssertEqual(counters[GVM_STAT_FAULT_WRITE_MISS], 0)
        XCTAssertEqual(counters[GVM_STAT_FAULT_UPGRADE], 1)
        XCTAssertEqual(h.metrics.snapshot().histograms[GVM_STAT_FAULT_LATENCY]?.count, 2)
    }

    func testFirstTouchByAWriteInstallsModifiedWithOneFault() throws {
        try requireUserfaultfd()
        let h = try Harness()
        defer { h.close() }
        store(h.addr(2, 5), 9)
        try assertState(h, 2, M)
        XCTAssertEqual(h.memory.stats.missingEvents, 1)
        XCTAssertEqual(h.memory.stats.writeProtectEvents, 0)
        XCTAssertEqual(load(h.addr(2, 5)), 9)
    }

    func testDropThenTouchRefaults() throws {
        try requireUserfaultfd()
        let h = try Harness()
        defer { h.close() }
        store(h.addr(4, 0), 0xAB)
        try assertState(h, 4, M)
        var out = [UInt8](repeating: 0, count: page)
        let rc = out.withUnsafeMutableBytes { h.host.pointee.page_drop(h.host.pointee.host, 4, $0.baseAddress) }
        XCTAssertEqual(rc, GVM_OK.rawValue)
        XCTAssertEqual(out[0], 0xAB, "drop copies the bytes out first")
        try assertState(h, 4, I)
        XCTAssertEqual(h.host.pointee.page_drop(h.host.pointee.host, 4, nil), GVM_ERR_NOT_PRESENT.rawValue)
        let before = h.memory.stats.missingEvents
        XCTAssertEqual(load(h.addr(4, 0)), 0, "dsm-local serves a dropped page zero-filled")
        XCTAssertEqual(h.memory.stats.missingEvents, before + 1)
        try assertState(h, 4, S)
    }

    func testDowngradeThenWriteFaults() throws {
        try requireUserfaultfd()
        let h = try Harness()
        defer { h.close() }
        store(h.addr(6, 10), 0x11)
        var out = [UInt8](repeating: 0, count: page)
        let rc = out.withUnsafeMutableBytes { h.host.pointee.page_downgrade(h.host.pointee.host, 6, $0.baseAddress) }
        XCTAssertEqual(rc, GVM_OK.rawValue)
        XCTAssertEqual(out[10], 0x11)
        try assertState(h, 6, S)
        XCTAssertEqual(load(h.addr(6, 10)), 0x11, "reads of a SHARED page do not fault")
        let wpBefore = h.memory.stats.writeProtectEvents
        XCTAssertEqual(wpBefore, 0)
        store(h.addr(6, 11), 0x22)
        XCTAssertEqual(h.memory.stats.writeProtectEvents, 1)
        try assertState(h, 6, M)
        XCTAssertEqual(load(h.addr(6, 10)), 0x11)
        XCTAssertEqual(load(h.addr(6, 11)), 0x22)
        // Downgrade of an INVALID page reports it.
        XCTAssertEqual(h.host.pointee.page_downgrade(h.host.pointee.host, 30, nil), GVM_ERR_NOT_PRESENT.rawValue)
    }

    func testUpgradeOnADroppedPageIsDetected() throws {
        try requireUserfaultfd()
        let h = try Harness(scripted: ScriptedCoherence(mode: .hold))
        defer { h.close() }
        let host = h.host.pointee
        XCTAssertEqual(host.page_install(host.host, 9, nil, S), GVM_OK.rawValue)
        try assertState(h, 9, S)
        XCTAssertEqual(host.page_drop(host.host, 9, nil), GVM_OK.rawValue)
        // A crossing invalidation dropped the page: WRITEPROTECT would silently do nothing.
        XCTAssertEqual(host.page_upgrade(host.host, 9), GVM_ERR_NOT_PRESENT.rawValue)
        try assertState(h, 9, I)
        // Upgrade of a MODIFIED page is a no-op; of a SHARED one clears protection.
        XCTAssertEqual(host.page_install(host.host, 9, nil, S), GVM_OK.rawValue)
        XCTAssertEqual(host.page_upgrade(host.host, 9), GVM_OK.rawValue)
        try assertState(h, 9, M)
        XCTAssertEqual(host.page_upgrade(host.host, 9), GVM_OK.rawValue)
        try assertState(h, 9, M)
        // Out of range and bad states are rejected.
        XCTAssertEqual(host.page_upgrade(host.host, 1 << 40), GVM_ERR_INVALID.rawValue)
        XCTAssertEqual(host.page_install(host.host, 9, nil, I), GVM_ERR_INVALID.rawValue)
    }

    func testInstallOverPresentPageIsDropThenCopy() throws {
        try requireUserfaultfd()
        let h = try Harness(scripted: ScriptedCoherence(mode: .hold))
        defer { h.close() }
        let host = h.host.pointee
        let a = [UInt8](repeating: 0xA1, count: page), b = [UInt8](repeating: 0xB2, count: page)
        XCTAssertEqual(a.withUnsafeBytes { host.page_install(host.host, 3, $0.baseAddress, M) }, GVM_OK.rawValue)
        XCTAssertEqual(load(h.addr(3, 7)), 0xA1)
        XCTAssertEqual(b.withUnsafeBytes { host.page_install(host.host, 3, $0.baseAddress, S) }, GVM_OK.rawValue)
        XCTAssertEqual(load(h.addr(3, 7)), 0xB2)
        try assertState(h, 3, S)
        XCTAssertEqual(h.memory.stats.copyExists, 0, "a known-present page is dropped first, no EEXIST")
    }

    func testEEXISTOnCopyIsHandledAsDropThenCopy() throws {
        try requireUserfaultfd()
        let h = try Harness(scripted: ScriptedCoherence(mode: .hold))
        defer { h.close() }
        // Make the kernel hold page 5 behind the host's back (host state stays INVALID).
        let junk = UnsafeMutableRawPointer.allocate(byteCount: page, alignment: page)
        defer { junk.deallocate() }
        junk.initializeMemory(as: UInt8.self, repeating: 0xEE, count: page)
        try h.memory.rawUserfaultfd.copy(to: h.addr(5), from: junk, length: page, writeProtect: false, wake: false)
        XCTAssertEqual(h.memory.pageState(5), I)
        XCTAssertEqual(try h.memory.kernelState(5), M)
        let fresh = [UInt8](repeating: 0x3C, count: page)
        let host = h.host.pointee
        XCTAssertEqual(fresh.withUnsafeBytes { host.page_install(host.host, 5, $0.baseAddress, S) }, GVM_OK.rawValue)
        XCTAssertEqual(h.memory.stats.copyExists, 1)
        try assertState(h, 5, S)
        XCTAssertEqual(load(h.addr(5, 100)), 0x3C)
    }

    func testStaleEventIsRecheckedAndOnlyWoken() throws {
        try requireUserfaultfd()
        let scripted = ScriptedCoherence(mode: .hold)
        let h = try Harness(scripted: scripted)
        defer { h.close() }
        let host = h.host.pointee
        // The event sits in the uffd while the page is installed (no wake): when the handler reads
        // it, the page already allows the access; it must be woken, not passed to the plugin.
        h.memory._setHandlersPaused(true)
        let got = Atomic<Int>(-1)
        let addr = UInt(bitPattern: h.addr(8, 33))
        let done = DispatchSemaphore(value: 0)
        Thread { got.store(Int(load(UnsafeMutableRawPointer(bitPattern: addr)!)), ordering: .relaxed); done.signal() }.start()
        // Wait until the fault is queued in the uffd (readable while the handlers are paused).
        var pfd = pollfd(fd: h.memory.rawUserfaultfd.fd, events: Int16(POLLIN), revents: 0)
        XCTAssertEqual(poll(&pfd, 1, 5000), 1, "the reader never faulted")
        let bytes = [UInt8](repeating: 0x6D, count: page)
        XCTAssertEqual(bytes.withUnsafeBytes { host.page_install(host.host, 8, $0.baseAddress, S) }, GVM_OK.rawValue)
        h.memory._setHandlersPaused(false)
        XCTAssertEqual(done.wait(timeout: .now() + 5), .success, "the stale event's thread was never woken")
        XCTAssertEqual(got.load(ordering: .relaxed), 0x6D)
        XCTAssertEqual(h.memory.stats.staleEvents, 1)
        XCTAssertEqual(h.memory.stats.pluginFaults, 0)
        XCTAssertEqual(scripted.faults, [])

        // A write fault on a SHARED page, resolved in hold mode by the test.
        let w = DispatchSemaphore(value: 0)
        let addr2 = UInt(bitPattern: h.addr(8, 34))
        Thread { store(UnsafeMutableRawPointer(bitPattern: addr2)!, 0x99); w.signal() }.start()
        let deadline = Date().addingTimeInterval(5)
        while scripted.faults.isEmpty && Date() < deadline { usleep(1000) }
        XCTAssertEqual(scripted.faults, [.init(gfn: 8, access: GVM_ACCESS_WRITE, flags: 0)])
        XCTAssertEqual(w.wait(timeout: .now() + 0.05), .timedOut, "the writer must wait for the plugin")
        XCTAssertEqual(host.page_upgrade(host.host, 8), GVM_OK.rawValue)
        host.page_wake(host.host, 8)
        XCTAssertEqual(w.wait(timeout: .now() + 5), .success)
        XCTAssertEqual(load(h.addr(8, 34)), 0x99)
        XCTAssertEqual(load(h.addr(8, 33)), 0x6D)
        try assertState(h, 8, M)
    }

    func testPatchAndReadPage() throws {
        try requireUserfaultfd()
        let h = try Harness(scripted: ScriptedCoherence(mode: .hold))
        defer { h.close() }
        let host = h.host.pointee
        XCTAssertEqual(host.page_install(host.host, 2, nil, S), GVM_OK.rawValue)
        let diff: [UInt8] = [1, 2, 3, 4]
        XCTAssertEqual(diff.withUnsafeBytes { host.page_patch(host.host, 2, 4090, $0.baseAddress, 4) }, GVM_OK.rawValue)
        try assertState(h, 2, S)
        var out = [UInt8](repeating: 0xFF, count: page)
        XCTAssertEqual(out.withUnsafeMutableBytes { host.page_read(host.host, 2, $0.baseAddress) }, GVM_OK.rawValue)
        XCTAssertEqual(Array(out[4088..<4096]), [0, 0, 1, 2, 3, 4, 0, 0])
        XCTAssertEqual(diff.withUnsafeBytes { host.page_patch(host.host, 2, 4094, $0.baseAddress, 4) }, GVM_ERR_INVALID.rawValue)
        XCTAssertEqual(diff.withUnsafeBytes { host.page_patch(host.host, 40, 0, $0.baseAddress, 4) }, GVM_ERR_NOT_PRESENT.rawValue)
        XCTAssertEqual(out.withUnsafeMutableBytes { host.page_read(host.host, 40, $0.baseAddress) }, GVM_ERR_NOT_PRESENT.rawValue)
        XCTAssertEqual(h.memory.stats.missingEvents + h.memory.stats.writeProtectEvents, 0, "host-side patch never faults")
    }

    // MARK: pins

    func testPinBlocksDropUntilUnpin() throws {
        try requireUserfaultfd()
        let scripted = ScriptedCoherence(mode: .serve)
        let h = try Harness(scripted: scripted)
        defer { h.close() }
        let host = h.host.pointee
        let r = try h.memory.pin(gpa: 9 * UInt64(page) + 8, length: 16, for: .read, timeout: 5)
        XCTAssertEqual(scripted.faults, [.init(gfn: 9, access: GVM_ACCESS_READ, flags: GVM_FAULT_FROM_PIN)])
        XCTAssertEqual(r.pointer.load(as: UInt8.self), pattern(9, 8))
        try assertState(h, 9, S)
        XCTAssertEqual(host.page_pinned(host.host, 9), GVM_ACCESS_READ)
        XCTAssertEqual(host.page_drop(host.host, 9, nil), GVM_ERR_PINNED.rawValue)
        XCTAssertEqual(host.page_install(host.host, 9, nil, M), GVM_ERR_PINNED.rawValue)
        // Another thread keeps trying to drop; it succeeds only after the unpin.
        let dropped = Atomic<Bool>(false)
        let stopTrying = Atomic<Bool>(false)
        let hostPtr = UInt(bitPattern: h.host)
        let t = DispatchSemaphore(value: 0)
        Thread {
            let mh = UnsafePointer<gvm_coherence_host>(bitPattern: hostPtr)!.pointee
            while !stopTrying.load(ordering: .relaxed) {
                if mh.page_drop(mh.host, 9, nil) == GVM_OK.rawValue { dropped.store(true, ordering: .relaxed); break }
                usleep(500)
            }
            t.signal()
        }.start()
        usleep(30_000)
        XCTAssertFalse(dropped.load(ordering: .relaxed), "a pinned page was dropped")
        XCTAssertEqual(scripted.unpinned, [])
        h.memory.unpin(r)
        XCTAssertEqual(scripted.unpinned, [9], "page_unpinned after the last unpin")
        XCTAssertEqual(t.wait(timeout: .now() + 5), .success)
        stopTrying.store(true, ordering: .relaxed)
        XCTAssertTrue(dropped.load(ordering: .relaxed))
        try assertState(h, 9, I)
    }

    func testWritePinBlocksDowngradeButReadPinDoesNot() throws {
        try requireUserfaultfd()
        let scripted = ScriptedCoherence(mode: .serve)
        let h = try Harness(scripted: scripted)
        defer { h.close() }
        let host = h.host.pointee
        let w = try h.memory.pin(gpa: 0, length: 2 * page, for: .write, timeout: 5)
        try assertState(h, 0, M); try assertState(h, 1, M)
        XCTAssertEqual(host.page_pinned(host.host, 1), GVM_ACCESS_WRITE)
        XCTAssertEqual(host.page_downgrade(host.host, 1, nil), GVM_ERR_PINNED.rawValue)
        let rd = try h.memory.pin(gpa: UInt64(page), length: 1, for: .read, timeout: 5)
        h.memory.unpin(w)
        XCTAssertEqual(scripted.unpinned, [0], "page 1 is still pinned for read")
        XCTAssertEqual(host.page_pinned(host.host, 1), GVM_ACCESS_READ)
        XCTAssertEqual(host.page_downgrade(host.host, 1, nil), GVM_OK.rawValue)
        XCTAssertEqual(host.page_drop(host.host, 1, nil), GVM_ERR_PINNED.rawValue)
        h.memory.unpin(rd)
        XCTAssertEqual(scripted.unpinned, [0, 1])
        XCTAssertEqual(host.page_pinned(host.host, 1), 0)
    }

    func testPageWrittenThroughAPinIsReadBackByFaultingThreads() throws {
        try requireUserfaultfd()
        let scripted = ScriptedCoherence(mode: .serve)
        let h = try Harness(pages: 32, handlers: 2, scripted: scripted)
        defer { h.close() }
        // Write 3 pages' worth, unaligned, through write pins (as image loading does).
        let start = 10 * UInt64(page) + 1000
        let data = (0..<(3 * page)).map { UInt8(truncatingIfNeeded: $0 * 13 + 5) }
        try h.memory.write(gpa: start, bytes: data, timeout: 5)
        XCTAssertEqual(try h.memory.read(gpa: start, count: data.count, timeout: 5), data)
        // Another node takes the pages (drop, keeping the bytes at home); local threads then
        // fault them back in and must read what the pin wrote.
        for g in UInt64(10)...13 { XCTAssertEqual(scripted.evict(g), GVM_OK.rawValue) }
        let before = h.memory.stats.missingEvents
        let base = UInt(bitPattern: h.memory.base)
        let bad = Atomic<Int>(0)
        onThreads(8) { i in
            let p = UnsafeMutableRawPointer(bitPattern: base)! + Int(start)
            for k in stride(from: i, to: data.count, by: 61) where load(p + k) != data[k] { bad.add(1, ordering: .relaxed) }
        }
        XCTAssertEqual(bad.load(ordering: .relaxed), 0)
        XCTAssertGreaterThanOrEqual(h.memory.stats.missingEvents - before, 4, "each page faulted back in")
        XCTAssertEqual(load(h.addr(10, 999)), pattern(10, 999), "bytes before the write are the original ones")
    }

    func testConcurrentOverlappingMultiPagePinsDoNotDeadlock() throws {
        try requireUserfaultfd()
        let h = try Harness(pages: 32, handlers: 2)
        defer { h.close() }
        let failures = Atomic<Int>(0)
        onThreads(4, timeout: 30) { i in
            for round in 0..<200 {
                // Overlapping ranges in different directions of the address space.
                let startPage = (i % 2 == 0) ? (round % 8) : 15 - (round % 8)
                let bytes = [UInt8](repeating: UInt8(i + 1), count: 8 * page)
                do {
                    if i < 2 {
                        try h.memory.write(gpa: UInt64(startPage * page), bytes: bytes, timeout: 10)
                    } else {
                        _ = try h.memory.read(gpa: UInt64(startPage * page), count: 8 * page, timeout: 10)
                    }
                } catch { failures.add(1, ordering: .relaxed) }
            }
        }
        XCTAssertEqual(failures.load(ordering: .relaxed), 0)
        for g in UInt64(0)..<24 { XCTAssertEqual(h.memory.pinned(g), 0) }
    }

    func testPinErrors() throws {
        try requireUserfaultfd()
        let h = try Harness(pages: 4, scripted: ScriptedCoherence(mode: .hold))
        defer { h.close() }
        XCTAssertThrowsError(try h.memory.pin(gpa: 3 * UInt64(page), length: page + 1, for: .read)) { e in
            XCTAssertEqual(e as? GuestMemoryError, .outOfRange(gpa: 3 * UInt64(page), length: page + 1, size: 4 * UInt64(page)))
        }
        // Hold mode never resolves: the pin times out cleanly instead of hanging.
        XCTAssertThrowsError(try h.memory.pin(gpa: 0, length: 1, for: .write, timeout: 0.2)) { e in
            XCTAssertEqual(e as? GuestMemoryError, .pinTimeout(gfn: 0, access: "write", seconds: 0.2))
        }
        XCTAssertEqual(h.memory.pinned(0), 0)
    }

    func testStopFailsWaitingPinsAndIsIdempotent() throws {
        try requireUserfaultfd()
        let h = try Harness(pages: 4, scripted: ScriptedCoherence(mode: .hold))
        let result = Mutex<Error?>(nil)
        let done = DispatchSemaphore(value: 0)
        let mem = h.memory
        Thread {
            do { _ = try mem.pin(gpa: 0, length: 1, for: .read) } catch { result.withLock { $0 = error } }
            done.signal()
        }.start()
        usleep(50_000)
        h.memory.stop()
        XCTAssertEqual(done.wait(timeout: .now() + 5), .success)
        XCTAssertEqual(result.withLock { $0 } as? GuestMemoryError, .stopped)
        h.close()
    }

    func testSpinWakeModeServesFaults() throws {
        try requireUserfaultfd()
        let h = try Harness(pages: 256, wakeMode: .spin(nanoseconds: 50_000))
        defer { h.close() }
        for g in 0..<200 { XCTAssertEqual(load(h.addr(UInt64(g), 1)), 0); store(h.addr(UInt64(g), 2), UInt8(g & 0xFF)) }
        for g in 0..<200 { XCTAssertEqual(load(h.addr(UInt64(g), 2)), UInt8(g & 0xFF)) }
        XCTAssertEqual(h.memory.stats.missingEvents, 200)
        XCTAssertEqual(h.memory.stats.writeProtectEvents, 200)
    }

    func testWakeModeParsing() {
        XCTAssertEqual(HandlerWakeMode(parsing: "poll"), .poll)
        XCTAssertEqual(HandlerWakeMode(parsing: "spin"), .spin(nanoseconds: HandlerWakeMode.defaultSpinNanoseconds))
        XCTAssertEqual(HandlerWakeMode(parsing: "spin:30"), .spin(nanoseconds: 30_000))
        XCTAssertNil(HandlerWakeMode(parsing: "busy"))
    }

    func testBadSizeIsAClearError() throws {
        try requireUserfaultfd()
        XCTAssertThrowsError(try GuestMemory(bytes: 5000, send: { _, _ in 0 }, sendUrgent: { _, _ in 0 })) { e in
            XCTAssertEqual("\(e)", "guest memory: size 5000 is not a positive multiple of 4096 bytes")
        }
    }
}
