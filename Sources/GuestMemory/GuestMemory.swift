// GuestMemory: one node's guest RAM over userfaultfd.
//
// One anonymous private mapping, registered with userfaultfd (MISSING + WP) and given to KVM as
// the memory slot. Each page is held in one of three states, exactly as the kernel holds it:
//
//   INVALID   not present                  (MADV_DONTNEED dropped it, or never installed)
//   SHARED    present, uffd write-protected (UFFDIO_COPY with MODE_WP, or WRITEPROTECT set)
//   MODIFIED  present, writable             (UFFDIO_COPY, or WRITEPROTECT cleared)
//
// The host side of the coherence ABI (`gvm_coherence_host`) lives here; the protocol lives in the
// coherence plugin. Fault events are read by dedicated handler threads and handed to the plugin's
// `fault` hook; the plugin resolves them with the page operations below and `page_wake`.
//
// Threading rules:
//  - every page operation (install/upgrade/downgrade/drop/read/patch/state/pinned/wake) may be
//    called from any thread, concurrently: per-page consistency is kept by a striped mutex (the
//    stripe of gfn), held only around the uffd/madvise calls of that one page, never while calling
//    into the plugin;
//  - the plugin's `fault` hook is called on a handler thread (or on the pinning thread with
//    GVM_FAULT_FROM_PIN), and `page_unpinned` on the unpinning thread, with no lock held;
//  - `attach` before `start`; `start` and `stop` from one controlling thread.
//
// Traps handled: Modified pages are write-protected before their
// bytes are copied out; WRITEPROTECT on a non-present page is never trusted (the page state says
// INVALID and the call returns GVM_ERR_NOT_PRESENT); EEXIST from UFFDIO_COPY is a state mismatch
// handled by drop-then-copy; UFFDIO_ZEROPAGE is never used (a zero buffer is copied with MODE_WP);
// every event is re-checked against the page's current state; the uffd is never unregistered
// or closed while the mapping exists (stop is a flag plus an eventfd kick).

import Metrics
import CSystem
import Glibc
import Logging
import PluginAPI
import Synchronization
import UserfaultFD

public let guestPageSize = Int(GVM_PAGE_SIZE)

/// How a fault-handler thread waits for the next event.
public enum HandlerWakeMode: Equatable, Sendable, CustomStringConvertible {
    /// Block in poll(2) on the uffd: no CPU while idle, about 3x the wake-up latency here.
    case poll
    /// Spin on non-blocking reads for up to `nanoseconds` after the last event, then poll.
    case spin(nanoseconds: UInt64)

    /// The default spin budget: long enough to catch back-to-back faults, short enough that an
    /// idle handler soon stops burning a core.
    public static let defaultSpinNanoseconds: UInt64 = 200_000

    /// Parses "poll", "spin" or "spin:<microseconds>".
    public init?(parsing text: String) {
        if text == "poll" { self = .poll; return }
        if text == "spin" { self = .spin(nanoseconds: Self.defaultSpinNanoseconds); return }
        if text.hasPrefix("spin:"), let us = UInt64(text.dropFirst(5)), us > 0 {
            self = .spin(nanoseconds: us * 1000); return
        }
        return nil
    }

    public var description: String {
        switch self {
        case .poll: return "poll"
        case .spin(let ns): return "spin(\(ns / 1000)us)"
        }
    }
}

/// Errors of the host-side guest-memory API (pin/unpin, read/write, set-up).
public enum GuestMemoryError: Error, CustomStringConvertible, Equatable {
    case userfaultfd(UFFDError)
    case mapping(String)
    case outOfRange(gpa: UInt64, length: Int, size: UInt64)
    case noCoherencePlugin
    case stopped
    case pinTimeout(gfn: UInt64, access: String, seconds: Double)

    public var description: String {
        switch self {
        case .userfaultfd(let e): return e.description
        case .mapping(let m): return "guest memory: \(m)"
        case .outOfRange(let gpa, let len, let size):
            return "guest memory: range 0x\(String(gpa, radix: 16))+\(len) is outside guest RAM (\(size) bytes)"
        case .noCoherencePlugin: return "guest memory: no coherence plugin attached (attach one before pinning)"
        case .stopped: return "guest memory: stopped"
        case .pinTimeout(let gfn, let access, let s):
            return "guest memory: page \(gfn) did not become \(access)-accessible within \(s) s"
        }
    }
}

/// What a pin asks for.
public enum PinAccess: UInt32, Sendable {
    /// The page must be SHARED or MODIFIED; it cannot be dropped while pinned.
    case read = 1
    /// The page must be MODIFIED; it cannot be downgraded or dropped while pinned.
    case write = 2
}

/// A pinned guest-physical range. Give it back to `GuestMemory.unpin` exactly once.
public struct PinnedRange: @unchecked Sendable {
    public let gpa: UInt64
    public let length: Int
    public let access: PinAccess
    /// The host address of `gpa`: read (and, for a write pin, write) `length` bytes here.
    public let pointer: UnsafeMutableRawPointer
    let firstGfn: UInt64
    let lastGfn: UInt64
}

/// Counters of the fault path (monotonic since creation). Read with `GuestMemory.stats`.
public struct FaultStats: Equatable, Sendable {
    /// Fault events read from the uffd for a missing page.
    public var missingEvents: UInt64 = 0
    /// Fault events read for a write to a write-protected page.
    public var writeProtectEvents: UInt64 = 0
    /// Events the page's current state already satisfied (only woken, not passed on).
    public var staleEvents: UInt64 = 0
    /// Calls of the plugin's fault hook from handler threads.
    public var pluginFaults: UInt64 = 0
    /// Calls of the plugin's fault hook from pin().
    public var pinFaults: UInt64 = 0
    /// UFFDIO_COPY that found the page present (EEXIST) and was redone as drop-then-copy.
    public var copyExists: UInt64 = 0
    /// Events of a kind other than page fault, or outside guest RAM (logged and ignored).
    public var unexpectedEvents: UInt64 = 0
}

/// Signature of the caller-supplied coherence-channel senders (`send` / `send_urgent`).
/// Called from any thread; must never wait for the peer.
public typealias CoherenceSender = (_ destination: UInt32, _ parts: UnsafeBufferPointer<gvm_iovec>) -> Int32

/// One node's guest RAM. See the file header for the threading rules.
public final class GuestMemory: @unchecked Sendable {
    /// Host address of guest-physical address 0.
    public let base: UnsafeMutableRawPointer
    /// Bytes of guest RAM (a multiple of the page size).
    public let size: UInt64
    public let pageCount: UInt64
    public let wakeMode: HandlerWakeMode
    public let handlerThreadCount: Int
    /// CPUs the handler threads are pinned to (handler i on handlerCPUs[i % count]); empty: none.
    public let handlerCPUs: [Int32]
    let uffd: Userfaultfd
    let logger: Logger

