import ArgumentParser
import Config
import Foundation
import NodeAssembly

struct Evacuate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Move every vCPU off a node while the guest runs (live vCPU migration).",
        discussion: """
            Reads the vCPU-to-node map from a node's control endpoint (the config needs a
            `metrics:` section), then moves each vCPU that runs on --node to the node with vCPUs
            that runs the fewest, one `migrate` at a time. Prints one answer per vCPU and a summary.
            Only the vCPUs move: the pages node N owns and the devices homed there stay, so the
            node keeps serving them (see docs/migration.md). Exit status 0 when every vCPU moved.
            """)

    @Argument(help: "The cluster config (YAML) the VM runs from.")
    var config: String

    @Option(name: .long, help: "The node to move every vCPU off.")
    var node: UInt32

    @Option(name: .long, help: "The node whose control endpoint takes the requests (default: the first other node).")
    var via: UInt32?

    @OptionGroup var global: GlobalOptions

    func run() throws {
        _ = global.bootstrapLogging()
        let cfg: ClusterConfig
        do { cfg = try ConfigLoader.load(path: config) } catch { fail("\(error)") }
        let ask = via ?? (node == 0 ? 1 : 0)
        do {
            let r = try ControlClient.evacuate(config: cfg, node: node, via: ask)
            for l in r.lines { print(l) }
            print("evacuate: node \(node): \(r.lines.count) vCPU(s) asked to move, "
                  + (r.ok ? "all moved; its pages and device homes stay there" : "some did not move"))
            if !r.ok { throw ExitCode(1) }
        } catch let e as ExitCode {
            throw e
        } catch {
            fail("\(error)")
        }
    }
}
