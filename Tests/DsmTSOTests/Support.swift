// Shared pieces of the dsm-tso tests: the plugin under test (its C descriptor, in-process), the
// TSONode behind a simulated node, programs for multiple-writer pages, and settling a cluster.

import XCTest
import PluginAPI
import PluginKit
import CoherenceKit
@testable import TSOCore

let tso = TSOPlugin.entry.pointer

/// The engine behind simulated node `i` (for the non-blocking release the C table does not carry).
func engine(_ c: SimCluster, _ i: Int) -> TSONode {
    (CoherencePluginEntry.plugin(of: c.nodes[i].pluginInstance!) as! TSOPlugin).node
}

/// A cluster whose pages in `relaxed` (gfns) are mw: the kit's SC checks skip them.
func cluster(nodes: Int, pages: Int = 4, relaxed: [UInt64], seed: UInt64, maxDelay: Int = 0, threadBias: Int = 50,
             extra: [(String, String)] = []) throws -> SimCluster {
    var settings = extra
    if !relaxed.isEmpty {
        settings.append(("relaxed", relaxed.map { "0x\(String($0 * 4096, radix: 16)):4KiB" }.joined(separator: ",")))
    }
    let c = try SimCluster(descriptor: tso, nodes: nodes, pages: pages, seed: seed, settings: settings)
    c.uncheckedPages = Set(relaxed)
    c.network.maxDelay = maxDelay
    c.threadBias = threadBias
    return c
}

/// Each thread increments its own 8-byte slot of one page `count` times with a plain load and
/// store (no lock, no atomic): false sharing. Every `fenceEvery` increments it starts a release
/// (not waited for: as a fence hint whose vCPU went on).
final class FalseShareProgram: SimProgram {
    let page: UInt64
    let slot: Int
    let count: Int
    let fenceEvery: Int
    var done = 0
    var loaded: UInt64?

    init(page: UInt64, slot: Int, count: Int, fenceEvery: Int = 0) {
        self.page = page
        self.slot = slot
        self.count = count
        self.fenceEvery = fenceEvery
    }

    func step(_ t: SimThread) -> Bool {
        if done == count { return false }
        if let v = loaded {
            guard t.store(page, slot * 8, v + 1) else { return true }
            loaded = nil
            done += 1
            if fenceEvery > 0 && done % fenceEvery == 0 { _ = engine(t.cluster, Int(t.node)).startRelease(.hint) }
            return done < count
        }
        guard let v = t.load(page, slot * 8) else { return true }
        loaded = v
        return true
    }
}

/// Every thread stores its own values to one word (a data race), `count` times.
final class RacyProgram: SimProgram {
    let page: UInt64
    let count: Int
    var done = 0
    init(page: UInt64, count: Int) {
        self.page = page
        self.count = count
    }

    func step(_ t: SimThread) -> Bool {
        if done == count { return false }
        guard t.store(page, 16, UInt64(t.id + 1) << 32 | UInt64(done + 1)) else { return true }
        done += 1
        return done < count
    }
}

/// Reads words on one node into `out` (after a settled run: what that node sees).
final class ReadProgram: SimProgram {
    var work: [(UInt64, Int)]
    var out: [UInt64] = []
    init(_ words: [(UInt64, Int)]) { work = words }
    func step(_ t: SimThread) -> Bool {
        guard let (p, off) = work.first else { return false }
        guard let v = t.load(p, off) else { return true }
        out.append(v)
        work.removeFirst()
        return !work.isEmpty
    }
}

/// What every node reads at `words` once the cluster is quiet (the kit's run ends only when no
/// message is in flight and no timer is pending, so every flush interval has fired).
func readEverywhere(_ c: SimCluster, _ words: [(UInt64, Int)]) -> (values: [[UInt64]], report: RunReport) {
    let readers = (0..<c.nodeCount).map { _ in ReadProgram(words) }
    for (i, r) in readers.enumerated() { c.addThread(node: UInt32(i), r) }
    let rep = c.run()
    return (readers.map(\.out), rep)
}
