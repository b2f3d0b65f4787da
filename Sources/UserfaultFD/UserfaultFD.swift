// UserfaultFD: a typed layer over userfaultfd(2). Nothing above this file touches a raw uffd
// ioctl number, flag or errno: each Swift name documents the C constant it stands for.
//
// Threading: a `Userfaultfd` is safe to use from any number of threads at once (every operation
// is one syscall on an fd the object owns; the kernel serialises what needs it). The fd is closed
// only by `deinit`; never close it to stop fault handling (pending faults would turn into
// zero-fill): stop handler threads by flag and kick instead.

import CSystem
import Glibc

/// An error from a userfaultfd operation: the operation, and the errno it failed with, mapped to
/// the cases callers act on.
public enum UFFDError: Error, Equatable, CustomStringConvertible {
    /// The process may not create a userfaultfd able to catch kernel-mode faults (those taken
    /// inside KVM). `detail` names what was tried and what is missing.
    case permissionDenied(detail: String)
    /// UFFDIO_API succeeded but a required feature (UFFD_FEATURE_*) is not offered.
    case featureMissing(String)
    /// The kernel has no userfaultfd at all (ENOSYS).
    case unsupported(operation: String)
    /// EEXIST: UFFDIO_COPY onto a page that is already present.
    case exists(operation: String)
    /// ENOENT: the range is not (or no longer) registered / mapped as expected.
    case noEntry(operation: String)
    /// EAGAIN: the mapping changed under the operation (a partial copy, retry the rest).
    case again(operation: String)
    /// EINVAL: bad alignment, range or mode.
    case invalidArgument(operation: String)
    /// ENOMEM: out of memory.
    case noMemory(operation: String)
    /// EFAULT: an address argument is not mapped.
    case badAddress(operation: String)
    /// ESRCH: the address space the uffd belongs to is gone.
    case processGone(operation: String)
    /// Any other errno.
    case system(operation: String, errno: Int32)

    /// Maps a positive errno from `operation` to a case.
    public init(errno e: Int32, operation: String) {
        switch e {
        case EEXIST: self = .exists(operation: operation)
        case ENOENT: self = .noEntry(operation: operation)
        case EAGAIN: self = .again(operation: operation)
        case EINVAL: self = .invalidArgument(operation: operation)
        case ENOMEM: self = .noMemory(operation: operation)
        case EFAULT: self = .badAddress(operation: operation)
        case ESRCH: self = .processGone(operation: operation)
        case ENOSYS: self = .unsupported(operation: operation)
        default: self = .system(operation: operation, errno: e)
        }
    }

    public var description: String {
        func s(_ e: Int32) -> String { String(cString: strerror(e)) }
        switch self {
        case .permissionDenied(let d): return "userfaultfd: permission denied: \(d)"
        case .featureMissing(let f): return "userfaultfd: the kernel does not offer \(f), which guest memory needs"
        case .unsupported(let op): return "\(op): this kernel has no userfaultfd (\(s(ENOSYS)))"
        case .exists(let op): return "\(op): page already present (EEXIST)"
        case .noEntry(let op): return "\(op): range not registered or not mapped (ENOENT)"
        case .again(let op): return "\(op): mapping changed, retry (EAGAIN)"
        case .invalidArgument(let op): return "\(op): invalid argument (EINVAL)"
        case .noMemory(let op): return "\(op): out of memory (ENOMEM)"
        case .badAddress(let op): return "\(op): bad address (EFAULT)"
        case .processGone(let op): return "\(op): the address space is gone (ESRCH)"
        case .system(let op, let e): return "\(op): \(s(e)) (errno \(e))"
        }
    }
}

/// UFFD_FEATURE_* bits negotiated by the UFFDIO_API handshake.
public struct UFFDFeatures: OptionSet, Sendable, CustomStringConvertible {
    public let rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    /// UFFD_FEATURE_PAGEFAULT_FLAG_WP: write-protect faults on anonymous memory.
    public static let pagefaultFlagWP = UFFDFeatures(rawValue: UInt64(UFFD_FEATURE_PAGEFAULT_FLAG_WP))
    /// UFFD_FEATURE_THREAD_ID: events carry the faulting thread's id.
    public static let threadID = UFFDFeatures(rawValue: UInt64(UFFD_FEATURE_THREAD_ID))
    /// UFFD_FEATURE_EXACT_ADDRESS: fault addresses are not masked to the page.
    public static let exactAddress = UFFDFeatures(rawValue: UInt64(UFFD_FEATURE_EXACT_ADDRESS))

