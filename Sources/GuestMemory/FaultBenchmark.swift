// The fault round-trip benchmark behind `giantvm bench fault`: a host thread reads a missing
// page of guest memory, the fault goes through a handler thread, the coherence plugin's fault
// hook (dsm-local: install zeros SHARED, page_wake) and back. Beside it, in the same run and the
// same wake mode, the raw floor: a minimal C handler doing one UFFDIO_COPY per fault
// (gvm_uffd_floor_bench). The two are run in alternating rounds so load from other processes
// falls on both alike.
//
// Threading: `run` blocks the calling thread (which is the faulting thread) for the whole run.

import CSystem
import Glibc
import Histogram
import Metrics
import PluginAPI

/// Percentiles of one series of round trips, in nanoseconds (the same summary every benchmark
/// and the node stop tables use).
public typealias LatencySummary = HistogramSummary

public struct FaultBenchmarkResult: Sendable {
    public var mode: HandlerWakeMode
    public var floor: LatencySummary
    public var guest: LatencySummary
    public var pluginName: String
    /// (faulting thread, handler thread) CPUs, or nil when threads were not pinned.
    public var cpus: (faulter: Int32, handler: Int32)?
    public var ratioP50: Double { Double(guest.p50) / Double(Swift.max(floor.p50, 1)) }
    public var ratioP99: Double { Double(guest.p99) / Double(Swift.max(floor.p99, 1)) }

    /// The report printed by the CLI.
    public func table() -> String {
        func us(_ ns: UInt64) -> String { one(Double(ns) / 1000) }
        func one(_ v: Double) -> String { String((v * 10).rounded() / 10) }
        func row(_ cols: [String]) -> String {
            zip(cols, [32, 8, 8, 8, 8, 8, 10, 8]).map { c, w in
                c.count >= w ? c + " " : c + String(repeating: " ", count: w - c.count)
            }.joined()
        }
        func series(_ name: String, _ s: LatencySummary) -> String {
            row([name, "\(s.count)", us(s.min), us(s.p50), us(s.p90), us(s.p99), us(s.max), one(s.mean / 1000)])
        }
        var out = "fault round trip: a host thread reads a missing page; handler wake mode \(mode); "
        out += cpus.map { "faulting thread on CPU \($0.faulter), handler on CPU \($0.handler)\n" } ?? "threads not pinned\n"
        out += row(["series (microseconds)", "count", "min", "p50", "p90", "p99", "max", "mean"]) + "\n"
        out += series("floor: C handler, UFFDIO_COPY", floor) + "\n"
        out += series("GuestMemory + \(pluginName)", guest) + "\n"
        out += "ratio GuestMemory/floor: p50 \(two(ratioP50))x, p99 \(two(ratioP99))x (target: within 1.2x)\n"
        return out
    }

    private func two(_ v: Double) -> String { String((v * 100).rounded() / 100) }
}

public enum FaultBenchmarkError: Error, CustomStringConvertible {
    case floor(Int32)
    case plugin(String)
    case stuck(gfn: UInt64, status: Int32)
    public var description: String {
        switch self {
        case .floor(let e): return "fault benchmark floor: \(String(cString: strerror(-e))) (errno \(-e))"
        case .plugin(let m): return "fault benchmark: \(m)"
        case .stuck(let gfn, let s): return "fault benchmark: page \(gfn) could not be dropped between rounds: \(String(cString: gvm_status_name(s)))"
        }
    }
}

public enum FaultBenchmark {
    /// Pages faulted per pass before all are dropped again (untimed).
    static let window = 1024

