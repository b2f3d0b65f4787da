// CoherenceKit: a deterministic, in-process conformance kit for GiantVM coherence plugins.
//
// A plugin is driven through its C ABI (the `gvm_plugin_descriptor` its entry returns), exactly
// as the host drives it, but every host service is simulated: each node has a fake page store
// that implements the gvm_coherence_host page operations faithfully (states INVALID / SHARED /
// MODIFIED, GVM_ERR_NOT_PRESENT, GVM_ERR_PINNED, drop-then-copy on install over a present page),
// the network is a set of per-(sender, receiver, lane) FIFO queues whose delivery order a seeded
// scheduler chooses, and "threads" are small programs whose memory accesses fault like a vCPU's.
//
// Threading: none. Everything runs on the calling thread, one scheduler step at a time, so a
// run is a pure function of (plugin, workload, seed). SimNode's C callbacks are only ever called
// by the plugin during a step.

import PluginAPI

/// One simulated node: page store, host-services tables, and the plugin instance.
public final class SimNode {
    public let id: UInt32
    public let pageCount: Int
    unowned let cluster: SimCluster

    // ---- the fake page store (what the host's GuestMemory would hold)
    public internal(set) var pageState: [UInt32]
    let bytes: UnsafeMutableRawPointer
    var pinRead: [Int]
    var pinWrite: [Int]
    /// Timers the plugin started, fired by the scheduler.
    var timers: [SimTimer] = []
    /// Faults raised and not yet handed to the plugin, in order (the host's fault-handler queue).
    var faultQueue: [(gfn: UInt64, access: UInt32, flags: UInt32)] = []

    // ---- statistics the plugin reports through host services
    public internal(set) var counters: [String: UInt64] = [:]
    public internal(set) var histograms: [String: [UInt64]] = [:]
    var counterNames: [String] = []
    var histogramNames: [String] = []
    /// Every counter / histogram name the plugin looked up, reported or not.
    public var registeredCounters: [String] { counterNames }
    public var registeredHistograms: [String] { histogramNames }
    // ---- what the plugin actually sent and was given, as the host sees it (to check its statistics)
    public internal(set) var sentMessages: UInt64 = 0
    public internal(set) var sentBytes: UInt64 = 0
    public internal(set) var receivedMessages: UInt64 = 0
    public internal(set) var receivedBytes: UInt64 = 0
    public internal(set) var logs: [String] = []
    public internal(set) var fatals: [String] = []

    // ---- the C tables handed to the plugin (stable addresses)
    let services: UnsafeMutablePointer<gvm_host_services>
    let memory: UnsafeMutablePointer<gvm_coherence_host>
    let clusterInfo: UnsafeMutablePointer<gvm_cluster_info>
    var instance: UnsafeMutableRawPointer?
    /// The plugin instance create() returned (to call a hook the kit does not drive, e.g. fence).
    public var pluginInstance: UnsafeMutableRawPointer? { instance }
    let ops: UnsafePointer<gvm_coherence_ops>
    var cStrings: [UnsafeMutablePointer<CChar>] = []
    var nodeInfos: UnsafeMutablePointer<gvm_node_info>
    var settingsArray: UnsafeMutablePointer<gvm_setting>?

    init(id: UInt32, cluster: SimCluster, pageCount: Int, ops: UnsafePointer<gvm_coherence_ops>) {
        self.id = id
        self.cluster = cluster
        self.pageCount = pageCount
        self.ops = ops
        pageState = [UInt32](repeating: GVM_PAGE_INVALID, count: pageCount)
        bytes = UnsafeMutableRawPointer.allocate(byteCount: pageCount * Int(GVM_PAGE_SIZE), alignment: 4096)
        bytes.initializeMemory(as: UInt8.self, repeating: 0xA5, count: pageCount * Int(GVM_PAGE_SIZE))
        pinRead = [Int](repeating: 0, count: pageCount)
        pinWrite = [Int](repeating: 0, count: pageCount)
        services = .allocate(capacity: 1)
        memory = .allocate(capacity: 1)
        clusterInfo = .allocate(capacity: 1)
        nodeInfos = .allocate(capacity: cluster.nodeCount)
    }

    deinit {
        if let instance { ops.pointee.destroy(instance) }
        bytes.deallocate()
        services.deallocate()
        memory.deallocate()
        clusterInfo.deallocate()
        nodeInfos.deallocate()
        settingsArray?.deallocate()
        for s in cStrings { s.deallocate() }
    }

