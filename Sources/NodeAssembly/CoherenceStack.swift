// Guest memory with its coherence plugin, wired once: load the plugin, map guest RAM over
// userfaultfd with the plugin's sends going out on the cluster's coherence channel, build the
// host-services, cluster-info and settings tables (kept alive here as long as the instance),
// create the instance, deliver coherence frames and peer losses to it, and start and stop the
// pieces in their order.
//
// Start order: plugin `start`, then guest memory's fault handlers (a fault may need the plugin).
// Stop order: no vCPU or workload thread touches guest RAM any more; guest memory's handlers
// stop, then the plugin.
//
// Threading: `init`, `start`, `stop` on the node's main thread; the plugin's sends come from
// fault-handler and receive threads; `onFatal` from any thread.

import Cluster
import Config
import GuestMemory
import Logging
import Metrics
import PluginAPI
import PluginHost

public final class CoherenceStack: @unchecked Sendable {
    public let memory: GuestMemory
    public let instance: CoherencePluginInstance
    public let pluginName: String
    private let tables: [AnyObject]
    private var started = false

    /// Builds the stack for node `selfID`. With a `node`, coherence frames travel over it (and the
    /// channel handler and peer-lost hook are registered: call before `node.start()`); without
    /// one (a single node) every send fails with GVM_ERR_CLOSED, which no single-node protocol
    /// issues. `onFatal` hears of a plugin's or a fault handler's fatal error.
    public init(config cfg: ClusterConfig, selfID: UInt32, node: Node?, loader: PluginLoader, metrics: MetricsRegistry,
                logger: Logger, wakeMode: HandlerWakeMode = .poll, handlerThreads: Int = 1,
                onFatal: @escaping @Sendable (_ who: String, _ why: String) -> Void) throws {
        let plugin: LoadedPlugin
        do { plugin = try loader.load(cfg.coherence.plugin, kind: .coherence) } catch {
            throw AssemblyError("\(cfg.sourcePath): coherence.plugin: \(error)")
        }
        guard let ops = plugin.coherenceOps else {
            throw AssemblyError("\(cfg.sourcePath): coherence.plugin: \(plugin.name) has no coherence ops")
        }
        pluginName = plugin.name
        let send: CoherenceSender, sendUrgent: CoherenceSender
        if let node {
            send = { dst, iov in CoherenceStack.send(node, dst, iov, lane: GVM_LANE_BULK) }
            sendUrgent = { dst, iov in CoherenceStack.send(node, dst, iov, lane: GVM_LANE_URGENT) }
        } else {
            send = { _, _ in GVM_ERR_CLOSED.rawValue }
            sendUrgent = { _, _ in GVM_ERR_CLOSED.rawValue }
        }
        do {
            memory = try GuestMemory(bytes: cfg.memoryBytes, wakeMode: wakeMode, handlerThreads: handlerThreads, logger: logger,
                                     onFatal: { why in onFatal("guest memory", why) }, send: send, sendUrgent: sendUrgent)
        } catch {
            throw AssemblyError("node \(selfID): guest memory (userfaultfd, \(cfg.memoryBytes) bytes): \(error)")
        }
        let name = plugin.name
        let services = HostServicesTable(pluginName: name, metrics: metrics, logger: logger) { msg in
            onFatal("coherence plugin \(name)", msg)
        }
        let info = ClusterInfoTable(config: cfg, selfID: selfID)
        let settings = SettingsTable(cfg.coherence.settings)
        do {
            instance = try CoherencePluginInstance(name: name, ops: ops, services: services.pointer, memory: memory,
                                                   cluster: info.pointer, settings: settings.pointer,
                                                   settingCount: settings.count)
        } catch {
            throw AssemblyError("\(cfg.sourcePath): coherence.plugin: \(error)")
        }
        tables = [services, info, settings]
        if let node {
            let inst = instance
            node.register(channel: .coherence) { from, payload in inst.receive(from: from, payload) }
            node.onPeerLost { peer in _ = inst.ops.pointee.peer_lost?(inst.instance, peer) }
        }
    }

    /// The coherence plugin's sends. Once the cluster stops, a peer that already closed its
    /// connections refuses them: that is the stop, not a protocol fault, so the message is
    /// dropped quietly instead of making the plugin call `fatal`.
    static func send(_ n: Node, _ dst: UInt32, _ iov: UnsafeBufferPointer<gvm_iovec>, lane: UInt32) -> Int32 {
        let rc = n.send(channel: .coherence, to: dst, iov: iov, lane: lane)
        if rc == GVM_ERR_CLOSED.rawValue && n.isStopping(peer: dst) { return GVM_OK.rawValue }
        return rc
    }

    /// The plugin's fence hook for the VMM's synchronisation points (nil if it has none).
    public var fenceHook: ((_ vcpu: Int, _ kind: UInt32) -> Void)? { instance.fenceHook }

