// `POST /leave?to=M` on the control endpoint (node evacuation, ControlEndpoint.swift): the request
// is parsed and range-checked, signed with the cluster key when there is one, and answered with
// the leave's line or its refusal. No VM: the leave itself is a closure here.

import Config
import Foundation
@testable import NodeAssembly
import TestSupport
import XCTest

final class LeaveEndpointTests: XCTestCase {
    func config(key: String?) throws -> ClusterConfig {
        try ConfigLoader.parse(yaml: """
            cluster: leave
            nodes:
              - {id: 0, address: 127.0.0.1, port: 21980, vcpus: 1}
              - {id: 1, address: 127.0.0.1, port: 21981, vcpus: 1}
            memory: 4MiB
            transport: {plugin: transport-tcp}
            coherence: {plugin: dsm-ivy}
            \(key.map { "key_file: \($0)" } ?? "")
            """, path: "/tmp/leave.yaml")
    }

    func testLeaveIsParsedAndAnswered() throws {
        let auth = try ControlAuth(config: try config(key: nil))
        var asked: [UInt32] = []
        let leave: (UInt32) -> Result<String, AssemblyError> = { to in
            asked.append(to)
            return to == 0 ? .success("left node=1 to=0 pages_moved=3") : .failure(AssemblyError("node \(to) cannot take node 1's pages"))
        }
        let ok = ControlEndpoint.handle(path: "/leave?to=0", migrator: nil, auth: auth, timeout: 5, leave: leave, selfID: 1)
        XCTAssertEqual(ok?.status, "200 OK")
        XCTAssertEqual(ok?.body, "left node=1 to=0 pages_moved=3\n")
        let refused = ControlEndpoint.handle(path: "/leave?to=1", migrator: nil, auth: auth, timeout: 5, leave: leave, selfID: 1)
        XCTAssertEqual(refused?.status, "409 Conflict")
        XCTAssertEqual(refused?.body, "failed: node 1 cannot take node 1's pages\n")
        for bad in ["/leave", "/leave?to=x", "/leave?to=64", "/leave?to=-1"] {
            let r = ControlEndpoint.handle(path: bad, migrator: nil, auth: auth, timeout: 5, leave: leave, selfID: 1)
            XCTAssertEqual(r?.status, "400 Bad Request", bad)
        }
        XCTAssertEqual(asked, [0, 1])
        let oneNode = ControlEndpoint.handle(path: "/leave?to=0", migrator: nil, auth: auth, timeout: 5, leave: nil, selfID: 0)
        XCTAssertEqual(oneNode?.status, "409 Conflict")
    }

    func testWithAKeyOnlyASignedLeaveIsTaken() throws {
        let key = temporaryFile("0123456789abcdef0123456789abcdef\n", name: "leave.key")
        chmod(key, 0o600)
        let auth = try ControlAuth(config: try config(key: key))
        var calls = 0
        let leave: (UInt32) -> Result<String, AssemblyError> = { _ in calls += 1; return .success("left") }
        let unsigned = ControlEndpoint.handle(path: "/leave?to=0", migrator: nil, auth: auth, timeout: 5, leave: leave, selfID: 1)
        XCTAssertEqual(unsigned?.status, "403 Forbidden")
        let t = Int(Date().timeIntervalSince1970)
        // Signed for another node: refused (the node id is part of the signed text).
        let other = auth.mac(text: ControlAuth.leaveText(node: 2, to: 0, t: t))
        let wrong = ControlEndpoint.handle(path: "/leave?to=0&t=\(t)&mac=\(other)", migrator: nil, auth: auth, timeout: 5,
                                           leave: leave, selfID: 1)
        XCTAssertEqual(wrong?.status, "403 Forbidden")
        let mac = auth.mac(text: ControlAuth.leaveText(node: 1, to: 0, t: t))
        let signed = ControlEndpoint.handle(path: "/leave?to=0&t=\(t)&mac=\(mac)", migrator: nil, auth: auth, timeout: 5,
                                            leave: leave, selfID: 1)
        XCTAssertEqual(signed?.status, "200 OK")
        let replay = ControlEndpoint.handle(path: "/leave?to=0&t=\(t)&mac=\(mac)", migrator: nil, auth: auth, timeout: 5,
                                            leave: leave, selfID: 1)
        XCTAssertEqual(replay?.status, "403 Forbidden")
        XCTAssertEqual(calls, 1)
    }
}
