// PluginLoader: finds a plugin .so by name or path, dlopen()s it, calls its entry symbol and checks
// the descriptor (ABI version window, kind, name, the declared size of its ops table, required
// hooks). Every failure is a distinct PluginLoadError whose message names the file and says what
// to do, and a refused plugin is unloaded again (dlclose), except a Swift image (see `unload`).

import Foundation
import PluginAPI
import Config

public enum PluginKind: UInt32, Sendable, CustomStringConvertible {
    case transport = 1, coherence = 2, device = 3, placement = 4
    public var description: String {
        switch self {
        case .transport: return "transport"
        case .coherence: return "coherence"
        case .device: return "device"
        case .placement: return "placement"
        }
    }
}

public enum PluginLoadError: Error, CustomStringConvertible, Equatable {
    case notFound(name: String, searched: [String])
    case fileMissing(path: String)
    case cannotOpen(path: String, reason: String)
    case noEntrySymbol(path: String)
    case nullDescriptor(path: String)
    case abiTooOld(path: String, name: String, abi: UInt32)
    case abiTooNew(path: String, name: String, abi: UInt32)
    case unknownKind(path: String, kind: UInt32)
    case wrongKind(path: String, name: String, found: PluginKind, expected: PluginKind)
    case duplicateName(name: String, path: String, firstPath: String)
    case badDescriptor(path: String, problem: String)
    case opsTooSmall(path: String, name: String, table: String, size: UInt32, needed: Int)

    public var description: String {
        switch self {
        case let .notFound(name, searched):
            return "plugin '\(name)' not found: looked for lib\(name).so in \(searched.isEmpty ? "(no directories)" : searched.joined(separator: ", ")); build it (swift build) or give a path to the .so"
        case let .fileMissing(path):
            return "plugin file '\(path)' does not exist"
        case let .cannotOpen(path, reason):
            return "cannot load plugin '\(path)': \(reason)"
        case let .noEntrySymbol(path):
            return "'\(path)' is not a GiantVM plugin: it does not export the entry symbol \(GVM_PLUGIN_ENTRY_SYMBOL)"
        case let .nullDescriptor(path):
            return "plugin '\(path)': its \(GVM_PLUGIN_ENTRY_SYMBOL) returned no descriptor"
        case let .abiTooOld(path, name, abi):
            return "plugin '\(name)' (\(path)) was built for plugin ABI \(abi), older than the oldest this giantvm supports (\(GVM_ABI_MIN_VERSION)): rebuild it against the current giantvm_plugin.h (ABI \(GVM_ABI_VERSION))"
        case let .abiTooNew(path, name, abi):
            return "plugin '\(name)' (\(path)) was built for plugin ABI \(abi), newer than this giantvm supports (\(GVM_ABI_VERSION)): use a newer giantvm or rebuild the plugin against ABI \(GVM_ABI_VERSION)"
        case let .unknownKind(path, kind):
            return "plugin '\(path)' declares an unknown kind \(kind) (expected 1 transport, 2 coherence, 3 device or 4 placement)"
        case let .wrongKind(path, name, found, expected):
            return "plugin '\(name)' (\(path)) is a \(found) plugin, but a \(expected) plugin is needed here"
        case let .duplicateName(name, path, firstPath):
            return "two plugins are named '\(name)': '\(path)' and '\(firstPath)'; plugin names must be unique"
        case let .badDescriptor(path, problem):
            return "plugin '\(path)' has a malformed descriptor: \(problem)"
        case let .opsTooSmall(path, name, table, size, needed):
            return "plugin '\(name)' (\(path)) declares a \(table) table of \(size) bytes, but this giantvm needs at least \(needed) bytes (up to its last required hook, ABI \(GVM_ABI_VERSION)): rebuild it against the current giantvm_plugin.h"
        }
    }
}

/// A loaded, version-checked plugin. The .so stays loaded for the life of the process.
public struct LoadedPlugin: @unchecked Sendable {
    public let name: String
    public let version: String
    public let summary: String
    public let path: String
    public let kind: PluginKind
    public let abiVersion: UInt32
    public let descriptor: UnsafePointer<gvm_plugin_descriptor>
    /// ABI 3 self-description (PluginDescription.swift): the descriptor's text and settings.
    public let descriptionText: String?
    public let settings: [PluginSettingInfo]
    /// The host's copy of the plugin's ops table, as long as this giantvm's table: the bytes the
    /// plugin declared (its `size`), zeros after them (hooks past a shorter table are absent).
    let ops: UnsafeRawPointer

