// Hostile YAML: bounds checked on libyaml's event stream BEFORE Yams composes the document.
//
// Yams resolves an alias by sharing the anchored node, so composing an alias bomb (ten aliases of
// ten aliases of ...) is cheap, but anything that walks or hashes the tree — Yams itself hashes
// mapping keys to find duplicates, and an alias may be a key — pays for the full expansion. So the
// expansion is counted first, in one pass over the events, in linear time and without building
// anything: every scalar, list and mapping counts 1, an alias counts what its anchor expanded
// to. A document over `maxValues`, nested deeper than `maxDepth` (Yams composes recursively) or
// bigger than `maxBytes` is refused with one clear diagnostic.
//
// libyaml's event API is reached through CYaml, the C target Yams builds and links it as.

import CYaml
import Foundation

enum YAMLBounds {
    /// Largest config file read (a config is a few KiB; a long fault-rule list a few dozen).
    static let maxBytes = 1 << 20
    /// Most values (scalars, lists, mappings) the document may expand to, aliases counted expanded.
    static let maxValues = 100_000
    /// Deepest nesting of lists and mappings.
    static let maxDepth = 64

    struct Report {
        /// The first problem, if any: (line, column, message), 1-based.
        var problem: (line: Int, column: Int, message: String)?
        /// Source text of each top-level key's value (exact, aliases not expanded).
        var topLevelText: [String: String] = [:]
    }

    /// Scans `text`. A syntax error ends the scan without a problem: Yams reports it in its words.
    static func scan(_ text: String) -> Report {
        var report = Report()
        let bytes = Array(text.utf8)
        if bytes.count > maxBytes {
            report.problem = (0, 0, "the file is \(bytes.count) bytes: a config may be at most \(maxBytes) bytes")
            return report
        }
        var parser = yaml_parser_t()
        guard yaml_parser_initialize(&parser) == 1 else { return report }
        defer { yaml_parser_delete(&parser) }

        struct Frame {
            var anchor: String?
            var count = 1
            var isMapping: Bool
            var items = 0
            var key: String?
            var valueStart: Int?
        }
        var stack: [Frame] = []
        var anchors: [String: Int] = [:]
        var total = 0
        // Character offsets of value starts (libyaml marks count characters).
        let scalars = Array(text.unicodeScalars)

        func anchorName(_ p: UnsafeMutablePointer<yaml_char_t>?) -> String? {
            p.map { String(cString: UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self)) }
        }
        func sourceText(_ from: Int, _ to: Int) -> String {
            let a = max(0, min(from, scalars.count)), b = max(a, min(to, scalars.count))
            var s = String.UnicodeScalarView()
            s.append(contentsOf: scalars[a..<b])
            return String(s)
        }

        return bytes.withUnsafeBufferPointer { buf -> Report in
            yaml_parser_set_input_string(&parser, buf.baseAddress, buf.count)
            while true {
                var event = yaml_event_t()
                guard yaml_parser_parse(&parser, &event) == 1 else { return report }
                defer { yaml_event_delete(&event) }
                let start = event.start_mark, end = event.end_mark
                let line = Int(start.line) + 1, column = Int(start.column) + 1
                var value: Int?        // a completed value's expanded size
                var valueAnchor: String?
                switch event.type {
                case YAML_STREAM_END_EVENT:
                    return report
                case YAML_SCALAR_EVENT:
                    value = 1
                    valueAnchor = anchorName(event.data.scalar.anchor)
                case YAML_ALIAS_EVENT:
                    value = anchorName(event.data.alias.anchor).flatMap { anchors[$0] } ?? 1
                case YAML_SEQUENCE_START_EVENT, YAML_MAPPING_START_EVENT:
                    let isMapping = event.type == YAML_MAPPING_START_EVENT
                    if stack.count >= maxDepth {
                        report.problem = (line, column, "lists and mappings nested deeper than \(maxDepth) levels: refused")
                        return report
                    }
                    if let top = stack.last, top.isMapping, top.items % 2 == 1 {
                        stack[stack.count - 1].valueStart = Int(start.index)
                    }
                    stack.append(Frame(anchor: anchorName(isMapping ? event.data.mapping_start.anchor
                                                                    : event.data.sequence_start.anchor),
                                       isMapping: isMapping))
                case YAML_SEQUENCE_END_EVENT, YAML_MAPPING_END_EVENT:
                    guard let f = stack.popLast() else { return report }
                    value = f.count
                    valueAnchor = f.anchor
                default:
                    break
                }
                guard let size = value else { continue }
                if let valueAnchor { anchors[valueAnchor] = size }
                if stack.isEmpty {
                    total = min(total + size, maxValues + 1)
                } else {
                    let i = stack.count - 1
                    // The root mapping: remember each key, and the source text of its value.
                    if stack.count == 1 && stack[i].isMapping {
                        if stack[i].items % 2 == 0 {
                            stack[i].key = event.type == YAML_SCALAR_EVENT
                                ? String(cString: UnsafeRawPointer(event.data.scalar.value).assumingMemoryBound(to: CChar.self))
                                : nil
                        } else if let key = stack[i].key {
                            let from = stack[i].valueStart ?? Int(start.index)
                            report.topLevelText[key] = sourceText(from, Int(end.index))
                        }
                        stack[i].valueStart = nil
                    }
                    stack[i].items += 1
                    stack[i].count = min(stack[i].count + size, maxValues + 1)
                }
                let running = stack.reduce(total) { min($0 + $1.count, maxValues + 1) }
                if size > maxValues || running > maxValues {
                    let what = event.type == YAML_ALIAS_EVENT ? "with this alias, the document" : "the document"
                    report.problem = (line, column, "\(what) expands to more than \(maxValues) values "
                                      + "(YAML aliases expanded; an alias bomb?): refused")
                    return report
                }
            }
        }
    }
}
