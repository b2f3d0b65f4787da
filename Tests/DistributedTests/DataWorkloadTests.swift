// The data workloads of the test guest (wordcount, invindex over a text given as guest.modules,
// seqread) on real `giantvm up` processes: the guest's DATA line must equal the host reference
// program's (Guests/build/wordcount-ref, same algorithm, pthreads) on every topology, for a
// seeded Zipf text from Guests/build/zipf-text. Every run is bounded (guest --timeout, process
// wait timeouts).

import Foundation
import TestSupport
import XCTest

final class DataWorkloadTests: XCTestCase {
    static let tools = Built.packageRoot + "/Guests/build"
    /// One text for the whole class (3 MiB, seed 15), and the reference lines for it.
    nonisolated(unsafe) static var text: String?
    nonisolated(unsafe) static var bigText: String?

    override func setUpWithError() throws {
        try Requirement.testGuestVM()
        for t in ["zipf-text", "wordcount-ref"] where !FileManager.default.isExecutableFile(atPath: Self.tools + "/" + t) {
            throw XCTSkip("the host tool \(t) is not built: run `make -C Guests`")
        }
        if Self.text == nil {
            let path = temporaryFile("", name: "zipf-3MiB.txt")
            let g = try TestSupport.run(Self.tools + "/zipf-text", ["--size", "3M", "--seed", "15", "--vocab", "20000", "-o", path], timeout: 60)
            XCTAssertEqual(g.status, 0, g.output)
            Self.text = path
        }
    }

    /// The reference program's DATA line for `workload` with `threads` threads.
    func reference(_ workload: String, threads: Int) throws -> String {
        var args = ["--threads", "\(threads)", Self.text!]
        if workload == "invindex" { args.insert("--invindex", at: 0) }
        let r = try TestSupport.run(Self.tools + "/wordcount-ref", args, timeout: 60)
        XCTAssertEqual(r.status, 0, r.output)
        let line = r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        XCTAssertTrue(line.hasPrefix("DATA \(workload) bytes=3145728 words="), line)
        return line
    }

    /// A VM of `vcpus[i]` vCPUs on node i with the text as module 0.
    /// `replicated`: dsm-ivy's `replicated: on` spelled out (the default: the modules start as
    /// read copies on every node).
    func config(port: Int, vcpus: [Int], memory: String = "128MiB", cmdline: String, modules: [String]? = nil,
                replicated: Bool = false) -> String {
        let base = vmConfig(port: port, vcpus: vcpus, memory: memory, cmdline: cmdline)
        var text = try! String(contentsOfFile: base, encoding: .utf8)
        if replicated {
            precondition(text.contains("coherence: {plugin: dsm-ivy}"), text)
            text = text.replacingOccurrences(of: "coherence: {plugin: dsm-ivy}", with: "coherence: {plugin: dsm-ivy, settings: {replicated: on}}")
        }
        let mods = (modules ?? [Self.text!]).map { "\"\($0)\"" }.joined(separator: ", ")
        text += "\n  modules: [\(mods)]\n"
        FileManager.default.createFile(atPath: base, contents: Data(text.utf8))
        return base
    }

    func guestLines(_ r: ProcessResult, _ prefix: String) -> [String] {
        lines(r.stdout, "[node 0] ").filter { $0.hasPrefix(prefix) }
    }

    @discardableResult
    func assertMatches(_ workload: String, vcpus: [Int], port: Int, replicated: Bool = false,
                       file: StaticString = #filePath, line: UInt = #line) throws -> ProcessResult {
        let total = vcpus.reduce(0, +)
        let want = try reference(workload, threads: total)
        let r = try giantvm(["up", config(port: port, vcpus: vcpus, cmdline: workload, replicated: replicated), "--timeout", "60"], timeout: 90)
        XCTAssertEqual(r.status, 0, r.output, file: file, line: line)
        XCTAssertEqual(guestLines(r, "DATA "), [want], "\(vcpus.count) node(s) x \(vcpus) vCPUs: \(r.output)", file: file, line: line)
        let result = guestLines(r, "RESULT ")
        XCTAssertEqual(result.count, 1, r.output, file: file, line: line)
        XCTAssertTrue(result.first?.contains("\"workload\":\"\(workload)\",\"vcpus\":\(total),\"bytes\":3145728,") ?? false, "\(result)", file: file, line: line)
        XCTAssertTrue(result.first?.hasSuffix("\"ok\":true}") ?? false, "\(result)", file: file, line: line)
        return r
    }

