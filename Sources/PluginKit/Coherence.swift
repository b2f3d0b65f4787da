// Coherence plugins in Swift: conform one class to `CoherencePlugin`, then export
//
//     let entry = CoherencePluginEntry(MyProtocol.self, name: "dsm-mine", version: "0.1.0", summary: "...")
//     @_cdecl("giantvm_plugin_entry")
//     public func giantvm_plugin_entry() -> UnsafeRawPointer { entry.pointer }
//
// and report the standard statistics (giantvm_plugin.h, GVM_STAT_*) through `CoherenceStatistics`.
//
// Threading rules are those of gvm_coherence_ops in giantvm_plugin.h; they are repeated on each
// requirement below.

/// Page states as the host holds them (GVM_PAGE_*).
public enum PageState: UInt32, Sendable {
    case invalid = 0, shared = 1, modified = 2
}

/// Access kinds (GVM_ACCESS_*).
public enum Access: UInt32, Sendable {
    case read = 1, write = 2
}

/// Result of a page operation: `.ok` or a `gvm_status` error.
public struct PageStatus: Equatable, Sendable, CustomStringConvertible {
    public let raw: Int32
    public static let ok = PageStatus(raw: GVM_OK.rawValue)
    public static let pinned = PageStatus(raw: GVM_ERR_PINNED.rawValue)
    public static let notPresent = PageStatus(raw: GVM_ERR_NOT_PRESENT.rawValue)
    public static let closed = PageStatus(raw: GVM_ERR_CLOSED.rawValue)
    public static let invalid = PageStatus(raw: GVM_ERR_INVALID.rawValue)
    public init(raw: Int32) { self.raw = raw }
    public var description: String { String(cString: gvm_status_name(raw)) }
}

/// The guest-memory and messaging services the host gives a coherence plugin
/// (`gvm_coherence_host`). Any thread.
public struct CoherenceHost: @unchecked Sendable {
    public let raw: UnsafePointer<gvm_coherence_host>
    public init(_ raw: UnsafePointer<gvm_coherence_host>) { self.raw = raw }
    var host: OpaquePointer? { raw.pointee.host }

    public var pageCount: UInt64 { raw.pointee.page_count }

    /// Sends one message (the concatenation of `parts`) on the coherence channel.
    @discardableResult
    public func send(to node: UInt32, _ parts: [UnsafeRawBufferPointer], urgent: Bool = false) -> PageStatus {
        var iov = parts.map { gvm_iovec(base: $0.baseAddress, len: $0.count) }
        let n = UInt32(iov.count)
        let rc = iov.withUnsafeMutableBufferPointer { b in
            urgent ? raw.pointee.send_urgent(host, node, b.baseAddress, n)
                   : raw.pointee.send(host, node, b.baseAddress, n)
        }
        return PageStatus(raw: rc)
    }

    /// Sends one contiguous message.
    @discardableResult
    public func send(to node: UInt32, bytes: [UInt8], urgent: Bool = false) -> PageStatus {
        bytes.withUnsafeBytes { send(to: node, [$0], urgent: urgent) }
    }

    /// Installs `bytes` (nil = zeros) as `state`. Drops a present page first.
    @discardableResult
    public func install(_ gfn: UInt64, bytes: UnsafeRawPointer?, state: PageState) -> PageStatus {
        PageStatus(raw: raw.pointee.page_install(host, gfn, bytes, state.rawValue))
    }

    /// Installs `count` contiguous absent pages from `bytes` (count * 4 KiB) with one copy, all
    /// or nothing (page_install_batch, ABI 3). A host without the service: GVM_ERR_UNSUPPORTED
    /// (install page by page instead).
    @discardableResult
    public func installBatch(_ gfn: UInt64, count: Int, bytes: UnsafeRawPointer, state: PageState) -> PageStatus {
        let end = MemoryLayout<gvm_coherence_host>.offset(of: \gvm_coherence_host.page_install_batch)!
            + MemoryLayout<UnsafeRawPointer>.size
        guard Int(raw.pointee.size) >= end, let f = raw.pointee.page_install_batch, count >= 1, count <= 64 else {
            return PageStatus(raw: GVM_ERR_UNSUPPORTED.rawValue)
        }
        return PageStatus(raw: f(host, gfn, UInt32(count), bytes, state.rawValue))
    }

