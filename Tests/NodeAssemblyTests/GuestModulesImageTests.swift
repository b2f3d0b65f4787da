// guest.modules as every node checks them before anything runs (GuestImage): sizes against guest
// memory, one by one and together. No KVM.

import Config
import Foundation
import NodeAssembly
import TestSupport
import XCTest

final class GuestModulesImageTests: XCTestCase {
    let image = Built.packageRoot + "/Guests/build/testguest.elf"

    func config(modules: [String]) throws -> ClusterConfig {
        try ConfigLoader.parse(yaml: """
            cluster: mods
            nodes:
              - {id: 0, address: 127.0.0.1, port: 21991, vcpus: 1}
            memory: 4MiB
            transport: {plugin: transport-tcp}
            coherence: {plugin: dsm-local}
            guest: {image: \(image), modules: [\(modules.joined(separator: ", "))]}
            """, path: "/tmp/mods.yaml")
    }

    func testModulesAreCheckedOneByOneAndTogether() throws {
        guard FileManager.default.fileExists(atPath: image) else { throw XCTSkip("the test guest is not built: run `make -C Guests`") }
        let a = temporaryFile(String(repeating: "word ", count: 600_000), name: "a.txt")   // 3 MB
        let b = temporaryFile(String(repeating: "text ", count: 600_000), name: "b.txt")
        let one = try GuestImage(config: try config(modules: [a]))
        XCTAssertEqual(one.modules.map(\.path), [a])
        XCTAssertEqual(one.modules.map(\.size), [3_000_000])
        do {
            _ = try GuestImage(config: try config(modules: [a, b]))
            XCTFail("two 3 MB modules cannot fit in 4 MiB")
        } catch {
            let text = "\(error)"
            XCTAssertTrue(text.contains("/tmp/mods.yaml: guest.modules: together 6000000 bytes through \(b), more than guest memory (4194304 bytes)"), text)
        }
    }
}