    public var transportOps: UnsafePointer<gvm_transport_ops>? {
        kind == .transport ? ops.assumingMemoryBound(to: gvm_transport_ops.self) : nil
    }
    public var coherenceOps: UnsafePointer<gvm_coherence_ops>? {
        kind == .coherence ? ops.assumingMemoryBound(to: gvm_coherence_ops.self) : nil
    }
    public var deviceOps: UnsafePointer<gvm_device_ops>? {
        kind == .device ? ops.assumingMemoryBound(to: gvm_device_ops.self) : nil
    }
    /// The placement-policy ops (ABI 3), when this is a placement plugin.
    public var placementOps: UnsafePointer<gvm_placement_ops>? {
        kind == .placement ? ops.assumingMemoryBound(to: gvm_placement_ops.self) : nil
    }

    /// Names of the device models a device plugin offers.
    public var deviceModels: [(name: String, summary: String)] {
        guard let ops = deviceOps else { return [] }
        return (0..<Int(ops.pointee.model_count)).map { i in
            let m = ops.pointee.models[i]
            return (m.name.map { String(cString: $0) } ?? "?", m.summary.map { String(cString: $0) } ?? "")
        }
    }

    public func deviceModel(named model: String) -> UnsafePointer<gvm_device_model>? {
        guard let ops = deviceOps else { return nil }
        for i in 0..<Int(ops.pointee.model_count) {
            let m = ops.pointee.models + i
            if let n = m.pointee.name, String(cString: n) == model { return m }
        }
        return nil
    }
}

/// Loads plugins by name (lib<name>.so in the search path) or by path (anything containing '/'
/// or ending in .so). Not thread-safe: load plugins from the main thread at start-up.
public final class PluginLoader {
    public let searchPath: [String]
    private var loadedByName: [String: LoadedPlugin] = [:]
    private var loadedByPath: [String: LoadedPlugin] = [:]

    public init(searchPath: [String]) {
        self.searchPath = searchPath
    }

    /// The directories searched, in order: the config's `plugin_path`, $GIANTVM_PLUGIN_PATH
    /// (colon-separated), the directory holding the giantvm executable (where `swift build`
    /// puts the in-tree plugins), and PREFIX/lib/giantvm/plugins for an executable installed in
    /// PREFIX/bin (where scripts/install.sh puts the plugins).
    public static func defaultSearchPath(config: ClusterConfig?) -> [String] {
        var dirs = config?.pluginPath ?? []
        if let env = ProcessInfo.processInfo.environment["GIANTVM_PLUGIN_PATH"] {
            dirs += env.split(separator: ":").map(String.init).filter { !$0.isEmpty }
        }
        dirs.append(executableDirectory())
        dirs.append(installedPluginDirectory(executableDirectory: executableDirectory()))
        var seen = Set<String>()
        return dirs.filter { seen.insert($0).inserted }
    }

    /// PREFIX/lib/giantvm/plugins for an executable in PREFIX/bin.
    public static func installedPluginDirectory(executableDirectory: String) -> String {
        (((executableDirectory as NSString).deletingLastPathComponent as NSString)
            .appendingPathComponent("lib/giantvm/plugins") as NSString).standardizingPath
    }

    /// The directory of the running executable.
    public static func executableDirectory() -> String {
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
            ?? CommandLine.arguments[0]
        return (exe as NSString).deletingLastPathComponent
    }

    /// Resolves a plugin reference to a file path.
    public func resolve(_ nameOrPath: String) throws -> String {
        if nameOrPath.contains("/") || nameOrPath.hasSuffix(".so") {
            let path = nameOrPath.hasPrefix("/") ? nameOrPath
                : FileManager.default.currentDirectoryPath + "/" + nameOrPath
            guard FileManager.default.fileExists(atPath: path) else { throw PluginLoadError.fileMissing(path: path) }
            return (path as NSString).standardizingPath
        }
        for dir in searchPath {
            let candidate = (dir as NSString).appendingPathComponent("lib\(nameOrPath).so")
            if FileManager.default.fileExists(atPath: candidate) { return candidate }
        }
        throw PluginLoadError.notFound(name: nameOrPath, searched: searchPath)
    }

