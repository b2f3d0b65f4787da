// TimeSync: every vCPU on every node must see one TSC and one kvmclock (GiantVM paper, section
// 4.4). The first node is the leader; each follower asks it for its clock several times and takes
// the sample with the smallest round trip, assuming the reply was read half-way through it
// (Cristian's algorithm). The follower's guest TSC offset is then the leader's, corrected by the
// estimated difference between the two hosts' clocks.
//
// Pure arithmetic, so it is tested without nodes; the node runtime does the messaging.

/// One exchange: the follower's clock when it sent the request, the leader's clock when it
/// answered, and the follower's clock when the answer arrived (all in the same unit, e.g. ns or
/// TSC ticks).
public struct ClockSample: Equatable, Sendable {
    public var localSend: Int64
    public var remote: Int64
    public var localReceive: Int64
    public init(localSend: Int64, remote: Int64, localReceive: Int64) {
        self.localSend = localSend; self.remote = remote; self.localReceive = localReceive
    }
    public var roundTrip: Int64 { localReceive - localSend }
    /// remote - local at the moment the leader read its clock, assuming symmetric delays.
    public var offset: Int64 { remote - (localSend + roundTrip / 2) }
}

/// The result of a synchronisation: add `offset` to a local clock reading to get the leader's.
public struct ClockEstimate: Equatable, Sendable {
    public var offset: Int64
    /// The best (smallest) round trip seen; the offset is exact to within half of it.
    public var roundTrip: Int64
    public var uncertainty: Int64 { roundTrip / 2 }
    public var samples: Int
}

public enum ClockSync {
    public enum Failure: Error, CustomStringConvertible, Equatable {
        case noSamples
        case negativeRoundTrip(ClockSample)
        case tscFrequency(UInt32)
        case interval(Int64)
        case negativeClock(Int64)
        public var description: String {
            switch self {
            case .noSamples: return "clock synchronisation got no samples from the leader"
            case .negativeRoundTrip(let s): return "clock sample with a negative round trip (\(s)): the local clock is not monotonic"
            case .tscFrequency(let k): return "TSC frequency \(k) kHz is outside \(ClockSync.tscKHzRange) kHz: cannot turn host clock ticks into kvmclock nanoseconds"
            case .interval(let t): return "the leader's kvmclock reading is \(t) ticks away from now (more than an hour): the host clocks or the offset are wrong"
            case .negativeClock(let ns): return "the aligned kvmclock would be negative (\(ns) ns)"
            }
        }
    }

    /// TSC frequencies (kHz) the kvmclock arithmetic accepts: 1 MHz to 100 GHz.
    public static let tscKHzRange: ClosedRange<UInt32> = 1_000...100_000_000

    /// The kvmclock (ns) a follower sets when its host clock reads `localHostClock` (ticks), so
    /// that its VM's kvmclock reads what the leader's does: the leader read `leaderKVMClock` (ns)
    /// when its host clock read `leaderHostClock`; leader_host = follower_host + hostOffset (the
    /// estimate's offset); both host clocks tick at `tscKHz`. kvmclock advances at host-time
    /// rate, so the leader's clock now is its reading plus the ticks since, in ns. The interval
    /// must be under an hour and the frequency in `tscKHzRange` (checked before arithmetic).
    public static func followerKVMClock(leaderKVMClock: UInt64, leaderHostClock: Int64, hostOffset: Int64,
                                        localHostClock: Int64, tscKHz: UInt32) throws -> UInt64 {
        guard tscKHzRange.contains(tscKHz) else { throw Failure.tscFrequency(tscKHz) }
        let khz = Int64(tscKHz)
        let limit = khz * 1000 * 3600   // an hour of ticks (< 3.6e14: no overflow)
        let (sum, o1) = localHostClock.addingReportingOverflow(hostOffset)
        let (elapsed, o2) = sum.subtractingReportingOverflow(leaderHostClock)
        guard !o1, !o2, elapsed.magnitude <= UInt64(limit) else { throw Failure.interval(o1 || o2 ? Int64.max : elapsed) }
        // exact integer ns without overflow: whole milliseconds, then the rest
        let ns = elapsed / khz * 1_000_000 + elapsed % khz * 1_000_000 / khz
        guard leaderKVMClock <= UInt64(Int64.max) else { throw Failure.negativeClock(Int64.min) }
        let result = Int64(leaderKVMClock) + ns
        guard result >= 0 else { throw Failure.negativeClock(result) }
        return UInt64(result)
    }

    /// Picks the minimum-round-trip sample and returns its offset.
    public static func estimate(_ samples: [ClockSample]) throws -> ClockEstimate {
        guard !samples.isEmpty else { throw Failure.noSamples }
        if let bad = samples.first(where: { $0.roundTrip < 0 }) { throw Failure.negativeRoundTrip(bad) }
        let best = samples.min { $0.roundTrip < $1.roundTrip }!
        return ClockEstimate(offset: best.offset, roundTrip: best.roundTrip, samples: samples.count)
    }

    /// The guest TSC offset a follower must program so its vCPUs read the same TSC as the leader's:
    /// guest_tsc = host_tsc + offset on both, and leader_host = follower_host + hostOffset.
    public static func followerTSCOffset(leaderGuestOffset: Int64, hostOffset: Int64) -> Int64 {
        leaderGuestOffset &+ hostOffset
    }
}
