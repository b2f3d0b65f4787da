import XCTest
import PluginAPI
import PluginHost
import Metrics
import Logging
import Config
import TestSupport

/// Loader tests use real plugins built by `swift build`: the C example, a Swift plugin, and
/// deliberately broken fixtures (ABI too old / too new, no entry symbol).
final class LoaderTests: XCTestCase {
    var loader: PluginLoader!

    override func setUpWithError() throws {
        guard FileManager.default.fileExists(atPath: Built.plugin("example-c")) else {
            throw XCTSkip("plugins are not built in \(Built.productsDirectory): run `swift build` before `swift test`")
        }
        loader = PluginLoader(searchPath: [Built.productsDirectory])
    }

    func testLoadsCPluginByName() throws {
        let p = try loader.load("example-c", kind: .device)
        XCTAssertEqual(p.name, "example-c")
        XCTAssertEqual(p.kind, .device)
        XCTAssertEqual(p.version, "0.1.0")
        XCTAssertEqual(p.abiVersion, GVM_ABI_VERSION)
        XCTAssertEqual(p.path, Built.plugin("example-c"))
        XCTAssertEqual(p.deviceModels.map(\.name), ["scratch"])
    }

    func testMissingFile() {
        XCTAssertThrowsError(try loader.load("/nonexistent/libnope.so")) { e in
            XCTAssertEqual(e as? PluginLoadError, .fileMissing(path: "/nonexistent/libnope.so"))
            XCTAssertEqual("\(e)", "plugin file '/nonexistent/libnope.so' does not exist")
        }
    }

    func testUnknownNameListsSearchPath() {
        XCTAssertThrowsError(try loader.load("transport-carrier-pigeon")) { e in
            XCTAssertEqual(e as? PluginLoadError, .notFound(name: "transport-carrier-pigeon", searched: [Built.productsDirectory]))
            XCTAssertTrue("\(e)".contains("libtransport-carrier-pigeon.so"))
        }
    }

    func testNotAnELF() throws {
        let path = temporaryFile("this is not a shared object", name: "libjunk.so")
        XCTAssertThrowsError(try loader.load(path)) { e in
            guard case .cannotOpen(let p, let reason)? = e as? PluginLoadError else { return XCTFail("\(e)") }
            XCTAssertEqual(p, path)
            XCTAssertFalse(reason.isEmpty)
        }
    }

    func testNoEntrySymbol() {
        XCTAssertThrowsError(try loader.load(Built.plugin("test-no-entry"))) { e in
            XCTAssertEqual(e as? PluginLoadError, .noEntrySymbol(path: Built.plugin("test-no-entry")))
            XCTAssertTrue("\(e)".contains("does not export the entry symbol giantvm_plugin_entry"))
        }
    }

    func testABITooOld() {
        XCTAssertThrowsError(try loader.load("test-abi-too-old")) { e in
            XCTAssertEqual(e as? PluginLoadError, .abiTooOld(path: Built.plugin("test-abi-too-old"), name: "test-abi-too-old", abi: 0))
            XCTAssertTrue("\(e)".contains("older than the oldest this giantvm supports"))
        }
    }

    func testABITooNew() {
        XCTAssertThrowsError(try loader.load("test-abi-too-new")) { e in
            XCTAssertEqual(e as? PluginLoadError, .abiTooNew(path: Built.plugin("test-abi-too-new"), name: "test-abi-too-new", abi: GVM_ABI_VERSION + 1))
            XCTAssertTrue("\(e)".contains("newer than this giantvm supports"))
        }
    }

    func testWrongKind() {
        XCTAssertThrowsError(try loader.load("example-c", kind: .transport)) { e in
            XCTAssertEqual(e as? PluginLoadError, .wrongKind(path: Built.plugin("example-c"), name: "example-c", found: .device, expected: .transport))
            XCTAssertEqual("\(e)", "plugin 'example-c' (\(Built.plugin("example-c"))) is a device plugin, but a transport plugin is needed here")
        }
    }

    func testDuplicateName() throws {
        _ = try loader.load("example-c")
        // The same plugin under another file name: a second plugin claiming the name.
        let dir = NSTemporaryDirectory() + "giantvm-dup-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let copy = dir + "/libexample-copy.so"
        try FileManager.default.copyItem(atPath: Built.plugin("example-c"), toPath: copy)
        XCTAssertThrowsError(try loader.load(copy)) { e in
            XCTAssertEqual(e as? PluginLoadError, .duplicateName(name: "example-c", path: copy, firstPath: Built.plugin("example-c")))
        }
    }

    func testLoadAllSkipsFixturesUnlessAsked() {
        let names = loader.loadAll().compactMap { try? $0.get().name }
        XCTAssertTrue(names.contains("example-c"))
        XCTAssertFalse(names.contains { $0.hasPrefix("test-") })
        let all = loader.loadAll(includeTestFixtures: true)
        XCTAssertTrue(all.contains { if case .failure(.abiTooOld) = $0 { return true }; return false })
    }
}