    /// The text is replicated on every node (ABI 4, GVM_HINT_REPLICATED): node 1 reads its half
    /// (384 of the 3 MiB text's 768 pages) from its own copy, so node 0 sends far fewer pages than
    /// that (what remains: the guest's code, tables and the exports node 1 merges, ~100 pages).
    /// With `replicated: off` node 0 sends the half too.
    func assertTextNotPulled(_ r: ProcessResult, file: StaticString = #filePath, line: UInt = #line) {
        let sent = stat(r.stdout, node: 0, "pages_sent")
        XCTAssertNotNil(sent, r.output, file: file, line: line)
        XCTAssertLessThan(sent ?? .max, 300, "node 0 sent node 1 the replicated text: \(r.output)", file: file, line: line)
        XCTAssertLessThan(stat(r.stdout, node: 1, "read_miss") ?? .max, 100, r.output, file: file, line: line)
    }

    /// The reference itself does not depend on its thread count (slices, merge by partition).
    func testReferenceIsTheSameForAnyThreadCount() throws {
        for w in ["wordcount", "invindex"] {
            let one = try reference(w, threads: 1)
            XCTAssertEqual(try reference(w, threads: 3), one)
            XCTAssertEqual(try reference(w, threads: 4), one)
        }
    }

    func testWordcountOneNodeTwoVCPUs() throws { try assertMatches("wordcount", vcpus: [2], port: 20800) }
    func testWordcountTwoNodesOneVCPU() throws {
        assertTextNotPulled(try assertMatches("wordcount", vcpus: [1, 1], port: 20802, replicated: true))
    }
    func testWordcountTwoNodesTwoVCPUs() throws {
        assertTextNotPulled(try assertMatches("wordcount", vcpus: [2, 2], port: 20804, replicated: true))
    }
    /// `replicated: off` (dsm-ivy): the BSP's node loads the text and node 1 pulls its half
    /// through the DSM, as before ABI 4; the result is the same.
    func testWordcountTwoNodesWithoutReplication() throws {
        let want = try reference("wordcount", threads: 2)
        let path = config(port: 20896, vcpus: [1, 1], cmdline: "wordcount")
        var text = try String(contentsOfFile: path, encoding: .utf8)
        text = text.replacingOccurrences(of: "plugin: dsm-ivy}", with: "plugin: dsm-ivy, settings: {replicated: off}}")
        XCTAssertTrue(text.contains("replicated: off"), text)
        FileManager.default.createFile(atPath: path, contents: Data(text.utf8))
        let r = try giantvm(["up", path, "--timeout", "60"], timeout: 90)
        XCTAssertEqual(r.status, 0, r.output)
        XCTAssertEqual(guestLines(r, "DATA "), [want], r.output)
        XCTAssertGreaterThanOrEqual(stat(r.stdout, node: 0, "pages_sent") ?? 0, 384, "node 1 pulled its half of the text: \(r.output)")
    }

    func testInvindexOneNodeTwoVCPUs() throws { try assertMatches("invindex", vcpus: [2], port: 20806) }
    func testInvindexTwoNodesOneVCPU() throws { try assertMatches("invindex", vcpus: [1, 1], port: 20808) }
    func testInvindexTwoNodesTwoVCPUs() throws { try assertMatches("invindex", vcpus: [2, 2], port: 20810) }

