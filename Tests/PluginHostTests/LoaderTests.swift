import XCTest
import PluginAPI
@testable import PluginHost
import Metrics
import Logging
import Config
import TestSupport

/// Loader tests use real plugins built by `swift build`: the C example, a Swift plugin, and
/// deliberately broken fixtures (ABI too old / too new, no entry symbol, ops table too small).

/// True while `path` is mapped in this process (dlopen with RTLD_NOLOAD opens nothing new).
func isLoaded(_ path: String) -> Bool {
    guard let h = dlopen(path, RTLD_NOW | RTLD_NOLOAD) else { return false }
    dlclose(h)
    return true
}
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
            XCTAssertEqual(e as? PluginLoadError, .abiTooOld(path: Built.plugin("test-abi-too-old"), name: "test-abi-too-old",
                                                             abi: GVM_ABI_MIN_VERSION - 1))
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
        XCTAssertFalse(isLoaded(copy), "the refused copy is still mapped")
        XCTAssertTrue(isLoaded(Built.plugin("example-c")))
    }

    /// A refused Swift image stays mapped (the Swift runtime keeps pointers into it); a C one goes.
    func testARefusedSwiftPluginIsLeftMapped() throws {
        _ = try loader.load("test-swift-device")
        let dir = NSTemporaryDirectory() + "giantvm-dup-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let copy = dir + "/libswift-device-copy.so"
        try FileManager.default.copyItem(atPath: Built.plugin("test-swift-device"), toPath: copy)
        XCTAssertThrowsError(try loader.load(copy)) { e in
            XCTAssertEqual(e as? PluginLoadError, .duplicateName(name: "test-swift-device", path: copy,
                                                                  firstPath: Built.plugin("test-swift-device")))
        }
        XCTAssertTrue(isLoaded(copy))
    }

    /// Issue 16: the loader read whole ops tables without checking their size.
    func testOpsTableSmallerThanItsRequiredHooksIsRefusedAndUnloaded() {
        let path = Built.plugin("test-small-ops")
        // Up to the last REQUIRED hook (destroy): ABI 3's optional `hint` follows it.
        let full = MemoryLayout<gvm_coherence_ops>.offset(of: \gvm_coherence_ops.destroy)! + MemoryLayout<UnsafeRawPointer>.size
        let declared = UInt32(MemoryLayout<gvm_coherence_ops>.offset(of: \gvm_coherence_ops.destroy)!)
        XCTAssertThrowsError(try loader.load("test-small-ops", kind: .coherence)) { e in
            XCTAssertEqual(e as? PluginLoadError, .opsTooSmall(path: path, name: "test-small-ops", table: "gvm_coherence_ops",
                                                               size: declared, needed: full))
            XCTAssertEqual("\(e)", "plugin 'test-small-ops' (\(path)) declares a gvm_coherence_ops table of \(declared) bytes, "
                           + "but this giantvm needs at least \(full) bytes (up to its last required hook, ABI \(GVM_ABI_VERSION)): "
                           + "rebuild it against the current giantvm_plugin.h")
        }
        XCTAssertFalse(isLoaded(path), "a refused plugin must be unloaded")
        // Refused again (nothing cached), and still not left loaded.
        XCTAssertThrowsError(try loader.load(path))
        XCTAssertFalse(isLoaded(path))
    }

    func testEveryRefusedFixtureIsUnloaded() {
        for fixture in ["test-abi-too-old", "test-abi-too-new", "test-no-entry", "test-small-ops"] {
            XCTAssertThrowsError(try loader.load(fixture), fixture)
            XCTAssertFalse(isLoaded(Built.plugin(fixture)), "\(fixture) is still mapped")
        }
        _ = loader.loadAll(includeTestFixtures: true)
        XCTAssertFalse(isLoaded(Built.plugin("test-small-ops")), "loadAll left a refused plugin mapped")
    }

    /// The checks on each kind's table, on descriptors built here.
    func testEachTableKindIsCheckedAgainstItsRequiredSize() throws {
        func descriptor(_ kind: gvm_plugin_kind, _ ops: UnsafeRawPointer) -> UnsafePointer<gvm_plugin_descriptor> {
            let d = UnsafeMutablePointer<gvm_plugin_descriptor>.allocate(capacity: 1)
            d.initialize(to: gvm_plugin_descriptor(abi_version: GVM_ABI_VERSION, kind: kind.rawValue, name: strdup("t"),
                                                   version: nil, summary: nil, ops: ops, description: nil,
                                                   setting_count: 0, settings: nil))
            return UnsafePointer(d)
        }
        // A buffer longer than any table, filled with non-NULL "hooks" (never called).
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: 512, alignment: 8)
        for i in 0..<64 { buffer.storeBytes(of: UInt(0x1000 + i), toByteOffset: i * 8, as: UInt.self) }
        func declare(_ size: Int) { buffer.storeBytes(of: UInt32(size), as: UInt32.self) }
        for (kind, pk, table, size) in [(GVM_PLUGIN_TRANSPORT, PluginKind.transport, "gvm_transport_ops", MemoryLayout<gvm_transport_ops>.size),
                                        (GVM_PLUGIN_COHERENCE, .coherence, "gvm_coherence_ops",
                                         MemoryLayout<gvm_coherence_ops>.offset(of: \gvm_coherence_ops.destroy)! + 8)] {
            declare(size - 8)
            XCTAssertThrowsError(try PluginLoader.check(descriptor(kind, buffer), path: "/x.so")) { e in
                XCTAssertEqual(e as? PluginLoadError, .opsTooSmall(path: "/x.so", name: "t", table: table, size: UInt32(size - 8), needed: size))
            }
            declare(3)
            XCTAssertThrowsError(try PluginLoader.check(descriptor(kind, buffer), path: "/x.so"))
            // Larger than this host's table (a newer minor addition): accepted, the known part read.
            declare(size + 64)
            let p = try PluginLoader.check(descriptor(kind, buffer), path: "/x.so")
            XCTAssertEqual(p.kind, pk)
            XCTAssertEqual(memcmp(p.ops + 4, buffer + 4, size - 4), 0)
        }
        // Device: the table, then the model count is bounded before the models are read.
        // (Its required part ends with `models`; the ABI 4 state hooks after it are OPTIONAL.)
        let deviceNeeded = MemoryLayout<gvm_device_ops>.offset(of: \gvm_device_ops.models)! + 8
        buffer.storeBytes(of: UInt32(deviceNeeded - 8), as: UInt32.self)
        XCTAssertThrowsError(try PluginLoader.check(descriptor(GVM_PLUGIN_DEVICE, buffer), path: "/x.so")) { e in
            guard case .opsTooSmall(_, _, "gvm_device_ops", _, deviceNeeded)? = e as? PluginLoadError else {
                return XCTFail("\(e)")
            }
        }
        buffer.storeBytes(of: UInt32(MemoryLayout<gvm_device_ops>.size), as: UInt32.self)
        buffer.storeBytes(of: UInt32(1_000_000), toByteOffset: 4, as: UInt32.self)
        XCTAssertThrowsError(try PluginLoader.check(descriptor(GVM_PLUGIN_DEVICE, buffer), path: "/x.so")) { e in
            XCTAssertEqual("\(e)", "plugin '/x.so' has a malformed descriptor: model_count 1000000 is more than 1024")
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
