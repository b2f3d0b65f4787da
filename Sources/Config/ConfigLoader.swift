import Foundation
import Yams

/// Reads and validates a cluster config.
public enum ConfigLoader {
    /// Reads `path`; throws `ConfigError` listing every problem. Only a regular file of at most
    /// `maxConfigBytes` is read (a device, a FIFO or a huge file is refused before reading).
    public static func load(path: String) throws -> ClusterConfig {
        func fail(_ message: String) -> ConfigError {
            ConfigError(diagnostics: [Diagnostic(file: path, line: 0, column: 0, path: "", message: message)])
        }
        let data: [UInt8]
        switch readBounded(path, limit: YAMLBounds.maxBytes) {
        case .success(let d): data = d
        case .failure(let why): throw fail(why.message)
        }
        guard let text = String(validating: data, as: UTF8.self) else {
            throw fail("the file is not UTF-8 text")
        }
        return try parse(yaml: text, path: path)
    }

    /// What `giantvm validate` runs: `load`, and also every file the config names must exist now
    /// (`guest.image`; `load` lets a missing image through for the run to report, but refuses
    /// one that exists and is a directory, a device or unreadable). Warnings are in `warnings`.
    public static func validate(path: String) throws -> ClusterConfig {
        let config = try load(path: path)
        if let image = config.guest?.image, let problem = fileProblem(image) {
            let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
            var reader = Reader(file: path)
            let node = (try? Yams.compose(yaml: text)).flatMap { root -> Node? in
                guard case .mapping(let m) = root, let g = m["guest"], case .mapping(let gm) = g else { return nil }
                return gm["image"]
            }
            reader.report(node, "guest.image", "cannot read '\(image)': it \(problem)")
            throw ConfigError(diagnostics: reader.problems)
        }
        return config
    }

    /// Largest config file read, in bytes.
    public static var maxConfigBytes: Int { YAMLBounds.maxBytes }

    /// Parses YAML text; `path` names it in messages and anchors relative paths.
    public static func parse(yaml: String, path: String) throws -> ClusterConfig {
        var reader = Reader(file: path)
        let bounds = YAMLBounds.scan(yaml)
        if let p = bounds.problem {
            throw ConfigError(diagnostics: [Diagnostic(file: path, line: p.line, column: p.column, path: "", message: p.message)])
        }
        reader.topLevelText = bounds.topLevelText
        let root: Node?
        do {
            root = try Yams.compose(yaml: yaml)
        } catch let error as YamlError {
            throw ConfigError(diagnostics: [reader.diagnostic(for: error)])
        } catch {
            throw ConfigError(diagnostics: [Diagnostic(file: path, line: 0, column: 0, path: "",
                                                       message: "YAML error: \(error)")])
        }
        guard let root, !(root.scalar.map { $0.string.isEmpty || $0.string == "~" || $0.string == "null" } ?? false) else {
            throw ConfigError(diagnostics: [Diagnostic(file: path, line: 0, column: 0, path: "",
                                                       message: "the file is empty: expected a mapping with cluster:, nodes:, transport: and coherence:")])
        }
        let config = reader.cluster(root)
        if var config, reader.problems.isEmpty {
            config.warnings = reader.warnings
            config.ssh = reader.ssh
            return config
        }
        let sorted = reader.problems.enumerated().sorted { a, b in
            (a.element.line, a.element.column, a.offset) < (b.element.line, b.element.column, b.offset)
        }.map(\.element)
        throw ConfigError(diagnostics: sorted)
    }
}

/// Walks the YAML node tree, building values and recording problems with their positions.
struct Reader {
    let file: String
    var problems: [Diagnostic] = []
    var warnings: [Diagnostic] = []
    /// Source text of each top-level value (from YAMLBounds), for `extra`.
    var topLevelText: [String: String] = [:]
    /// The `ssh:` section (SSHConfig.swift), handed to the config by `parse`.
    var ssh = SSHSettings()
    let baseDirectory: String

    init(file: String) {
        self.file = file
        // (NSString.deletingLastPathComponent traps on some one-character paths.)
        let dir = file.lastIndex(of: "/").map { String(file[..<$0]) } ?? ""
        let absolute = dir.hasPrefix("/") ? dir : FileManager.default.currentDirectoryPath + (dir.isEmpty ? "" : "/" + dir)
        baseDirectory = absolute
    }

