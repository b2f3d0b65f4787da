// The conformance certificate: what was tested (the plugin file and its SHA-256, the model, node
// range, seeds, settings), by which giantvm, and every scenario's verdict, as JSON. `passed` is true
// only when every scenario passed.

import Crypto
import Foundation

public struct ConformanceCertificate: Codable, Sendable {
    public struct PluginIdentity: Codable, Sendable {
        public var name: String
        public var version: String
        public var path: String
        public var sha256: String
        public var abiVersion: UInt32
        public init(name: String, version: String, path: String, sha256: String, abiVersion: UInt32) {
            self.name = name
            self.version = version
            self.path = path
            self.sha256 = sha256
            self.abiVersion = abiVersion
        }
    }

    public var giantvmVersion: String
    public var plugin: PluginIdentity
    public var model: MemoryModel
    public var nodes: String
    public var seeds: Int
    public var firstSeed: UInt64
    public var settings: [String: String]
    public var date: String
    public var scenarios: [ScenarioVerdict]
    public var passed: Bool

    public init(giantvmVersion: String, plugin: PluginIdentity, plan: ConformancePlan, scenarios: [ScenarioVerdict],
                date: Date = Date()) {
        self.giantvmVersion = giantvmVersion
        self.plugin = plugin
        model = plan.model
        nodes = "\(plan.nodes.lowerBound)..\(plan.nodes.upperBound)"
        seeds = plan.seeds
        firstSeed = plan.firstSeed
        settings = Dictionary(plan.settings, uniquingKeysWith: { $1 })
        self.date = ISO8601DateFormatter().string(from: date)
        self.scenarios = scenarios
        passed = !scenarios.isEmpty && scenarios.allSatisfy(\.passed)
    }

    public func json() throws -> Data {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys]
        return try e.encode(self)
    }

    public static func decode(_ data: Data) throws -> ConformanceCertificate {
        let d = JSONDecoder()
        return try d.decode(ConformanceCertificate.self, from: data)
    }

    /// The SHA-256 of a file, lower-case hex, read in 1 MiB chunks.
    public static func sha256(path: String) throws -> String {
        guard let h = FileHandle(forReadingAtPath: path) else { throw SimError("cannot read '\(path)' to hash it") }
        defer { try? h.close() }
        var hasher = SHA256()
        while let chunk = try h.read(upToCount: 1 << 20), !chunk.isEmpty { hasher.update(data: chunk) }
        return hasher.finalize().map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
    }
}
