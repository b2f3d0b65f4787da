import XCTest
import TimeSync

final class ClockSyncTests: XCTestCase {
    /// A simulated follower whose clock is `skew` behind the leader, with asymmetric random delays.
    func simulate(skew: Int64, delays: [(Int64, Int64)]) -> [ClockSample] {
        var t: Int64 = 1_000_000 // true time
        return delays.map { (up, down) in
            let send = t - skew
            let remote = t + up
            let recv = t + up + down - skew
            t += 10_000
            return ClockSample(localSend: send, remote: remote, localReceive: recv)
        }
    }

    func testMinimumRoundTripSampleWinsAndBoundsTheError() throws {
        let skew: Int64 = 5_000_000_000 // 5 s injected skew
        let samples = simulate(skew: skew, delays: [(900, 100), (60, 40), (300, 3000), (45, 55)])
        let e = try ClockSync.estimate(samples)
        XCTAssertEqual(e.roundTrip, 100)
        XCTAssertEqual(e.samples, 4)
        XCTAssertLessThanOrEqual(abs(e.offset - skew), e.uncertainty, "error within half the best round trip")
        XCTAssertEqual(e.offset, skew + 10, "(60 up, 40 down): estimate is off by (up-down)/2 = 10")
    }

    func testSymmetricDelaysGiveTheExactSkew() throws {
        for skew: Int64 in [-123_456_789, 0, 42, 9_000_000_000] {
            let e = try ClockSync.estimate(simulate(skew: skew, delays: [(50, 50), (70, 70)]))
            XCTAssertEqual(e.offset, skew)
        }
    }

    func testErrors() {
        XCTAssertThrowsError(try ClockSync.estimate([])) { XCTAssertEqual($0 as? ClockSync.Failure, .noSamples) }
        let bad = ClockSample(localSend: 10, remote: 0, localReceive: 5)
        XCTAssertThrowsError(try ClockSync.estimate([bad])) { XCTAssertEqual($0 as? ClockSync.Failure, .negativeRoundTrip(bad)) }
    }

    func testFollowerOffset() {
        // Leader: guest TSC = host TSC - 1000. Follower's host is 300 behind the leader's.
        XCTAssertEqual(ClockSync.followerTSCOffset(leaderGuestOffset: -1000, hostOffset: 300), -700)
    }

    func testFollowerKVMClockCarriesTheLeadersReadingForward() throws {
        // 2 GHz; the leader read 5 s of kvmclock at its host clock 1_000_000; the follower's host
        // clock is 400 ticks behind the leader's and reads 2_000_000 - 400 + 3_000 now: the
        // leader's clock has moved 1_003_000 ticks = 501_500 ns since its reading.
        let ns = try ClockSync.followerKVMClock(leaderKVMClock: 5_000_000_000, leaderHostClock: 1_000_000, hostOffset: 400,
                                                localHostClock: 2_002_600, tscKHz: 2_000_000)
        XCTAssertEqual(ns, 5_000_501_500)
        // a reading taken after the follower's now (reply delayed on its way) goes back
        XCTAssertEqual(try ClockSync.followerKVMClock(leaderKVMClock: 5_000, leaderHostClock: 3_000, hostOffset: 0,
                                                      localHostClock: 1_000, tscKHz: 1_000_000), 3_000)
        // an hour at 100 GHz stays exact (no overflow in the ns arithmetic)
        let hour: Int64 = 100_000_000 * 1000 * 3600
        XCTAssertEqual(try ClockSync.followerKVMClock(leaderKVMClock: 0, leaderHostClock: 0, hostOffset: 0,
                                                      localHostClock: hour, tscKHz: 100_000_000), 3_600_000_000_000)
    }

    func testFollowerKVMClockRangeChecks() {
        XCTAssertThrowsError(try ClockSync.followerKVMClock(leaderKVMClock: 0, leaderHostClock: 0, hostOffset: 0, localHostClock: 0, tscKHz: 0)) {
            XCTAssertEqual($0 as? ClockSync.Failure, .tscFrequency(0))
        }
        XCTAssertThrowsError(try ClockSync.followerKVMClock(leaderKVMClock: 0, leaderHostClock: 0, hostOffset: 0,
                                                            localHostClock: 1_000_000 * 1000 * 3601, tscKHz: 1_000_000)) {
            XCTAssertEqual($0 as? ClockSync.Failure, .interval(1_000_000 * 1000 * 3601))
        }
        XCTAssertThrowsError(try ClockSync.followerKVMClock(leaderKVMClock: 0, leaderHostClock: 0, hostOffset: Int64.max,
                                                            localHostClock: 1, tscKHz: 1_000_000))
        XCTAssertThrowsError(try ClockSync.followerKVMClock(leaderKVMClock: 10, leaderHostClock: 1_000_000, hostOffset: 0,
                                                            localHostClock: 0, tscKHz: 1_000_000)) {
            XCTAssertEqual($0 as? ClockSync.Failure, .negativeClock(10 - 1_000_000))
        }
    }
}
