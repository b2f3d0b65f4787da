// dsm-ivy's request timeout across real node processes: `giantvm bench dsm` over loopback with the
// fault-injecting transport dropping one page-data message. Before request_timeout, such a loss
// surfaced 16 s later as a workload barrier timeout, or hung until --timeout, naming nothing.
// Ports 18390-18399.

import XCTest
import Foundation
import TestSupport

final class LostMessageProcessTests: XCTestCase {
    override func setUpWithError() throws {
        try Requirement.userfaultfd()
        try Requirement.builtGiantVM()
        for lib in ["dsm-ivy", "transport-tcp"] where !FileManager.default.fileExists(atPath: Built.plugin(lib)) {
            throw XCTSkip("\(Built.plugin(lib)) is not built: run `swift build` first")
        }
    }

    func testALostPageStopsTheClusterAfterRequestTimeoutNamingRequestPageAndPeer() throws {
        var y = "cluster: losttest\nnodes:\n"
        for i in 0..<2 { y += "  - {id: \(i), address: 127.0.0.1, port: \(18390 + i), vcpus: 1}\n" }
        y += "memory: 16MiB\n"
        y += "transport:\n  plugin: transport-tcp\n  faults:\n    seed: 1\n    rules:\n"
        y += "      - {channel: coherence, type: 7, action: drop, after: 5, count: 1}\n"   // a node's 6th Data message: 20000 iterations, so even threads that barely contend move that many pages
        y += "coherence: {plugin: dsm-ivy, settings: {request_timeout: 2}}\n"
        y += "timeouts: {connect: 10s, heartbeat: 200ms, failure: 3s}\n"
        let cfg = temporaryFile(y)
        let t0 = Date()
        let r = try giantvm(["bench", "dsm", "--config", cfg, "--workload", "counter", "--threads", "2",
                             "--iterations", "20000", "--timeout", "50"], timeout: 58)
        let elapsed = Date().timeIntervalSince(t0)
        XCTAssertFalse(r.timedOut, "the cluster hung on the lost message:\n\(r.output)")
        XCTAssertNotEqual(r.status, 0, r.output)
        // Two named stops are right for a lost Data message, depending on what the other node does
        // meanwhile: if nothing else touches the page, the requester's request_timeout fires and
        // names request, page and peer; if the other node writes that page first, its
        // invalidation reaches the requester still waiting in IS_D, which the table refuses,
        // naming page, state and sender. Either way every node stops, quickly, saying why.
        let timedOut = r.output.contains("request timed out: ")
            && r.output.range(of: #"(read miss|write miss|upgrade) of gfn \d+ \(state [A-Z_]+\) unanswered for 2\.\d s \(request_timeout 2\.0 s\)"#,
                              options: .regularExpression) != nil
            && r.output.range(of: #"waiting on node [01]|no invalidation acknowledgement from node [01]"#, options: .regularExpression) != nil
        let refused = r.output.range(of: #"gfn \d+: Inv in state IS_D from node [01]: invalidation before the read copy was confirmed"#,
                                     options: .regularExpression) != nil
        XCTAssertTrue(timedOut || refused, "neither a request timeout nor a refused invalidation was named:\n\(r.output)")
        XCTAssertTrue(r.output.contains("stopping: "), r.output)
        XCTAssertLessThan(elapsed, 14, "stopped \(elapsed) s after start: later than request_timeout explains\n\(r.output)")
    }
}