    /// Write-protects `count` contiguous MODIFIED pages with one call, all or nothing
    /// (page_downgrade_batch, ABI 5). A host without the service: GVM_ERR_UNSUPPORTED
    /// (downgrade page by page instead).
    @discardableResult
    public func downgradeBatch(_ gfn: UInt64, count: Int) -> PageStatus {
        let end = MemoryLayout<gvm_coherence_host>.offset(of: \gvm_coherence_host.page_downgrade_batch)!
            + MemoryLayout<UnsafeRawPointer>.size
        guard Int(raw.pointee.size) >= end, let f = raw.pointee.page_downgrade_batch, count >= 1, count <= 64 else {
            return PageStatus(raw: GVM_ERR_UNSUPPORTED.rawValue)
        }
        return PageStatus(raw: f(host, gfn, UInt32(count)))
    }

    /// Makes `count` contiguous absent pages present as zeros, MODIFIED, all or nothing
    /// (page_install_zeros, ABI 5; 1...GVM_ZERO_RUN_MAX). A host without the service:
    /// GVM_ERR_UNSUPPORTED (install zeros another way).
    @discardableResult
    public func installZeros(_ gfn: UInt64, count: Int) -> PageStatus {
        guard hasZeroRuns, let f = raw.pointee.page_install_zeros, count >= 1, count <= Int(GVM_ZERO_RUN_MAX) else {
            return PageStatus(raw: GVM_ERR_UNSUPPORTED.rawValue)
        }
        return PageStatus(raw: f(host, gfn, UInt32(count)))
    }

    /// Whether the host offers page_install_zeros (ABI 5; its table is long enough and the hook set).
    public var hasZeroRuns: Bool {
        let end = MemoryLayout<gvm_coherence_host>.offset(of: \gvm_coherence_host.page_install_zeros)!
            + MemoryLayout<UnsafeRawPointer>.size
        return Int(raw.pointee.size) >= end && raw.pointee.page_install_zeros != nil
    }

    @discardableResult
    public func upgrade(_ gfn: UInt64) -> PageStatus {
        PageStatus(raw: raw.pointee.page_upgrade(host, gfn))
    }

    /// Write-protects, then copies into `out` if given.
    @discardableResult
    public func downgrade(_ gfn: UInt64, into out: UnsafeMutableRawPointer?) -> PageStatus {
        PageStatus(raw: raw.pointee.page_downgrade(host, gfn, out))
    }

    /// Write-protects, copies into `out` if given, then drops.
    @discardableResult
    public func drop(_ gfn: UInt64, into out: UnsafeMutableRawPointer?) -> PageStatus {
        PageStatus(raw: raw.pointee.page_drop(host, gfn, out))
    }

    @discardableResult
    public func read(_ gfn: UInt64, into out: UnsafeMutableRawPointer) -> PageStatus {
        PageStatus(raw: raw.pointee.page_read(host, gfn, out))
    }

    @discardableResult
    public func patch(_ gfn: UInt64, offset: UInt32, bytes: UnsafeRawBufferPointer) -> PageStatus {
        PageStatus(raw: raw.pointee.page_patch(host, gfn, offset, bytes.baseAddress, UInt32(bytes.count)))
    }

    public func state(_ gfn: UInt64) -> PageState {
        PageState(rawValue: raw.pointee.page_state(host, gfn)) ?? .invalid
    }

    /// nil if not pinned, else the strongest pin held.
    public func pinned(_ gfn: UInt64) -> Access? {
        Access(rawValue: raw.pointee.page_pinned(host, gfn))
    }

    public func wake(_ gfn: UInt64) { raw.pointee.page_wake(host, gfn) }
}

/// A coherence protocol. One instance per node.
public protocol CoherencePlugin: AnyObject {
    /// Validate settings and allocate. Thread: main. Throw `PluginError` to refuse.
    init(services: HostServices, memory: CoherenceHost, cluster: ClusterInfo, settings: Settings) throws

    /// Every peer is connected. Thread: main.
    func start() throws

    /// A local access needs a better state (see gvm_coherence_ops.fault). Thread: a fault-handler
    /// thread. Never wait for the network here.
    func fault(gfn: UInt64, access: Access, fromPin: Bool)