    mutating func report(_ node: Node?, _ path: String, _ message: String) {
        let mark = node?.mark
        problems.append(Diagnostic(file: file, line: mark?.line ?? 0, column: mark?.column ?? 0,
                                   path: path, message: message))
    }

    mutating func warn(_ node: Node?, _ path: String, _ message: String) {
        let mark = node?.mark
        warnings.append(Diagnostic(file: file, line: mark?.line ?? 0, column: mark?.column ?? 0,
                                   path: path, message: message))
    }

    func diagnostic(for error: YamlError) -> Diagnostic {
        switch error {
        case let .scanner(context, problem, mark, _), let .parser(context, problem, mark, _),
             let .composer(context, problem, mark, _):
            let ctx = context.map { " (\($0.text))" } ?? ""
            return Diagnostic(file: file, line: mark.line, column: mark.column, path: "",
                              message: "YAML syntax error: \(problem)\(ctx)")
        case let .duplicatedKeysInMapping(duplicates, context):
            return Diagnostic(file: file, line: context.mark.line, column: context.mark.column, path: "",
                              message: "duplicate key \(duplicates.map { "'\($0)'" }.joined(separator: ", ")) in one mapping")
        case let .reader(problem, _, _, _):
            return Diagnostic(file: file, line: 0, column: 0, path: "", message: "cannot read YAML: \(problem)")
        default:
            return Diagnostic(file: file, line: 0, column: 0, path: "", message: "YAML error: \(error)")
        }
    }

    // MARK: - typed accessors

    func describe(_ node: Node) -> String {
        switch node {
        case .scalar(let s): return "'\(s.string)'"
        case .mapping: return "a mapping"
        case .sequence: return "a list"
        case .alias: return "an alias"
        }
    }

    /// A mapping's entries as (key, keyNode, valueNode); reports non-mappings and non-scalar keys.
    mutating func mapping(_ node: Node, _ path: String, allowed: [String]) -> [String: (key: Node, value: Node)]? {
        guard case .mapping(let m) = node else {
            report(node, path, "expected a mapping, got \(describe(node))")
            return nil
        }
        var out: [String: (key: Node, value: Node)] = [:]
        for (k, v) in m {
            guard case .scalar(let ks) = k else {
                report(k, path, "keys must be plain words")
                continue
            }
            if !allowed.isEmpty && !allowed.contains(ks.string) {
                let p = path.isEmpty ? ks.string : "\(path).\(ks.string)"
                report(k, p, "unknown field '\(ks.string)' (expected one of: \(allowed.joined(separator: ", ")))")
                continue
            }
            out[ks.string] = (k, v)
        }
        return out
    }

    mutating func string(_ node: Node, _ path: String) -> String? {
        guard case .scalar(let s) = node else {
            report(node, path, "expected a text value, got \(describe(node))")
            return nil
        }
        return s.string
    }

    mutating func integer(_ node: Node, _ path: String, range: ClosedRange<UInt64>, what: String) -> UInt64? {
        guard case .scalar(let s) = node else {
            report(node, path, "expected an integer, got \(describe(node))")
            return nil
        }
        let text = s.string.replacingOccurrences(of: "_", with: "")
        let value: UInt64?
        if text.hasPrefix("0x") || text.hasPrefix("0X") {
            value = UInt64(text.dropFirst(2), radix: 16)
        } else {
            value = UInt64(text)
        }
        guard let value else {
            if let negative = Int64(text), negative < 0 {
                report(node, path, "\(text) is not \(what)")
            } else {
                report(node, path, "expected an integer, got '\(s.string)'")
            }
            return nil
        }
        guard range.contains(value) else {
            report(node, path, "\(value) is not \(what)")
            return nil
        }
        return value
    }

    /// A size (giantvm_units.h: bare number = bytes; B, KiB, MiB, GiB, TiB, K, M, G, T) in `range`.
    mutating func size(_ node: Node, _ path: String, range: ClosedRange<UInt64>) -> UInt64? {
        guard case .scalar(let s) = node else {
            report(node, path, "expected a size like 64MiB, got \(describe(node))")
            return nil
        }
        switch Sizes.parse(s.string, range: range) {
        case .success(let v): return v
        case .failure(let e): report(node, path, e.message); return nil
        }
    }