    func cString(_ s: String) -> UnsafeMutablePointer<CChar> {
        let u = Array(s.utf8CString)
        let p = UnsafeMutablePointer<CChar>.allocate(capacity: u.count)
        p.initialize(from: u, count: u.count)
        cStrings.append(p)
        return p
    }

    /// Builds the C tables and creates the plugin instance. Throws with the plugin's message.
    func create(settings: [(String, String)]) throws {
        let me = OpaquePointer(Unmanaged.passUnretained(self).toOpaque())
        var s = gvm_host_services()
        s.size = UInt32(MemoryLayout<gvm_host_services>.size)
        s.abi_version = GVM_ABI_VERSION
        s.host = me
        s.log = { h, level, msg in SimNode.of(h).logs.append("[\(level.rawValue)] " + String(cString: msg!)) }
        s.now_ns = { h in SimNode.of(h).cluster.nowNanoseconds }
        s.counter = { h, name in SimNode.of(h).counterHandle(String(cString: name!)) }
        s.counter_add = { h, c, d in
            let n = SimNode.of(h)
            n.counters[n.counterNames[Int(c)], default: 0] += d
        }
        s.histogram = { h, name in SimNode.of(h).histogramHandle(String(cString: name!)) }
        s.histogram_record = { h, c, v in
            let n = SimNode.of(h)
            n.histograms[n.histogramNames[Int(c)], default: []].append(v)
        }
        // Timers fire as scheduler events at simulated time (1 step = 1 µs).
        s.timer_start = { h, delay, period, fn, ctx in
            let n = SimNode.of(h)
            n.cluster.nextTimerID += 1
            let steps = max(1, Int((delay + 999) / 1000))
            n.timers.append(SimTimer(id: n.cluster.nextTimerID, deadline: n.cluster.now + steps,
                                     period: period == 0 ? 0 : max(1, Int(period / 1000)), fn: fn, ctx: ctx))
            return n.cluster.nextTimerID
        }
        s.timer_cancel = { h, id in SimNode.of(h).timers.removeAll { $0.id == id } }
        s.fatal = { h, msg in
            let n = SimNode.of(h)
            n.fatals.append(String(cString: msg!))
            n.cluster.noteProblem("node \(n.id): fatal: \(n.fatals.last!)")
        }
        services.initialize(to: s)

        var m = gvm_coherence_host()
        m.size = UInt32(MemoryLayout<gvm_coherence_host>.size)
        m.host = me
        m.page_count = UInt64(pageCount)
        m.send = { h, dst, iov, n in SimNode.of(h).send(dst, iov, n, lane: GVM_LANE_BULK) }
        m.send_urgent = { h, dst, iov, n in SimNode.of(h).send(dst, iov, n, lane: GVM_LANE_URGENT) }
        m.page_install = { h, g, b, st in SimNode.of(h).install(g, b, st) }
        m.page_upgrade = { h, g in SimNode.of(h).upgrade(g) }
        m.page_downgrade = { h, g, out in SimNode.of(h).downgrade(g, out) }
        m.page_drop = { h, g, out in SimNode.of(h).drop(g, out) }
        m.page_read = { h, g, out in SimNode.of(h).read(g, out) }
        m.page_patch = { h, g, off, b, len in SimNode.of(h).patch(g, off, b, len) }
        m.page_state = { h, g in SimNode.of(h).state(g) }
        m.page_pinned = { h, g in SimNode.of(h).pinned(g) }
        m.page_wake = { h, g in SimNode.of(h).cluster.wake(node: SimNode.of(h).id, gfn: g) }
        m.page_install_batch = { h, g, n, b, st in SimNode.of(h).installBatch(g, n, b, st) }
        m.page_downgrade_batch = { h, g, n in SimNode.of(h).downgradeBatch(g, n) }
        m.page_install_zeros = { h, g, n in SimNode.of(h).installZeros(g, n) }
        memory.initialize(to: m)

        for i in 0..<cluster.nodeCount {
            nodeInfos[i] = gvm_node_info(id: UInt32(i), port: UInt16(18000 + i), reserved: 0,
                                         address: UnsafePointer(cString("127.0.0.1")), vcpu_count: 1,
                                         first_vcpu: UInt32(i))
        }
        clusterInfo.initialize(to: gvm_cluster_info(
            cluster_name: UnsafePointer(cString("sim")), self_id: id, node_count: UInt32(cluster.nodeCount),
            nodes: UnsafePointer(nodeInfos), guest_memory_bytes: UInt64(pageCount) * UInt64(GVM_PAGE_SIZE),
            page_size: GVM_PAGE_SIZE, total_vcpus: UInt32(cluster.nodeCount)))

        if !settings.isEmpty {
            let arr = UnsafeMutablePointer<gvm_setting>.allocate(capacity: settings.count)
            for (i, kv) in settings.enumerated() {
                arr[i] = gvm_setting(key: UnsafePointer(cString(kv.0)), value: UnsafePointer(cString(kv.1)))
            }
            settingsArray = arr
        }
        var err = gvm_error()
        guard let inst = ops.pointee.create(services, memory, clusterInfo, settingsArray, UInt32(settings.count), &err) else {
            let msg = withUnsafeBytes(of: &err.message) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
            throw SimError("node \(id): plugin create failed: \(msg)")
        }
        instance = inst
        if let start = ops.pointee.start {
            let rc = start(inst, &err)
            if rc != GVM_OK.rawValue { throw SimError("node \(id): plugin start failed: \(rc)") }
        }
    }

