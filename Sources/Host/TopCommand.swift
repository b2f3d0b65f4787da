import ArgumentParser
import Config
import Foundation
import Telemetry

struct Top: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show every node's live DSM figures: fault rates by kind, bytes per second, hottest pages.",
        discussion: """
            Reads the config's `metrics:` section and scrapes each node's Prometheus endpoint
            (http://ADDRESS:PORT+ID/metrics) once per interval: per node, faults per second by kind
            (read miss, write miss, upgrade, stale, coalesced), pages sent and invalidations per
            second, coherence traffic in KiB/s both ways, the fault latency p50/p99 over the interval
            (as the bucket bound that holds it), then the node's hottest pages (faults per second and
            in all). Ctrl-C quits.
            """)

    @Argument(help: "The cluster config (YAML) with a metrics: section.")
    var config: String

    @Option(name: .long, help: "Seconds between refreshes.")
    var interval: Double = 1

    @Option(name: .long, help: "Stop after this many screens (0: until Ctrl-C).")
    var count: Int = 0

    @Option(name: .long, help: "Hottest pages shown per node.")
    var pages: Int = 5

    @Flag(name: .long, help: "Print screens one after another instead of redrawing the terminal.")
    var plain = false

    @OptionGroup var global: GlobalOptions

    func validate() throws {
        try checkSeconds(interval, option: "--interval")
        guard interval >= 0.1 else { throw ValidationError("--interval \(interval) is below 0.1 s") }
        guard count >= 0 else { throw ValidationError("--count \(count) is negative") }
        guard (0...MetricsConfig.maxHotPages).contains(pages) else {
            throw ValidationError("--pages \(pages) is not in 0...\(MetricsConfig.maxHotPages)")
        }
    }

    func run() throws {
        _ = global.bootstrapLogging()
        let cfg: ClusterConfig
        do { cfg = try ConfigLoader.load(path: config) } catch { fail("\(error)") }
        let session: TopSession
        do { session = try TopSession(config: cfg, hotRows: pages) } catch { fail("\(error)") }
        let clock = DateFormatter()
        clock.dateFormat = "HH:mm:ss"
        var shown = 0
        while count == 0 || shown < count {
            let started = Date()
            let screen = session.frame(timeout: min(0.5, interval / 2), clock: clock.string(from: started))
            // Home + clear the screen, then the frame.
            let out = plain ? screen + "\n" : "\u{1B}[H\u{1B}[2J" + screen
            FileHandle.standardOutput.write(Data(out.utf8))
            shown += 1
            if count != 0 && shown >= count { break }
            let rest = interval - Date().timeIntervalSince(started)
            if rest > 0 { Thread.sleep(forTimeInterval: rest) }
        }
    }
}