    public var description: String {
        var names: [String] = []
        if contains(.pagefaultFlagWP) { names.append("PAGEFAULT_FLAG_WP") }
        if contains(.threadID) { names.append("THREAD_ID") }
        if contains(.exactAddress) { names.append("EXACT_ADDRESS") }
        return "[" + names.joined(separator: ", ") + String(format0x: rawValue) + "]"
    }
}

private extension String {
    init(format0x v: UInt64) { self = " raw 0x" + String(v, radix: 16) }
}

/// UFFDIO_REGISTER_MODE_* bits.
public struct UFFDRegisterMode: OptionSet, Sendable {
    public let rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    /// UFFDIO_REGISTER_MODE_MISSING: faults on pages that are not present.
    public static let missing = UFFDRegisterMode(rawValue: UInt64(UFFDIO_REGISTER_MODE_MISSING))
    /// UFFDIO_REGISTER_MODE_WP: writes to write-protected pages.
    public static let writeProtect = UFFDRegisterMode(rawValue: UInt64(UFFDIO_REGISTER_MODE_WP))
}

/// The range ioctls (bit `_UFFDIO_*`) available on a registered range.
public struct UFFDRangeIoctls: OptionSet, Sendable {
    public let rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    public static let wake = UFFDRangeIoctls(rawValue: 1 << UInt64(_UFFDIO_WAKE))
    public static let copy = UFFDRangeIoctls(rawValue: 1 << UInt64(_UFFDIO_COPY))
    public static let writeProtect = UFFDRangeIoctls(rawValue: 1 << UInt64(_UFFDIO_WRITEPROTECT))
}

/// One event read from the uffd.
public enum UFFDEvent: Equatable, Sendable {
    /// UFFD_EVENT_PAGEFAULT: a thread stopped on `address` (page aligned unless EXACT_ADDRESS).
    /// `write`: UFFD_PAGEFAULT_FLAG_WRITE. `writeProtect`: UFFD_PAGEFAULT_FLAG_WP (a write to a
    /// present, write-protected page; otherwise the page was missing).
    case pageFault(address: UInt64, write: Bool, writeProtect: Bool, threadID: UInt32)
    /// Any other event kind (fork/remap/remove/unmap are never requested here).
    case other(kind: UInt8)
}

/// An owned userfaultfd, opened non-blocking and close-on-exec, handshake done.
///
/// Threading: any thread, concurrently. See the file header for why `close` is not offered.
public final class Userfaultfd: @unchecked Sendable {
    public let fd: Int32
    /// The features the kernel granted in the handshake.
    public let features: UFFDFeatures
    public static let pageSize = 4096

    /// Opens a userfaultfd able to catch kernel-mode faults, via userfaultfd(2), falling back to
    /// /dev/userfaultfd, then does the UFFDIO_API handshake requesting `features` and fails with
    /// `.featureMissing` if the kernel does not grant all of them.
    public init(features required: UFFDFeatures = [.pagefaultFlagWP]) throws {
        let viaSyscall = gvm_uffd_open_syscall()
        var fd = viaSyscall
        var viaDevice: Int32 = 1  // 1 = not tried
        if fd == -EPERM || fd == -EACCES {
            fd = gvm_uffd_open_device()
            viaDevice = fd < 0 ? fd : 0
        }
        if fd < 0 {
            throw Userfaultfd.openFailure(syscallResult: viaSyscall, deviceResult: viaDevice)
        }
        var feats = required.rawValue
        var ioctls: UInt64 = 0
        let rc = gvm_uffd_api(fd, &feats, &ioctls)
        if rc < 0 {
            Glibc.close(fd)
            if rc == -EINVAL {
                throw UFFDError.featureMissing("the requested UFFD features \(required) (UFFDIO_API refused them)")
            }
            throw UFFDError(errno: -rc, operation: "UFFDIO_API")
        }
        let granted = UFFDFeatures(rawValue: feats)
        if !granted.isSuperset(of: required) {
            Glibc.close(fd)
            throw UFFDError.featureMissing(UFFDFeatures(rawValue: required.rawValue & ~feats).description)
        }
        self.fd = fd
        self.features = granted
    }

    deinit { Glibc.close(fd) }

    /// The error for a failed open: `syscallResult` is userfaultfd(2)'s result (-errno) and
    /// `deviceResult` that of the /dev/userfaultfd route (-errno, 0 = opened, 1 = not tried).
    public static func openFailure(syscallResult: Int32, deviceResult: Int32) -> UFFDError {
        if syscallResult == -ENOSYS && (deviceResult == -ENOENT || deviceResult == 1) {
            return .unsupported(operation: "userfaultfd")
        }
        if syscallResult == -EPERM || syscallResult == -EACCES {
            return .permissionDenied(detail: permissionHelp(syscallErrno: -syscallResult,
                                                            deviceErrno: deviceResult == 1 ? 0 : -deviceResult))
        }
        return UFFDError(errno: -syscallResult, operation: "userfaultfd")
    }

