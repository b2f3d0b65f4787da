import ArgumentParser
import Config
import Foundation
import PluginHost

struct Validate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check a cluster config file and report every problem.",
        discussion: """
            Reads the YAML file, checks every field (types, ranges, node ids 0..n-1 without gaps or
            duplicates, device placement, timeouts), and reports each problem as
            FILE:LINE:COLUMN: FIELD.PATH: MESSAGE. With --plugins it also loads every plugin the file
            names and checks its kind and ABI version. Exit status 0 when the file is valid.
            """)

    @Argument(help: "The cluster config (YAML).")
    var config: String

    @Flag(name: .long, help: "Also load every plugin the config names and check its kind and ABI.")
    var plugins = false

    @OptionGroup var global: GlobalOptions

    func run() throws {
        _ = global.bootstrapLogging()
        let cfg: ClusterConfig
        do {
            cfg = try ConfigLoader.validate(path: config)
        } catch let e as ConfigError {
            print(e.description)
            print("\(config): \(e.diagnostics.count) problem\(e.diagnostics.count == 1 ? "" : "s")")
            throw ExitCode(1)
        }
        cfg.warnings.forEach { print("warning: \($0)") }
        if plugins {
            let loader = PluginLoader(searchPath: PluginLoader.defaultSearchPath(config: cfg))
            var problems: [String] = []
            func check(_ name: String, _ kind: PluginKind, _ field: String) -> LoadedPlugin? {
                do { return try loader.load(name, kind: kind) } catch {
                    problems.append("\(config): \(field): \(error)")
                    return nil
                }
            }
            _ = check(cfg.transport.plugin, .transport, "transport.plugin")
            _ = check(cfg.coherence.plugin, .coherence, "coherence.plugin")
            for (i, d) in cfg.devices.enumerated() {
                if let p = check(d.plugin, .device, "devices[\(i)].plugin"), p.deviceModel(named: d.model) == nil {
                    let models = p.deviceModels.map(\.name).joined(separator: ", ")
                    problems.append("\(config): devices[\(i)].model: plugin '\(p.name)' has no model '\(d.model)' (it offers: \(models))")
                }
            }
            if !problems.isEmpty {
                problems.forEach { print($0) }
                print("\(config): \(problems.count) problem\(problems.count == 1 ? "" : "s")")
                throw ExitCode(1)
            }
        }
        let vcpus = cfg.nodes.map { "\($0.vcpus)" }.joined(separator: "+")
        print("\(config): OK — cluster '\(cfg.cluster)', \(cfg.nodes.count) node\(cfg.nodes.count == 1 ? "" : "s"), \(cfg.totalVCPUs) vCPUs (\(vcpus)), \(cfg.memoryBytes >> 20) MiB, transport \(cfg.transport.plugin), coherence \(cfg.coherence.plugin), \(cfg.devices.count) device\(cfg.devices.count == 1 ? "" : "s")")
    }
}