    /// Loads (or returns the already loaded) plugin and checks its kind when `kind` is given.
    public func load(_ nameOrPath: String, kind: PluginKind? = nil) throws -> LoadedPlugin {
        let path = try resolve(nameOrPath)
        if let p = loadedByPath[path] {
            if let kind, p.kind != kind { throw PluginLoadError.wrongKind(path: path, name: p.name, found: p.kind, expected: kind) }
            return p
        }
        let (plugin, handle) = try Self.open(path: path)
        if let first = loadedByName[plugin.name], first.path != path {
            plugin.ops.deallocate()
            Self.unload(handle, path: path)
            throw PluginLoadError.duplicateName(name: plugin.name, path: path, firstPath: first.path)
        }
        loadedByName[plugin.name] = plugin
        loadedByPath[path] = plugin
        if let kind, plugin.kind != kind {
            throw PluginLoadError.wrongKind(path: path, name: plugin.name, found: plugin.kind, expected: kind)
        }
        return plugin
    }

    /// Every plugin file in the search path (lib*.so exporting the entry symbol), loaded and
    /// checked; failures are returned beside the successes so `plugins list` can show both.
    /// Test fixtures (lib test-*.so, deliberately broken plugins) are skipped unless asked for.
    public func loadAll(includeTestFixtures: Bool = false) -> [Result<LoadedPlugin, PluginLoadError>] {
        var results: [Result<LoadedPlugin, PluginLoadError>] = []
        var seen = Set<String>()
        for dir in searchPath {
            guard let files = try? FileManager.default.contentsOfDirectory(atPath: dir) else { continue }
            for f in files.sorted() where f.hasPrefix("lib") && f.hasSuffix(".so") {
                if !includeTestFixtures && f.hasPrefix("libtest-") { continue }
                let path = (dir as NSString).appendingPathComponent(f)
                guard seen.insert(path).inserted, Self.exportsEntry(path: path) else { continue }
                do { results.append(.success(try load(path))) }
                catch let e as PluginLoadError { results.append(.failure(e)) }
                catch { results.append(.failure(.cannotOpen(path: path, reason: "\(error)"))) }
            }
        }
        return results
    }

    /// True if the file is a shared object exporting the entry symbol (checked without running
    /// its code: RTLD_LAZY | RTLD_LOCAL, then dlsym).
    static func exportsEntry(path: String) -> Bool {
        guard let h = dlopen(path, RTLD_LAZY | RTLD_LOCAL) else { return false }
        defer { unload(h, path: path) }
        return dlsym(h, GVM_PLUGIN_ENTRY_SYMBOL) != nil
    }

    /// Closes a handle this loader opened for a plugin it does not keep, unless the image is
    /// registered with the Swift runtime: a Swift image (or any image linked with Swift's start-up
    /// object) hands the runtime its metadata sections when it is loaded, and the runtime never
    /// forgets them, so unmapping it would crash the next type-conformance lookup. Such an image
    /// stays mapped (and unused).
    static func unload(_ handle: UnsafeMutableRawPointer, path: String) {
        if registersWithSwiftRuntime(path: path) { return }
        dlclose(handle)
    }