    // Per-page tables (pageCount entries each). states: atomic loads anywhere, stores under the
    // page's stripe lock. Pin counts and wake generations: under the stripe lock.
    let states: UnsafeMutablePointer<UInt8>
    let readPins: UnsafeMutablePointer<UInt32>
    let writePins: UnsafeMutablePointer<UInt32>
    let wakeGens: UnsafeMutablePointer<UInt32>
    /// Faults handed to the plugin per page (uffd events and pins), wrapping at 2^32: one relaxed
    /// atomic add on the fault path, read only by `hottestPages` (live metrics).
    let pageFaults: UnsafeMutablePointer<Atomic<UInt32>>

    // Lock stripes: gfn & stripeMask selects the mutex (and condition for pin waiters).
    static let stripeCount = 1024
    let stripeMask: UInt64 = UInt64(GuestMemory.stripeCount - 1)
    let mutexes: UnsafeMutablePointer<pthread_mutex_t>
    let conds: UnsafeMutablePointer<pthread_cond_t>
    let pinWaiters: UnsafeMutablePointer<Int32>

    /// A page of zeros, the source of every zero-filled install (never UFFDIO_ZEROPAGE).
    let zeroPage: UnsafeMutableRawPointer
    let zeroRun: UnsafeMutableRawPointer                   // maxInstallBatch pages of zeros
    // Counters: indexes into `counters` (atomic adds).
    let counters: UnsafeMutablePointer<UInt64>

    // The coherence plugin, set by attach() before start().
    private(set) var pluginInstance: UnsafeMutableRawPointer?
    private var faultHook: (@convention(c) (UnsafeMutableRawPointer?, UInt64, UInt32, UInt32) -> Void)?
    private var unpinnedHook: (@convention(c) (UnsafeMutableRawPointer?, UInt64) -> Void)?

    let send: CoherenceSender
    let sendUrgent: CoherenceSender
    /// Called (once per dying handler thread) when fault handling cannot go on.
    let onFatal: (String) -> Void
    /// Per-vCPU fault figures for a placement policy (nil: none). Set before `start`.
    public private(set) var attribution: FaultAttribution?
    /// Whether userfaultfd messages name the faulting thread (needed for `attribution`).
    public var threadIDs: Bool { uffd.features.contains(.threadID) }

    /// Attributes faults to vCPUs from now on (before `start`). False when the kernel does not
    /// report faulting threads (UFFD_FEATURE_THREAD_ID), so no fault could be attributed.
    @discardableResult
    public func enableAttribution(_ a: FaultAttribution) -> Bool {
        guard threadIDs else { return false }
        attribution = a
        FaultAttribution.inUse.store(true, ordering: .relaxed)
        return true
    }
    private let table: UnsafeMutablePointer<gvm_coherence_host>

    // Handler threads.
    let stopping = Atomic<Bool>(false)
    /// Test hook: while true, handler threads leave events queued in the uffd.
    let handlersPaused = Atomic<Bool>(false)
    let kickFD: Int32
    private var threads: [pthread_t] = []
    private var started = false

    /// Maps `bytes` of guest RAM (rounded check: must be a positive multiple of the page size),
    /// opens a userfaultfd (failing with a clear message when the process lacks the right) and
    /// registers the mapping in MISSING + WP mode. `send`/`sendUrgent` implement the coherence
    /// channel for the plugin (the Cluster layer owns messaging); `onFatal` hears of a handler
    /// thread that cannot go on (the node must stop). `handlerCPUs` pins handler threads. No
    /// thread runs until `start`. Handler threads keep this object alive until `stop`.
    public init(bytes: UInt64, wakeMode: HandlerWakeMode = .poll, handlerThreads: Int = 1,
                handlerCPUs: [Int32] = [], logger: Logger = Logger(label: "giantvm.memory"),
                onFatal: @escaping (String) -> Void = { _ in },
                send: @escaping CoherenceSender, sendUrgent: @escaping CoherenceSender) throws {
        guard bytes > 0, bytes % UInt64(guestPageSize) == 0 else {
            throw GuestMemoryError.mapping("size \(bytes) is not a positive multiple of \(guestPageSize) bytes")
        }
        guard handlerThreads >= 1, handlerThreads <= 64 else {
            throw GuestMemoryError.mapping("handler thread count \(handlerThreads) is not in 1...64")
        }
        let uffd: Userfaultfd
        // THREAD_ID when the kernel has it: faults are then attributed to vCPUs (FaultAttribution).
        do { uffd = try Userfaultfd(features: [.pagefaultFlagWP, .threadID]) } catch {
            do { uffd = try Userfaultfd(features: [.pagefaultFlagWP]) } catch let e as UFFDError {
                throw GuestMemoryError.userfaultfd(e)
            }
        }
        let length = Int(bytes)
        // 2 MiB aligned (map 2 MiB more, unmap the ends), so guest and host addresses agree
        // modulo a huge page and `installSharedHuge` can use huge pages wherever the guest can.
        let slack = Self.hugePageBytes
        guard let raw = mmap(nil, length + slack, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0),
              raw != MAP_FAILED else {
            throw GuestMemoryError.mapping("mmap of \(bytes) bytes failed: \(String(cString: strerror(errno)))")
        }
        let head = (slack - Int(UInt(bitPattern: raw) % UInt(slack))) % slack
        let map = raw + head
        if head > 0 { munmap(raw, head) }
        if slack - head > 0 { munmap(map + length, slack - head) }
        // No transparent huge pages (a 2 MiB page would bypass per-page states) and not inherited
        // by forked children (helpers we spawn must not share or COW guest RAM).
        _ = madvise(map, length, MADV_NOHUGEPAGE)
        _ = madvise(map, length, MADV_DONTFORK)
        do { try uffd.register(map, length: length, mode: [.missing, .writeProtect]) } catch let e as UFFDError {
            munmap(map, length)
            throw GuestMemoryError.userfaultfd(e)
        }
        let kick = gvm_uffd_kick_eventfd()
        guard kick >= 0 else {
            munmap(map, length)
            throw GuestMemoryError.mapping("eventfd: \(String(cString: strerror(-kick)))")
        }

        self.base = map
        self.size = bytes
        self.pageCount = bytes / UInt64(guestPageSize)
        self.wakeMode = wakeMode
        self.handlerThreadCount = handlerThreads
        self.handlerCPUs = handlerCPUs
        self.uffd = uffd
        self.logger = logger
        self.send = send
        self.sendUrgent = sendUrgent
        self.onFatal = onFatal
        self.kickFD = kick
        let n = Int(pageCount)
        states = .allocate(capacity: n); states.initialize(repeating: UInt8(GVM_PAGE_INVALID), count: n)
        readPins = .allocate(capacity: n); readPins.initialize(repeating: 0, count: n)
        writePins = .allocate(capacity: n); writePins.initialize(repeating: 0, count: n)
        wakeGens = .allocate(capacity: n); wakeGens.initialize(repeating: 0, count: n)
        pageFaults = .allocate(capacity: n)
        for i in 0..<n { (pageFaults + i).initialize(to: Atomic<UInt32>(0)) }
        mutexes = .allocate(capacity: Self.stripeCount)
        conds = .allocate(capacity: Self.stripeCount)
        pinWaiters = .allocate(capacity: Self.stripeCount); pinWaiters.initialize(repeating: 0, count: Self.stripeCount)
        var cattr = pthread_condattr_t()
        pthread_condattr_init(&cattr)
        pthread_condattr_setclock(&cattr, CLOCK_MONOTONIC)
        for i in 0..<Self.stripeCount {
            pthread_mutex_init(mutexes + i, nil)
            pthread_cond_init(conds + i, &cattr)
        }
        pthread_condattr_destroy(&cattr)
        zeroPage = UnsafeMutableRawPointer.allocate(byteCount: guestPageSize, alignment: guestPageSize)
        zeroPage.initializeMemory(as: UInt8.self, repeating: 0, count: guestPageSize)
        zeroRun = UnsafeMutableRawPointer.allocate(byteCount: Self.maxInstallBatch * guestPageSize, alignment: guestPageSize)
        zeroRun.initializeMemory(as: UInt8.self, repeating: 0, count: Self.maxInstallBatch * guestPageSize)
        counters = .allocate(capacity: Counter.count)
        counters.initialize(repeating: 0, count: Counter.count)
        table = .allocate(capacity: 1)
        table.initialize(to: gvm_coherence_host())
        fillCoherenceHostTable()
    }