    /// A guest write to a replicated module page on one node is seen by every other node: the
    /// last vCPU (node 1) writes module page 1, vCPU 0 (node 0) page 2; after a barrier every vCPU
    /// checks both and that page 0 is unchanged (`modwrite`, Guests/src/u_data.c).
    func assertModuleWriteCoherent(vcpus: [Int], port: Int, modules: [String]? = nil,
                                   file: StaticString = #filePath, line: UInt = #line) throws {
        let r = try giantvm(["up", config(port: port, vcpus: vcpus, cmdline: "modwrite", modules: modules, replicated: true),
                             "--timeout", "60"], timeout: 90)
        XCTAssertEqual(r.status, 0, r.output, file: file, line: line)
        let total = vcpus.reduce(0, +)
        XCTAssertEqual(guestLines(r, "RESULT "),
                       [#"RESULT {"workload":"modwrite","vcpus":\#(total),"writer":\#(total - 1),"cross_node":true,"bad":0,"ok":true}"#],
                       r.output, file: file, line: line)
        // The writes invalidated the other nodes' read copies.
        let inv = (0..<vcpus.count).reduce(0) { $0 + (stat(r.stdout, node: $1, "invalidations_sent") ?? 0) }
        XCTAssertGreaterThanOrEqual(inv, 2, r.output, file: file, line: line)
    }

    func testModuleWriteIsSeenAcrossTwoNodes() throws { try assertModuleWriteCoherent(vcpus: [1, 1], port: 20892) }
    /// The same with an 8 MiB module: the middle pages are in every node's huge read copies.
    func testModuleWriteIsSeenAcrossTwoNodesInHugeReadCopies() throws {
        try assertModuleWriteCoherent(vcpus: [1, 1], port: 20886, modules: [try bigText()])
    }

    /// An 8 MiB text (made once): its middle holds whole 2 MiB pages wherever it is placed.
    func bigText() throws -> String {
        if let t = Self.bigText { return t }
        let path = temporaryFile("", name: "zipf-8MiB.txt")
        let g = try TestSupport.run(Self.tools + "/zipf-text", ["--size", "8M", "--seed", "3", "-o", path], timeout: 60)
        XCTAssertEqual(g.status, 0, g.output)
        Self.bigText = path
        return path
    }
    /// One node replicates too (its modules' middle in huge read-only pages): a write there
    /// upgrades the page in place, splitting its huge page, and every vCPU reads it back.
    func testModuleWriteOnOneNodeWithHugeReadCopies() throws {
        let r = try giantvm(["up", config(port: 20890, vcpus: [2], cmdline: "modwrite", modules: [try bigText()]), "--timeout", "60",
                             "--log-level", "info"], timeout: 90)
        XCTAssertEqual(r.status, 0, r.output)
        XCTAssertEqual(guestLines(r, "RESULT "), [#"RESULT {"workload":"modwrite","vcpus":2,"writer":1,"cross_node":false,"bad":0,"ok":true}"#],
                       r.output)
        // An 8 MiB module holds at least two whole 2 MiB pages, the middle pages among them.
        XCTAssertNotNil(r.output.range(of: #"loaded on this node as read copies .* ([4-9]|[1-9][0-9])[0-9]{6} bytes of them in 2 MiB pages"#,
                                       options: .regularExpression), r.output)
        XCTAssertGreaterThanOrEqual(stat(r.stdout, node: 0, "upgrade") ?? 0, 2, "the writes upgraded read copies in place: \(r.output)")
    }

    /// `GIANTVM_HUGE_REPLICAS=0`: a one-node VM leaves its modules to the loader again (4 KiB
    /// writable pages), with the same result; a bad value stops at start naming the variable.
    func testHugeReplicasSwitch() throws {
        let want = try reference("wordcount", threads: 2)
        let path = config(port: 20888, vcpus: [2], cmdline: "wordcount")
        let off = try giantvm(["up", path, "--timeout", "60", "--log-level", "info"], timeout: 90,
                              environment: ["GIANTVM_HUGE_REPLICAS": "0"])
        XCTAssertEqual(off.status, 0, off.output)
        XCTAssertEqual(guestLines(off, "DATA "), [want], off.output)
        XCTAssertFalse(off.output.contains("loaded on this node as read copies"), off.output)
        let bad = try giantvm(["up", path, "--timeout", "60"], timeout: 90, environment: ["GIANTVM_HUGE_REPLICAS": "yes"])
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertTrue(bad.output.contains("GIANTVM_HUGE_REPLICAS=yes: expected 0"), bad.output)
    }
    func testModuleWriteIsSeenAcrossTwoNodesTwoVCPUs() throws { try assertModuleWriteCoherent(vcpus: [2, 2], port: 20894) }

    /// Through the guest's multiboot entry (`guest.protocol: multiboot`): the firmware loader places
    /// the module and lists it in the multiboot information's mods list; the guest's 32-bit entry
    /// turns that into its boot info's module table. One node, plain `giantvm run`.
    func testWordcountThroughTheMultibootModulesList() throws {
        let want = try reference("wordcount", threads: 2)
        let cfg = multibootTestConfig(cluster: "mbdata", port: 20818, vcpus: [2], cmdline: "wordcount", memory: "64MiB",
                                      modules: [Self.text!])
        let r = try giantvm(["run", "--config", cfg, "--timeout", "60"], timeout: 90)
        XCTAssertEqual(r.status, 0, r.output)
        XCTAssertEqual(r.stdout.split(separator: "\n").map(String.init).filter { $0.hasPrefix("DATA ") }, [want], r.output)
    }

    /// seqread: vCPU 0 (node 0) reads what the last vCPU (node 1) wrote; the guest checks every
    /// value and the pages came over the DSM (node 1's pages sent).
    func testSeqreadAcrossNodes() throws {
        let r = try giantvm(["up", config(port: 20812, vcpus: [1, 1], cmdline: "seqread total=4"), "--timeout", "60"], timeout: 90)
        XCTAssertEqual(r.status, 0, r.output)
        let res = guestLines(r, "RESULT ")
        XCTAssertEqual(res.count, 1, r.output)
        let l = res.first ?? ""
        XCTAssertTrue(l.hasPrefix(#"RESULT {"workload":"seqread","vcpus":2,"writer":1,"cross_node":true,"bytes":4194304,"#), l)
        XCTAssertTrue(l.hasSuffix(#""bad":0,"ok":true}"#), l)
        // Node 1 sent the pages with their data (read-ahead batches them, so node 0's read misses
        // are fewer than the pages).
        XCTAssertGreaterThanOrEqual(stat(r.stdout, node: 1, "pages_sent") ?? 0, 1024 / 2, "4 MiB read from node 1: \(r.output)")
        XCTAssertGreaterThanOrEqual(stat(r.stdout, node: 0, "read_miss") ?? 0, 1, r.output)
    }

    /// Without a module the data workloads fail with a message saying what to give the VM.
    func testWordcountWithoutModuleSaysWhatIsMissing() throws {
        let r = try giantvm(["up", vmConfig(port: 20814, vcpus: [2], memory: "64MiB", cmdline: "wordcount"), "--timeout", "30"], timeout: 60)
        XCTAssertNotEqual(r.status, 0, r.output)
        XCTAssertTrue(r.stdout.contains("FAIL: wordcount: no text: give the VM the text as its first module (YAML guest.modules)"), r.output)
    }

    /// A module that is a directory fails on every node before anything runs, naming the field.
    func testModuleThatIsADirectoryIsRefused() throws {
        let dir = NSTemporaryDirectory()
        let r = try giantvm(["up", config(port: 20816, vcpus: [1], cmdline: "wordcount", modules: [dir]), "--timeout", "30"], timeout: 60)
        XCTAssertNotEqual(r.status, 0, r.output)
        XCTAssertTrue(r.output.contains("guest.modules[0]") && r.output.contains("is a directory"), r.output)
    }
}