    /// The message for a process that may not use userfaultfd: what was tried, and the two ways
    /// to get the right.
    static func permissionHelp(syscallErrno: Int32, deviceErrno: Int32) -> String {
        let sysctl = (try? readProcFile("/proc/sys/vm/unprivileged_userfaultfd")) ?? "?"
        var dev: String
        switch deviceErrno {
        case ENOENT: dev = "/dev/userfaultfd does not exist"
        case EACCES, EPERM: dev = "no read/write access to /dev/userfaultfd (\(String(cString: strerror(deviceErrno))))"
        case 0: dev = "/dev/userfaultfd was not tried"
        default: dev = "/dev/userfaultfd: \(String(cString: strerror(deviceErrno)))"
        }
        return "userfaultfd(2) failed with \(String(cString: strerror(syscallErrno))) and \(dev). " +
            "Guest memory needs a userfaultfd that catches faults taken inside the kernel (KVM), which " +
            "requires running as root (CAP_SYS_PTRACE) or read/write access to /dev/userfaultfd " +
            "(vm.unprivileged_userfaultfd = \(sysctl.trimmingNewlines()) here). Run giantvm as root, or " +
            "grant access, e.g.: chgrp kvm /dev/userfaultfd && chmod 660 /dev/userfaultfd"
    }

    /// UFFDIO_REGISTER of `length` bytes at `start` in `mode`. Fails with `.featureMissing` when
    /// the range does not offer COPY, WAKE and (with `.writeProtect`) WRITEPROTECT.
    @discardableResult
    public func register(_ start: UnsafeMutableRawPointer, length: Int, mode: UFFDRegisterMode) throws -> UFFDRangeIoctls {
        var ioctls: UInt64 = 0
        let rc = gvm_uffd_register(fd, UInt64(UInt(bitPattern: start)), UInt64(length), mode.rawValue, &ioctls)
        if rc < 0 { throw UFFDError(errno: -rc, operation: "UFFDIO_REGISTER") }
        let got = UFFDRangeIoctls(rawValue: ioctls)
        var need: UFFDRangeIoctls = [.copy, .wake]
        if mode.contains(.writeProtect) { need.insert(.writeProtect) }
        if !got.isSuperset(of: need) {
            throw UFFDError.featureMissing("UFFDIO_COPY/WAKE/WRITEPROTECT on the registered range (got ioctls 0x\(String(ioctls, radix: 16)))")
        }
        return got
    }

    /// UFFDIO_UNREGISTER of `length` bytes at `start`: the kernel resolves faults there itself
    /// (zero pages, transparent huge pages where the range allows) until it is registered again.
    public func unregister(_ start: UnsafeMutableRawPointer, length: Int) throws {
        let rc = gvm_uffd_unregister(fd, UInt64(UInt(bitPattern: start)), UInt64(length))
        if rc < 0 { throw UFFDError(errno: -rc, operation: "UFFDIO_UNREGISTER") }
    }

    /// UFFDIO_COPY: copies `length` bytes (a multiple of the page size) from `source` into the
    /// missing pages at `destination`, mapped write-protected if `writeProtect`
    /// (UFFDIO_COPY_MODE_WP) and waking the faulting threads unless `wake` is false
    /// (UFFDIO_COPY_MODE_DONTWAKE). Partial copies (EAGAIN) are resumed. Throws `.exists` when a
    /// destination page is already present (pages before it were copied).
    public func copy(to destination: UnsafeMutableRawPointer, from source: UnsafeRawPointer, length: Int,
                     writeProtect: Bool, wake: Bool) throws {
        var mode: UInt64 = 0
        if writeProtect { mode |= UInt64(UFFDIO_COPY_MODE_WP) }
        if !wake { mode |= UInt64(UFFDIO_COPY_MODE_DONTWAKE) }
        var done = 0
        while done < length {
            var copied: Int64 = 0
            let rc = gvm_uffd_copy(fd, UInt64(UInt(bitPattern: destination)) + UInt64(done), source + done,
                                   UInt64(length - done), mode, &copied)
            if rc == 0 { return }
            done += Int(copied)
            if rc == -EAGAIN { continue }
            throw UFFDError(errno: -rc, operation: "UFFDIO_COPY")
        }
    }

