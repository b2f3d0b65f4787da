// One TSC across nodes (GiantVM section 4.4). KVM gives each vCPU guest_tsc = host_tsc + offset,
// with the offset chosen when the vCPU is created — in another process, at another moment, and
// on another machine against another host TSC. Node 0 is the leader: before its guest runs it
// measures its guest offset against its host clock. Each follower asks the leader for its host
// clock several times, keeps the sample with the smallest round trip (TimeSync.ClockSync:
// the reply is assumed read half-way through it) and programs every local vCPU's TSC offset
// (Machine.VCPUClock, through the KVM layer) to host_clock + (leader_host - local_host) + leader_offset.
//
// kvmclock (when the guest is offered it, Machine.kvmClock): each VM's clock counts from its own
// creation, so nodes disagree by the moments their processes made their VMs. The leader's replies
// carry its kvmclock read at the host clock they report; the follower carries the best sample's
// reading forward to its own host clock (TimeSync.ClockSync.followerKVMClock) and sets its VM's
// kvmclock to it (KVM_SET_CLOCK) before its vCPUs run, so kvmclock read on any node agrees within
// the estimate's uncertainty plus the reading brackets.
//
// `skew` (giantvm node --tsc-skew) injects a difference on purpose: this node then acts as if its
// host TSC ran `skew` ticks ahead (every host-clock reading, and its vCPUs' initial TSC), since
// nodes on one machine otherwise share one TSC. The same-machine check at the end compares the
// real guest offsets (against the raw RDTSC), which only means something when nodes share a host.
//
// Threading: `measureLeader`/`sync` on the main thread before the VM runs (their KVM
// calls on the vCPUs must not race with KVM_RUN); `answer`/`reply` on transport receive threads.

import Cluster
import Foundation
import Logging
import Machine
import TimeSync

public final class ClockAligner: @unchecked Sendable {
    let node: Node
    let machine: Machine
    let skew: Int64
    let logger: Logger
    let cond = NSCondition()
    var replies: [UInt32: (localReceive: UInt64, hostClock: UInt64, guestOffset: Int64, real: Int64, kvmclock: UInt64)] = [:]
    /// Leader: its guest offset against its host clock, and against the raw RDTSC.
    var leaderOffset: Int64 = 0
    var leaderRealOffset: Int64 = 0
    var leaderReady = false

    /// Registers TIME_REQ and TIME_REP on the cpu channel: call before `node.start()`.
    public init(node: Node, machine: Machine, skew: Int64, logger: Logger) {
        self.node = node; self.machine = machine; self.skew = skew; self.logger = logger
        node.register(channel: .cpu, types: [CPUMessageType.timeRequest.rawValue, CPUMessageType.timeReply.rawValue]) {
            [weak self] from, payload in
            guard let self else { return }
            switch try? CPUMessage.decode(payload) {
            case let .timeRequest(seq)?: answer(from: from, seq: seq)
            case let m?: reply(from: from, m)
            case nil: logger.error("dropped a malformed time message from node \(from)")
            }
        }
    }

    func hostClock() -> UInt64 { UInt64(bitPattern: Int64(bitPattern: VCPUClock.hostTSC()) &+ skew) }

    /// Whether KVM keeps a TSC offset written to this vCPU: moves it by 2^32 ticks, reads it
    /// back, restores it (before the vCPU runs).
    func honoursOffsets(_ v: VCPUClock) throws -> Bool {
        let cur = try v.offset()
        try v.setOffset(cur &+ (1 << 32))
        let moved = try v.offset()
        try v.setOffset(cur)
        return abs(moved &- (cur &+ (1 << 32))) <= 100_000
    }

    /// Applies the injected skew to every local vCPU's TSC (as a host whose TSC runs `skew`
    /// ahead, with the same KVM offset, would show it).
    public func injectSkew() throws {
        guard skew != 0 else { return }
        for v in machine.localClocks { try v.setOffset(try v.offset() &+ skew) }
    }

