// The out-of-tree start: scripts/install.sh into a PREFIX, then each template built outside this
// package against the installed files only (the C one with make + pkg-config, the Swift one with
// SwiftPM against the installed PluginKit package), certified by the installed giantvm.
//
// The Swift template's build (PluginKit + the plugin, about a minute on 2 cores) is kept in
// .build/out-of-tree, so a second run is incremental.

import Foundation
import XCTest
import TestSupport

final class TemplateTests: XCTestCase {
    override func setUpWithError() throws {
        try Requirement.builtGiantVM()
        for tool in ["make", "cc", "pkg-config"] where run(which: tool) == nil {
            throw XCTSkip("needs \(tool): scripts/deps/templates.sh installs it")
        }
    }

    func run(which tool: String) -> String? {
        let r = try? TestSupport.run("/usr/bin/env", ["which", tool])
        return r?.status == 0 ? r!.stdout.trimmingCharacters(in: .whitespacesAndNewlines) : nil
    }

    func install(into prefix: String) throws {
        let r = try TestSupport.run("/bin/bash", [Built.packageRoot + "/scripts/install.sh", "--no-build", "--bin-dir",
                                                  Built.productsDirectory, prefix], timeout: 120)
        XCTAssertEqual(r.status, 0, r.output)
        for f in ["bin/giantvm", "include/giantvm/giantvm_plugin.h", "include/giantvm/giantvm_units.h", "lib/libgiantvm-plugin.a",
                  "lib/pkgconfig/giantvm-plugin.pc", "lib/giantvm/plugins/libdsm-ivy.so", "share/giantvm/GiantVM/Package.swift",
                  "share/giantvm/templates/coherence-c/Makefile", "share/giantvm/templates/coherence-swift/Package.swift"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: prefix + "/" + f), "install puts \(f) in PREFIX")
        }
        let plugins = try FileManager.default.contentsOfDirectory(atPath: prefix + "/lib/giantvm/plugins")
        XCTAssertFalse(plugins.contains { $0.hasPrefix("libtest-") }, "test fixtures are not installed: \(plugins)")
    }

    func certified(_ path: String) throws -> Bool {
        let data = try XCTUnwrap(FileManager.default.contents(atPath: path), "no certificate at \(path)")
        return (try JSONSerialization.jsonObject(with: data) as? [String: Any])?["passed"] as? Bool ?? false
    }

    func testCTemplateBuildsOutOfTreeWithPkgConfigAndPasses() throws {
        let root = NSTemporaryDirectory() + "giantvm-template-c-" + UUID().uuidString
        let prefix = root + "/prefix", work = root + "/work"
        defer { try? FileManager.default.removeItem(atPath: root) }
        try install(into: prefix)
        try FileManager.default.copyItem(atPath: prefix + "/share/giantvm/templates/coherence-c", toPath: work)
        let env = ["PKG_CONFIG_PATH": prefix + "/lib/pkgconfig"]

        let flags = try TestSupport.run("/usr/bin/env", ["pkg-config", "--cflags", "--libs", "giantvm-plugin"], environment: env)
        XCTAssertEqual(flags.stdout.trimmingCharacters(in: .whitespacesAndNewlines),
                       "-I\(prefix)/include/giantvm -L\(prefix)/lib -lgiantvm-plugin")

        let build = try TestSupport.run("/usr/bin/env", ["make"], timeout: 120, environment: env, directory: work)
        XCTAssertEqual(build.status, 0, build.output)
        XCTAssertTrue(build.stdout.contains("-I\(prefix)/include/giantvm"), "compiled against the installed header: \(build.stdout)")

        // make check: the installed giantvm certifies it (--model sc).
        let check = try TestSupport.run("/usr/bin/env", ["make", "check", "SEEDS=20"], timeout: 300, environment: env, directory: work)
        XCTAssertEqual(check.status, 0, check.output)
        XCTAssertTrue(check.stdout.contains("PASSED: every scenario"), check.stdout)
        XCTAssertTrue(try certified(work + "/conformance.json"))

        // make install: the installed giantvm then finds it by name.
        let inst = try TestSupport.run("/usr/bin/env", ["make", "install"], timeout: 60, environment: env, directory: work)
        XCTAssertEqual(inst.status, 0, inst.output)
        let byName = try TestSupport.run(prefix + "/bin/giantvm", ["conformance", "dsm-migratory-c", "--seeds", "2", "--scenario",
                                                                   "ping-pong", "--out", root + "/byname.json"], timeout: 120)
        XCTAssertEqual(byName.status, 0, byName.output)
        XCTAssertTrue(byName.stdout.contains("(\(prefix)/lib/giantvm/plugins/libdsm-migratory-c.so)"), byName.stdout)
        let list = try TestSupport.run(prefix + "/bin/giantvm", ["plugins", "list"])
        XCTAssertTrue(list.stdout.contains("dsm-migratory-c"), list.stdout)
    }

    func testSwiftTemplateBuildsAgainstTheInstalledPluginKitAndPasses() throws {
        guard let swift = run(which: "swift") else { throw XCTSkip("needs swift on PATH") }
        let cache = Built.packageRoot + "/.build/out-of-tree"
        let prefix = cache + "/prefix", work = cache + "/coherence-swift"
        try install(into: prefix)
        // The template as installed, copied with its times kept (the cached build stays valid).
        try? FileManager.default.removeItem(atPath: work + "/Sources")
        try? FileManager.default.removeItem(atPath: work + "/Package.swift")
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        let copy = try TestSupport.run("/bin/cp", ["-Rp", prefix + "/share/giantvm/templates/coherence-swift/.", work])
        XCTAssertEqual(copy.status, 0, copy.output)

        let build = try TestSupport.run(swift, ["build", "--scratch-path", cache + "/swift-build"], timeout: 1500,
                                        environment: ["GIANTVM_PACKAGE": prefix + "/share/giantvm/GiantVM"], directory: work)
        XCTAssertFalse(build.timedOut, "the template build timed out: \(build.output.suffix(2000))")
        XCTAssertEqual(build.status, 0, build.output)
        let so = cache + "/swift-build/debug/libdsm-migratory-swift.so"
        XCTAssertTrue(FileManager.default.fileExists(atPath: so), build.output)

        let out = cache + "/swift-conformance.json"
        let r = try TestSupport.run(prefix + "/bin/giantvm", ["conformance", so, "--model", "sc", "--seeds", "20", "--out", out],
                                    timeout: 300)
        XCTAssertEqual(r.status, 0, r.output)
        XCTAssertTrue(r.stdout.contains("conformance of dsm-migratory-swift"), r.stdout)
        XCTAssertTrue(try certified(out))
    }
}