    /// A message from a peer; untrusted bytes. Thread: a transport receive thread. Never block.
    func receive(from node: UInt32, message: UnsafeRawBufferPointer)

    /// The last pin on gfn is gone: resume deferred requests.
    func pageUnpinned(gfn: UInt64)

    /// A peer was lost; the node is stopping.
    func peerLost(node: UInt32)

    /// The protocol's state table (an instance's view; see `pluginDescription` for the one
    /// `giantvm plugins describe` prints without an instance).
    func describe() -> String

    /// The settings the protocol accepts, with defaults and meanings (ABI 3 descriptor).
    static var settingInfo: [SettingInfo] { get }
    /// The protocol's description without an instance: its state table (ABI 3 descriptor).
    static var pluginDescription: String? { get }

    /// No more faults or messages will arrive. Thread: main.
    func stop()

    /// Multiple-writer protocols only: set to true and implement `fence`.
    static var handlesFences: Bool { get }
    /// A synchronisation point of a vCPU; may block that vCPU until flushed.
    func fence(vcpu: UInt32, kind: UInt32) -> PageStatus

    /// Protocols that take coherence hints from the guest: set to true and implement `hint`.
    static var handlesHints: Bool { get }
    /// A coherence hint (GVM_HINT_*; see gvm_coherence_ops.hint); may block until applied on
    /// every node.
    func hint(kind: UInt32, gpa: UInt64, length: UInt64) -> PageStatus

    /// Protocols that can let a node leave (node evacuation, ABI 4): set to true and implement
    /// `drain`. false: the hook is NULL and the host refuses to remove a node.
    static var handlesDrain: Bool { get }
    /// Moves everything this (leaving) node keeps to other nodes (see gvm_coherence_ops.drain).
    /// Thread: a host control thread; may block until done or `timeoutNanoseconds`.
    func drain(to: UInt32, timeoutNanoseconds: UInt64) -> Result<DrainReport, DrainFailure>
}

/// What a drain moved (gvm_drain_report, ABI 4).
public struct DrainReport: Sendable, Equatable {
    public var to: UInt32
    public var pagesMoved: UInt64
    public var managedPagesMoved: UInt64
    public var bytesSent: UInt64
    public var durationNanoseconds: UInt64
    public init(to: UInt32, pagesMoved: UInt64, managedPagesMoved: UInt64, bytesSent: UInt64, durationNanoseconds: UInt64) {
        self.to = to; self.pagesMoved = pagesMoved; self.managedPagesMoved = managedPagesMoved
        self.bytesSent = bytesSent; self.durationNanoseconds = durationNanoseconds
    }
}

/// Why a drain did not complete: a gvm_status and the reason.
public struct DrainFailure: Error, Sendable, Equatable, CustomStringConvertible {
    public var status: PageStatus
    public var message: String
    public init(_ status: PageStatus, _ message: String) { self.status = status; self.message = message }
    public var description: String { message }
}

public extension CoherencePlugin {
    func start() throws {}
    func pageUnpinned(gfn: UInt64) {}
    func peerLost(node: UInt32) {}
    func describe() -> String { "" }
    static var settingInfo: [SettingInfo] { [] }
    static var pluginDescription: String? { nil }
    func stop() {}
    static var handlesFences: Bool { false }
    func fence(vcpu: UInt32, kind: UInt32) -> PageStatus { .ok }
    static var handlesHints: Bool { false }
    func hint(kind: UInt32, gpa: UInt64, length: UInt64) -> PageStatus { PageStatus(raw: GVM_ERR_UNSUPPORTED.rawValue) }
    static var handlesDrain: Bool { false }
    func drain(to: UInt32, timeoutNanoseconds: UInt64) -> Result<DrainReport, DrainFailure> {
        .failure(DrainFailure(PageStatus(raw: GVM_ERR_UNSUPPORTED.rawValue), "this protocol cannot let a node leave"))
    }
}

final class CoherenceBox {
    let plugin: any CoherencePlugin
    init(_ p: any CoherencePlugin) { plugin = p }
}