    static func of(_ h: OpaquePointer?) -> SimNode {
        Unmanaged<SimNode>.fromOpaque(UnsafeRawPointer(h!)).takeUnretainedValue()
    }

    func counterHandle(_ name: String) -> UInt32 {
        if let i = counterNames.firstIndex(of: name) { return UInt32(i) }
        counterNames.append(name)
        return UInt32(counterNames.count - 1)
    }

    func histogramHandle(_ name: String) -> UInt32 {
        if let i = histogramNames.firstIndex(of: name) { return UInt32(i) }
        histogramNames.append(name)
        return UInt32(histogramNames.count - 1)
    }

    public func counter(_ name: String) -> UInt64 { counters[name] ?? 0 }

    // MARK: - plugin calls (the host side of gvm_coherence_ops)

    func callFault(_ gfn: UInt64, _ access: UInt32, _ flags: UInt32) {
        ops.pointee.fault(instance, gfn, access, flags)
    }

    func callReceive(from src: UInt32, _ bytes: [UInt8]) {
        receivedMessages += 1
        receivedBytes += UInt64(bytes.count)
        bytes.withUnsafeBytes { ops.pointee.receive(instance, src, $0.baseAddress, $0.count) }
    }

    /// The host's peer_lost call.
    public func callPeerLost(_ node: UInt32) {
        ops.pointee.peer_lost?(instance, node)
    }

    /// Faults raised on this node and not yet handed to the plugin.
    public var pendingFaults: Int { faultQueue.count }

    func callUnpinned(_ gfn: UInt64) {
        ops.pointee.page_unpinned?(instance, gfn)
    }

    public func describe() -> String {
        guard let d = ops.pointee.describe else { return "" }
        let need = d(instance, nil, 0)
        var buf = [CChar](repeating: 0, count: need + 1)
        _ = d(instance, &buf, buf.count)
        return String(cString: buf)
    }

    // MARK: - the fake page store: gvm_coherence_host page operations, per the ABI

    func page(_ gfn: UInt64) -> UnsafeMutableRawPointer { bytes + Int(gfn) * Int(GVM_PAGE_SIZE) }
    var pageSize: Int { Int(GVM_PAGE_SIZE) }

    func send(_ dst: UInt32, _ iov: UnsafePointer<gvm_iovec>?, _ n: UInt32, lane: UInt32) -> Int32 {
        guard dst < UInt32(cluster.nodeCount), dst != id, let iov else { return GVM_ERR_INVALID.rawValue }
        var frame: [UInt8] = []
        for i in 0..<Int(n) {
            let v = iov[i]
            if v.len > 0, let b = v.base { frame.append(contentsOf: UnsafeRawBufferPointer(start: b, count: v.len)) }
        }
        sentMessages += 1
        sentBytes += UInt64(frame.count)
        guard frame.count <= Int(GVM_MAX_FRAME) else { return GVM_ERR_INVALID.rawValue }
        if cluster.deadNodes.contains(dst) { return GVM_ERR_CLOSED.rawValue }
        if let cap = cluster.queueCapacity,
           cluster.network.queues[QueueKey(src: id, dst: dst, lane: lane)]?.count ?? 0 >= cap {
            cluster.sendsRefused += 1
            return GVM_ERR_NOMEM.rawValue   // the transport's send queue is full
        }
        var m = SimMessage(src: id, dst: dst, lane: lane, bytes: frame)
        if let f = cluster.onSend {
            guard let changed = f(m) else { return GVM_OK.rawValue }
            m = changed
        }
        cluster.network.enqueue(m, now: cluster.now, rng: &cluster.rng)
        return GVM_OK.rawValue
    }

