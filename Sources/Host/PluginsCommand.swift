import ArgumentParser
import Config
import Foundation
import PluginAPI
import PluginHost

struct Plugins: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List and inspect plugins.",
        subcommands: [PluginsList.self, PluginsDescribe.self])
}

struct PluginsList: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list",
        abstract: "Print every plugin found: name, kind, version, ABI and path.",
        discussion: """
            Searches, in order: the config's plugin_path (with --config), $GIANTVM_PLUGIN_PATH, and
            the directory of the giantvm executable (where `swift build` puts the in-tree plugins).
            Files that fail to load are listed with the reason. This giantvm loads plugin ABI \
            \(GVM_ABI_MIN_VERSION) to \(GVM_ABI_VERSION).
            """)

    @Option(name: .long, help: "Also search the plugin_path of this config, and mark the plugins it uses.")
    var config: String?

    @Option(name: .long, help: "Extra directory to search (repeatable).")
    var pluginDir: [String] = []

    @Flag(name: .long, help: "Also list the deliberately broken test fixtures (libtest-*.so).")
    var includeTestFixtures = false

    @OptionGroup var global: GlobalOptions

    func run() throws {
        _ = global.bootstrapLogging()
        var cfg: ClusterConfig?
        if let config {
            do { cfg = try ConfigLoader.load(path: config) } catch {
                fail("\(error)")
            }
        }
        let dirs = pluginDir + PluginLoader.defaultSearchPath(config: cfg)
        let loader = PluginLoader(searchPath: dirs)
        let results = loader.loadAll(includeTestFixtures: includeTestFixtures)
        var used = Set<String>()
        if let cfg {
            used.insert(cfg.transport.plugin)
            used.insert(cfg.coherence.plugin)
            cfg.devices.forEach { used.insert($0.plugin) }
        }
        print("plugin ABI supported: \(GVM_ABI_MIN_VERSION)...\(GVM_ABI_VERSION); searched: \(dirs.joined(separator: ":"))")
        let header = ["NAME", "KIND", "VERSION", "ABI", "PATH"]
        var rows: [[String]] = []
        var failures: [String] = []
        for r in results {
            switch r {
            case .success(let p):
                let mark = used.contains(p.name) ? "*" : ""
                rows.append([p.name + mark, p.kind.description, p.version, "\(p.abiVersion)", p.path])
                if p.kind == .device {
                    for m in p.deviceModels { rows.append(["  model " + m.name, "", "", "", m.summary]) }
                }
            case .failure(let e):
                failures.append("\(e)")
            }
        }
        let widths = (0..<header.count).map { c in ([header] + rows).map { $0[c].count }.max() ?? 0 }
        for row in [header] + rows {
            print(zip(row, widths).map { $0.padding(toLength: $1, withPad: " ", startingAt: 0) }.joined(separator: "  "))
        }
        if cfg != nil { print("(* = used by the config)") }
        if !failures.isEmpty {
            print("\nnot loadable:")
            failures.forEach { print("  " + $0) }
        }
    }
}

struct PluginsDescribe: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "describe",
        abstract: "Print what a plugin is: its description (a coherence plugin's state table), models and settings.",
        discussion: """
            NAME is found like `plugins list` finds plugins (lib<NAME>.so in --plugin-dir, \
            $GIANTVM_PLUGIN_PATH, then the giantvm executable's directory); a PATH (with a / or \
            ending in .so) is loaded as is. Read from the plugin's descriptor: nothing is created.
            """)

    @Argument(help: "A plugin name (dsm-ivy) or the path of its .so.")
    var plugin: String

    @Option(name: .long, help: "Extra directory to search (repeatable).")
    var pluginDir: [String] = []

    @OptionGroup var global: GlobalOptions

    func run() throws {
        _ = global.bootstrapLogging()
        let loader = PluginLoader(searchPath: pluginDir + PluginLoader.defaultSearchPath(config: nil))
        do { print(try loader.load(plugin).describeText) } catch { fail("\(error)") }
    }
}
