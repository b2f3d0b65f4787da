// Replicated modules (ABI 4, GVM_HINT_REPLICATED) on the host side: a node's CoherenceStack with
// the real dsm-ivy plugin (userfaultfd guest memory, one node, no KVM) loads a module as SHARED
// pages holding the file's bytes; a plugin that takes no hint (dsm-local) leaves it to the BSP's
// node; devices cannot pass the host's own hint kind.

import Config
import Foundation
import GuestMemory
import Logging
import Metrics
@testable import NodeAssembly
import PluginAPI
import PluginHost
import TestSupport
import XCTest

final class ReplicatedModulesTests: XCTestCase {
    let image = Built.packageRoot + "/Guests/build/testguest.elf"

    func stack(_ plugin: String, module: String) throws -> (CoherenceStack, GuestImage, ClusterConfig) {
        let cfg = try ConfigLoader.parse(yaml: """
            cluster: repl
            nodes:
              - {id: 0, address: 127.0.0.1, port: 21993, vcpus: 1}
            memory: 16MiB
            transport: {plugin: transport-tcp}
            coherence: {plugin: \(plugin)\(plugin == "dsm-ivy" ? ", settings: {replicated: on}" : "")}
            guest: {image: \(image), modules: [\(module)]}
            """, path: "/tmp/repl.yaml")
        var logger = Logger(label: "repl-test")
        logger.logLevel = .error
        let s = try CoherenceStack(config: cfg, selfID: 0, node: nil, loader: PluginLoader(searchPath: [Built.productsDirectory]),
                                   metrics: MetricsRegistry(), logger: logger) { who, why in XCTFail("\(who): \(why)") }
        return (s, try GuestImage(config: cfg), cfg)
    }

    func testModuleIsLoadedAsSharedPagesWithTheFileBytes() throws {
        try Requirement.userfaultfd()
        guard FileManager.default.fileExists(atPath: image) else { throw XCTSkip("the test guest is not built: run `make -C Guests`") }
        var text = ""
        for i in 0..<3000 { text += "word\(i) " }   // ~26 KB: 7 pages, the last one partial
        let path = temporaryFile(text, name: "module.txt")
        let (s, img, _) = try stack("dsm-ivy", module: path)
        try s.start()
        defer { s.stop() }
        let placed = try img.modulePlacement(ramSize: 16 << 20)
        XCTAssertEqual(placed.count, 1)
        XCTAssertTrue(try img.replicateModules(s, ramSize: 16 << 20))
        let first = placed[0].start / 4096, pages = (UInt64(text.utf8.count) + 4095) / 4096
        for g in first..<(first + pages) { XCTAssertEqual(s.memory.pageState(g), GVM_PAGE_SHARED, "gfn \(g)") }
        XCTAssertEqual(s.memory.pageState(first + pages), GVM_PAGE_INVALID, "past the module")
        let bytes = try s.memory.read(gpa: placed[0].start, count: Int(pages * 4096), timeout: 5)
        XCTAssertEqual(Array(bytes.prefix(text.utf8.count)), Array(text.utf8))
        XCTAssertTrue(bytes.dropFirst(text.utf8.count).allSatisfy { $0 == 0 }, "the last page's tail is zeros")
        // A second hint over pages now in use is refused: the stack says which range and why.
        XCTAssertThrowsError(try img.replicateModules(s, ramSize: 16 << 20)) {
            XCTAssertTrue("\($0)".contains("refused the replicated range"), "\($0)")
        }
    }

    func testAPluginWithoutTheHintLeavesTheModuleToTheBootNode() throws {
        try Requirement.userfaultfd()
        guard FileManager.default.fileExists(atPath: image) else { throw XCTSkip("the test guest is not built: run `make -C Guests`") }
        let path = temporaryFile(String(repeating: "text ", count: 2000), name: "module2.txt")
        let (s, img, _) = try stack("dsm-local", module: path)
        try s.start()
        defer { s.stop() }
        XCTAssertFalse(try img.replicateModules(s, ramSize: 16 << 20))
        let first = try img.modulePlacement(ramSize: 16 << 20)[0].start / 4096
        XCTAssertEqual(s.memory.pageState(first), GVM_PAGE_INVALID)
    }

    func testDevicesCannotPassTheHostsReplicatedHint() {
        var seen: [UInt32] = []
        let hook = VMNode.guestHints { kind, _, _ in seen.append(kind); return GVM_OK.rawValue }!
        XCTAssertEqual(hook(GVM_HINT_REPLICATED, 0, 4096), GVM_ERR_INVALID.rawValue)
        XCTAssertEqual(hook(GVM_HINT_FENCE, 0, 0), GVM_OK.rawValue)
        XCTAssertEqual(seen, [GVM_HINT_FENCE])
        XCTAssertNil(VMNode.guestHints(nil))
    }
}
