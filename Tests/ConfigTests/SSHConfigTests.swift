import Config
import XCTest

/// The `ssh:` fields `giantvm up --ssh` reads: a node's target and the top-level section.
final class SSHConfigTests: XCTestCase {
    func config(nodes: String = "", ssh: String = "") -> String {
        """
        cluster: demo
        nodes:
          - {id: 0, address: 10.0.0.1, port: 7000, vcpus: 1\(nodes)}
          - {id: 1, address: 10.0.0.2, port: 7000, vcpus: 1}
        transport: transport-tcp
        coherence: dsm-ivy
        \(ssh)
        """
    }

    func diagnostics(_ yaml: String) -> [Diagnostic] {
        do {
            _ = try ConfigLoader.parse(yaml: yaml, path: "/cfg/test.yaml")
            XCTFail("expected a ConfigError")
            return []
        } catch let e as ConfigError {
            return e.diagnostics
        } catch {
            XCTFail("unexpected error \(error)")
            return []
        }
    }

    func testTargetsParse() throws {
        func target(_ s: String) -> SSHTarget? { try? SSHTarget.parse(s).get() }
        XCTAssertEqual(target("gw1"), SSHTarget(host: "gw1"))
        XCTAssertEqual(target("ops@gw1"), SSHTarget(user: "ops", host: "gw1"))
        XCTAssertEqual(target("ops@gw1:2222"), SSHTarget(user: "ops", host: "gw1", port: 2222))
        XCTAssertEqual(target("10.0.0.2:22"), SSHTarget(host: "10.0.0.2", port: 22))
        XCTAssertEqual(target("fe80::1"), SSHTarget(host: "fe80::1"), "an IPv6 address without brackets has no port")
        XCTAssertEqual(target("root@[fe80::1]:2200"), SSHTarget(user: "root", host: "fe80::1", port: 2200))
        XCTAssertEqual(target("[::1]"), SSHTarget(host: "::1"))
        XCTAssertEqual(target("a@b@host"), SSHTarget(user: "a@b", host: "host"), "the host follows the last @, as ssh reads it")
        XCTAssertEqual(SSHTarget(user: "root", host: "fe80::1", port: 2200).description, "root@[fe80::1]:2200")
    }

    func testBadTargetsSayWhy() {
        func why(_ s: String) -> String {
            if case .failure(let e) = SSHTarget.parse(s) { return e.message }
            return "accepted"
        }
        XCTAssertTrue(why("").contains("is empty"))
        XCTAssertTrue(why("-oProxyCommand=sh").contains("starts with '-'"), why("-oProxyCommand=sh"))
        XCTAssertTrue(why("ops@-oProxyCommand=x").contains("host starting with '-'"))
        XCTAssertTrue(why("-u@host").contains("starts with '-'"))
        XCTAssertTrue(why("gw1:0").contains("not 1-65535"))
        XCTAssertTrue(why("gw1:65536").contains("not 1-65535"))
        XCTAssertTrue(why("gw1:ssh").contains("not 1-65535"))
        XCTAssertTrue(why("ops@").contains("no host"))
        XCTAssertTrue(why("@gw1").contains("empty user"))
        XCTAssertTrue(why("gw 1").contains("space"))
        XCTAssertTrue(why("[fe80::1").contains("without ']'"))
        XCTAssertTrue(why("[fe80::1]x").contains("not :port"))
        XCTAssertTrue(why("gw1/x").contains("'/'"))
    }

    func testNodeTargetAndSectionAreRead() throws {
        let yaml = config(nodes: ", ssh: \"ops@gw1:2222\"", ssh: """
            ssh:
              giantvm: /opt/giantvm/bin/giantvm
              config: /shared/vm.yaml
              plugin_path: [/opt/giantvm/lib, /opt/extra]
              identity: keys/id_ed25519
              options: [StrictHostKeyChecking=accept-new, "ConnectTimeout=3"]
              client: /usr/local/bin/ssh
            """)
        let c = try ConfigLoader.parse(yaml: yaml, path: "/cfg/test.yaml")
        XCTAssertEqual(c.nodes[0].ssh, SSHTarget(user: "ops", host: "gw1", port: 2222))
        XCTAssertNil(c.nodes[1].ssh, "no ssh: the address is the target")
        XCTAssertEqual(c.ssh.giantvm, "/opt/giantvm/bin/giantvm")
        XCTAssertEqual(c.ssh.config, "/shared/vm.yaml")
        XCTAssertEqual(c.ssh.pluginPath, ["/opt/giantvm/lib", "/opt/extra"])
        XCTAssertEqual(c.ssh.identity, "/cfg/keys/id_ed25519", "the identity resolves against the config's directory")
        XCTAssertEqual(c.ssh.options, ["StrictHostKeyChecking=accept-new", "ConnectTimeout=3"])
        XCTAssertEqual(c.ssh.client, "/usr/local/bin/ssh")
    }