    /// True if the ELF file at `path` has a section named "swift5_*" (what Swift's start-up
    /// object registers with the runtime), or if that cannot be told (then unloading is unsafe).
    /// Every offset read from the file is checked against its size before use.
    static func registersWithSwiftRuntime(path: String) -> Bool {
        guard let data = FileManager.default.contents(atPath: path) else { return true }
        return data.withUnsafeBytes { (f: UnsafeRawBufferPointer) -> Bool in
            func u16(_ o: Int) -> Int? { o >= 0 && o + 2 <= f.count ? Int(f.loadUnaligned(fromByteOffset: o, as: UInt16.self)) : nil }
            func u32(_ o: Int) -> Int? { o >= 0 && o + 4 <= f.count ? Int(f.loadUnaligned(fromByteOffset: o, as: UInt32.self)) : nil }
            func u64(_ o: Int) -> Int? {
                guard o >= 0, o + 8 <= f.count else { return nil }
                let v = f.loadUnaligned(fromByteOffset: o, as: UInt64.self)
                return v <= UInt64(f.count) ? Int(v) : nil
            }
            // ELF64, little endian (the only images this host loads).
            guard f.count >= 64, f[0] == 0x7F, f[1] == 0x45, f[2] == 0x4C, f[3] == 0x46, f[4] == 2, f[5] == 1,
                  let shoff = u64(0x28), let shentsize = u16(0x3A), let shnum = u16(0x3C), let shstrndx = u16(0x3E),
                  shentsize >= 0x28, shstrndx < shnum, shoff + shnum * shentsize <= f.count,
                  let strtab = u64(shoff + shstrndx * shentsize + 0x18), let strsize = u64(shoff + shstrndx * shentsize + 0x20),
                  strtab + strsize <= f.count
            else { return true }
            let prefix = Array("swift5_".utf8)
            for i in 0..<shnum {
                guard let name = u32(shoff + i * shentsize) else { return true }
                let start = strtab + name
                guard name < strsize, start + prefix.count <= strtab + strsize else { continue }
                if prefix.indices.allSatisfy({ f[start + $0] == prefix[$0] }) { return true }
            }
            return false
        }
    }

    /// dlopen()s `path` and checks what its entry returns; on any refusal the image is unloaded.
    /// Returns the plugin and its handle (kept open for the life of the process).
    static func open(path: String) throws -> (LoadedPlugin, UnsafeMutableRawPointer) {
        // RTLD_LOCAL: each plugin keeps its own copy of PluginKit's symbols; RTLD_NOW: report
        // missing libraries (e.g. libibverbs) here, not at the first call.
        guard let handle = dlopen(path, RTLD_NOW | RTLD_LOCAL) else {
            let reason = dlerror().map { String(cString: $0) } ?? "unknown dlopen error"
            throw PluginLoadError.cannotOpen(path: path, reason: reason)
        }
        do {
            guard let sym = dlsym(handle, GVM_PLUGIN_ENTRY_SYMBOL) else {
                throw PluginLoadError.noEntrySymbol(path: path)
            }
            let entry = unsafeBitCast(sym, to: gvm_plugin_entry_fn.self)
            guard let d = entry() else { throw PluginLoadError.nullDescriptor(path: path) }
            return (try check(d, path: path), handle)
        } catch {
            unload(handle, path: path)
            throw error
        }
    }

    /// Checks a descriptor in the order its fields may be trusted (the ABI version first: it never
    /// moves) and copies its ops table. Does not touch the image's handle.
    static func check(_ d: UnsafePointer<gvm_plugin_descriptor>, path: String) throws -> LoadedPlugin {
        let abi = d.pointee.abi_version
        let name = d.pointee.name.map { String(cString: $0) } ?? ""
        if abi < GVM_ABI_MIN_VERSION { throw PluginLoadError.abiTooOld(path: path, name: name.isEmpty ? path : name, abi: abi) }
        if abi > GVM_ABI_VERSION { throw PluginLoadError.abiTooNew(path: path, name: name.isEmpty ? path : name, abi: abi) }
        guard !name.isEmpty else { throw PluginLoadError.badDescriptor(path: path, problem: "empty name") }
        guard let kind = PluginKind(rawValue: d.pointee.kind) else {
            throw PluginLoadError.unknownKind(path: path, kind: d.pointee.kind)
        }
        guard let raw = d.pointee.ops else { throw PluginLoadError.badDescriptor(path: path, problem: "no ops table") }
        let ops = try copyOps(raw, kind: kind, name: name, path: path)
        let settings: [PluginSettingInfo]
        do {
            try checkOps(ops, kind: kind, path: path)
            settings = try readSettingInfo(d, path: path)
        } catch {
            ops.deallocate()
            throw error
        }
        return LoadedPlugin(name: name, version: d.pointee.version.map { String(cString: $0) } ?? "?",
                            summary: d.pointee.summary.map { String(cString: $0) } ?? "",
                            path: path, kind: kind, abiVersion: abi, descriptor: d,
                            descriptionText: d.pointee.description.map { String(cString: $0) }, settings: settings,
                            ops: UnsafeRawPointer(ops))
    }