    deinit {
        stop()
        // Nothing can fault on the mapping once it is unmapped, so the uffd (closed after this
        // body, when `uffd` is released) never turns a pending fault into zero-fill.
        munmap(base, Int(size))
        close(kickFD)
        for i in 0..<Self.stripeCount {
            pthread_mutex_destroy(mutexes + i)
            pthread_cond_destroy(conds + i)
        }
        states.deallocate(); readPins.deallocate(); writePins.deallocate(); wakeGens.deallocate(); pageFaults.deallocate()
        mutexes.deallocate(); conds.deallocate(); pinWaiters.deallocate()
        zeroPage.deallocate(); zeroRun.deallocate(); counters.deallocate(); table.deallocate()
    }

    // MARK: - The coherence plugin

    /// The `gvm_coherence_host` table to pass to the plugin's `create`. Valid while this object
    /// lives.
    public var coherenceHost: UnsafePointer<gvm_coherence_host> { UnsafePointer(table) }

    /// Binds the plugin instance that receives fault events. Call once, before `start`.
    public func attach(ops: UnsafePointer<gvm_coherence_ops>, instance: UnsafeMutableRawPointer?) {
        precondition(!started, "GuestMemory.attach must be called before start")
        pluginInstance = instance
        faultHook = ops.pointee.fault
        // Hooks past the end of a shorter (older) ops table are absent.
        let unpinnedEnd = MemoryLayout<gvm_coherence_ops>.offset(of: \.page_unpinned)! + MemoryLayout<UnsafeRawPointer>.size
        unpinnedHook = Int(ops.pointee.size) >= unpinnedEnd ? ops.pointee.page_unpinned : nil
    }

    // MARK: - Handler threads

    /// Starts the fault-handler threads.
    public func start() throws {
        precondition(!started, "GuestMemory.start called twice")
        guard faultHook != nil else { throw GuestMemoryError.noCoherencePlugin }
        started = true
        for i in 0..<handlerThreadCount {
            let ctx = Unmanaged.passRetained(HandlerContext(memory: self, index: i)).toOpaque()
            var tid = pthread_t()
            let rc = pthread_create(&tid, nil, { arg in
                let c = Unmanaged<HandlerContext>.fromOpaque(arg!).takeRetainedValue()
                c.memory.handlerLoop(index: c.index)
                return nil
            }, ctx)
            if rc != 0 {
                Unmanaged<HandlerContext>.fromOpaque(ctx).release()
                stop()
                throw GuestMemoryError.mapping("cannot start fault-handler thread: \(String(cString: strerror(rc)))")
            }
            threads.append(tid)
        }
    }

    /// Stops the handler threads (flag + eventfd kick, then join) and fails every pin waiter
    /// with `.stopped`. Never unregisters or closes the uffd. Idempotent.
    public func stop() {
        stopping.store(true, ordering: .releasing)
        var one: UInt64 = 1
        _ = Glibc.write(kickFD, &one, 8)
        for t in threads { pthread_join(t, nil) }
        threads.removeAll()
        for i in 0..<Self.stripeCount {
            pthread_mutex_lock(mutexes + i)
            pthread_cond_broadcast(conds + i)
            pthread_mutex_unlock(mutexes + i)
        }
    }

    final class HandlerContext {
        let memory: GuestMemory
        let index: Int
        init(memory: GuestMemory, index: Int) { self.memory = memory; self.index = index }
    }

    static let eventBatch = 16