    /// A duration in nanoseconds (giantvm_units.h: bare number = seconds; ns, us, ms, s, m, h)
    /// in `range`; the message names the range.
    mutating func duration(_ node: Node, _ path: String, range: ClosedRange<UInt64>) -> UInt64? {
        guard case .scalar(let s) = node else {
            report(node, path, "expected a duration like 3s or 200ms, got \(describe(node))")
            return nil
        }
        switch Durations.parse(s.string, range: range) {
        case .success(let v): return v
        case .failure(let e): report(node, path, e.message); return nil
        }
    }

    /// A file the config names: it must exist, be a regular file (after symlinks) and be readable.
    mutating func checkFile(_ node: Node, _ path: String, _ file: String) {
        if let problem = fileProblem(file) { report(node, path, "cannot read '\(file)': it \(problem)") }
    }

    mutating func settings(_ node: Node, _ path: String) -> [(key: String, value: String)] {
        guard case .mapping(let m) = node else {
            if case .scalar(let s) = node, s.string.isEmpty || s.string == "~" || s.string == "null" { return [] }
            report(node, path, "expected a mapping of settings, got \(describe(node))")
            return []
        }
        var out: [(key: String, value: String)] = []
        for (k, v) in m {
            guard case .scalar(let ks) = k else { report(k, path, "setting names must be plain words"); continue }
            switch v {
            case .scalar(let vs): out.append((ks.string, vs.string))
            case .sequence(let seq):
                // Lists of scalars are passed comma-separated.
                var items: [String] = []
                for item in seq {
                    if case .scalar(let s) = item { items.append(s.string) }
                    else { report(item, "\(path).\(ks.string)", "setting lists may hold only plain values") }
                }
                out.append((ks.string, items.joined(separator: ",")))
            default:
                report(v, "\(path).\(ks.string)", "a setting must be a plain value or a list, got \(describe(v))")
            }
        }
        return out
    }

    func resolve(_ p: String) -> String {
        if p.hasPrefix("/") { return p }
        return baseDirectory.hasSuffix("/") ? baseDirectory + p : baseDirectory + "/" + p
    }

    // MARK: - sections

    /// Largest key file accepted (a key is 16 bytes or more; a few dozen is plenty).
    static let maxKeyFileBytes: Int64 = 64 << 10

    static let topLevel = ["cluster", "nodes", "memory", "plugin_path", "transport", "coherence",
                           "devices", "ioapic_node", "guest", "key_file", "timeouts", "bench", "metrics",
                           "placement"]