    /// Leader: records its offsets (against its host clock, and real) so it can answer followers.
    public func measureLeader() throws {
        guard let v = machine.localClocks.first else { return }
        let r = try v.offset()
        cond.lock()
        leaderOffset = r &- skew
        leaderRealOffset = r
        leaderReady = true
        cond.broadcast()
        cond.unlock()
    }

    /// Leader, receive thread: answers a follower's request at once.
    func answer(from: UInt32, seq: UInt32) {
        cond.lock()
        let ready = leaderReady, o = leaderOffset, r = leaderRealOffset
        cond.unlock()
        guard ready else {
            logger.error("time request from node \(from) before this node measured its TSC: not answered")
            return
        }
        // with kvmclock: the reading and the host clock it was taken at, as one sample
        var clock = hostClock(), kvmclock: UInt64 = 0
        if let kc = machine.kvmClock {
            do {
                let k = try kc.read()
                clock = UInt64(bitPattern: Int64(bitPattern: k.hostTSC) &+ skew)
                kvmclock = k.nanoseconds
            } catch {
                logger.error("time request from node \(from): cannot read this VM's kvmclock (\(error)): answered without it")
            }
        }
        node.send(channel: .cpu, to: from, CPUMessage.timeReply(seq: seq, hostClock: clock, guestOffset: o, realGuestOffset: r,
                                                                kvmclock: kvmclock).encode())
    }

    /// Follower, receive thread.
    func reply(from: UInt32, _ m: CPUMessage) {
        let now = hostClock()
        guard case let .timeReply(seq, clock, off, real, kvmclock) = m else { return }
        cond.lock()
        replies[seq] = (now, clock, off, real, kvmclock)
        cond.broadcast()
        cond.unlock()
    }

    public struct Result {
        public var estimate: ClockEstimate
        public var beforeTicks: Int64
        public var afterTicks: Int64
        public var tscKHz: UInt32
        /// The real offset programmed, and whether KVM kept it (PVM ignores TSC offset writes:
        /// its guests read the host TSC directly).
        public var programmed: Int64
        public var applied: Bool
        /// kvmclock (when offered): this VM's minus node 0's, before and after alignment (ns),
        /// and how far the "after" figure may be off (ns: the estimate's uncertainty plus the
        /// reading brackets). nil without kvmclock.
        public var kvmclock: (beforeNs: Int64, afterNs: Int64, uncertaintyNs: Int64)? = nil
    }