@inline(__always)
private func coherenceInstance(_ p: UnsafeMutableRawPointer?) -> any CoherencePlugin {
    Unmanaged<CoherenceBox>.fromOpaque(p!).takeUnretainedValue().plugin
}

typealias CoherenceFactory = (HostServices, CoherenceHost, ClusterInfo, Settings) throws -> any CoherencePlugin
typealias CoherenceCreateFn = @convention(c) (UnsafePointer<gvm_host_services>?, UnsafePointer<gvm_coherence_host>?,
                                              UnsafePointer<gvm_cluster_info>?, UnsafePointer<gvm_setting>?,
                                              UInt32, UnsafeMutablePointer<gvm_error>?) -> UnsafeMutableRawPointer?

private let coherenceSlots = FactorySlots<CoherenceFactory>(kind: "coherence protocol", capacity: 16)

private func createCoherence(_ slot: Int, _ svc: UnsafePointer<gvm_host_services>?, _ mem: UnsafePointer<gvm_coherence_host>?,
                             _ cluster: UnsafePointer<gvm_cluster_info>?, _ settings: UnsafePointer<gvm_setting>?,
                             _ n: UInt32, _ err: UnsafeMutablePointer<gvm_error>?) -> UnsafeMutableRawPointer? {
    guard let svc, let mem, let cluster else {
        fill(err, "create called without its host tables")
        return nil
    }
    guard hostTableFits(svc.pointee.size, gvm_host_services.self, needed: MemoryLayout<gvm_host_services>.size, err),
          hostTableFits(mem.pointee.size, gvm_coherence_host.self, needed: MemoryLayout<gvm_coherence_host>.size, err)
    else { return nil }
    do {
        let p = try coherenceSlots.factory(slot)(HostServices(svc), CoherenceHost(mem), ClusterInfo(cluster),
                                                 Settings(settings, count: n))
        return Unmanaged.passRetained(CoherenceBox(p)).toOpaque()
    } catch {
        fill(err, "\(error)")
        return nil
    }
}

// One C create function per slot: a C function pointer cannot carry the slot number.
private let coherenceCreateThunks: [CoherenceCreateFn] = [
    { createCoherence(0, $0, $1, $2, $3, $4, $5) }, { createCoherence(1, $0, $1, $2, $3, $4, $5) },
    { createCoherence(2, $0, $1, $2, $3, $4, $5) }, { createCoherence(3, $0, $1, $2, $3, $4, $5) },
    { createCoherence(4, $0, $1, $2, $3, $4, $5) }, { createCoherence(5, $0, $1, $2, $3, $4, $5) },
    { createCoherence(6, $0, $1, $2, $3, $4, $5) }, { createCoherence(7, $0, $1, $2, $3, $4, $5) },
    { createCoherence(8, $0, $1, $2, $3, $4, $5) }, { createCoherence(9, $0, $1, $2, $3, $4, $5) },
    { createCoherence(10, $0, $1, $2, $3, $4, $5) }, { createCoherence(11, $0, $1, $2, $3, $4, $5) },
    { createCoherence(12, $0, $1, $2, $3, $4, $5) }, { createCoherence(13, $0, $1, $2, $3, $4, $5) },
    { createCoherence(14, $0, $1, $2, $3, $4, $5) }, { createCoherence(15, $0, $1, $2, $3, $4, $5) },
]

/// The descriptor of one coherence plugin, built from its protocol type: a complete
/// `gvm_coherence_ops` (every hook set; `fence` only when the type `handlesFences`). A value: an
/// image may build entries for several protocols, each with its own descriptor. The tables are
/// permanent (they must outlive every instance), so build an entry once, e.g. in a global `let`.
public struct CoherencePluginEntry: @unchecked Sendable {
    /// The descriptor `giantvm_plugin_entry` returns.
    public let descriptor: UnsafePointer<gvm_plugin_descriptor>
    /// Its ops table.
    public let ops: UnsafePointer<gvm_coherence_ops>
    /// The descriptor as the untyped pointer `giantvm_plugin_entry` is declared to return.
    public var pointer: UnsafeRawPointer { UnsafeRawPointer(descriptor) }