    mutating func cluster(_ root: Node) -> ClusterConfig? {
        guard let top = mapping(root, "", allowed: Self.topLevel + [Self.sshSection]) else { return nil }
        var ok = true
        func need(_ key: String, _ what: String) -> Node? {
            if let v = top[key]?.value { return v }
            report(root, key, "missing (\(what))")
            ok = false
            return nil
        }

        var name = ""
        if let n = need("cluster", "the cluster's name, e.g. cluster: demo") {
            name = string(n, "cluster") ?? ""
            if name.isEmpty || name.contains(where: { $0.isWhitespace }) {
                report(n, "cluster", "must be a non-empty name without spaces")
                ok = false
            }
        }

        var nodes: [NodeConfig] = []
        if let n = need("nodes", "a list of nodes with id, address, port, vcpus") {
            nodes = nodeList(n)
            checkLimits(nodes, rawCount: rawNodeCount(n), n)
        }
        var metrics: MetricsConfig?
        if let m = top["metrics"]?.value { metrics = metricsSection(m, nodes: nodes, nodeCount: max(nodes.count, rawNodeCount(top["nodes"]?.value))) }

        var memory: UInt64 = 64 << 20
        if let m = top["memory"]?.value,
           let v = size(m, "memory", range: ClusterConfig.minMemoryBytes...ClusterConfig.maxMemoryBytes) {
            if v % 4096 != 0 { report(m, "memory", "\(v) is not a multiple of the 4 KiB page size") }
            else { memory = v }
        }

        var pluginPath: [String] = []
        if let p = top["plugin_path"]?.value {
            switch p {
            case .sequence(let seq):
                for (i, item) in seq.enumerated() {
                    if let s = string(item, "plugin_path[\(i)]") { pluginPath.append(resolve(s)) }
                }
            case .scalar:
                if let s = string(p, "plugin_path") { pluginPath.append(resolve(s)) }
            default: report(p, "plugin_path", "expected a directory or a list of directories")
            }
        }

        var transport = PluginRef(plugin: "")
        var faultsNode: Node?
        if let t = need("transport", "the transport plugin, e.g. transport: {plugin: transport-tcp}") {
            transport = pluginRef(t, "transport", allowed: ["plugin", "settings", "faults"], faults: &faultsNode)
        }
        var faultPlan = FaultPlan()
        if let f = faultsNode {
            faultPlan = faults(f, nodeCount: max(nodes.count, rawNodeCount(top["nodes"]?.value)))
        }
        var coherence = PluginRef(plugin: "")
        if let c = need("coherence", "the coherence plugin, e.g. coherence: {plugin: dsm-ivy}") {
            var none: Node?
            coherence = pluginRef(c, "coherence", allowed: ["plugin", "settings"], faults: &none)
        }

        var placement: PlacementConfig?
        if let p = top["placement"]?.value { placement = placementSection(p) }

        var devices: [DeviceConfig] = []
        if let d = top["devices"]?.value { devices = deviceList(d, nodeCount: max(nodes.count, rawNodeCount(top["nodes"]?.value))) }

        var ioapicNode: UInt32 = 0
        if let n = top["ioapic_node"]?.value,
           let v = integer(n, "ioapic_node", range: 0...UInt64(max(nodes.count, rawNodeCount(top["nodes"]?.value), 1) - 1), what: "a node id of this cluster") {
            ioapicNode = UInt32(v)
        }

        var guest: GuestConfig?
        if let g = top["guest"]?.value, let m = mapping(g, "guest", allowed: ["image", "cmdline", "initrd", "modules", "protocol"]) {
            var image = ""
            if let i = m["image"]?.value, let path = string(i, "guest.image").map(resolve) {
                if let problem = fileProblem(path), problem != FileProblems.missing {
                    report(i, "guest.image", "cannot read '\(path)': it \(problem)")  // a missing one: validate(path:)
                }
                image = path
            } else if m["image"] == nil { report(g, "guest.image", "missing (path of the guest image)") }
            let cmdline = m["cmdline"].flatMap { string($0.value, "guest.cmdline") } ?? ""
            if cmdline.utf8.count > 4095 { report(m["cmdline"]?.value, "guest.cmdline", "longer than 4095 bytes") }
            var initrd: String?
            if let i = m["initrd"]?.value, let path = string(i, "guest.initrd").map(resolve) {
                checkFile(i, "guest.initrd", path)
                initrd = path
            }
            var modules: [String] = []
            if let ml = m["modules"]?.value {
                switch ml {
                case .sequence(let seq):
                    if seq.count > GuestConfig.maxModules {
                        report(ml, "guest.modules", "\(seq.count) modules; at most \(GuestConfig.maxModules) are supported")
                    }
                    for (i, item) in seq.enumerated() {
                        if let path = string(item, "guest.modules[\(i)]").map(resolve) {
                            checkFile(item, "guest.modules[\(i)]", path)
                            modules.append(path)
                        }
                    }
                default:
                    report(ml, "guest.modules", "expected a list of file paths, got \(describe(ml))")
                }
            }
            var proto = "auto"
            if let p = m["protocol"]?.value, let text = string(p, "guest.protocol") {
                let known = ["auto", "multiboot", "linux", "giantvm"]
                if known.contains(text) { proto = text } else {
                    report(p, "guest.protocol", "'\(text)' is not one of \(known.joined(separator: ", "))")
                }
            }
            guest = GuestConfig(image: image, cmdline: cmdline, initrd: initrd, modules: modules, bootProtocol: proto)
        }

        var keyFile: String?
        if let k = top["key_file"]?.value, let s = string(k, "key_file") {
            let path = resolve(s)
            if let problem = fileProblem(path) {
                report(k, "key_file", "cannot read '\(path)': it \(problem)")
            } else if let size = fileSize(path), size > Self.maxKeyFileBytes {
                report(k, "key_file", "'\(path)' is \(size) bytes: a key file holds at most \(Self.maxKeyFileBytes) "
                       + "(e.g. head -c 32 /dev/urandom | base64 > cluster.key)")
            } else if let mode = permissions(path), mode & 0o004 != 0 {
                warn(k, "key_file", "'\(path)' is readable by every user (mode \(String(mode & 0o777, radix: 8))): "
                     + "anyone on this machine can join the cluster; chmod 600 it")
            }
            keyFile = path
        } else if max(nodes.count, rawNodeCount(top["nodes"]?.value)) > 1 {
            warn(nil, "key_file", "not set: peers are accepted by cluster name and node id only, so any process "
                 + "that reaches a node's port first can claim a node id; set key_file to a shared secret")
        }

        if let s = top[Self.sshSection]?.value { ssh = sshSettings(s) }

        var timeouts = Timeouts()
        if let t = top["timeouts"]?.value, let m = mapping(t, "timeouts", allowed: ["connect", "heartbeat", "failure"]) {
            let range = Durations.timeoutRange
            if let v = m["connect"], let d = duration(v.value, "timeouts.connect", range: range) { timeouts.connect = Double(d) / 1e9 }
            if let v = m["heartbeat"], let d = duration(v.value, "timeouts.heartbeat", range: range) { timeouts.heartbeat = Double(d) / 1e9 }
            if let v = m["failure"], let d = duration(v.value, "timeouts.failure", range: range) { timeouts.failure = Double(d) / 1e9 }
            if timeouts.heartbeat * 2 > timeouts.failure {
                report(t, "timeouts", "failure (\(timeouts.failure)s) must be at least twice heartbeat (\(timeouts.heartbeat)s)")
            }
        }

        // Tool sections are kept as the file's own text: never re-serialized (which would expand
        // aliases), and already bounded by YAMLBounds.
        var extra: [String: String] = [:]
        if top["bench"] != nil { extra["bench"] = topLevelText["bench"] ?? "" }

        guard ok else { return nil }
        var config = ClusterConfig(sourcePath: file, cluster: name, nodes: nodes, memoryBytes: memory,
                             pluginPath: pluginPath, transport: transport, coherence: coherence,
                             devices: devices, ioapicNode: ioapicNode, guest: guest, keyFile: keyFile,
                             timeouts: timeouts, extra: extra, faults: faultPlan)
        config.metrics = metrics
        config.placement = placement
        return config
    }

