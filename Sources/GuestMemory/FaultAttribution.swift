// Per-vCPU fault attribution for placement policies (docs/migration.md, "Placement policies").
//
// Each vCPU thread registers its kernel thread id; userfaultfd messages carry the faulting
// thread's id (UFFD_FEATURE_THREAD_ID), so the fault handler knows which vCPU took a fault. For
// each vCPU this keeps, per interval: the faults by the node that served them, and the first
// `samplePages` distinct pages it faulted on (for the sharing matrix node 0 builds).
//
// "Served by": a fault stays pending on its vCPU until its page is installed. An install made
// while the coherence plugin handles a message from node n (CoherenceBinding.receive marks the
// thread) counts for n; an install outside a message (a first touch, a page the protocol had
// locally) counts for this node, and so does a fault resolved without an install (an upgrade in
// place), found when the vCPU faults next or when the interval is taken.
//
// Threading: any thread; one lock for the rows, one for the thread map; no allocation but a
// page set growing to `samplePages` per vCPU per interval.

import CSystem
import Foundation
import Synchronization

public final class FaultAttribution: @unchecked Sendable {
    /// Most distinct pages remembered per vCPU per interval (one figures message must fit a frame).
    public static let maxSamplePages = 4096

    // ---- the vCPU threads of this process --------------------------------------------------

    private static let threads = Mutex<[UInt32: Int]>([:])

    /// Records the calling thread as vCPU `vcpu`'s (its global index). Called by the vCPU loop.
    public static func registerCurrentThread(vcpu: Int) {
        let tid = gvm_gettid()
        threads.withLock { $0[tid] = vcpu }
    }

    public static func unregisterCurrentThread() {
        let tid = gvm_gettid()
        threads.withLock { _ = $0.removeValue(forKey: tid) }
    }

    static func vcpu(ofThread tid: UInt32) -> Int? { threads.withLock { $0[tid] } }

    // ---- the node a message being handled came from (per thread) ---------------------------

    private static let sourceKey: pthread_key_t = {
        var k = pthread_key_t()
        pthread_key_create(&k, nil)
        return k
    }()

    /// Whether any GuestMemory of this process attributes faults: without one, marking message
    /// sources is skipped (it would cost two thread-specific writes per coherence message).
    static let inUse = Atomic<Bool>(false)
    public static var isInUse: Bool { inUse.load(ordering: .relaxed) }

    /// Marks the calling thread as handling a coherence message from `node` (nil: none).
    public static func setMessageSource(_ node: UInt32?) {
        pthread_setspecific(sourceKey, node.map { UnsafeRawPointer(bitPattern: UInt(UInt32($0)) + 1) } ?? nil)
    }

    static var messageSource: UInt32? {
        guard let p = pthread_getspecific(sourceKey) else { return nil }
        return UInt32(truncatingIfNeeded: UInt(bitPattern: p) - 1)
    }

    // ---- the figures ---------------------------------------------------------------------

    /// One vCPU's figures for one interval.
    public struct Row: Sendable, Equatable {
        public var vcpu: Int
        /// [nodeCount]: faults by serving node.
        public var faults: [UInt64]
        /// Distinct faulting pages, in first-fault order, at most samplePages.
        public var pages: [UInt64]
        public init(vcpu: Int, faults: [UInt64], pages: [UInt64]) {
            self.vcpu = vcpu; self.faults = faults; self.pages = pages
        }
    }

    private struct Slot {
        var faults: [UInt64]
        var pages: [UInt64] = []
        var seen: Set<UInt64> = []
        var pending: UInt64?
        var active = false
    }

    public let vcpuCount: Int
    public let nodeCount: Int
    public let selfNode: Int
    public let samplePages: Int
    private let slots: Mutex<[Slot]>

    public init(vcpuCount: Int, nodeCount: Int, selfNode: UInt32, samplePages: Int) {
        precondition(vcpuCount > 0 && nodeCount > 0 && Int(selfNode) < nodeCount)
        self.vcpuCount = vcpuCount
        self.nodeCount = nodeCount
        self.selfNode = Int(selfNode)
        self.samplePages = min(max(samplePages, 1), Self.maxSamplePages)
        slots = Mutex([Slot](repeating: Slot(faults: [UInt64](repeating: 0, count: nodeCount)), count: vcpuCount))
    }

    /// A fault delivered to the coherence plugin, taken by thread `tid`.
    func fault(tid: UInt32, gfn: UInt64) {
        guard let v = Self.vcpu(ofThread: tid), v >= 0, v < vcpuCount else { return }
        let cap = samplePages, me = selfNode
        slots.withLock { s in
            if s[v].pending != nil { s[v].faults[me] += 1 }   // resolved without an install
            s[v].pending = gfn
            s[v].active = true
            if s[v].pages.count < cap, s[v].seen.insert(gfn).inserted { s[v].pages.append(gfn) }
        }
    }

    /// Page `gfn` was installed on this node (by the calling thread).
    func installed(_ gfn: UInt64) {
        let from = Self.messageSource.map(Int.init) ?? selfNode
        let source = from < nodeCount ? from : selfNode
        slots.withLock { s in
            for v in s.indices where s[v].pending == gfn {
                s[v].faults[source] += 1
                s[v].pending = nil
            }
        }
    }

    /// The figures of every vCPU that faulted since the last call, and a fresh interval.
    public func take() -> [Row] {
        return slots.withLock { s in
            var rows: [Row] = []
            for v in s.indices where s[v].active {
                rows.append(Row(vcpu: v, faults: s[v].faults, pages: s[v].pages))
                // A fault still pending is counted in the interval it is resolved in.
                let pending = s[v].pending
                s[v] = Slot(faults: [UInt64](repeating: 0, count: nodeCount), pending: pending, active: pending != nil)
            }
            return rows
        }
    }
}