    /// page_install_batch: all or nothing, every page absent and unpinned (counted for tests).
    func installBatch(_ gfn: UInt64, _ count: UInt32, _ src: UnsafeRawPointer?, _ st: UInt32) -> Int32 {
        guard let src, count >= 1, count <= 64, gfn < UInt64(pageCount), UInt64(count) <= UInt64(pageCount) - gfn,
              st == GVM_PAGE_SHARED || st == GVM_PAGE_MODIFIED else { return GVM_ERR_INVALID.rawValue }
        for i in 0..<Int(count) {
            let g = Int(gfn) + i
            if pinRead[g] > 0 || pinWrite[g] > 0 { return GVM_ERR_PINNED.rawValue }
            if pageState[g] != GVM_PAGE_INVALID { return GVM_ERR_STATE.rawValue }
        }
        for i in 0..<Int(count) { _ = install(gfn + UInt64(i), src + i * pageSize, st) }
        batchInstalls += 1
        return GVM_OK.rawValue
    }

    /// page_install_batch calls that installed pages.
    public internal(set) var batchInstalls = 0

    /// page_downgrade_batch: all or nothing, every page MODIFIED and not pinned for write.
    func downgradeBatch(_ gfn: UInt64, _ count: UInt32) -> Int32 {
        guard count >= 1, count <= 64, gfn < UInt64(pageCount), UInt64(count) <= UInt64(pageCount) - gfn else {
            return GVM_ERR_INVALID.rawValue
        }
        for i in 0..<Int(count) {
            let g = Int(gfn) + i
            if pageState[g] != GVM_PAGE_MODIFIED { return GVM_ERR_STATE.rawValue }
            if pinWrite[g] > 0 { return GVM_ERR_PINNED.rawValue }
        }
        for i in 0..<Int(count) { _ = downgrade(gfn + UInt64(i), nil) }
        batchDowngrades += 1
        return GVM_OK.rawValue
    }

    /// page_install_zeros: all or nothing, every page absent and unpinned (counted for tests).
    func installZeros(_ gfn: UInt64, _ count: UInt32) -> Int32 {
        guard count >= 1, count <= GVM_ZERO_RUN_MAX, gfn < UInt64(pageCount), UInt64(count) <= UInt64(pageCount) - gfn else {
            return GVM_ERR_INVALID.rawValue
        }
        for i in 0..<Int(count) {
            let g = Int(gfn) + i
            if pinRead[g] > 0 || pinWrite[g] > 0 { return GVM_ERR_PINNED.rawValue }
            if pageState[g] != GVM_PAGE_INVALID { return GVM_ERR_STATE.rawValue }
        }
        for i in 0..<Int(count) { _ = install(gfn + UInt64(i), nil, GVM_PAGE_MODIFIED) }
        zeroRuns += 1
        return GVM_OK.rawValue
    }

    /// page_install_zeros calls that installed pages.
    public internal(set) var zeroRuns = 0

    /// page_downgrade_batch calls that downgraded pages.
    public internal(set) var batchDowngrades = 0

    func install(_ gfn: UInt64, _ src: UnsafeRawPointer?, _ st: UInt32) -> Int32 {
        guard gfn < UInt64(pageCount), st == GVM_PAGE_SHARED || st == GVM_PAGE_MODIFIED else { return GVM_ERR_INVALID.rawValue }
        let g = Int(gfn)
        if pageState[g] != GVM_PAGE_INVALID {
            // drop, then copy: a pinned page cannot be dropped
            if pinRead[g] > 0 || pinWrite[g] > 0 { return GVM_ERR_PINNED.rawValue }
        }
        if let src { page(gfn).copyMemory(from: src, byteCount: pageSize) }
        else { page(gfn).initializeMemory(as: UInt8.self, repeating: 0, count: pageSize) }
        pageState[g] = st
        cluster.pageChanged(node: id, gfn: gfn)
        return GVM_OK.rawValue
    }

    func upgrade(_ gfn: UInt64) -> Int32 {
        guard gfn < UInt64(pageCount) else { return GVM_ERR_INVALID.rawValue }
        let g = Int(gfn)
        switch pageState[g] {
        case GVM_PAGE_INVALID: return GVM_ERR_NOT_PRESENT.rawValue
        case GVM_PAGE_SHARED:
            pageState[g] = GVM_PAGE_MODIFIED
            cluster.pageChanged(node: id, gfn: gfn)
            return GVM_OK.rawValue
        default: return GVM_OK.rawValue
        }
    }

