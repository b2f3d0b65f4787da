// `giantvm bench fault`: the guest-memory fault round trip beside the raw userfaultfd floor.
// The measurement itself lives in GuestMemory.FaultBenchmark; this file only parses options,
// loads the coherence plugin and prints.

import ArgumentParser
import Foundation
import GuestMemory
import Logging
import Metrics
import PluginAPI
import PluginHost

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Micro-benchmarks, each printed beside a floor measured in the same run.",
        subcommands: [BenchFault.self, BenchDsm.self])
}

struct BenchFault: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fault",
        abstract: "Fault round trip of a host thread through guest memory and a coherence plugin.",
        discussion: """
            A host thread reads missing pages of a single-node guest memory; each fault goes through
            a handler thread and the coherence plugin (default dsm-local: install zeros SHARED, wake).
            Beside it, in alternating rounds of the same run and wake mode, the raw floor: a minimal
            C handler resolving each fault with one UFFDIO_COPY. Needs root or access to
            /dev/userfaultfd.
            """)

    @Option(name: .long, help: "Handler wake mode: poll (block in poll), spin (spin 200 us, then poll), or spin:<us>.")
    var mode: String = "poll"

    @Option(name: .long, help: "Timed faults per series.")
    var iterations: Int = 5000

    @Option(name: .long, help: "Alternating floor/guest rounds the iterations are split into.")
    var rounds: Int = 10

    @Option(name: .long, help: "CPUs for the faulting and handler threads, 'A,B' (default: the first two available), or 'none'.")
    var cpus: String?

    @Option(name: .long, help: "Coherence plugin (name or path to the .so).")
    var plugin: String = "dsm-local"

    @OptionGroup var global: GlobalOptions

    func validate() throws {
        guard HandlerWakeMode(parsing: mode) != nil else {
            throw ValidationError("--mode '\(mode)' is not one of poll, spin, spin:<microseconds>")
        }
        guard (1...10_000_000).contains(iterations) else { throw ValidationError("--iterations must be 1...10000000") }
        guard (1...1000).contains(rounds) else { throw ValidationError("--rounds must be 1...1000") }
        _ = try parsedCPUs()
    }

    func parsedCPUs() throws -> (faulter: Int32, handler: Int32)? {
        guard let cpus else { return FaultBenchmark.defaultCPUs() }
        if cpus == "none" { return nil }
        let parts = cpus.split(separator: ",").map { Int32($0.trimmingCharacters(in: .whitespaces)) }
        guard parts.count == 2, let a = parts[0], let b = parts[1], a >= 0, b >= 0 else {
            throw ValidationError("--cpus '\(cpus)' is not 'A,B' (two CPU numbers) or 'none'")
        }
        return (a, b)
    }

    func run() throws {
        let logger = global.bootstrapLogging()
        let wake = HandlerWakeMode(parsing: mode)!
        let loader = PluginLoader(searchPath: PluginLoader.defaultSearchPath(config: nil))
        let loaded: LoadedPlugin
        do { loaded = try loader.load(plugin, kind: .coherence) } catch { fail("\(error)") }
        let services = HostServicesTable(pluginName: loaded.name, metrics: MetricsRegistry(), logger: logger,
                                         onFatal: { fail("plugin \(loaded.name): \($0)") })
        do {
            let result = try FaultBenchmark.run(mode: wake, iterations: iterations, rounds: rounds,
                                                cpus: try parsedCPUs(), pluginName: loaded.name, ops: loaded.coherenceOps!,
                                                services: services.pointer)
            print(result.table(), terminator: "")
        } catch {
            fail("\(error)")
        }
    }
}
