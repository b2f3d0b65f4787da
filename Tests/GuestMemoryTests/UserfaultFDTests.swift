// The typed userfaultfd layer against the real kernel: handshake, register, COPY (with and
// without WP, ranges), EEXIST, WRITEPROTECT on a missing page (the silent no-op trap), WAKE,
// MADV_DONTNEED, and the message a process without the right gets.

import CSystem
import Foundation
import Glibc
@testable import UserfaultFD
import XCTest

final class UserfaultFDTests: XCTestCase {
    func mapRegion(pages: Int) -> UnsafeMutableRawPointer {
        let p = mmap(nil, pages * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)!
        precondition(p != MAP_FAILED)
        _ = madvise(p, pages * 4096, MADV_NOHUGEPAGE)
        return p
    }

    func testHandshakeRegisterCopyWriteProtectAndDrop() throws {
        try requireUserfaultfd()
        let uffd = try Userfaultfd()
        XCTAssertTrue(uffd.features.contains(.pagefaultFlagWP))
        let region = mapRegion(pages: 8)
        defer { munmap(region, 8 * 4096) }
        let ioctls = try uffd.register(region, length: 8 * 4096, mode: [.missing, .writeProtect])
        XCTAssertTrue(ioctls.isSuperset(of: [.copy, .wake, .writeProtect]))

        let src = UnsafeMutableRawPointer.allocate(byteCount: 3 * 4096, alignment: 4096)
        defer { src.deallocate() }
        for i in 0..<(3 * 4096) { src.storeBytes(of: UInt8(truncatingIfNeeded: i * 3), toByteOffset: i, as: UInt8.self) }

        // Single page, write-protected: present + uffd-wp in the pagemap.
        try uffd.copy(to: region, from: src, length: 4096, writeProtect: true, wake: false)
        XCTAssertEqual(try KernelPageInfo(address: region), KernelPageInfo(present: true, writeProtected: true))
        XCTAssertEqual(region.load(fromByteOffset: 5, as: UInt8.self), 15)

        // A range of three pages, writable.
        try uffd.copy(to: region + 4096, from: src, length: 3 * 4096, writeProtect: false, wake: true)
        for p in 1...3 {
            XCTAssertEqual(try KernelPageInfo(address: region + p * 4096), KernelPageInfo(present: true, writeProtected: false))
        }
        XCTAssertEqual(region.load(fromByteOffset: 2 * 4096 + 10, as: UInt8.self), UInt8(truncatingIfNeeded: (4096 + 10) * 3))

        // COPY onto a present page: EEXIST as a typed error.
        XCTAssertThrowsError(try uffd.copy(to: region, from: src, length: 4096, writeProtect: true, wake: false)) { e in
            XCTAssertEqual(e as? UFFDError, .exists(operation: "UFFDIO_COPY"))
        }

        // WRITEPROTECT set/clear on a present page.
        try uffd.writeProtect(region + 4096, length: 4096, enable: true, wake: false)
        XCTAssertEqual(try KernelPageInfo(address: region + 4096).writeProtected, true)
        try uffd.writeProtect(region, length: 4096, enable: false, wake: false)
        XCTAssertEqual(try KernelPageInfo(address: region), KernelPageInfo(present: true, writeProtected: false))
        region.storeBytes(of: 0x77, toByteOffset: 9, as: UInt8.self) // writable now: no fault

        // The trap: WRITEPROTECT on a missing page succeeds and does nothing.
        try uffd.writeProtect(region + 5 * 4096, length: 4096, enable: false, wake: false)
        XCTAssertEqual(try KernelPageInfo(address: region + 5 * 4096).present, false)

        // MADV_DONTNEED drops the page; WAKE with nobody waiting is fine.
        try Userfaultfd.dontNeed(region, length: 4096)
        XCTAssertEqual(try KernelPageInfo(address: region).present, false)
        try uffd.wake(region, length: 4096)

        // Misuse maps to typed errors: unaligned copy is EINVAL.
        XCTAssertThrowsError(try uffd.copy(to: region + 1, from: src, length: 4096, writeProtect: false, wake: false)) { e in
            XCTAssertEqual(e as? UFFDError, .invalidArgument(operation: "UFFDIO_COPY"))
        }
    }