    public init<P: CoherencePlugin>(_ type: P.Type, name: String, version: String, summary: String) {
        let slot = coherenceSlots.claim(type) { svc, mem, cluster, settings in
            try P(services: svc, memory: mem, cluster: cluster, settings: settings)
        }
        let o = UnsafeMutablePointer<gvm_coherence_ops>.allocate(capacity: 1)
        o.initialize(to: gvm_coherence_ops())
        o.pointee.size = UInt32(MemoryLayout<gvm_coherence_ops>.size)
        o.pointee.create = coherenceCreateThunks[slot]
        o.pointee.start = { inst, err in
            do { try coherenceInstance(inst).start(); return GVM_OK.rawValue } catch {
                fill(err, "\(error)")
                return GVM_ERR_INVALID.rawValue
            }
        }
        o.pointee.fault = { inst, gfn, access, flags in
            coherenceInstance(inst).fault(gfn: gfn, access: Access(rawValue: access) ?? .write,
                                          fromPin: flags & UInt32(GVM_FAULT_FROM_PIN) != 0)
        }
        o.pointee.receive = { inst, src, msg, len in
            coherenceInstance(inst).receive(from: src, message: UnsafeRawBufferPointer(start: msg, count: len))
        }
        o.pointee.page_unpinned = { inst, gfn in coherenceInstance(inst).pageUnpinned(gfn: gfn) }
        if type.handlesFences {
            o.pointee.fence = { inst, vcpu, kind in coherenceInstance(inst).fence(vcpu: vcpu, kind: kind).raw }
        }
        if type.handlesHints {
            o.pointee.hint = { inst, kind, gpa, length in coherenceInstance(inst).hint(kind: kind, gpa: gpa, length: length).raw }
        }
        if type.handlesDrain {
            o.pointee.drain = { inst, to, timeout, report, err in
                switch coherenceInstance(inst).drain(to: to, timeoutNanoseconds: timeout) {
                case let .success(r):
                    if let report {
                        // Fill only the fields the host's table has room for (its `size`).
                        var full = gvm_drain_report(size: report.pointee.size, to: r.to, pages_moved: r.pagesMoved,
                                                    managed_pages_moved: r.managedPagesMoved, bytes_sent: r.bytesSent,
                                                    duration_ns: r.durationNanoseconds)
                        let n = min(Int(report.pointee.size), MemoryLayout<gvm_drain_report>.size)
                        withUnsafeBytes(of: &full) { src in
                            UnsafeMutableRawPointer(report).copyMemory(from: src.baseAddress!, byteCount: n)
                        }
                    }
                    return GVM_OK.rawValue
                case let .failure(f):
                    fill(err, f.message)
                    return f.status.raw
                }
            }
        }
        o.pointee.peer_lost = { inst, node in coherenceInstance(inst).peerLost(node: node) }
        o.pointee.describe = { inst, buf, cap in copyOut(coherenceInstance(inst).describe(), buf, cap) }
        o.pointee.stop = { inst in coherenceInstance(inst).stop() }
        o.pointee.destroy = { inst in
            guard let inst else { return }
            Unmanaged<CoherenceBox>.fromOpaque(inst).release()
        }
        ops = UnsafePointer(o)
        descriptor = PluginEntry.makeDescriptor(kind: GVM_PLUGIN_COHERENCE, name: name, version: version,
                                                summary: summary, ops: UnsafeRawPointer(o), description: type.pluginDescription,
                                                settings: type.settingInfo.map { ($0, nil) })
    }
}


/// Copies a string into a C buffer of `cap` bytes (NUL-terminated, truncated); returns the length
/// needed.
func copyOut(_ s: String, _ buf: UnsafeMutablePointer<CChar>?, _ cap: Int) -> Int {
    let bytes = Array(s.utf8)
    if let buf, cap > 0 {
        let n = min(bytes.count, cap - 1)
        for i in 0..<n { buf[i] = CChar(bitPattern: bytes[i]) }
        buf[n] = 0
    }
    return bytes.count
}

extension CoherencePluginEntry {
    /// The Swift object behind an instance pointer that this entry's create() returned, for
    /// in-process tests and tools that drive a hook the C table does not carry (e.g. a
    /// non-blocking release in a simulated cluster).
    public static func plugin(of instance: UnsafeMutableRawPointer) -> any CoherencePlugin {
        coherenceInstance(instance)
    }
}