    /// `placement: {plugin: NAME, interval: 1s, sample_pages: 4096, settings: {...}}`.
    mutating func placementSection(_ node: Node) -> PlacementConfig? {
        guard let m = mapping(node, "placement", allowed: ["plugin", "settings", "interval", "sample_pages"]) else { return nil }
        var out = PlacementConfig(plugin: PluginRef(plugin: ""))
        if let p = m["plugin"]?.value { out.plugin.plugin = string(p, "placement.plugin") ?? "" }
        else { report(node, "placement.plugin", "missing (a placement plugin name or path to a .so, e.g. placement)") }
        if let s = m["settings"]?.value { out.plugin.settings = settings(s, "placement.settings") }
        if let i = m["interval"]?.value,
           let d = duration(i, "placement.interval", range: PlacementConfig.intervalRange) { out.intervalNanoseconds = d }
        if let n = m["sample_pages"]?.value,
           let v = integer(n, "placement.sample_pages", range: PlacementConfig.samplePagesRange, what: "a page count") {
            out.samplePages = Int(v)
        }
        return out
    }

    /// `plugin:` and `settings:`; the `faults:` value (transport only) is handed back in `faults`.
    mutating func pluginRef(_ node: Node, _ path: String, allowed: [String], faults: inout Node?) -> PluginRef {
        if case .scalar = node, let s = string(node, path) { return PluginRef(plugin: s) }
        guard let m = mapping(node, path, allowed: allowed) else { return PluginRef(plugin: "") }
        var ref = PluginRef(plugin: "")
        if let p = m["plugin"]?.value { ref.plugin = string(p, "\(path).plugin") ?? "" }
        else { report(node, "\(path).plugin", "missing (a plugin name or path to a .so)") }
        if let s = m["settings"]?.value { ref.settings = settings(s, "\(path).settings") }
        faults = m["faults"]?.value
        return ref
    }

    /// Number of entries in the `nodes:` list, valid or not (so a bad node does not also make
    /// every device on it "not a node of this cluster").
    func rawNodeCount(_ node: Node?) -> Int {
        if case .sequence(let s)? = node { return s.count }
        return 0
    }