    func testFaultEventIsReadAndResolved() throws {
        try requireUserfaultfd()
        let uffd = try Userfaultfd()
        let region = mapRegion(pages: 2)
        defer { munmap(region, 2 * 4096) }
        try uffd.register(region, length: 2 * 4096, mode: [.missing, .writeProtect])
        let done = DispatchSemaphore(value: 0)
        let readValue = Mutex<UInt8>(0)
        let regionAddr = UInt(bitPattern: region)
        Thread {
            let p = UnsafeMutableRawPointer(bitPattern: regionAddr)!
            readValue.withLock { $0 = p.load(fromByteOffset: 4096 + 3, as: UInt8.self) }
            done.signal()
        }.start()
        let buf = UnsafeMutableRawPointer.allocate(byteCount: 16 * Userfaultfd.messageSize, alignment: 8)
        defer { buf.deallocate() }
        var n = 0
        let deadline = Date().addingTimeInterval(5)
        while n == 0 && Date() < deadline { n = try uffd.readEvents(into: buf, capacity: 16); if n == 0 { usleep(200) } }
        XCTAssertEqual(n, 1)
        XCTAssertEqual(Userfaultfd.event(in: buf, at: 0),
                       .pageFault(address: UInt64(regionAddr) + 4096, write: false, writeProtect: false, threadID: 0))
        let src = UnsafeMutableRawPointer.allocate(byteCount: 4096, alignment: 4096)
        defer { src.deallocate() }
        src.initializeMemory(as: UInt8.self, repeating: 0x5A, count: 4096)
        try uffd.copy(to: region + 4096, from: src, length: 4096, writeProtect: true, wake: true)
        XCTAssertEqual(done.wait(timeout: .now() + 5), .success)
        XCTAssertEqual(readValue.withLock { $0 }, 0x5A)
    }

    /// A process without the right (not root, no access to /dev/userfaultfd) gets a message
    /// naming both ways to get it. The probe runs in a forked child that drops to nobody.
    func testNoRightGivesClearMessage() throws {
        var sysResult: Int32 = 0, devResult: Int32 = 0
        let rc = gvm_uffd_probe_as_user(65534, &sysResult, &devResult)
        if rc == -EPERM { throw XCTSkip("cannot drop privileges here (not root): the no-right case cannot be arranged") }
        XCTAssertEqual(rc, 0)
        if sysResult == 0 || devResult == 0 {
            throw XCTSkip("user 65534 may open userfaultfd here (unprivileged_userfaultfd=1 or /dev/userfaultfd open)")
        }
        XCTAssertEqual(sysResult, -EPERM)
        XCTAssertEqual(devResult, -EACCES)
        let err = Userfaultfd.openFailure(syscallResult: sysResult, deviceResult: devResult)
        guard case .permissionDenied = err else { return XCTFail("expected permissionDenied, got \(err)") }
        let text = err.description
        XCTAssertTrue(text.hasPrefix("userfaultfd: permission denied: "), text)
        XCTAssertTrue(text.contains("no read/write access to /dev/userfaultfd"), text)
        XCTAssertTrue(text.contains("root"), text)
        XCTAssertTrue(text.contains("vm.unprivileged_userfaultfd = 0"), text)
    }

    func testErrnoMapping() {
        XCTAssertEqual(UFFDError(errno: EEXIST, operation: "x"), .exists(operation: "x"))
        XCTAssertEqual(UFFDError(errno: ENOENT, operation: "x"), .noEntry(operation: "x"))
        XCTAssertEqual(UFFDError(errno: EAGAIN, operation: "x"), .again(operation: "x"))
        XCTAssertEqual(UFFDError(errno: ESRCH, operation: "x"), .processGone(operation: "x"))
        XCTAssertEqual(UFFDError(errno: EBUSY, operation: "x"), .system(operation: "x", errno: EBUSY))
        XCTAssertEqual(Userfaultfd.openFailure(syscallResult: -ENOSYS, deviceResult: 1), .unsupported(operation: "userfaultfd"))
    }
}

import Synchronization
