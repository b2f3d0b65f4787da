// guest.initrd and guest.protocol (standard guests, docs/boot.md).
import XCTest
import Foundation
import Config
import TestSupport

final class GuestBootConfigTests: XCTestCase {
    func yaml(_ guest: String) -> String {
        """
        cluster: g
        nodes:
          - {id: 0, address: 127.0.0.1, port: 19520, vcpus: 1}
        memory: 64MiB
        transport: transport-tcp
        coherence: dsm-local
        guest: \(guest)
        """
    }

    func testDefaultsAndValues() throws {
        let d = try ConfigLoader.parse(yaml: yaml("{image: k.bin}"), path: "/cfg/a.yaml")
        XCTAssertEqual(d.guest?.bootProtocol, "auto")
        XCTAssertNil(d.guest?.initrd)
        let initrd = temporaryFile("rd", name: "initrd.img")
        let dir = (initrd as NSString).deletingLastPathComponent
        let c = try ConfigLoader.parse(yaml: yaml("{image: k.bin, initrd: initrd.img, protocol: multiboot}"), path: dir + "/a.yaml")
        XCTAssertEqual(c.guest?.initrd, initrd, "resolved against the config's directory")
        XCTAssertEqual(c.guest?.bootProtocol, "multiboot")
    }

    func testBadProtocolAndMissingInitrdAreDiagnosed() {
        do {
            _ = try ConfigLoader.parse(yaml: yaml("{image: k.bin, initrd: /nonexistent/rd, protocol: uefi}"), path: "/cfg/b.yaml")
            XCTFail("expected a ConfigError")
        } catch let e as ConfigError {
            let text = e.diagnostics.map(\.description).joined(separator: "\n")
            XCTAssertTrue(text.contains("guest.initrd: cannot read '/nonexistent/rd'"), text)
            XCTAssertTrue(text.contains("guest.protocol: 'uefi' is not one of auto, multiboot, linux, giantvm"), text)
        } catch {
            XCTFail("unexpected \(error)")
        }
    }
}
