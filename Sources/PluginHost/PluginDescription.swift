// A plugin's self-description (ABI 3, the end of gvm_plugin_descriptor): the settings it declares
// (key, default, meaning, device model) read and checked at load time, and the text
// `giantvm plugins describe` prints: kind, version, ABI, path, summary, the description (a
// coherence plugin's state table), a device plugin's models, and every setting.

import Foundation
import PluginAPI

/// One declared setting (gvm_setting_info), copied out of the plugin.
public struct PluginSettingInfo: Sendable, Equatable {
    public var key: String
    /// nil: no default (required, or filled in by the host).
    public var defaultValue: String?
    public var meaning: String
    /// Device plugins: the model the key belongs to; nil = every model.
    public var model: String?
}

extension PluginLoader {
    /// Reads the descriptor's settings table: setting_count is bounded (GVM_MAX_SETTING_INFO), the
    /// table and every key and meaning must be present, keys unique per model.
    static func readSettingInfo(_ d: UnsafePointer<gvm_plugin_descriptor>, path: String) throws -> [PluginSettingInfo] {
        let count = d.pointee.setting_count
        guard count <= GVM_MAX_SETTING_INFO else {
            throw PluginLoadError.badDescriptor(path: path, problem: "setting_count \(count) is more than \(GVM_MAX_SETTING_INFO)")
        }
        guard count > 0 else { return [] }
        guard let table = d.pointee.settings else {
            throw PluginLoadError.badDescriptor(path: path, problem: "setting_count is \(count) but the settings table is NULL")
        }
        var out: [PluginSettingInfo] = []
        var seen = Set<String>()
        for i in 0..<Int(count) {
            let s = table[i]
            guard let k = s.key, let m = s.meaning else {
                throw PluginLoadError.badDescriptor(path: path, problem: "settings[\(i)] has no \(s.key == nil ? "key" : "meaning")")
            }
            let info = PluginSettingInfo(key: String(cString: k), defaultValue: s.default_value.map { String(cString: $0) },
                                         meaning: String(cString: m), model: s.model.map { String(cString: $0) })
            guard !info.key.isEmpty, seen.insert((info.model ?? "") + "\u{0}" + info.key).inserted else {
                throw PluginLoadError.badDescriptor(path: path, problem: "settings[\(i)]: key '\(info.key)' is empty or declared twice")
            }
            out.append(info)
        }
        return out
    }
}

extension LoadedPlugin {
    /// The text of `giantvm plugins describe`.
    public var describeText: String {
        var lines = ["\(name) \(version) — \(kind) plugin, ABI \(abiVersion)", "path: \(path)", "summary: \(summary)"]
        if let text = descriptionText, !text.isEmpty {
            lines.append("")
            lines.append(kind == .coherence ? "state table:" : "description:")
            lines += text.split(separator: "\n", omittingEmptySubsequences: false).map { "  " + $0 }
        }
        let models = deviceModels
        if kind == .device {
            lines.append("")
            lines.append("models (\(models.count)):")
            let w = models.map(\.name.count).max() ?? 0
            for m in models { lines.append("  " + m.name.padding(toLength: w + 2, withPad: " ", startingAt: 0) + m.summary) }
        }
        lines.append("")
        lines += Self.settingsTable(settings, models: kind == .device ? models.map(\.name) : nil)
        return lines.joined(separator: "\n")
    }

    /// "settings:" then one row per key (key, default, meaning); device plugins group by model,
    /// every model listed (a model with none says so).
    static func settingsTable(_ settings: [PluginSettingInfo], models: [String]?) -> [String] {
        if settings.isEmpty && (models ?? []).isEmpty { return ["settings: none"] }
        func rows(_ list: [PluginSettingInfo], indent: String) -> [String] {
            guard !list.isEmpty else { return [indent + "(no settings)"] }
            let kw = list.map(\.key.count).max() ?? 0
            let dw = max(list.map { ($0.defaultValue ?? "-").count }.max() ?? 0, 7)
            return [indent + "KEY".padding(toLength: kw + 2, withPad: " ", startingAt: 0)
                    + "DEFAULT".padding(toLength: dw + 2, withPad: " ", startingAt: 0) + "MEANING"]
                + list.map { s in
                    indent + s.key.padding(toLength: kw + 2, withPad: " ", startingAt: 0)
                        + (s.defaultValue ?? "-").padding(toLength: dw + 2, withPad: " ", startingAt: 0) + s.meaning
                }
        }
        guard let models else { return ["settings:"] + rows(settings, indent: "  ") }
        var out = ["settings:"]
        let common = settings.filter { $0.model == nil }
        if !common.isEmpty { out += ["  every model:"] + rows(common, indent: "    ") }
        for m in models {
            out.append("  \(m):")
            out += rows(settings.filter { $0.model == m }, indent: "    ")
        }
        let orphans = settings.filter { s in s.model.map { !models.contains($0) } ?? false }
        if !orphans.isEmpty { out += ["  (for models the plugin does not offer):"] + rows(orphans, indent: "    ") }
        return out
    }
}