    /// The plugin's coherence-hint hook for devices (nil if it has none: hints are UNSUPPORTED).
    public var hintHook: ((_ kind: UInt32, _ gpa: UInt64, _ length: UInt64) -> Int32)? { instance.hintHook }

    /// ABI 4: asks the plugin to start [gpa, gpa+length) (page aligned) as read copies on every
    /// node (GVM_HINT_REPLICATED) and, when it accepts, installs the bytes `fill` writes in state
    /// SHARED, 64 pages per copy. `fill(buffer, offset)` fills `buffer` with the range's bytes at
    /// `offset` (the buffer's tail past the range's data is zeros). Returns false when the plugin
    /// does not take the hint (no hint hook, or GVM_ERR_UNSUPPORTED): the caller then loads the
    /// range on one node. Main thread, after `start`, before any vCPU runs on any node.
    public func replicate(gpa: UInt64, length: UInt64,
                          fill: (_ buffer: UnsafeMutableRawBufferPointer, _ offset: UInt64) throws -> Void) throws -> Bool {
        let page = UInt64(guestPageSize)
        guard length > 0, gpa % page == 0, length % page == 0 else {
            throw AssemblyError("replicated range 0x\(String(gpa, radix: 16))+0x\(String(length, radix: 16)) is not page aligned")
        }
        guard let hint = hintHook else { return false }
        let rc = hint(GVM_HINT_REPLICATED, gpa, length)
        if rc == GVM_ERR_UNSUPPORTED.rawValue { return false }
        guard rc == GVM_OK.rawValue else {
            throw AssemblyError("coherence.plugin \(pluginName): refused the replicated range 0x\(String(gpa, radix: 16))+0x\(String(length, radix: 16)): \(String(cString: gvm_status_name(rc)))")
        }
        // The 2 MiB-aligned middle as huge read copies (GuestMemory.installSharedHuge); the
        // edges, and all of a range the kernel's alignment does not allow, as 4 KiB copies.
        let huge = UInt64(GuestMemory.hugePageBytes)
        let middle = (lo: (gpa + huge - 1) / huge * huge, hi: (gpa + length) / huge * huge)
        if middle.lo < middle.hi, hugeReplicas {
            let status = try memory.installSharedHuge(middle.lo / page, count: Int((middle.hi - middle.lo) / page)) { buf in
                try fill(buf, middle.lo - gpa)
            }
            if status == GVM_OK {
                hugeReplicaBytes += middle.hi - middle.lo
                try installShared(gpa, middle.lo - gpa, base: gpa, fill: fill)
                try installShared(middle.hi, gpa + length - middle.hi, base: gpa, fill: fill)
                return true
            }
            guard status == GVM_ERR_INVALID else {
                throw AssemblyError("replicated range: installing guest pages at 0x\(String(middle.lo, radix: 16)) (huge pages): \(String(cString: gvm_status_name(status.rawValue)))")
            }
        }
        try installShared(gpa, length, base: gpa, fill: fill)
        return true
    }

    /// Whether `replicate` backs the 2 MiB-aligned middle of a range with huge pages (the
    /// default; `GIANTVM_HUGE_REPLICAS=0` installs 4 KiB copies throughout, for comparison).
    public var hugeReplicas = true
    /// Bytes `replicate` installed in huge pages so far.
    public private(set) var hugeReplicaBytes: UInt64 = 0

    /// Installs [at, at+length) (page aligned, inside a replicated range starting at `base`) as
    /// SHARED 4 KiB copies, 64 pages per UFFDIO_COPY.
    private func installShared(_ at: UInt64, _ length: UInt64, base: UInt64,
                               fill: (_ buffer: UnsafeMutableRawBufferPointer, _ offset: UInt64) throws -> Void) throws {
        let page = UInt64(guestPageSize)
        let chunkPages = GuestMemory.maxInstallBatch
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkPages * guestPageSize, alignment: guestPageSize)
        defer { buffer.deallocate() }
        var done: UInt64 = 0
        while done < length {
            let pages = Int(min((length - done) / page, UInt64(chunkPages)))
            let part = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<(pages * guestPageSize)])
            part.initializeMemory(as: UInt8.self, repeating: 0)
            try fill(part, at - base + done)
            let status = memory.installBatch((at + done) / page, count: pages, bytes: UnsafeRawPointer(part.baseAddress!),
                                             state: GVM_PAGE_SHARED)
            guard status == GVM_OK else {
                throw AssemblyError("replicated range: installing guest pages at 0x\(String(at + done, radix: 16)) (\(pages) pages): \(String(cString: gvm_status_name(status.rawValue)))")
            }
            done += UInt64(pages) * page
        }
    }

    /// Starts the plugin, then the fault handlers.
    public func start() throws {
        try instance.start()
        try memory.start()
        started = true
    }

    /// Stops the fault handlers, then the plugin (once; no thread may touch guest RAM any more).
    public func stop() {
        memory.stop()
        instance.stop()
        withExtendedLifetime(tables) {}
    }
}
