// The two small Swift protocols the Ivy state machine is written against, so the same code runs
// inside the plugin (over the C tables, via PluginKit) and in-process in tests (over a fake page
// store and a simulated network).
//
// Threading: implementations must allow calls from any thread. IvyNode calls them while holding
// its own lock, so an implementation must never call back into the IvyNode synchronously.

import PluginKit

/// Page operations and messaging: exactly the shape of PluginKit's `CoherenceHost`
/// (`gvm_coherence_host`), which conforms as is.
public protocol PageHost {
    var pageCount: UInt64 { get }
    /// One message to `node` (never this node). `urgent` selects the urgent lane.
    func send(to node: UInt32, _ parts: [UnsafeRawBufferPointer], urgent: Bool) -> PageStatus
    func install(_ gfn: UInt64, bytes: UnsafeRawPointer?, state: PageState) -> PageStatus
    /// `count` contiguous absent pages in one copy, all or nothing (page_install_batch, ABI 3);
    /// anything but OK means "install them one by one".
    func installBatch(_ gfn: UInt64, count: Int, bytes: UnsafeRawPointer, state: PageState) -> PageStatus
    /// `count` contiguous MODIFIED pages write-protected in one call, all or nothing
    /// (page_downgrade_batch, ABI 5); anything but OK means "downgrade them one by one".
    func downgradeBatch(_ gfn: UInt64, count: Int) -> PageStatus
    /// `count` contiguous absent pages made present as zeros, MODIFIED, all or nothing
    /// (page_install_zeros, ABI 5; a 2 MiB-aligned run of 512 may become one huge page);
    /// anything but OK means "install the zeros another way".
    func installZeros(_ gfn: UInt64, count: Int) -> PageStatus
    /// Whether `installZeros` is there (else zero runs go as page_install_batch of zeros).
    var hasZeroRuns: Bool { get }
    func upgrade(_ gfn: UInt64) -> PageStatus
    func downgrade(_ gfn: UInt64, into out: UnsafeMutableRawPointer?) -> PageStatus
    func drop(_ gfn: UInt64, into out: UnsafeMutableRawPointer?) -> PageStatus
    func read(_ gfn: UInt64, into out: UnsafeMutableRawPointer) -> PageStatus
    func state(_ gfn: UInt64) -> PageState
    func pinned(_ gfn: UInt64) -> Access?
    func wake(_ gfn: UInt64)
}

extension CoherenceHost: PageHost {}

extension PageHost {
    /// A host without a batch service: the pages go one by one.
    public func installBatch(_ gfn: UInt64, count: Int, bytes: UnsafeRawPointer, state: PageState) -> PageStatus {
        PageStatus(raw: GVM_ERR_UNSUPPORTED.rawValue)
    }

    /// A host without the zero-run service.
    public func installZeros(_ gfn: UInt64, count: Int) -> PageStatus {
        PageStatus(raw: GVM_ERR_UNSUPPORTED.rawValue)
    }
    public var hasZeroRuns: Bool { false }

    /// A host without a batch downgrade: the pages go one by one.
    public func downgradeBatch(_ gfn: UInt64, count: Int) -> PageStatus {
        PageStatus(raw: GVM_ERR_UNSUPPORTED.rawValue)
    }
}

/// Logging, clock, statistics and `fatal`: what `HostServices` offers, reduced to closures so a
/// test can implement it without the C table.
public protocol ProtocolServices {
    func log(_ level: LogLevel, _ message: String)
    func nowNanoseconds() -> UInt64
    func fatal(_ message: String)
    /// A named counter; the closure adds to it. Any thread.
    func makeCounter(_ name: String) -> (UInt64) -> Void
    /// A named latency histogram (nanoseconds); the closure records one value. Any thread.
    func makeHistogram(_ name: String) -> (UInt64) -> Void
    /// A one-shot timer calling `fn(context)` on the host's timer thread after `delay` ns.
    /// Returns an id > 0, or 0 if the host offers no timers.
    func startOneShot(afterNanoseconds delay: UInt64, _ fn: @convention(c) (UnsafeMutableRawPointer?) -> Void,
                      context: UnsafeMutableRawPointer) -> UInt64
    /// Cancels a timer; after return its callback is not running and will not run.
    func cancelOneShot(_ id: UInt64)
}

extension HostServices: ProtocolServices {
    public func makeCounter(_ name: String) -> (UInt64) -> Void {
        let c = counter(name)
        return { c.add($0) }
    }

    public func makeHistogram(_ name: String) -> (UInt64) -> Void {
        let h = histogram(name)
        return { h.record(nanoseconds: $0) }
    }

    // The raw C call, not PluginKit's closure timers: those keep a box per timer for the life of
    // the plugin, and the hold window starts one timer per busy period.
    public func startOneShot(afterNanoseconds delay: UInt64, _ fn: @convention(c) (UnsafeMutableRawPointer?) -> Void,
                             context: UnsafeMutableRawPointer) -> UInt64 {
        raw.pointee.timer_start(raw.pointee.host, delay, 0, fn, context)
    }

    public func cancelOneShot(_ id: UInt64) { raw.pointee.timer_cancel(raw.pointee.host, id) }
}
