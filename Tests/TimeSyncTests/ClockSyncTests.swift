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
}
