// A plugin's self-description (ABI 3, the end of gvm_plugin_descriptor): the settings it accepts,
// each with its default and meaning, and an optional text (a coherence plugin's state table).
// `giantvm plugins describe` prints them without creating an instance. Declare them on the type:
//
//     static let settingInfo: [SettingInfo] = [
//         SettingInfo("hold_time", default: "20us", "after a fault is resolved, ... (0 to 1s)"),
//     ]
//     static var pluginDescription: String? { MyTable.describe() }
//
// and refuse anything else with `settings.allowOnly(declared: Self.settingInfo)`, so what is declared is
// exactly what is accepted.

/// One key of a plugin's YAML `settings:` map (gvm_setting_info).
public struct SettingInfo: Sendable, Equatable {
    public var key: String
    /// The value used when the key is absent, as YAML text; nil = no default (required, or filled
    /// in by the host).
    public var defaultValue: String?
    /// One line: what it does, its grammar and range.
    public var meaning: String

    public init(_ key: String, default defaultValue: String?, _ meaning: String) {
        self.key = key
        self.defaultValue = defaultValue
        self.meaning = meaning
    }
}

extension Settings {
    /// Throws if a key is not declared in `table` (listing the declared keys).
    public func allowOnly(declared table: [SettingInfo]) throws {
        try allowOnly(table.map(\.key))
    }
}

extension PluginEntry {
    /// A permanent C table of `infos` (nil when empty); `model` marks device-model settings.
    static func settingTable(_ infos: [(SettingInfo, model: String?)]) -> UnsafePointer<gvm_setting_info>? {
        guard !infos.isEmpty else { return nil }
        let t = UnsafeMutablePointer<gvm_setting_info>.allocate(capacity: infos.count)
        for (i, (s, model)) in infos.enumerated() {
            (t + i).initialize(to: gvm_setting_info(key: permanentCString(s.key),
                                                    default_value: s.defaultValue.map(permanentCString),
                                                    meaning: permanentCString(s.meaning),
                                                    model: model.map(permanentCString)))
        }
        return UnsafePointer(t)
    }
}
