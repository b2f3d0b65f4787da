// guest.modules: files loaded beside the image (multiboot mods, or the boot info's module table).
import XCTest
import Foundation
import Config
import TestSupport

final class GuestModulesConfigTests: XCTestCase {
    func yaml(_ guest: String) -> String {
        """
        cluster: g
        nodes:
          - {id: 0, address: 127.0.0.1, port: 19521, vcpus: 1}
        memory: 64MiB
        transport: transport-tcp
        coherence: dsm-local
        guest: \(guest)
        """
    }

    func diagnostics(_ guest: String) -> String {
        do {
            _ = try ConfigLoader.parse(yaml: yaml(guest), path: "/cfg/m.yaml")
            return ""
        } catch let e as ConfigError {
            return e.diagnostics.map(\.description).joined(separator: "\n")
        } catch {
            return "\(error)"
        }
    }

    func testListResolvedAgainstTheConfigDirectory() throws {
        XCTAssertEqual(try ConfigLoader.parse(yaml: yaml("{image: k.bin}"), path: "/cfg/a.yaml").guest?.modules, [])
        let a = temporaryFile("text", name: "a.txt")
        let dir = (a as NSString).deletingLastPathComponent
        FileManager.default.createFile(atPath: dir + "/b.txt", contents: Data("b".utf8))
        let c = try ConfigLoader.parse(yaml: yaml("{image: k.bin, modules: [a.txt, \(dir)/b.txt]}"), path: dir + "/a.yaml")
        XCTAssertEqual(c.guest?.modules, [a, dir + "/b.txt"], "in order, relative paths against the config's directory")
    }

    func testNotAListMissingFilesDirectoriesAndTooManyAreDiagnosed() {
        XCTAssertTrue(diagnostics("{image: k.bin, modules: text.txt}").contains("guest.modules: expected a list of file paths, got 'text.txt'"))
        let missing = diagnostics("{image: k.bin, modules: [/nonexistent/t.txt]}")
        XCTAssertTrue(missing.contains("guest.modules[0]: cannot read '/nonexistent/t.txt': it does not exist"), missing)
        let dir = diagnostics("{image: k.bin, modules: [/tmp, /tmp]}")
        XCTAssertTrue(dir.contains("guest.modules[1]: cannot read '/tmp': it is a directory"), dir)
        let f = temporaryFile("x", name: "x.txt")
        let many = diagnostics("{image: k.bin, modules: [\(Array(repeating: f, count: 17).joined(separator: ", "))]}")
        XCTAssertTrue(many.contains("guest.modules: 17 modules; at most 16 are supported"), many)
    }
}