    func handlerLoop(index: Int) {
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: Self.eventBatch * Userfaultfd.messageSize, alignment: 8)
        defer { buffer.deallocate() }
        var fds = [pollfd(fd: uffd.fd, events: Int16(POLLIN), revents: 0),
                   pollfd(fd: kickFD, events: Int16(POLLIN), revents: 0)]
        if !handlerCPUs.isEmpty {
            let cpu = handlerCPUs[index % handlerCPUs.count]
            let rc = gvm_thread_pin_cpu(cpu)
            if rc < 0 { logger.warning("fault handler \(index): cannot pin to CPU \(cpu): \(String(cString: strerror(-rc)))") }
        }
        var spinUntil: UInt64 = 0
        while !stopping.load(ordering: .acquiring) {
            if handlersPaused.load(ordering: .relaxed) { usleep(500); continue }
            let n: Int
            do { n = try uffd.readEvents(into: buffer, capacity: Self.eventBatch) } catch {
                let message = "fault handler \(index): \(error); guest memory can no longer serve faults"
                logger.critical("\(message)")
                onFatal(message)
                return
            }
            if n == 0 {
                if case .spin(let budget) = wakeMode {
                    let now = monotonicNanoseconds()
                    if spinUntil == 0 { spinUntil = now + budget }
                    if now < spinUntil { gvm_cpu_relax(); continue }
                }
                spinUntil = 0
                _ = fds.withUnsafeMutableBufferPointer { poll($0.baseAddress, 2, -1) }
                continue
            }
            spinUntil = 0
            for i in 0..<n { handle(Userfaultfd.event(in: buffer, at: i)) }
        }
    }

    @inline(__always)
    func handle(_ event: UFFDEvent) {
        guard case .pageFault(let address, let write, let wp, let tid) = event else {
            bump(.unexpected)
            logger.warning("userfaultfd: unexpected event \(event)")
            return
        }
        let start = UInt64(UInt(bitPattern: base))
        guard address >= start, address - start < size else {
            bump(.unexpected)
            logger.warning("userfaultfd: fault at 0x\(String(address, radix: 16)) outside guest RAM")
            return
        }
        let gfn = (address - start) / UInt64(guestPageSize)
        let access = (write || wp) ? GVM_ACCESS_WRITE : GVM_ACCESS_READ
        bump(wp ? .wpEvents : .missingEvents)
        // Re-check the event against the page as it is now (under its lock, so a page being
        // patched is seen only before or after): it may have been resolved since it was queued.
        lock(gfn)
        let st = UInt32(states[Int(gfn)])
        unlock(gfn)
        if Self.satisfies(st, access) {
            bump(.stale)
            wakeKernel(gfn)
            return
        }
        bump(.delivered)
        pageFaults[Int(gfn)].wrappingAdd(1, ordering: .relaxed)
        attribution?.fault(tid: tid, gfn: gfn)
        faultHook!(pluginInstance, gfn, access, 0)
    }

    @inline(__always)
    static func satisfies(_ state: UInt32, _ access: UInt32) -> Bool {
        access == GVM_ACCESS_READ ? state != GVM_PAGE_INVALID : state == GVM_PAGE_MODIFIED
    }

    // MARK: - Locks and counters

    @inline(__always) func lock(_ gfn: UInt64) { pthread_mutex_lock(mutexes + Int(gfn & stripeMask)) }
    @inline(__always) func unlock(_ gfn: UInt64) { pthread_mutex_unlock(mutexes + Int(gfn & stripeMask)) }
    @inline(__always) func pageAddress(_ gfn: UInt64) -> UnsafeMutableRawPointer { base + Int(gfn) * guestPageSize }
    @inline(__always) func setState(_ gfn: UInt64, _ s: UInt32) { gvm_atomic_store_u8(states + Int(gfn), UInt8(s)) }

    enum Counter: Int {
        case missingEvents, wpEvents, stale, delivered, pinFaults, copyExists, unexpected
        static let count = 7
    }
    @inline(__always) func bump(_ c: Counter) { _ = gvm_atomic_add_u64(counters + c.rawValue, 1) }

    /// The `count` pages with the most faults handed to the plugin (uffd events and pins) since
    /// the start, most first (ties: lower gfn first); pages without a fault are left out. Scans
    /// every page (relaxed loads): for an exporter, not the fault path.
    public func hottestPages(_ count: Int) -> [(gfn: UInt64, faults: UInt64)] {
        guard count > 0 else { return [] }
        var top: [(gfn: UInt64, faults: UInt64)] = []
        top.reserveCapacity(count + 1)
        for i in 0..<Int(pageCount) {
            let f = UInt64(pageFaults[i].load(ordering: .relaxed))
            guard f > 0, top.count < count || f > top[top.count - 1].faults else { continue }
            var j = top.count
            while j > 0 && top[j - 1].faults < f { j -= 1 }
            top.insert((UInt64(i), f), at: j)
            if top.count > count { top.removeLast() }
        }
        return top
    }

    /// A snapshot of the fault-path counters.
    public var stats: FaultStats {
        func g(_ c: Counter) -> UInt64 { gvm_atomic_load_u64(counters + c.rawValue) }
        var s = FaultStats()
        s.missingEvents = g(.missingEvents); s.writeProtectEvents = g(.wpEvents); s.staleEvents = g(.stale)
        s.pluginFaults = g(.delivered); s.pinFaults = g(.pinFaults); s.copyExists = g(.copyExists)
        s.unexpectedEvents = g(.unexpected)
        return s
    }

    func wakeKernel(_ gfn: UInt64) {
        do { try uffd.wake(pageAddress(gfn), length: guestPageSize) } catch {
            logger.error("page \(gfn): \(error)")
        }
    }

    // MARK: - Page operations (the gvm_coherence_host services)

    /// The page's state (GVM_PAGE_*), or INVALID for a gfn out of range.
    public func pageState(_ gfn: UInt64) -> UInt32 {
        guard gfn < pageCount else { return GVM_PAGE_INVALID }
        return UInt32(gvm_atomic_load_u8(states + Int(gfn)))
    }

    /// Makes the page present with `bytes` (nil = zeros) in SHARED or MODIFIED. A present page is
    /// dropped first; a pinned present page is refused (GVM_ERR_PINNED). Does not wake.
    public func install(_ gfn: UInt64, bytes: UnsafeRawPointer?, state: UInt32) -> gvm_status {
        guard gfn < pageCount, state == GVM_PAGE_SHARED || state == GVM_PAGE_MODIFIED else { return GVM_ERR_INVALID }
        lock(gfn); defer { unlock(gfn) }
        let i = Int(gfn)
        let page = pageAddress(gfn)
        if UInt32(states[i]) != GVM_PAGE_INVALID {
            if readPins[i] != 0 || writePins[i] != 0 { return GVM_ERR_PINNED }
            // Fresh bytes over a present page: drop, then copy (COPY onto it would fail EEXIST).
            if !dropLocked(gfn) { return GVM_ERR_IO }
        }
        let src = bytes ?? UnsafeRawPointer(zeroPage)
        let wp = state == GVM_PAGE_SHARED
        do {
            try uffd.copy(to: page, from: src, length: guestPageSize, writeProtect: wp, wake: false)
        } catch UFFDError.exists {
            // The kernel holds a page our state says is absent: a mismatch, not a crash. Drop
            // whatever is there and copy again.
            bump(.copyExists)
            logger.warning("page \(gfn): UFFDIO_COPY found it present (state INVALID); dropping and copying again")
            guard dropLocked(gfn) else { return GVM_ERR_IO }
            do { try uffd.copy(to: page, from: src, length: guestPageSize, writeProtect: wp, wake: false) } catch {
                logger.error("page \(gfn): install after drop: \(error)")
                return GVM_ERR_IO
            }
        } catch {
            logger.error("page \(gfn): install: \(error)")
            return GVM_ERR_IO
        }
        setState(gfn, state)
        attribution?.installed(gfn)
        return GVM_OK
    }

    /// The most pages `installBatch` takes at once.
    public static let maxInstallBatch = 64

    /// Makes `count` contiguous absent pages present with `bytes` (count * 4 KiB) in SHARED or
    /// MODIFIED with one UFFDIO_COPY. All or nothing: a present page gives GVM_ERR_STATE, a
    /// pinned one GVM_ERR_PINNED, and nothing is installed. Does not wake.
    public func installBatch(_ gfn: UInt64, count: Int, bytes: UnsafeRawPointer, state: UInt32) -> gvm_status {
        guard count >= 1, count <= Self.maxInstallBatch, gfn < pageCount, UInt64(count) <= pageCount - gfn,
              state == GVM_PAGE_SHARED || state == GVM_PAGE_MODIFIED else { return GVM_ERR_INVALID }
        // The pages' stripes, locked in ascending stripe order (count <= 64 < stripeCount: distinct).
        let stripes = (0..<UInt64(count)).map { Int((gfn + $0) & stripeMask) }.sorted()
        for s in stripes { pthread_mutex_lock(mutexes + s) }
        defer { for s in stripes.reversed() { pthread_mutex_unlock(mutexes + s) } }
        for i in 0..<count {
            let g = Int(gfn) + i
            if readPins[g] != 0 || writePins[g] != 0 { return GVM_ERR_PINNED }
            if UInt32(states[g]) != GVM_PAGE_INVALID { return GVM_ERR_STATE }
        }
        do {
            try uffd.copy(to: pageAddress(gfn), from: bytes, length: count * guestPageSize,
                          writeProtect: state == GVM_PAGE_SHARED, wake: false)
        } catch {
            // Pages copied before a failure are present: record them, drop them again.
            logger.error("pages \(gfn)..\(gfn + UInt64(count) - 1): batch install: \(error)")
            for i in 0..<count { _ = dropLocked(gfn + UInt64(i)) }
            return GVM_ERR_IO
        }
        for i in 0..<count { setState(gfn + UInt64(i), state) }
        if let a = attribution { for i in 0..<count { a.installed(gfn + UInt64(i)) } }
        return GVM_OK
    }

    /// MODIFIED -> SHARED for `count` contiguous pages with one write-protection (one TLB flush
    /// for the run). All or nothing: a page not MODIFIED gives GVM_ERR_STATE, one pinned for write
    /// GVM_ERR_PINNED, and nothing changes. The bytes stay; `readPage` copies them.
    public func downgradeBatch(_ gfn: UInt64, count: Int) -> gvm_status {
        guard count >= 1, count <= Self.maxInstallBatch, gfn < pageCount, UInt64(count) <= pageCount - gfn else { return GVM_ERR_INVALID }
        let stripes = (0..<UInt64(count)).map { Int((gfn + $0) & stripeMask) }.sorted()
        for s in stripes { pthread_mutex_lock(mutexes + s) }
        defer { for s in stripes.reversed() { pthread_mutex_unlock(mutexes + s) } }
        for i in 0..<count {
            let g = Int(gfn) + i
            if UInt32(states[g]) != GVM_PAGE_MODIFIED { return GVM_ERR_STATE }
            if writePins[g] != 0 { return GVM_ERR_PINNED }
        }
        do { try uffd.writeProtect(pageAddress(gfn), length: count * guestPageSize, enable: true, wake: false) } catch {
            logger.error("pages \(gfn)..\(gfn + UInt64(count) - 1): batch downgrade: \(error)")
            return GVM_ERR_IO
        }
        for i in 0..<count { setState(gfn + UInt64(i), GVM_PAGE_SHARED) }
        return GVM_OK
    }

    /// The most pages `installZeros` takes (GVM_ZERO_RUN_MAX: one huge page).
    public static let maxZeroRun = Int(GVM_ZERO_RUN_MAX)

    /// Makes `count` contiguous absent pages present as zeros, MODIFIED (page_install_zeros).
    /// All or nothing: a present page gives GVM_ERR_STATE, a pinned one GVM_ERR_PINNED, and nothing
    /// is installed. A run that is exactly one 2 MiB-aligned huge page is filled by the kernel
    /// under a transparent huge page: the range leaves userfaultfd (threads stopped on a fault in
    /// it are woken and find the kernel's zero page fill), is populated writable with
    /// MADV_HUGEPAGE, and is registered again — correct whatever a vCPU does meanwhile, because
    /// every page of it is becoming a writable zero page this node owns, and no page operation
    /// can run on it (its locks are held). Other runs, or a huge page the kernel cannot give, are
    /// copied from zeros in 4 KiB pages. Does not wake.
    public func installZeros(_ gfn: UInt64, count: Int) -> gvm_status {
        guard count >= 1, count <= Self.maxZeroRun, gfn < pageCount, UInt64(count) <= pageCount - gfn else { return GVM_ERR_INVALID }
        // count <= 512 < stripeCount: the stripes are distinct.
        let stripes = (0..<UInt64(count)).map { Int((gfn + $0) & stripeMask) }.sorted()
        for s in stripes { pthread_mutex_lock(mutexes + s) }
        defer { for s in stripes.reversed() { pthread_mutex_unlock(mutexes + s) } }
        for g in Int(gfn)..<(Int(gfn) + count) {
            if readPins[g] != 0 || writePins[g] != 0 { return GVM_ERR_PINNED }
            if UInt32(states[g]) != GVM_PAGE_INVALID { return GVM_ERR_STATE }
        }
        let start = pageAddress(gfn), length = count * guestPageSize
        var filled = false, left = false
        if length == Self.hugePageBytes, UInt(bitPattern: start) % UInt(Self.hugePageBytes) == 0 {
            do {
                try uffd.unregister(start, length: length)
                left = true
                _ = madvise(start, length, MADV_HUGEPAGE)
                filled = madvise(start, length, 23 /* MADV_POPULATE_WRITE */) == 0
                do { try uffd.register(start, length: length, mode: [.missing, .writeProtect]) } catch {
                    onFatal("pages \(gfn)..\(gfn + UInt64(count) - 1): registering a zero-filled huge page again: \(error)")
                    return GVM_ERR_IO
                }
            } catch {
                logger.warning("pages \(gfn)..\(gfn + UInt64(count) - 1): huge zero fill: \(error); copying zeros instead")
            }
        }
        if !filled && left {
            // The kernel could not populate it all (memory): a vCPU may have touched (and
            // written) some pages while the range was out of userfaultfd. Keep those; copy zeros
            // into the others.
            for g in gfn..<(gfn + UInt64(count)) {
                do { try uffd.copy(to: pageAddress(g), from: zeroPage, length: guestPageSize, writeProtect: false, wake: false) }
                catch UFFDError.exists { continue }
                catch {
                    logger.error("page \(g): zero install after a failed huge fill: \(error)")
                    return GVM_ERR_IO
                }
            }
            filled = true
        }
        if !filled {
            var done = 0
            while done < count {
                let n = min(count - done, Self.maxInstallBatch)
                do {
                    try uffd.copy(to: pageAddress(gfn + UInt64(done)), from: zeroRun, length: n * guestPageSize,
                                  writeProtect: false, wake: false)
                } catch {
                    logger.error("pages \(gfn)..\(gfn + UInt64(count) - 1): zero install: \(error)")
                    _ = madvise(start, length, MADV_DONTNEED)
                    return GVM_ERR_IO
                }
                done += n
            }
        }
        for g in gfn..<(gfn + UInt64(count)) { setState(g, GVM_PAGE_MODIFIED) }
        if let a = attribution { for g in gfn..<(gfn + UInt64(count)) { a.installed(g) } }
        return GVM_OK
    }

    /// Bytes of one transparent huge page (x86-64 PMD mapping).
    public static let hugePageBytes = 2 << 20

    /// Read copies backed by transparent huge pages, for a range no vCPU has touched yet (the
    /// replicated modules, loaded before the start-up barrier): `fill` writes the range's bytes in
    /// place, then the whole range is write-protected and every page is SHARED, as
    /// `installBatch(state: SHARED)` leaves them. The difference is the kernel's mapping: the range
    /// leaves userfaultfd while it is filled (`MADV_HUGEPAGE`, so the kernel backs it with 2 MiB
    /// pages), is registered again and write-protected at 2 MiB granularity. KVM then maps each
    /// 2 MiB of the guest's read copy with one fault, where 4 KiB read-only pages cost the guest
    /// one slow KVM fault each (about 20 µs on the PVM host measured in docs/performance.md). A later
    /// drop, upgrade or patch of one page splits its huge page in the kernel; nothing else changes.
    ///
    /// `gfn` and `count` must cover whole huge pages in guest and host address (GVM_ERR_INVALID
    /// otherwise: the caller installs 4 KiB pages); every page must be INVALID and unpinned
    /// (GVM_ERR_STATE / GVM_ERR_PINNED, nothing changed). Where the kernel gives no huge page the
    /// bytes land in 4 KiB pages, with the same states. On a failure after the range left
    /// userfaultfd it is registered again and dropped (every page INVALID) before the error returns.
    public func installSharedHuge(_ gfn: UInt64, count: Int,
                                  fill: (UnsafeMutableRawBufferPointer) throws -> Void) throws -> gvm_status {
        let hugePages = UInt64(Self.hugePageBytes / guestPageSize)
        guard count > 0, gfn < pageCount, UInt64(count) <= pageCount - gfn,
              gfn % hugePages == 0, UInt64(count) % hugePages == 0,
              UInt(bitPattern: pageAddress(gfn)) % UInt(Self.hugePageBytes) == 0 else { return GVM_ERR_INVALID }
        // Every stripe (the range may span them all), in ascending order like installBatch.
        for s in 0..<Self.stripeCount { pthread_mutex_lock(mutexes + s) }
        defer { for s in (0..<Self.stripeCount).reversed() { pthread_mutex_unlock(mutexes + s) } }
        for g in Int(gfn)..<(Int(gfn) + count) {
            if readPins[g] != 0 || writePins[g] != 0 { return GVM_ERR_PINNED }
            if UInt32(states[g]) != GVM_PAGE_INVALID { return GVM_ERR_STATE }
        }
        let start = pageAddress(gfn), length = count * guestPageSize
        try uffd.unregister(start, length: length)
        var failure: Error?
        do {
            _ = madvise(start, length, MADV_HUGEPAGE)      // advice only: 4 KiB pages are as correct
            try fill(UnsafeMutableRawBufferPointer(start: start, count: length))
        } catch { failure = error }
        do { try uffd.register(start, length: length, mode: [.missing, .writeProtect]) } catch {
            // The range would be the kernel's own, unseen by the protocol: the node cannot go on.
            throw GuestMemoryError.mapping("pages \(gfn)..\(gfn + UInt64(count) - 1): registering the huge-page range again: \(error)")
        }
        if failure == nil {
            do { try uffd.writeProtect(start, length: length, enable: true, wake: false) } catch { failure = error }
        }
        if let failure {
            _ = madvise(start, length, MADV_DONTNEED)
            throw failure
        }
        for g in gfn..<(gfn + UInt64(count)) { setState(g, GVM_PAGE_SHARED) }
        if let a = attribution { for g in gfn..<(gfn + UInt64(count)) { a.installed(g) } }
        return GVM_OK
    }

    /// SHARED -> MODIFIED in place. INVALID: GVM_ERR_NOT_PRESENT (WRITEPROTECT would silently do
    /// nothing on a missing page). MODIFIED: no-op.
    public func upgrade(_ gfn: UInt64) -> gvm_status {
        guard gfn < pageCount else { return GVM_ERR_INVALID }
        lock(gfn); defer { unlock(gfn) }
        switch UInt32(states[Int(gfn)]) {
        case GVM_PAGE_INVALID: return GVM_ERR_NOT_PRESENT
        case GVM_PAGE_MODIFIED: return GVM_OK
        default:
            do { try uffd.writeProtect(pageAddress(gfn), length: guestPageSize, enable: false, wake: false) } catch {
                logger.error("page \(gfn): upgrade: \(error)")
                return GVM_ERR_IO
            }
            setState(gfn, GVM_PAGE_MODIFIED)
            return GVM_OK
        }
    }

    /// MODIFIED -> SHARED: write-protect first, then copy out, so no store is lost. SHARED: copy
    /// only. INVALID: GVM_ERR_NOT_PRESENT. Pinned for write: GVM_ERR_PINNED.
    public func downgrade(_ gfn: UInt64, into out: UnsafeMutableRawPointer?) -> gvm_status {
        guard gfn < pageCount else { return GVM_ERR_INVALID }
        lock(gfn); defer { unlock(gfn) }
        let i = Int(gfn)
        switch UInt32(states[i]) {
        case GVM_PAGE_INVALID: return GVM_ERR_NOT_PRESENT
        case GVM_PAGE_MODIFIED:
            if writePins[i] != 0 { return GVM_ERR_PINNED }
            do { try uffd.writeProtect(pageAddress(gfn), length: guestPageSize, enable: true, wake: false) } catch {
                logger.error("page \(gfn): downgrade: \(error)")
                return GVM_ERR_IO
            }
            setState(gfn, GVM_PAGE_SHARED)
        default: break
        }
        if let out { out.copyMemory(from: pageAddress(gfn), byteCount: guestPageSize) }
        return GVM_OK
    }

    /// Any state -> INVALID: write-protect, copy out (if asked), drop. INVALID:
    /// GVM_ERR_NOT_PRESENT. Pinned (read or write): GVM_ERR_PINNED.
    public func drop(_ gfn: UInt64, into out: UnsafeMutableRawPointer?) -> gvm_status {
        guard gfn < pageCount else { return GVM_ERR_INVALID }
        lock(gfn); defer { unlock(gfn) }
        let i = Int(gfn)
        let st = UInt32(states[i])
        if st == GVM_PAGE_INVALID { return GVM_ERR_NOT_PRESENT }
        if readPins[i] != 0 || writePins[i] != 0 { return GVM_ERR_PINNED }
        if st == GVM_PAGE_MODIFIED {
            do { try uffd.writeProtect(pageAddress(gfn), length: guestPageSize, enable: true, wake: false) } catch {
                logger.error("page \(gfn): drop (write-protect): \(error)")
                return GVM_ERR_IO
            }
            setState(gfn, GVM_PAGE_SHARED)
        }
        if let out { out.copyMemory(from: pageAddress(gfn), byteCount: guestPageSize) }
        return dropLocked(gfn) ? GVM_OK : GVM_ERR_IO
    }

    /// MADV_DONTNEED of one page and state INVALID. Caller holds the page's lock.
    private func dropLocked(_ gfn: UInt64) -> Bool {
        do { try Userfaultfd.dontNeed(pageAddress(gfn), length: guestPageSize) } catch {
            logger.error("page \(gfn): drop: \(error)")
            return false
        }
        setState(gfn, GVM_PAGE_INVALID)
        return true
    }

    /// Copies a present page to `out`. INVALID: GVM_ERR_NOT_PRESENT.
    public func readPage(_ gfn: UInt64, into out: UnsafeMutableRawPointer) -> gvm_status {
        guard gfn < pageCount else { return GVM_ERR_INVALID }
        lock(gfn); defer { unlock(gfn) }
        if UInt32(states[Int(gfn)]) == GVM_PAGE_INVALID { return GVM_ERR_NOT_PRESENT }
        out.copyMemory(from: pageAddress(gfn), byteCount: guestPageSize)
        return GVM_OK
    }

    /// Writes `length` bytes at `offset` into a present page whatever its protection. A SHARED
    /// page is rewritten as read-modify-drop-copy(MODE_WP) under its lock, so no thread can write
    /// it while the protection would be open; threads reading it meanwhile fault and are woken
    /// once it is back. INVALID: GVM_ERR_NOT_PRESENT.
    public func patch(_ gfn: UInt64, offset: UInt32, bytes: UnsafeRawPointer?, length: UInt32) -> gvm_status {
        guard gfn < pageCount, Int(offset) + Int(length) <= guestPageSize, bytes != nil || length == 0 else {
            return GVM_ERR_INVALID
        }
        lock(gfn); defer { unlock(gfn) }
        let page = pageAddress(gfn)
        switch UInt32(states[Int(gfn)]) {
        case GVM_PAGE_INVALID: return GVM_ERR_NOT_PRESENT
        case GVM_PAGE_MODIFIED:
            if length > 0 { (page + Int(offset)).copyMemory(from: bytes!, byteCount: Int(length)) }
            return GVM_OK
        default:
            if length == 0 { return GVM_OK }
            let tmp = UnsafeMutableRawPointer.allocate(byteCount: guestPageSize, alignment: guestPageSize)
            defer { tmp.deallocate() }
            tmp.copyMemory(from: page, byteCount: guestPageSize)
            (tmp + Int(offset)).copyMemory(from: bytes!, byteCount: Int(length))
            guard dropLocked(gfn) else { return GVM_ERR_IO }
            do { try uffd.copy(to: page, from: tmp, length: guestPageSize, writeProtect: true, wake: false) } catch {
                logger.error("page \(gfn): patch: \(error); the page is now INVALID")
                return GVM_ERR_IO
            }
            setState(gfn, GVM_PAGE_SHARED)
            return GVM_OK
        }
    }

    /// 0, or the strongest pin held on the page (GVM_ACCESS_READ / GVM_ACCESS_WRITE).
    public func pinned(_ gfn: UInt64) -> UInt32 {
        guard gfn < pageCount else { return 0 }
        lock(gfn); defer { unlock(gfn) }
        if writePins[Int(gfn)] != 0 { return GVM_ACCESS_WRITE }
        return readPins[Int(gfn)] != 0 ? GVM_ACCESS_READ : 0
    }

    /// Wakes every thread stopped on a fault on the page (they retry their access) and every pin
    /// waiting for it.
    public func wake(_ gfn: UInt64) {
        guard gfn < pageCount else { return }
        let s = Int(gfn & stripeMask)
        lock(gfn)
        wakeGens[Int(gfn)] &+= 1
        if pinWaiters[s] > 0 { pthread_cond_broadcast(conds + s) }
        unlock(gfn)
        wakeKernel(gfn)
    }

    // MARK: - Consistency with the kernel (tests, diagnostics)

    /// What the kernel holds for the page, as a GVM_PAGE_* value read from /proc/self/pagemap.
    public func kernelState(_ gfn: UInt64) throws -> UInt32 {
        let info = try KernelPageInfo(address: pageAddress(gfn))
        if !info.present { return GVM_PAGE_INVALID }
        return info.writeProtected ? GVM_PAGE_SHARED : GVM_PAGE_MODIFIED
    }

    // MARK: - Test hooks

    /// Test hook: the raw uffd, to create state mismatches on purpose.
    var rawUserfaultfd: Userfaultfd { uffd }

    /// Test hook: pause (true) or resume (false) event reading by the handler threads.
    public func _setHandlersPaused(_ paused: Bool) { handlersPaused.store(paused, ordering: .relaxed) }

    // MARK: - Pin / unpin

    /// Brings every page of [gpa, gpa+length) to a state allowing `access` and pins it, taking
    /// pages in ascending gfn order (so two pins never deadlock). Blocks (on this thread) while
    /// the coherence plugin fetches pages: call from a thread that may wait on the DSM, never from
    /// a receive thread or a timer. `timeout` (seconds, per page) bounds each wait.
    public func pin(gpa: UInt64, length: Int, for access: PinAccess, timeout: Double? = nil) throws -> PinnedRange {
        guard length > 0, gpa < size, UInt64(length) <= size - gpa else {
            throw GuestMemoryError.outOfRange(gpa: gpa, length: length, size: size)
        }
        guard let faultHook else { throw GuestMemoryError.noCoherencePlugin }
        let first = gpa / UInt64(guestPageSize)
        let last = (gpa + UInt64(length) - 1) / UInt64(guestPageSize)
        var gfn = first
        while gfn <= last {
            do { try pinPage(gfn, access: access.rawValue, fault: faultHook, timeout: timeout) } catch {
                if gfn > first { unpinPages(first, gfn - 1, access: access.rawValue) }
                throw error
            }
            gfn += 1
        }
        return PinnedRange(gpa: gpa, length: length, access: access, pointer: base + Int(gpa), firstGfn: first, lastGfn: last)
    }

    private func pinPage(_ gfn: UInt64, access: UInt32,
                         fault: @convention(c) (UnsafeMutableRawPointer?, UInt64, UInt32, UInt32) -> Void,
                         timeout: Double?) throws {
        let i = Int(gfn)
        let s = Int(gfn & stripeMask)
        let deadline = timeout.map { monotonicNanoseconds() + UInt64($0 * 1e9) }
        while true {
            if stopping.load(ordering: .acquiring) { throw GuestMemoryError.stopped }
            lock(gfn)
            if Self.satisfies(UInt32(states[i]), access) {
                if access == GVM_ACCESS_WRITE { writePins[i] += 1 } else { readPins[i] += 1 }
                unlock(gfn)
                return
            }
            let gen = wakeGens[i]
            unlock(gfn)
            bump(.pinFaults)
            pageFaults[i].wrappingAdd(1, ordering: .relaxed)
            fault(pluginInstance, gfn, access, GVM_FAULT_FROM_PIN)
            lock(gfn)
            pinWaiters[s] += 1
            while wakeGens[i] == gen && !stopping.load(ordering: .acquiring) {
                let now = monotonicNanoseconds()
                if let deadline, now >= deadline {
                    pinWaiters[s] -= 1
                    unlock(gfn)
                    throw GuestMemoryError.pinTimeout(gfn: gfn, access: access == GVM_ACCESS_WRITE ? "write" : "read",
                                                      seconds: timeout ?? 0)
                }
                // Wake at least every 100 ms to notice stop() and the deadline.
                var until = min(now + 100_000_000, deadline ?? UInt64.max)
                until = max(until, now + 1)
                var ts = timespec(tv_sec: Int(until / 1_000_000_000), tv_nsec: Int(until % 1_000_000_000))
                pthread_cond_timedwait(conds + s, mutexes + s, &ts)
            }
            pinWaiters[s] -= 1
            unlock(gfn)
        }
    }

    /// Releases a pin. After the last pin of a page goes, the plugin's page_unpinned hook runs
    /// (on this thread) so it can resume requests it deferred.
    public func unpin(_ range: PinnedRange) {
        unpinPages(range.firstGfn, range.lastGfn, access: range.access.rawValue)
    }

    private func unpinPages(_ first: UInt64, _ last: UInt64, access: UInt32) {
        var gfn = first
        while gfn <= last {
            let i = Int(gfn)
            lock(gfn)
            if access == GVM_ACCESS_WRITE { precondition(writePins[i] > 0, "unpin of page \(gfn) not pinned for write"); writePins[i] -= 1 }
            else { precondition(readPins[i] > 0, "unpin of page \(gfn) not pinned for read"); readPins[i] -= 1 }
            let last = readPins[i] == 0 && writePins[i] == 0
            unlock(gfn)
            if last, let unpinnedHook { unpinnedHook(pluginInstance, gfn) }
            gfn += 1
        }
    }

    /// How many pages one chunk of `read`/`write` pins at a time.
    static let chunkPages = 64

    /// Copies guest RAM [gpa, gpa+out.count) to `out` through pin/unpin (chunk by chunk).
    public func read(gpa: UInt64, into out: UnsafeMutableRawBufferPointer, timeout: Double? = nil) throws {
        try chunks(gpa: gpa, length: out.count) { at, offset, n in
            let r = try pin(gpa: at, length: n, for: .read, timeout: timeout)
            defer { unpin(r) }
            (out.baseAddress! + offset).copyMemory(from: r.pointer, byteCount: n)
        }
    }

    /// Returns `count` bytes of guest RAM at `gpa`, read through pin/unpin.
    public func read(gpa: UInt64, count: Int, timeout: Double? = nil) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        try out.withUnsafeMutableBytes { try read(gpa: gpa, into: $0, timeout: timeout) }
        return out
    }

    /// Writes `bytes` into guest RAM at `gpa` through pin/unpin (write pins, chunk by chunk).
    public func write(gpa: UInt64, bytes: UnsafeRawBufferPointer, timeout: Double? = nil) throws {
        try chunks(gpa: gpa, length: bytes.count) { at, offset, n in
            let r = try pin(gpa: at, length: n, for: .write, timeout: timeout)
            defer { unpin(r) }
            r.pointer.copyMemory(from: bytes.baseAddress! + offset, byteCount: n)
        }
    }

    public func write(gpa: UInt64, bytes: [UInt8], timeout: Double? = nil) throws {
        try bytes.withUnsafeBytes { try write(gpa: gpa, bytes: $0, timeout: timeout) }
    }

    private func chunks(gpa: UInt64, length: Int, _ body: (UInt64, Int, Int) throws -> Void) throws {
        if length == 0 { return }
        guard gpa < size, UInt64(length) <= size - gpa else {
            throw GuestMemoryError.outOfRange(gpa: gpa, length: length, size: size)
        }
        let chunk = UInt64(Self.chunkPages * guestPageSize)
        var at = gpa
        let end = gpa + UInt64(length)
        while at < end {
            let chunkEnd = min(end, (at / chunk + 1) * chunk)
            try body(at, Int(at - gpa), Int(chunkEnd - at))
            at = chunkEnd
        }
    }

    // MARK: - The C table

    private func fillCoherenceHostTable() {
        table.pointee.size = UInt32(MemoryLayout<gvm_coherence_host>.size)
        table.pointee.host = OpaquePointer(Unmanaged.passUnretained(self).toOpaque())
        table.pointee.page_count = pageCount
        table.pointee.send = { h, dst, iov, n in
            GuestMemory.from(h).send(dst, UnsafeBufferPointer(start: iov, count: Int(n)))
        }
        table.pointee.send_urgent = { h, dst, iov, n in
            GuestMemory.from(h).sendUrgent(dst, UnsafeBufferPointer(start: iov, count: Int(n)))
        }
        table.pointee.page_install = { h, gfn, bytes, state in GuestMemory.from(h).install(gfn, bytes: bytes, state: state).rawValue }
        table.pointee.page_install_batch = { h, gfn, count, bytes, state in
            guard let bytes else { return GVM_ERR_INVALID.rawValue }
            return GuestMemory.from(h).installBatch(gfn, count: Int(count), bytes: bytes, state: state).rawValue
        }
        table.pointee.page_downgrade_batch = { h, gfn, count in
            GuestMemory.from(h).downgradeBatch(gfn, count: Int(count)).rawValue
        }
        table.pointee.page_install_zeros = { h, gfn, count in
            GuestMemory.from(h).installZeros(gfn, count: Int(count)).rawValue
        }
        table.pointee.page_upgrade = { h, gfn in GuestMemory.from(h).upgrade(gfn).rawValue }
        table.pointee.page_downgrade = { h, gfn, out in GuestMemory.from(h).downgrade(gfn, into: out).rawValue }
        table.pointee.page_drop = { h, gfn, out in GuestMemory.from(h).drop(gfn, into: out).rawValue }
        table.pointee.page_read = { h, gfn, out in
            guard let out else { return GVM_ERR_INVALID.rawValue }
            return GuestMemory.from(h).readPage(gfn, into: out).rawValue
        }
        table.pointee.page_patch = { h, gfn, off, bytes, len in
            GuestMemory.from(h).patch(gfn, offset: off, bytes: bytes, length: len).rawValue
        }
        table.pointee.page_state = { h, gfn in GuestMemory.from(h).pageState(gfn) }
        table.pointee.page_pinned = { h, gfn in GuestMemory.from(h).pinned(gfn) }
        table.pointee.page_wake = { h, gfn in GuestMemory.from(h).wake(gfn) }
    }

    @inline(__always)
    static func from(_ h: OpaquePointer?) -> GuestMemory {
        Unmanaged<GuestMemory>.fromOpaque(UnsafeRawPointer(h!)).takeUnretainedValue()
    }
}