    /// UFFDIO_WRITEPROTECT: sets (`enable`) or clears write protection on present pages of the
    /// range. Non-present pages are silently left alone (the kernel does not report them);
    /// callers must know presence themselves. Clearing wakes threads waiting on the range unless
    /// `wake` is false (UFFDIO_WRITEPROTECT_MODE_DONTWAKE); setting never wakes anyone.
    public func writeProtect(_ start: UnsafeMutableRawPointer, length: Int, enable: Bool, wake: Bool) throws {
        var mode: UInt64 = 0
        // Setting protection wakes nobody, and the kernel refuses WP together with DONTWAKE
        // (EINVAL): DONTWAKE only applies when clearing.
        if enable { mode |= UInt64(UFFDIO_WRITEPROTECT_MODE_WP) }
        else if !wake { mode |= UInt64(UFFDIO_WRITEPROTECT_MODE_DONTWAKE) }
        let rc = gvm_uffd_writeprotect(fd, UInt64(UInt(bitPattern: start)), UInt64(length), mode)
        if rc < 0 { throw UFFDError(errno: -rc, operation: "UFFDIO_WRITEPROTECT") }
    }

    /// UFFDIO_WAKE: wakes every thread stopped on a fault in the range; each retries its access.
    public func wake(_ start: UnsafeMutableRawPointer, length: Int) throws {
        let rc = gvm_uffd_wake(fd, UInt64(UInt(bitPattern: start)), UInt64(length))
        if rc < 0 { throw UFFDError(errno: -rc, operation: "UFFDIO_WAKE") }
    }

    /// madvise(MADV_DONTNEED): drops the pages of the range; the next access faults MISSING.
    public static func dontNeed(_ start: UnsafeMutableRawPointer, length: Int) throws {
        if madvise(start, length, MADV_DONTNEED) != 0 {
            throw UFFDError(errno: errno, operation: "madvise(MADV_DONTNEED)")
        }
    }

    /// Reads up to `capacity` events into `buffer` (which holds `capacity * messageSize` bytes)
    /// without blocking. Returns how many were read (0: none pending).
    public func readEvents(into buffer: UnsafeMutableRawPointer, capacity: Int) throws -> Int {
        while true {
            let n = Glibc.read(fd, buffer, capacity * Userfaultfd.messageSize)
            if n >= 0 { return n / Userfaultfd.messageSize }
            let e = errno
            if e == EAGAIN { return 0 }
            if e == EINTR { continue }
            throw UFFDError(errno: e, operation: "read(userfaultfd)")
        }
    }

    /// Decodes event `index` of a buffer filled by `readEvents`.
    @inline(__always)
    public static func event(in buffer: UnsafeRawPointer, at index: Int) -> UFFDEvent {
        let m = buffer + index * messageSize
        let kind = gvm_uffd_msg_event(m)
        guard kind == UInt8(UFFD_EVENT_PAGEFAULT) else { return .other(kind: kind) }
        let flags = gvm_uffd_msg_fault_flags(m)
        return .pageFault(address: gvm_uffd_msg_fault_address(m),
                          write: flags & UInt64(UFFD_PAGEFAULT_FLAG_WRITE) != 0,
                          writeProtect: flags & UInt64(UFFD_PAGEFAULT_FLAG_WP) != 0,
                          threadID: gvm_uffd_msg_fault_tid(m))
    }

    /// sizeof(struct uffd_msg).
    public static let messageSize = Int(gvm_uffd_msg_size())
}

/// What /proc/self/pagemap says the kernel holds for one page: the ground truth the guest-memory
/// page states must match.
public struct KernelPageInfo: Equatable, Sendable {
    /// Bit 63 (page present) or bit 62 (swapped out: still the process's page, swapped back in
    /// by the kernel on access without a userfault).
    public var present: Bool
    /// Bit 57: the pte is userfaultfd write-protected.
    public var writeProtected: Bool

    public init(present: Bool, writeProtected: Bool) {
        self.present = present
        self.writeProtected = writeProtected
    }

    /// Reads the pagemap entry of the page at `address`.
    public init(address: UnsafeRawPointer) throws {
        var entry: UInt64 = 0
        let rc = gvm_pagemap_entry(UInt64(UInt(bitPattern: address)), &entry)
        if rc < 0 { throw UFFDError(errno: -rc, operation: "read /proc/self/pagemap") }
        present = entry & (1 << 63) != 0 || entry & (1 << 62) != 0
        writeProtected = entry & (1 << 57) != 0
    }
}

/// Reads a small /proc file.
func readProcFile(_ path: String) throws -> String {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    if fd < 0 { throw UFFDError(errno: errno, operation: "open \(path)") }
    defer { close(fd) }
    var buf = [UInt8](repeating: 0, count: 256)
    let n = buf.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
    return String(decoding: buf.prefix(Swift.max(0, n)), as: UTF8.self)
}

extension String {

    func trimmingNewlines() -> String {
        var s = Substring(self)
        while let l = s.last, l == "\n" || l == " " { s.removeLast() }
        return String(s)
    }
}
