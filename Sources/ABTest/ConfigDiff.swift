// What differs between two configs, field by field: both YAML files are flattened to
// `path: scalar` pairs (mappings by key, `coherence.settings.hold_time`; sequences by index,
// `nodes[1].port`) and compared. Scalars compare as their text, so `20us` and `0.00002` differ
// (they are different spellings in the files); comments and key order do not count.

import Foundation
import Yams

public struct ConfigDifference: Codable, Sendable, Equatable {
    public var path: String
    /// nil: the field is absent from that config.
    public var base: String?
    public var other: String?
    public init(path: String, base: String?, other: String?) { self.path = path; self.base = base; self.other = other }

    public var text: String { "\(path): \(base ?? "(absent)") -> \(other ?? "(absent)")" }
}

public enum ConfigDiff {
    /// Every scalar of a YAML document by its path; throws when the text is not YAML.
    public static func flatten(yaml: String) throws -> [String: String] {
        guard let root = try Yams.compose(yaml: yaml) else { return [:] }
        var out: [String: String] = [:]
        func walk(_ node: Node, _ path: String) {
            switch node {
            case .scalar(let s): out[path] = s.string
            case .mapping(let m):
                if m.isEmpty { out[path] = "{}" }
                for (k, v) in m { walk(v, path.isEmpty ? k.string ?? "?" : "\(path).\(k.string ?? "?")") }
            case .sequence(let s):
                if s.isEmpty { out[path] = "[]" }
                for (i, v) in s.enumerated() { walk(v, "\(path)[\(i)]") }
            case .alias: out[path] = "(alias)"
            }
        }
        walk(root, "")
        return out
    }

    /// The fields that differ, sorted by path (sequence indices numerically).
    public static func diff(base: String, other: String) throws -> [ConfigDifference] {
        let a = try flatten(yaml: base), b = try flatten(yaml: other)
        let paths = Set(a.keys).union(b.keys).filter { a[$0] != b[$0] }
        return paths.sorted(by: pathOrder).map { ConfigDifference(path: $0, base: a[$0], other: b[$0]) }
    }

    /// Reads and diffs two files; errors name the file.
    public static func diff(basePath: String, otherPath: String) throws -> [ConfigDifference] {
        func text(_ p: String) throws -> String {
            guard let d = FileManager.default.contents(atPath: p) else { throw ABError("\(p): cannot read the config") }
            return String(decoding: d, as: UTF8.self)
        }
        let a = try text(basePath), b = try text(otherPath)
        do { return try diff(base: a, other: b) } catch let e as ABError { throw e } catch {
            throw ABError("\(basePath) or \(otherPath): not YAML: \(error)")
        }
    }

    /// Orders `nodes[2]` before `nodes[10]`: digit runs compare as numbers.
    static func pathOrder(_ x: String, _ y: String) -> Bool {
        x.compare(y, options: .numeric) == .orderedAscending
    }
}
