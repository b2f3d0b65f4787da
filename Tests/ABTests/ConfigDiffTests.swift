import XCTest
@testable import ABTest

final class ConfigDiffTests: XCTestCase {
    let base = """
        cluster: vm2   # a comment
        nodes:
          - {id: 0, address: 127.0.0.1, port: 20100, vcpus: 2}
          - {id: 1, address: 127.0.0.1, port: 20101, vcpus: 2}
        memory: 32MiB
        coherence: {plugin: dsm-ivy}
        guest: {image: g.elf, cmdline: hello}
        """

    func testSettingAddedFieldChangedAndListItemsByIndex() throws {
        let other = """
            memory: 32MiB
            cluster: vm2
            nodes:
              - {id: 0, address: 127.0.0.1, port: 20100, vcpus: 2}
              - {id: 1, address: 127.0.0.1, port: 20102, vcpus: 1}
            coherence:
              plugin: dsm-ivy
              settings: {hold_time: 0}
            guest: {image: g.elf, cmdline: hello}
            """
        let d = try ConfigDiff.diff(base: base, other: other)
        XCTAssertEqual(d.map(\.text), [
            "coherence.settings.hold_time: (absent) -> 0",
            "nodes[1].port: 20101 -> 20102",
            "nodes[1].vcpus: 2 -> 1",
        ])
    }

    func testIdenticalDocumentsDifferInNothingWhateverTheLayout() throws {
        let reordered = """
            guest:
              cmdline: hello
              image: g.elf
            coherence: {plugin: dsm-ivy}
            memory: 32MiB
            nodes:
              - {vcpus: 2, id: 0, address: 127.0.0.1, port: 20100}
              - {id: 1, address: 127.0.0.1, port: 20101, vcpus: 2}
            cluster: vm2
            """
        XCTAssertEqual(try ConfigDiff.diff(base: base, other: reordered), [])
    }

    func testRemovedFieldsAndSequenceOrderNumerically() throws {
        let many = (0..<12).map { "  - {id: \($0), port: \(100 + $0)}" }.joined(separator: "\n")
        let fewer = (0..<12).map { "  - {id: \($0), port: \($0 == 2 || $0 == 10 ? 999 : 100 + $0)}" }.joined(separator: "\n")
        let d = try ConfigDiff.diff(base: "nodes:\n\(many)\nmemory: 1GiB\n", other: "nodes:\n\(fewer)\n")
        XCTAssertEqual(d.map(\.path), ["memory", "nodes[2].port", "nodes[10].port"])
        XCTAssertEqual(d.first, ConfigDifference(path: "memory", base: "1GiB", other: nil))
    }

    func testNotYAMLIsAnError() {
        XCTAssertThrowsError(try ConfigDiff.diff(base: "a: [1, 2", other: "a: 1"))
    }
}
