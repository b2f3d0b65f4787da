// The placement policy of a VM (YAML `placement:`, docs/migration.md "Placement policies").
//
// Every node attributes its DSM faults to vCPUs (GuestMemory's FaultAttribution) and, every
// `interval`, sends node 0 one PLACEMENT_FIGURES message per vCPU that faulted. Node 0 loads the
// placement plugin, adds its own rows, builds the figures (faults by serving node; the sharing
// matrix from the vCPUs' page sets), calls observe(), and runs the moves the policy asks for with
// the VCPUMigrator on a worker thread, reporting each outcome back through migration_done.
// A remote node's rows reach node 0 up to one interval late; they count in the interval in which
// they arrive.
//
// cpu channel format (little-endian, after the type byte):
//   0x25 PLACEMENT_FIGURES  vcpu:u32 node_count:u32 faults[node_count]:u64 page_count:u32 pages[page_count]:u64
//
// Threading: one serial queue runs the timer, observe() and migration_done(); message handlers
// (transport threads) only add to the accumulators under a lock.

import Cluster
import Config
import Dispatch
import Distributed
import Foundation
import GuestMemory
import Logging
import Metrics
import PluginAPI
import PluginHost
import Synchronization

public final class PlacementService: @unchecked Sendable {
    let node: Node
    let attribution: FaultAttribution
    let config: PlacementConfig
    let migrator: VCPUMigrator
    let logger: Logger
    let metrics: MetricsRegistry
    let vcpuCount: Int
    let nodeCount: Int
    let migrationTimeout: Double
    /// Node 0 only: the policy.
    let policy: PlacementPolicyInstance?
    let queue = DispatchQueue(label: "giantvm.placement")
    private var timer: DispatchSourceTimer?

    private struct Interval {
        var faults: [UInt64]
        var pages: [Set<UInt64>]
        var inFlight: Set<Int> = []
    }
    private let acc: Mutex<Interval>
    let cMalformed: UInt32, cRows: UInt32

    /// Registers the figures message (node 0) and, on node 0, creates the policy. Throws with
    /// the config file, the plugin and the cause.
    public init(node: Node, config cfg: ClusterConfig, placement pc: PlacementConfig, memory: GuestMemory,
                migrator: VCPUMigrator, loader: PluginLoader, metrics: MetricsRegistry, logger: Logger,
                onFatal: @escaping @Sendable (String) -> Void) throws {
        self.node = node
        self.config = pc
        self.migrator = migrator
        self.logger = logger
        self.metrics = metrics
        vcpuCount = cfg.totalVCPUs
        nodeCount = cfg.nodes.count
        migrationTimeout = max(5, cfg.timeouts.failure * 2)
        attribution = FaultAttribution(vcpuCount: vcpuCount, nodeCount: nodeCount, selfNode: node.id, samplePages: pc.samplePages)
        guard memory.enableAttribution(attribution) else {
            throw AssemblyError("\(cfg.sourcePath): placement: this kernel's userfaultfd does not report the faulting thread "
                                + "(UFFD_FEATURE_THREAD_ID, Linux 4.14+), so faults cannot be attributed to vCPUs (node \(node.id))")
        }
        acc = Mutex(Interval(faults: [UInt64](repeating: 0, count: vcpuCount * nodeCount),
                             pages: [Set<UInt64>](repeating: [], count: vcpuCount)))
        cMalformed = metrics.counter("placement.figures_malformed")
        cRows = metrics.counter("placement.figures_rows")
        if node.id == 0 {
            let plugin: LoadedPlugin
            do { plugin = try loader.load(pc.plugin.plugin, kind: .placement) } catch {
                throw AssemblyError("\(cfg.sourcePath): placement.plugin: \(error)")
            }
            let services = HostServicesTable(pluginName: plugin.name, metrics: metrics, logger: logger) { onFatal($0) }
            let initial = (0..<vcpuCount).map { cfg.node(ofVCPU: UInt32($0)) ?? 0 }
            final class Box: @unchecked Sendable { weak var service: PlacementService? }
            let box = Box()
            do {
                policy = try PlacementPolicyInstance(plugin: plugin, services: services, nodeCount: nodeCount, initialNode: initial,
                                                     settings: pc.plugin.settings) { vcpu, to in
                    box.service?.request(vcpu: Int(vcpu), to: to) ?? GVM_ERR_CLOSED.rawValue
                }
            } catch {
                throw AssemblyError("\(cfg.sourcePath): placement: \(error)")
            }
            box.service = self
            node.register(channel: .cpu, types: [MessageType.CPU.placementFigures.rawValue]) { [weak self] from, p in
                self?.receive(from: from, p)
            }
        } else {
            policy = nil
        }
    }

    /// Starts the interval timer (after the cluster met).
    public func start() {
        let t = DispatchSource.makeTimerSource(queue: queue)
        let ns = Int(min(config.intervalNanoseconds, UInt64(Int.max)))
        t.schedule(deadline: .now() + .nanoseconds(ns), repeating: .nanoseconds(ns))
        t.setEventHandler { [weak self] in self?.tick() }
        timer = t
        t.resume()
    }