    /// Runs `iterations` timed faults of each series (after `warmup` untimed ones), in `rounds`
    /// alternating rounds, with the coherence plugin `ops` (named `pluginName`) bound to a fresh
    /// single-node guest memory, handler threads in `mode`. With `cpus`, the calling (faulting)
    /// thread and both series' handler threads are pinned to those CPUs, so thread placement is
    /// the same for floor and guest (the calling thread's affinity is restored afterwards).
    public static func run(mode: HandlerWakeMode, iterations: Int, rounds: Int = 10, warmup: Int = 200,
                           cpus: (faulter: Int32, handler: Int32)? = defaultCPUs(), pluginName: String, ops: UnsafePointer<gvm_coherence_ops>,
                           services: UnsafePointer<gvm_host_services>) throws -> FaultBenchmarkResult {
        precondition(iterations > 0 && rounds > 0)
        let bytes = UInt64(window * guestPageSize)
        var savedMask = gvm_cpu_mask()
        if let cpus {
            _ = gvm_thread_get_affinity(&savedMask)
            let rc = gvm_thread_pin_cpu(cpus.faulter)
            if rc < 0 { throw FaultBenchmarkError.plugin("cannot pin the faulting thread to CPU \(cpus.faulter): \(String(cString: strerror(-rc)))") }
        }
        defer { if cpus != nil { _ = gvm_thread_set_affinity(&savedMask) } }
        let memory = try GuestMemory(bytes: bytes, wakeMode: mode, handlerThreads: 1,
                                     handlerCPUs: cpus.map { [$0.handler] } ?? [],
                                     send: { _, _ in GVM_ERR_CLOSED.rawValue },
                                     sendUrgent: { _, _ in GVM_ERR_CLOSED.rawValue })
        let cluster = SingleNodeClusterInfo(name: "bench", memoryBytes: bytes)
        let plugin: CoherencePluginInstance
        do {
            plugin = try CoherencePluginInstance(name: pluginName, ops: ops, services: services, memory: memory,
                                                 cluster: cluster.pointer)
            try plugin.start()
        } catch { throw FaultBenchmarkError.plugin("\(error)") }
        try memory.start()
        defer { memory.stop(); plugin.stop() }

        let spinNs: UInt64
        switch mode {
        case .poll: spinNs = 0
        case .spin(let ns): spinNs = ns
        }
        let wakeModeC: Int32 = mode == .poll ? 0 : 1
        var floorHist = Histogram<UInt64>(highestTrackableValue: 10_000_000_000)
        var guestHist = Histogram<UInt64>(highestTrackableValue: 10_000_000_000)
        var next = 0 // next page of the window to fault

        func guestFaults(_ n: Int, record: Bool) throws {
            var sink: UInt8 = 0
            for _ in 0..<n {
                if next == window {
                    for g in 0..<window {
                        let rc = memory.drop(UInt64(g), into: nil)
                        if rc != GVM_OK && rc != GVM_ERR_NOT_PRESENT { throw FaultBenchmarkError.stuck(gfn: UInt64(g), status: rc.rawValue) }
                    }
                    next = 0
                }
                let p = memory.base + next * guestPageSize + 64
                let t0 = monotonicNanoseconds()
                sink ^= gvmVolatileLoad(p)
                let t1 = monotonicNanoseconds()
                next += 1
                if record { _ = guestHist.record(t1 - t0) }
            }
            gvmBenchSink = sink
        }

        func floorFaults(_ n: Int, record: Bool) throws {
            var out = [UInt64](repeating: 0, count: n)
            let rc = out.withUnsafeMutableBufferPointer { gvm_uffd_floor_bench(wakeModeC, UInt32(n), spinNs, cpus?.handler ?? -1, $0.baseAddress) }
            if rc < 0 { throw FaultBenchmarkError.floor(rc) }
            if record { for v in out { _ = floorHist.record(v) } }
        }

        try floorFaults(warmup, record: false)
        try guestFaults(warmup, record: false)
        let per = (iterations + rounds - 1) / rounds
        var left = iterations
        while left > 0 {
            let n = Swift.min(per, left)
            try floorFaults(n, record: true)
            try guestFaults(n, record: true)
            left -= n
        }
        return FaultBenchmarkResult(mode: mode, floor: LatencySummary(floorHist), guest: LatencySummary(guestHist),
                                    pluginName: pluginName, cpus: cpus)
    }

    /// The first two CPUs this process may use, or nil on a one-CPU machine.
    public static func defaultCPUs() -> (faulter: Int32, handler: Int32)? {
        let a = gvm_nth_available_cpu(0), b = gvm_nth_available_cpu(1)
        return a >= 0 && b >= 0 ? (Int32(a), Int32(b)) : nil
    }
}

/// Keeps benchmark loads from being optimised away.
nonisolated(unsafe) var gvmBenchSink: UInt8 = 0

@inline(never)
func gvmVolatileLoad(_ p: UnsafeMutableRawPointer) -> UInt8 { p.load(as: UInt8.self) }