    func downgrade(_ gfn: UInt64, _ out: UnsafeMutableRawPointer?) -> Int32 {
        guard gfn < UInt64(pageCount) else { return GVM_ERR_INVALID.rawValue }
        let g = Int(gfn)
        if pageState[g] == GVM_PAGE_INVALID { return GVM_ERR_NOT_PRESENT.rawValue }
        if pinWrite[g] > 0 { return GVM_ERR_PINNED.rawValue }
        pageState[g] = GVM_PAGE_SHARED
        if let out { out.copyMemory(from: page(gfn), byteCount: pageSize) }
        cluster.pageChanged(node: id, gfn: gfn)
        return GVM_OK.rawValue
    }

    func drop(_ gfn: UInt64, _ out: UnsafeMutableRawPointer?) -> Int32 {
        guard gfn < UInt64(pageCount) else { return GVM_ERR_INVALID.rawValue }
        let g = Int(gfn)
        if pageState[g] == GVM_PAGE_INVALID { return GVM_ERR_NOT_PRESENT.rawValue }
        if pinRead[g] > 0 || pinWrite[g] > 0 { return GVM_ERR_PINNED.rawValue }
        if let out { out.copyMemory(from: page(gfn), byteCount: pageSize) }
        pageState[g] = GVM_PAGE_INVALID
        // A dropped page's bytes are gone (MADV_DONTNEED): poison them so a bug shows.
        page(gfn).initializeMemory(as: UInt8.self, repeating: 0xA5, count: pageSize)
        cluster.pageChanged(node: id, gfn: gfn)
        return GVM_OK.rawValue
    }

    func read(_ gfn: UInt64, _ out: UnsafeMutableRawPointer?) -> Int32 {
        guard gfn < UInt64(pageCount), let out else { return GVM_ERR_INVALID.rawValue }
        if pageState[Int(gfn)] == GVM_PAGE_INVALID { return GVM_ERR_NOT_PRESENT.rawValue }
        out.copyMemory(from: page(gfn), byteCount: pageSize)
        return GVM_OK.rawValue
    }

    func patch(_ gfn: UInt64, _ off: UInt32, _ b: UnsafeRawPointer?, _ len: UInt32) -> Int32 {
        guard gfn < UInt64(pageCount), let b, Int(off) + Int(len) <= pageSize else { return GVM_ERR_INVALID.rawValue }
        if pageState[Int(gfn)] == GVM_PAGE_INVALID { return GVM_ERR_NOT_PRESENT.rawValue }
        (page(gfn) + Int(off)).copyMemory(from: b, byteCount: Int(len))
        return GVM_OK.rawValue
    }

    func state(_ gfn: UInt64) -> UInt32 {
        gfn < UInt64(pageCount) ? pageState[Int(gfn)] : GVM_PAGE_INVALID
    }

    func pinned(_ gfn: UInt64) -> UInt32 {
        guard gfn < UInt64(pageCount) else { return 0 }
        let g = Int(gfn)
        return pinWrite[g] > 0 ? GVM_ACCESS_WRITE : (pinRead[g] > 0 ? GVM_ACCESS_READ : 0)
    }

    /// Drops a page behind the protocol's back (as a crossing host-side invalidation would),
    /// to provoke page_upgrade's GVM_ERR_NOT_PRESENT.
    public func forceDrop(_ gfn: UInt64) {
        pageState[Int(gfn)] = GVM_PAGE_INVALID
        page(gfn).initializeMemory(as: UInt8.self, repeating: 0xA5, count: pageSize)
    }

    // MARK: - word access for threads

    func load64(_ gfn: UInt64, _ offset: Int) -> UInt64 {
        page(gfn).loadUnaligned(fromByteOffset: offset, as: UInt64.self)
    }

    func store64(_ gfn: UInt64, _ offset: Int, _ v: UInt64) {
        page(gfn).storeBytes(of: v, toByteOffset: offset, as: UInt64.self)
    }
}

struct SimTimer {
    var id: UInt64
    var deadline: Int
    var period: Int
    var fn: gvm_timer_fn?
    var ctx: UnsafeMutableRawPointer?
}

public struct SimError: Error, CustomStringConvertible {
    public var message: String
    public init(_ m: String) { message = m }
    public var description: String { message }
}
