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
        public var description: String {
            switch self {
            case .noSamples: return "clock synchronisation got no samples from the leader"
            case .negativeRoundTrip(let s): return "clock sample with a negative round trip (\(s)): the local clock is not monotonic"
            }
        }
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
