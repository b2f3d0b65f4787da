import Foundation
import Yams

/// Reads and validates a cluster config.
public enum ConfigLoader {
    /// Reads `path`; throws `ConfigError` listing every problem.
    public static func load(path: String) throws -> ClusterConfig {
        guard FileManager.default.fileExists(atPath: path) else {
            throw ConfigError(diagnostics: [Diagnostic(file: path, line: 0, column: 0, path: "",
                                                       message: "no such file")])
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigError(diagnostics: [Diagnostic(file: path, line: 0, column: 0, path: "",
                                                       message: "cannot read the file (permissions?)")])
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw ConfigError(diagnostics: [Diagnostic(file: path, line: 0, column: 0, path: "",
                                                       message: "the file is not UTF-8 text")])
        }
        return try parse(yaml: text, path: path)
    }

    /// Parses YAML text; `path` names it in messages and anchors relative paths.
    public static func parse(yaml: String, path: String) throws -> ClusterConfig {
        var reader = Reader(file: path)
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
        if let config, reader.problems.isEmpty { return config }
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

    /// Sizes: plain bytes or with a unit (KiB, MiB, GiB, K, M, G).
    mutating func size(_ node: Node, _ path: String) -> UInt64? {
        guard case .scalar(let s) = node else {
            report(node, path, "expected a size like 64MiB, got \(describe(node))")
            return nil
        }
        let text = s.string.trimmingCharacters(in: .whitespaces)
        let units: [(String, UInt64)] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10),
                                         ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10), ("B", 1)]
        var number = text
        var scale: UInt64 = 1
        for (u, m) in units where text.hasSuffix(u) {
            number = String(text.dropLast(u.count)).trimmingCharacters(in: .whitespaces)
            scale = m
            break
        }
        guard let n = UInt64(number), n.multipliedReportingOverflow(by: scale).overflow == false else {
            report(node, path, "'\(s.string)' is not a size (use bytes or a unit: 64MiB, 1GiB)")
            return nil
        }
        return n * scale
    }

    /// Durations: seconds as a number, or with a unit (ms, s).
    mutating func duration(_ node: Node, _ path: String) -> Double? {
        guard case .scalar(let s) = node else {
            report(node, path, "expected a duration like 3s or 200ms, got \(describe(node))")
            return nil
        }
        let text = s.string.trimmingCharacters(in: .whitespaces)
        var value: Double?
        if text.hasSuffix("ms") { value = Double(text.dropLast(2)).map { $0 / 1000 } }
        else if text.hasSuffix("s") { value = Double(text.dropLast(1)) }
        else { value = Double(text) }
        guard let v = value, v > 0, v.isFinite else {
            report(node, path, "'\(s.string)' is not a positive duration (e.g. 3s, 200ms)")
            return nil
        }
        return v
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

    static let topLevel = ["cluster", "nodes", "memory", "plugin_path", "transport", "coherence",
                           "devices", "ioapic_node", "guest", "key_file", "timeouts", "bench"]

    mutating func cluster(_ root: Node) -> ClusterConfig? {
        guard let top = mapping(root, "", allowed: Self.topLevel) else { return nil }
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
        if let n = need("nodes", "a list of nodes with id, address, port, vcpus") { nodes = nodeList(n) }

        var memory: UInt64 = 64 << 20
        if let m = top["memory"]?.value {
            if let v = size(m, "memory") {
                if v % 4096 != 0 { report(m, "memory", "\(v) is not a multiple of the 4 KiB page size") }
                else if v < (1 << 20) { report(m, "memory", "\(v) bytes is too small (at least 1MiB)") }
                else if v > (1 << 40) { report(m, "memory", "\(v) bytes is too large (at most 1TiB)") }
                else { memory = v }
            }
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
        if let t = need("transport", "the transport plugin, e.g. transport: {plugin: transport-tcp}") {
            transport = pluginRef(t, "transport", allowed: ["plugin", "settings", "faults"])
        }
        var coherence = PluginRef(plugin: "")
        if let c = need("coherence", "the coherence plugin, e.g. coherence: {plugin: dsm-ivy}") {
            coherence = pluginRef(c, "coherence", allowed: ["plugin", "settings"])
        }

        var devices: [DeviceConfig] = []
        if let d = top["devices"]?.value { devices = deviceList(d, nodeCount: max(nodes.count, rawNodeCount(top["nodes"]?.value))) }

        var ioapicNode: UInt32 = 0
        if let n = top["ioapic_node"]?.value,
           let v = integer(n, "ioapic_node", range: 0...UInt64(max(nodes.count, rawNodeCount(top["nodes"]?.value), 1) - 1), what: "a node id of this cluster") {
            ioapicNode = UInt32(v)
        }

        var guest: GuestConfig?
        if let g = top["guest"]?.value, let m = mapping(g, "guest", allowed: ["image", "cmdline", "initrd", "protocol"]) {
            var image = ""
            if let i = m["image"]?.value { image = string(i, "guest.image").map(resolve) ?? "" }
            else { report(g, "guest.image", "missing (path of the guest image)") }
            let cmdline = m["cmdline"].flatMap { string($0.value, "guest.cmdline") } ?? ""
            if cmdline.utf8.count > 4095 { report(m["cmdline"]?.value, "guest.cmdline", "longer than 4095 bytes") }
            var initrd: String?
            if let i = m["initrd"]?.value, let path = string(i, "guest.initrd").map(resolve) {
                if !FileManager.default.isReadableFile(atPath: path) { report(i, "guest.initrd", "cannot read '\(path)'") }
                initrd = path
            }
            var proto = "auto"
            if let p = m["protocol"]?.value, let text = string(p, "guest.protocol") {
                let known = ["auto", "multiboot", "linux", "giantvm"]
                if known.contains(text) { proto = text } else {
                    report(p, "guest.protocol", "'\(text)' is not one of \(known.joined(separator: ", "))")
                }
            }
            guest = GuestConfig(image: image, cmdline: cmdline, initrd: initrd, bootProtocol: proto)
        }

        var keyFile: String?
        if let k = top["key_file"]?.value, let s = string(k, "key_file") {
            let path = resolve(s)
            if !FileManager.default.isReadableFile(atPath: path) {
                report(k, "key_file", "cannot read '\(path)'")
            }
            keyFile = path
        }

        var timeouts = Timeouts()
        if let t = top["timeouts"]?.value, let m = mapping(t, "timeouts", allowed: ["connect", "heartbeat", "failure"]) {
            if let v = m["connect"], let d = duration(v.value, "timeouts.connect") { timeouts.connect = d }
            if let v = m["heartbeat"], let d = duration(v.value, "timeouts.heartbeat") { timeouts.heartbeat = d }
            if let v = m["failure"], let d = duration(v.value, "timeouts.failure") { timeouts.failure = d }
            if timeouts.heartbeat * 2 > timeouts.failure {
                report(t, "timeouts", "failure (\(timeouts.failure)s) must be at least twice heartbeat (\(timeouts.heartbeat)s)")
            }
        }

        var extra: [String: String] = [:]
        if let b = top["bench"]?.value { extra["bench"] = (try? Yams.serialize(node: b)) ?? "" }

        guard ok else { return nil }
        return ClusterConfig(sourcePath: file, cluster: name, nodes: nodes, memoryBytes: memory,
                             pluginPath: pluginPath, transport: transport, coherence: coherence,
                             devices: devices, ioapicNode: ioapicNode, guest: guest, keyFile: keyFile,
                             timeouts: timeouts, extra: extra)
    }

    mutating func pluginRef(_ node: Node, _ path: String, allowed: [String]) -> PluginRef {
        if case .scalar = node, let s = string(node, path) { return PluginRef(plugin: s) }
        guard let m = mapping(node, path, allowed: allowed) else { return PluginRef(plugin: "") }
        var ref = PluginRef(plugin: "")
        if let p = m["plugin"]?.value { ref.plugin = string(p, "\(path).plugin") ?? "" }
        else { report(node, "\(path).plugin", "missing (a plugin name or path to a .so)") }
        if let s = m["settings"]?.value { ref.settings = settings(s, "\(path).settings") }
        if let f = m["faults"]?.value {
            // Fault-injection rules are kept as YAML text for the transport decorator to parse.
            ref.settings.append(("__faults", (try? Yams.serialize(node: f)) ?? ""))
        }
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
            guard let m = mapping(item, path, allowed: ["id", "address", "port", "vcpus"]) else { continue }
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
            if let id, let address, let port { nodes.append(NodeConfig(id: id, address: address, port: port, vcpus: vcpus)) }
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