    /// The host's table type for a kind, and how much of it a plugin must declare: up to the end
    /// of its last REQUIRED hook (giantvm_plugin.h).
    static func opsLayout(_ kind: PluginKind) -> (table: String, size: Int, needed: Int) {
        func end<T>(_ field: PartialKeyPath<T>, _: T.Type, width: Int = MemoryLayout<UnsafeRawPointer>.size) -> Int {
            MemoryLayout<T>.offset(of: field)! + width
        }
        switch kind {
        case .transport:
            return ("gvm_transport_ops", MemoryLayout<gvm_transport_ops>.size, end(\gvm_transport_ops.destroy, gvm_transport_ops.self))
        case .coherence:
            return ("gvm_coherence_ops", MemoryLayout<gvm_coherence_ops>.size, end(\gvm_coherence_ops.destroy, gvm_coherence_ops.self))
        case .device:
            return ("gvm_device_ops", MemoryLayout<gvm_device_ops>.size, end(\gvm_device_ops.models, gvm_device_ops.self))
        case .placement:
            return ("gvm_placement_ops", MemoryLayout<gvm_placement_ops>.size, end(\gvm_placement_ops.destroy, gvm_placement_ops.self))
        }
    }

    /// Reads the table's declared size and copies min(declared, host size) bytes into a zeroed
    /// table of the host's size. Refuses a table shorter than its required hooks.
    static func copyOps(_ raw: UnsafeRawPointer, kind: PluginKind, name: String, path: String) throws -> UnsafeMutableRawPointer {
        let layout = opsLayout(kind)
        let declared = raw.load(as: UInt32.self)   // every ops table begins with its size
        guard Int(declared) >= layout.needed else {
            throw PluginLoadError.opsTooSmall(path: path, name: name, table: layout.table, size: declared, needed: layout.needed)
        }
        let copy = UnsafeMutableRawPointer.allocate(byteCount: layout.size, alignment: MemoryLayout<UnsafeRawPointer>.alignment)
        copy.initializeMemory(as: UInt8.self, repeating: 0, count: layout.size)
        copy.copyMemory(from: raw, byteCount: min(Int(declared), layout.size))
        return copy
    }

    /// The most models one device plugin may declare (a bound on a number read from the plugin).
    static let maxDeviceModels: UInt32 = 1024

    /// Required hooks must be present.
    static func checkOps(_ ops: UnsafeMutableRawPointer, kind: PluginKind, path: String) throws {
        func missing(_ hook: String) -> PluginLoadError {
            .badDescriptor(path: path, problem: "required hook '\(hook)' is NULL")
        }
        switch kind {
        case .transport:
            let o = ops.assumingMemoryBound(to: gvm_transport_ops.self).pointee
            if o.create == nil { throw missing("create") }
            if o.start == nil { throw missing("start") }
            if o.send == nil { throw missing("send") }
            if o.stop == nil { throw missing("stop") }
            if o.destroy == nil { throw missing("destroy") }
        case .coherence:
            let o = ops.assumingMemoryBound(to: gvm_coherence_ops.self).pointee
            if o.create == nil { throw missing("create") }
            if o.fault == nil { throw missing("fault") }
            if o.receive == nil { throw missing("receive") }
            if o.destroy == nil { throw missing("destroy") }
        case .device:
            let o = ops.assumingMemoryBound(to: gvm_device_ops.self).pointee
            guard o.model_count <= maxDeviceModels else {
                throw PluginLoadError.badDescriptor(path: path, problem: "model_count \(o.model_count) is more than \(maxDeviceModels)")
            }
            if o.model_count > 0 && o.models == nil { throw missing("models") }
            for i in 0..<Int(o.model_count) {
                let m = o.models[i]
                let n = m.name.map { String(cString: $0) } ?? "model \(i)"
                if m.name == nil { throw missing("models[\(i)].name") }
                if m.create == nil { throw missing("\(n).create") }
                if m.io == nil { throw missing("\(n).io") }
                if m.destroy == nil { throw missing("\(n).destroy") }
            }
        case .placement:
            let o = ops.assumingMemoryBound(to: gvm_placement_ops.self).pointee
            if o.create == nil { throw missing("create") }
            if o.observe == nil { throw missing("observe") }
            if o.destroy == nil { throw missing("destroy") }
        }
    }
}
