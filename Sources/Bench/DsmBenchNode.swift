// One node of `giantvm bench dsm`: a cluster node (the configured transport), guest memory over
// userfaultfd with the configured coherence plugin (NodeAssembly.CoherenceStack, as a VM node
// has it), then the workload's threads on guest RAM (DsmWorkloads). It prints one
// `RESULT {json}` line (NodeReport), keeps serving pages until every node is done, and node 0
// stops the cluster. Node 0 also measures the read-miss floor (ReadMissFloor) against the last
// node, in the same run: between the workload's own reads (readmiss, seqread) or right after it.
//
// Threading: `run` on the main thread (it waits for the stop); the workload and the floor on a
// worker thread; channel handlers on transport receive threads.

import Cluster
import Config
import DsmWorkloads
import Foundation
import GuestMemory
import Logging
import Metrics
import NodeAssembly
import PluginAPI
import PluginHost

public struct DsmBenchNode {
    public let config: ClusterConfig
    public let id: UInt32
    public let params: WorkloadParams
    public let wakeMode: HandlerWakeMode
    /// Seconds the "finished" agreement may wait for the slowest node.
    public let timeout: Double

    public init(config: ClusterConfig, id: UInt32, params: WorkloadParams, wakeMode: HandlerWakeMode, timeout: Double) {
        self.config = config; self.id = id; self.params = params; self.wakeMode = wakeMode; self.timeout = timeout
    }

    /// Runs this node until the cluster stops; `emit` prints a line on stdout. Returns the stop.
    public func run(loader: PluginLoader, logger: Logger, emit: @escaping @Sendable (String) -> Void) -> StopReason {
        let metrics = MetricsRegistry()
        let node: Node
        let stack: CoherenceStack
        let id = self.id
        do {
            node = try Node(config: config, id: id, loader: loader, logger: logger, metrics: metrics)
            stack = try CoherenceStack(config: config, selfID: id, node: node, loader: loader, metrics: metrics, logger: logger,
                                       wakeMode: wakeMode) { who, why in
                node.stop(StopCause.pluginFatal(plugin: who, why).stopReason(origin: id))
            }
        } catch {
            return StopCause.setupFailed(node: id, "\(error)").stopReason(origin: id)
        }
        let control = BenchControl(node: node, nodes: config.nodes.count)
        let floorProbe = ReadMissFloor(node: node)
        defer { floorProbe.close() }
        do {
            try node.start()
            try stack.start()
        } catch {
            node.stop(StopCause.setupFailed(node: id, "\(error)").stopReason(origin: id))
            _ = node.waitUntilStopped()
            stack.stop()
            return StopCause.setupFailed(node: id, "\(error)").stopReason(origin: id)
        }
        let (params, timeout, wakeMode) = (self.params, self.timeout, self.wakeMode)
        let peer = UInt32(config.nodes.count - 1)
        let worker = Thread {
            var floor: FloorReport?
            let interleaved = params.kind == .readmiss || params.kind == .seqread
            var result: NodeResult
            do {
                let w = try DsmWorkload(memory: stack.memory.base, bytes: Int(stack.memory.size), params: params, node: Int(id))
                if id == 0 {
                    try floorProbe.prepare(peer: peer, wakeMode: wakeMode)
                    if interleaved { w.floorSample = { try floorProbe.sample() } }
                }
                result = w.run()
                if id == 0 && result.errors.isEmpty {
                    let samples = interleaved ? (result.floorLatencies ?? []) : try floorProbe.samples(1000)
                    floor = FloorReport(peer: Int(peer), interleaved: interleaved, samples: samples)
                }
            } catch {
                node.stop(reason: "\(error)", status: 1)
                return
            }
            let snap = metrics.snapshot()
            var report = NodeReport(node: Int(id), result: result, counters: snap.counters, histograms: snap.histograms,
                                    floor: floor, memory: MemoryReport(stack.memory.stats), plugin: stack.pluginName)
            report.latencyValues = NodeStatisticsFile(node: Int(id), seconds: result.seconds, registry: metrics).latencyValues
            let enc = JSONEncoder()
            enc.outputFormatting = [.sortedKeys]
            let json = (try? enc.encode(report)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
            emit("RESULT \(json)")
            if let first = result.errors.first {
                node.stop(reason: "workload check failed on node \(id): \(first)", status: 1)
                return
            }
            // Keep serving pages until every node is done, then node 0 stops the cluster.
            control.finished(timeout)
            if id == 0 { node.stop(StopCause.finished("benchmark finished").stopReason(origin: id)) }
        }
        worker.stackSize = 1 << 22
        worker.start()
        let reason = node.waitUntilStopped()
        stack.stop()
        return reason
    }
}