    func testDefaultsWithoutASection() throws {
        let c = try ConfigLoader.parse(yaml: config(), path: "/cfg/test.yaml")
        XCTAssertEqual(c.ssh, SSHSettings())
        XCTAssertEqual(c.ssh.client, "ssh")
        XCTAssertNil(c.ssh.giantvm)
        XCTAssertNil(c.ssh.config)
        XCTAssertNil(c.ssh.identity)
        XCTAssertEqual(c.ssh.options, [])
        // The identity is a file of the launching machine only: a missing one is not an error here
        // (every node reads this file); `up --ssh` checks it.
        let other = try ConfigLoader.parse(yaml: config(ssh: "ssh: {identity: /nonexistent/key}"), path: "/cfg/test.yaml")
        XCTAssertEqual(other.ssh.identity, "/nonexistent/key")
    }

    func testEveryProblemIsReportedWithItsFieldAndLine() {
        let d = diagnostics(config(nodes: ", ssh: \"-oProxyCommand=sh\"", ssh: """
            ssh:
              giantvm: bin/giantvm
              config: vm.yaml
              plugin_path: [lib, "/a:/b"]
              options: [RequestTTY=yes, "StrictHostKeyChecking", "-F=/x", {a: b}]
              color: blue
            """))
        let text = d.map(\.description)
        func has(_ path: String, _ fragment: String, line: Int) {
            XCTAssertTrue(d.contains { $0.path == path && $0.message.contains(fragment) && $0.line == line },
                          "\(path) \(fragment) at line \(line): \(text.joined(separator: "\n"))")
        }
        has("nodes[0].ssh", "starts with '-' (ssh would read it as an option)", line: 3)
        has("ssh.giantvm", "must be an absolute path", line: 8)
        has("ssh.config", "must be an absolute path", line: 9)
        has("ssh.plugin_path", "'lib' must be an absolute directory", line: 10)
        has("ssh.plugin_path", "'/a:/b' must be an absolute directory without ':'", line: 10)
        has("ssh.options[0]", "RequestTTY cannot be set: a tty would keep the node running", line: 11)
        has("ssh.options[1]", "is not Key=Value", line: 11)
        has("ssh.options[2]", "is not Key=Value", line: 11)
        has("ssh.options[3]", "expected a text value", line: 11)
        has("ssh.color", "unknown field 'color'", line: 12)
        XCTAssertTrue(text.allSatisfy { $0.hasPrefix("/cfg/test.yaml:") }, "\(text)")
    }

    func testWrongShapes() {
        let notMapping = diagnostics(config(ssh: "ssh: [a, b]"))
        XCTAssertTrue(notMapping.contains { $0.path == "ssh" && $0.message.contains("expected a mapping") }, "\(notMapping)")
        let optionsNotList = diagnostics(config(ssh: "ssh: {options: BatchMode=no}"))
        XCTAssertTrue(optionsNotList.contains { $0.path == "ssh.options" && $0.message.contains("expected a list of Key=Value") }, "\(optionsNotList)")
        let nodeTarget = diagnostics(config(nodes: ", ssh: {host: a}"))
        XCTAssertTrue(nodeTarget.contains { $0.path == "nodes[0].ssh" && $0.message.contains("expected a text value") }, "\(nodeTarget)")
        let client = diagnostics(config(ssh: "ssh: {client: -x}"))
        XCTAssertTrue(client.contains { $0.path == "ssh.client" }, "\(client)")
    }
}
