// `giantvm net-bench F`: round-trip latency and one-way bandwidth between node 0 and every other
// node through the configured transport, beside a raw-TCP floor measured in the same run between
// the same node processes (Sources/Bench/NetBench.swift).

import ArgumentParser
import Config
import Foundation
import Glibc

struct NetBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "net-bench",
        abstract: "Measure the network between nodes through the configured transport (latency p50/p99, bandwidth).",
        discussion: """
            Starts every node of the config as a separate process (as `giantvm up` does). Node 0
            measures, against each other node in turn: the round trip of a 64-byte frame on the
            urgent lane and of a 4 KiB frame on the bulk lane (as the DSM sends page data), and the
            one-way bandwidth of 60 KiB frames on the bulk lane. Beside each figure it prints a
            floor measured in the same run between the same two node processes: the same exchange
            over a plain TCP connection to a listener the peer opens on its configured address,
            without giantvm's transport.
            """)

    @OptionGroup var global: GlobalOptions

    @Argument(help: "The cluster YAML file.")
    var config: String

    @Option(name: .long, help: "Round trips measured per frame size and peer.")
    var roundTrips: Int = 2000

    @Option(name: .long, help: "MiB sent one way per peer for the bandwidth figure.")
    var megabytes: Int = 64

    func validate() throws {
        guard roundTrips >= 10 && roundTrips <= 1_000_000 else { throw ValidationError("--round-trips must be 10...1000000") }
        guard megabytes >= 1 && megabytes <= 16384 else { throw ValidationError("--megabytes must be 1...16384") }
    }

    func run() throws {
        _ = global.bootstrapLogging()
        let cfg: ClusterConfig
        do { cfg = try ConfigLoader.load(path: config) } catch { fail("\(error)") }
        guard cfg.nodes.count >= 2 else { fail("\(config): net-bench needs at least 2 nodes") }
        let status = launchNodes(cfg, configPath: config, logLevel: global.logLevel, plainOutputNode: 0) {
            ["node", "--config", config, "--id", "\($0)", "--bench", "--bench-round-trips", "\(roundTrips)",
             "--bench-megabytes", "\(megabytes)"]
        }
        if status != 0 { Glibc.exit(status) }
    }
}
