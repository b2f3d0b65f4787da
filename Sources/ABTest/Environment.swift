// Where a comparison ran, recorded in report.json so it can be reproduced and its figures trusted:
// the source commit (when the configs sit in a git checkout), the giantvm binary and every plugin
// each config loads (path and SHA-256), the host kernel and the CPU count.

import Config
import Crypto
import Foundation
import Glibc
import PluginHost

public struct FileIdentity: Codable, Sendable, Equatable {
    public var name: String
    public var path: String
    /// Hex SHA-256 of the file's bytes; nil when it cannot be read.
    public var sha256: String?
}

public struct RunEnvironment: Codable, Sendable {
    public var gitCommit: String?
    /// True when the checkout had uncommitted changes.
    public var gitDirty: Bool?
    public var giantvm: FileIdentity
    /// Per config (same order as the report's configs): the plugins it names, resolved like a node does.
    public var plugins: [[FileIdentity]]
    public var kernel: String
    public var machine: String
    public var hostname: String
    public var cpus: Int

    public static func sha256(path: String) -> String? {
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        return SHA256.hash(data: data).map { String(format: "%02x", $0) }.joined()
    }

    /// Collects the environment; `directory` is where git is asked (the first config's directory).
    public static func collect(giantvm: String, configs: [ClusterConfig], directory: String) -> RunEnvironment {
        var u = utsname()
        uname(&u)
        func field<T>(_ v: inout T) -> String {
            withUnsafePointer(to: &v) { $0.withMemoryRebound(to: CChar.self, capacity: MemoryLayout<T>.size) { String(cString: $0) } }
        }
        let plugins = configs.map { cfg -> [FileIdentity] in
            let loader = PluginLoader(searchPath: PluginLoader.defaultSearchPath(config: cfg))
            let names = [cfg.transport.plugin, cfg.coherence.plugin] + cfg.devices.map(\.plugin)
            var seen = Set<String>()
            return names.filter { seen.insert($0).inserted }.map { name in
                let path = (try? loader.resolve(name)) ?? "(not found)"
                return FileIdentity(name: name, path: path, sha256: sha256(path: path))
            }
        }
        // The configs' checkout, else the one the giantvm binary was built in.
        let gitDir = [directory, (giantvm as NSString).deletingLastPathComponent].first { git(["rev-parse", "HEAD"], in: $0) != nil }
        let commit = gitDir.flatMap { git(["rev-parse", "HEAD"], in: $0) }
        let dirty = gitDir.flatMap { git(["status", "--porcelain", "--untracked-files=no"], in: $0) }.map { !$0.isEmpty }
        return RunEnvironment(gitCommit: commit, gitDirty: dirty,
                              giantvm: FileIdentity(name: "giantvm", path: giantvm, sha256: sha256(path: giantvm)),
                              plugins: plugins, kernel: "\(field(&u.sysname)) \(field(&u.release)) \(field(&u.version))",
                              machine: field(&u.machine), hostname: field(&u.nodename),
                              cpus: Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
    }

    /// `git ARGS` in `dir`: its trimmed output, or nil when git is missing or fails.
    static func git(_ args: [String], in dir: String) -> String? {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["git", "-C", dir] + args
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        p.standardInput = FileHandle.nullDevice
        do { try p.run() } catch { return nil }
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { return nil }
        return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }
}