    /// Follower: samples the leader, programs every local vCPU's TSC, checks the result.
    public func sync(leader: UInt32, samples: Int = 16, timeout: Double) throws -> Result {
        guard let first = machine.localClocks.first else { throw WireError("no local vCPU to program") }
        let khz = (try? first.frequencyKHz()) ?? 0
        let realBefore = try first.offset()
        var list: [ClockSample] = []
        var leaderOff: Int64 = 0, leaderReal: Int64 = 0
        var leaderKVM: [(hostClock: Int64, kvmclock: UInt64)] = []
        for seq in 0..<UInt32(samples) {
            let sent = hostClock()
            node.send(channel: .cpu, to: leader, CPUMessage.timeRequest(seq: seq).encode())
            let deadline = Date(timeIntervalSinceNow: timeout)
            cond.lock()
            while replies[seq] == nil && node.stopReason == nil {
                if !cond.wait(until: deadline) { break }
            }
            let r = replies[seq]
            cond.unlock()
            guard let r else { throw WireError("time sync: no answer from node \(leader) within \(timeout) s") }
            list.append(ClockSample(localSend: Int64(bitPattern: sent), remote: Int64(bitPattern: r.hostClock),
                                    localReceive: Int64(bitPattern: r.localReceive)))
            leaderOff = r.guestOffset
            leaderReal = r.real
            leaderKVM.append((Int64(bitPattern: r.hostClock), r.kvmclock))
        }
        let est = try ClockSync.estimate(list)
        // guest = host clock + model offset on both; leader host = local host + est.offset.
        let model = ClockSync.followerTSCOffset(leaderGuestOffset: leaderOff, hostOffset: est.offset)
        for v in machine.localClocks { try v.setOffset(model &+ skew) }
        let realAfter = try first.offset()
        let applied = try honoursOffsets(first) && abs(realAfter &- (model &+ skew)) <= 100_000
        if !applied {
            logger.info("time: KVM kept the vCPUs' TSC offset at \(realAfter) instead of \(model &+ skew): this KVM ignores TSC offset changes (PVM guests read the host TSC directly)")
        }
        var result = Result(estimate: est, beforeTicks: realBefore &- leaderReal, afterTicks: realAfter &- leaderReal, tscKHz: khz,
                            programmed: model &+ skew, applied: applied)
        if let kc = machine.kvmClock {
            // the leader's reading of the best (minimum round trip) sample
            let best = list.indices.min { list[$0].roundTrip < list[$1].roundTrip }!
            result.kvmclock = try alignKVMClock(kc, leader: leaderKVM[best], hostOffset: est.offset, tscKHz: khz,
                                                uncertaintyTicks: est.uncertainty)
        } else if leaderKVM.contains(where: { $0.kvmclock != 0 }) {
            logger.warning("time: node \(leader) offers kvmclock but this node does not (GIANTVM_KVMCLOCK or its probe differ): the guest's CPUID differs between nodes")
        }
        return result
    }

    /// Follower: sets this VM's kvmclock to the leader's `leader` reading carried forward
    /// (before the vCPUs run); returns this clock minus the leader's before and after, in ns.
    func alignKVMClock(_ kc: VMClock, leader: (hostClock: Int64, kvmclock: UInt64), hostOffset: Int64, tscKHz: UInt32,
                       uncertaintyTicks: Int64) throws -> (beforeNs: Int64, afterNs: Int64, uncertaintyNs: Int64)? {
        guard leader.kvmclock != 0 else {
            logger.warning("time: node 0 sent no kvmclock reading (it does not offer kvmclock, this node does: GIANTVM_KVMCLOCK or its probe differ): kvmclock not aligned")
            return nil
        }
        func leaderNow(atLocal host: UInt64) throws -> Int64 {
            do {
                return Int64(try ClockSync.followerKVMClock(leaderKVMClock: leader.kvmclock, leaderHostClock: leader.hostClock, hostOffset: hostOffset,
                                                            localHostClock: Int64(bitPattern: host) &+ skew, tscKHz: tscKHz))
            } catch { throw WireError("kvmclock alignment with node 0: \(error)") }
        }
        let before = try kc.read()
        let beforeNs = Int64(clamping: before.nanoseconds) &- (try leaderNow(atLocal: before.hostTSC))
        // KVM_SET_CLOCK takes effect a little after the host clock is read for the target: a
        // second round sets it again, less the first round's residual
        var afterNs: Int64 = 0, bracket: UInt64 = 0, correction: Int64 = 0
        for _ in 0..<2 {
            let target = try leaderNow(atLocal: VCPUClock.hostTSC()) &- correction
            guard target >= 0 else { throw WireError("kvmclock alignment with node 0: negative target \(target) ns") }
            try kc.set(UInt64(target))
            let after = try kc.read()
            afterNs = Int64(clamping: after.nanoseconds) &- (try leaderNow(atLocal: after.hostTSC))
            bracket = after.uncertaintyTicks
            correction = correction &+ afterNs
        }
        let ticks = uncertaintyTicks &+ Int64(clamping: bracket)
        let uncertaintyNs = tscKHz > 0 ? ticks &* 1_000_000 / Int64(tscKHz) : 0
        return (beforeNs, afterNs, uncertaintyNs)
    }
}
