import ArgumentParser
import Config
import Foundation
import NodeAssembly

struct Evacuate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Empty a node while the guest runs: its vCPUs, then its pages and manager role; then it leaves.",
        discussion: """
            Reads the vCPU-to-node map from a node's control endpoint (the config needs a
            `metrics:` section), moves each vCPU that runs on --node to the node with vCPUs that
            runs the fewest, one `migrate` at a time, then asks --node to leave (`POST /leave`):
            the coherence plugin hands the pages it owns or holds and the manager role of the
            pages it manages to --to (drain hook, ABI 4), every node records that it left, and it
            exits 0 while the others run on. Devices homed on the node move first to --to when
            their model can transfer its state (ABI 4: the UART); refused, with the reason, when
            the IOAPIC or a device without that transfer is homed on the node, for node 0, or
            when the coherence plugin has no drain hook (the vCPUs still move). Prints one answer per vCPU and a summary with the bytes sent beside
            the guest's memory size (see docs/migration.md). Exit status 0 when the node left
            (with --vcpus-only: when every vCPU moved).
            """)

    @Argument(help: "The cluster config (YAML) the VM runs from.")
    var config: String

    @Option(name: .long, help: "The node to empty.")
    var node: UInt32

    @Option(name: .long, help: "The node whose control endpoint takes the vCPU moves (default: the first other node).")
    var via: UInt32?

    @Option(name: .long, help: "The node that takes the pages and the manager role (default: the first other node).")
    var to: UInt32?

    @Flag(name: .long, help: "Move only the vCPUs; the node keeps its pages and devices and stays.")
    var vcpusOnly = false

    @OptionGroup var global: GlobalOptions

    func run() throws {
        _ = global.bootstrapLogging()
        let cfg: ClusterConfig
        do { cfg = try ConfigLoader.load(path: config) } catch { fail("\(error)") }
        let other: UInt32 = node == 0 ? 1 : 0
        do {
            let r = try ControlClient.evacuate(config: cfg, node: node, via: via ?? other)
            for l in r.lines { print(l) }
            let stateBytes = r.lines.compactMap { l in
                l.split(separator: " ").first { $0.hasPrefix("state_bytes=") }.flatMap { UInt64($0.dropFirst(12).prefix { $0.isNumber }) }
            }.reduce(0, +)
            guard r.ok else {
                print("evacuate: node \(node): \(r.lines.count) vCPU(s) asked to move, some did not move; the node stays")
                throw ExitCode(1)
            }
            if vcpusOnly {
                print("evacuate: node \(node): \(r.lines.count) vCPU(s) asked to move, all moved; its pages and device homes stay there")
                return
            }
            fflush(stdout)   // the moves are visible while the node drains
            let l = try ControlClient.leave(config: cfg, node: node, to: to ?? other)
            guard l.ok else {
                print("evacuate: node \(node): \(r.lines.count) vCPU(s) moved; the node cannot leave: \(l.answer)")
                throw ExitCode(1)
            }
            print(l.answer)
            print(EvacuationSummary(node: node, vcpus: r.lines.count, stateBytes: stateBytes, leaveAnswer: l.answer,
                                    memoryBytes: cfg.memoryBytes).line)
        } catch let e as ExitCode {
            throw e
        } catch {
            fail("\(error)")
        }
    }
}