    /// Stops the timer and destroys the policy (waits for a running observe()).
    public func stop() {
        timer?.cancel()
        queue.sync {
            timer = nil
            policy?.destroy()
        }
    }

    // ---- every node ----------------------------------------------------------------------

    func tick() {
        let rows = attribution.take()
        if node.id == 0 {
            for r in rows { add(r) }
            observe()
            return
        }
        for r in rows {
            var w = MessageWriter(type: MessageType.CPU.placementFigures.rawValue)
            w.u32(UInt32(r.vcpu)); w.u32(UInt32(r.faults.count))
            for f in r.faults { w.u64(f) }
            w.u32(UInt32(r.pages.count))
            for p in r.pages { w.u64(p) }
            node.send(channel: .cpu, to: 0, w.bytes)
        }
    }

    // ---- node 0 ---------------------------------------------------------------------------

    private func add(_ r: FaultAttribution.Row) {
        acc.withLock { a in
            for n in 0..<min(nodeCount, r.faults.count) { a.faults[r.vcpu * nodeCount + n] &+= r.faults[n] }
            for p in r.pages where a.pages[r.vcpu].count < config.samplePages { a.pages[r.vcpu].insert(p) }
        }
    }

    func receive(from: UInt32, _ p: UnsafeRawBufferPointer) {
        var r = MessageReader(p)
        guard r.u8() == MessageType.CPU.placementFigures.rawValue, let v = r.u32(), Int(v) < vcpuCount,
              let n = r.u32(), Int(n) == nodeCount else {
            metricsBad(from, p.count)
            return
        }
        var faults: [UInt64] = []
        for _ in 0..<Int(n) {
            guard let f = r.u64() else { return metricsBad(from, p.count) }
            faults.append(f)
        }
        guard let count = r.u32(), Int(count) <= FaultAttribution.maxSamplePages else { return metricsBad(from, p.count) }
        var pages: [UInt64] = []
        pages.reserveCapacity(Int(count))
        for _ in 0..<Int(count) {
            guard let g = r.u64() else { return metricsBad(from, p.count) }
            pages.append(g)
        }
        metrics.add(cRows, 1)
        add(FaultAttribution.Row(vcpu: Int(v), faults: faults, pages: pages))
    }

    private func metricsBad(_ from: UInt32, _ count: Int) {
        metrics.add(cMalformed, 1)
        logger.error("placement: malformed PLACEMENT_FIGURES from node \(from) (\(count) bytes): dropped")
    }

    /// Builds the interval's figures and calls the policy. On the queue.
    private func observe() {
        guard let policy else { return }
        let (faults, pages, inFlight) = acc.withLock { a -> ([UInt64], [Set<UInt64>], Set<Int>) in
            let out = (a.faults, a.pages, a.inFlight)
            a.faults = [UInt64](repeating: 0, count: vcpuCount * nodeCount)
            a.pages = [Set<UInt64>](repeating: [], count: vcpuCount)
            return out
        }
        var sharing = [UInt64](repeating: 0, count: vcpuCount * vcpuCount)
        for i in 0..<vcpuCount {
            sharing[i * vcpuCount + i] = UInt64(pages[i].count)
            for j in (i + 1)..<max(vcpuCount, i + 1) where !pages[i].isEmpty && !pages[j].isEmpty {
                let (small, big) = pages[i].count <= pages[j].count ? (pages[i], pages[j]) : (pages[j], pages[i])
                let s = UInt64(small.reduce(0) { $0 + (big.contains($1) ? 1 : 0) })
                sharing[i * vcpuCount + j] = s
                sharing[j * vcpuCount + i] = s
            }
        }
        var where_ = migrator.placement.nodes
        for v in inFlight { where_[v] = UInt32.max }
        policy.observe(PlacementFigures(vcpuNode: where_, nodeCount: nodeCount, faults: faults, sharing: sharing,
                                        samplePages: config.samplePages, intervalNanoseconds: config.intervalNanoseconds))
    }

    /// The policy's migrate(): accepted at once, run on a worker, reported on the queue.
    func request(vcpu: Int, to: UInt32) -> Int32 {
        guard vcpu >= 0, vcpu < vcpuCount, Int(to) < nodeCount else { return GVM_ERR_INVALID.rawValue }
        guard migrator.placement.node(of: vcpu) != to else { return GVM_ERR_INVALID.rawValue }
        let accepted = acc.withLock { a in a.inFlight.insert(vcpu).inserted }
        guard accepted else { return GVM_ERR_STATE.rawValue }
        let started = monotonicNanoseconds()
        logger.info("placement: moving vCPU \(vcpu) to node \(to)")
        Thread.detachNewThread { [self] in
            let r = migrator.migrate(vcpu: vcpu, to: to, timeout: migrationTimeout)
            if !r.ok { logger.warning("placement: vCPU \(vcpu) to node \(to): \(r.message)") }
            queue.async { [self] in
                _ = acc.withLock { $0.inFlight.remove(vcpu) }
                policy?.migrationDone(vcpu: UInt32(vcpu), node: to, status: r.ok ? GVM_OK.rawValue : GVM_ERR_STATE.rawValue,
                                      elapsedNanoseconds: monotonicNanoseconds() - started)
            }
        }
        return GVM_OK.rawValue
    }
}