    mutating func nodeList(_ node: Node) -> [NodeConfig] {
        guard case .sequence(let seq) = node else {
            report(node, "nodes", "expected a list of nodes, got \(describe(node))")
            return []
        }
        if seq.count == 0 { report(node, "nodes", "the list is empty: a cluster needs at least one node") }
        var nodes: [NodeConfig] = []
        var seenIDs: [UInt32: Int] = [:]
        var seenEndpoints: [String: Int] = [:]
        for (i, item) in seq.enumerated() {
            let path = "nodes[\(i)]"
            guard let m = mapping(item, path, allowed: ["id", "address", "port", "vcpus", "ssh"]) else { continue }
            var id: UInt32?
            if let v = m["id"]?.value { id = integer(v, "\(path).id", range: 0...255, what: "a node id (0-255)").map(UInt32.init) }
            else { report(item, "\(path).id", "missing") }
            var address: String?
            if let v = m["address"]?.value { address = string(v, "\(path).address") }
            else { report(item, "\(path).address", "missing (an IP address or host name)") }
            var port: UInt16?
            if let v = m["port"]?.value { port = integer(v, "\(path).port", range: 1...65535, what: "a port").map(UInt16.init) }
            else { report(item, "\(path).port", "missing") }
            var vcpus: UInt32 = 1
            if let v = m["vcpus"]?.value, let n = integer(v, "\(path).vcpus", range: 0...255, what: "a vCPU count (0-255)") {
                vcpus = UInt32(n)
            }
            if let id, let idNode = m["id"]?.value {
                if let first = seenIDs[id] {
                    report(idNode, "\(path).id", "duplicate node id \(id) (also nodes[\(first)])")
                } else { seenIDs[id] = i }
            }
            if let address, let port {
                let key = "\(address):\(port)"
                if let first = seenEndpoints[key] {
                    report(m["port"]?.value, "\(path).port", "\(key) is also used by nodes[\(first)]")
                } else { seenEndpoints[key] = i }
            }
            let ssh = m["ssh"].flatMap { sshTarget($0.value, "\(path).ssh") }
            if let id, let address, let port {
                var n = NodeConfig(id: id, address: address, port: port, vcpus: vcpus)
                n.ssh = ssh
                nodes.append(n)
            }
        }
        nodes.sort { $0.id < $1.id }
        for (i, n) in nodes.enumerated() where n.id != UInt32(i) {
            report(node, "nodes", "node ids must be 0, 1, ... \(seq.count - 1) without gaps (missing id \(i))")
            break
        }
        if !nodes.isEmpty && nodes.allSatisfy({ $0.vcpus == 0 }) {
            report(node, "nodes", "no node has a vCPU (set vcpus: on at least one node)")
        }
        return nodes
    }

    mutating func deviceList(_ node: Node, nodeCount: Int) -> [DeviceConfig] {
        guard case .sequence(let seq) = node else {
            report(node, "devices", "expected a list of devices, got \(describe(node))")
            return []
        }
        var out: [DeviceConfig] = []
        var names: [String: Int] = [:]
        for (i, item) in seq.enumerated() {
            let path = "devices[\(i)]"
            guard let m = mapping(item, path, allowed: ["name", "plugin", "model", "node", "base", "irq", "settings"]) else { continue }
            var name = ""
            if let v = m["name"]?.value { name = string(v, "\(path).name") ?? "" } else { report(item, "\(path).name", "missing") }
            if !name.isEmpty, let first = names[name] {
                report(m["name"]?.value, "\(path).name", "duplicate device name '\(name)' (also devices[\(first)])")
            } else if !name.isEmpty { names[name] = i }
            let plugin = m["plugin"].flatMap { string($0.value, "\(path).plugin") } ?? "devices"
            var model = ""
            if let v = m["model"]?.value { model = string(v, "\(path).model") ?? "" } else { report(item, "\(path).model", "missing (e.g. uart16550)") }
            var home: UInt32 = 0
            if let v = m["node"]?.value {
                home = integer(v, "\(path).node", range: 0...UInt64(max(nodeCount, 1) - 1),
                               what: "a node id of this cluster (0...\(max(nodeCount, 1) - 1))").map(UInt32.init) ?? 0
            }
            let base = m["base"].flatMap { integer($0.value, "\(path).base", range: 0...UInt64.max, what: "an address") }
            let irq = m["irq"].flatMap { integer($0.value, "\(path).irq", range: 0...23, what: "an IOAPIC pin (0-23)") }.map(UInt32.init)
            var deviceSettings: [(key: String, value: String)] = []
            if let s = m["settings"]?.value { deviceSettings = settings(s, "\(path).settings") }
            out.append(DeviceConfig(name: name, plugin: plugin, model: model, node: home, base: base, irq: irq, settings: deviceSettings))
        }
        return out
    }
}
