// Entry builders: the descriptor a Swift plugin's `giantvm_plugin_entry` returns is a value built
// from the plugin's type (`CoherencePluginEntry`, `TransportPluginEntry`, `DevicePluginEntry`),
// so one image (a plugin .so, a test bundle) can hold several of them side by side:
//
//     let entry = CoherencePluginEntry(MyProtocol.self, name: "dsm-mine", version: "0.1.0", summary: "...")
//     @_cdecl("giantvm_plugin_entry")
//     public func giantvm_plugin_entry() -> UnsafeRawPointer { entry.pointer }
//
// Why slots: every hook but create() receives the instance pointer, which leads back to the Swift
// object. create() receives nothing that says which plugin type to build, and a C function
// pointer cannot capture a Swift type. So each kind keeps a small pool of C create functions
// ("slots"), each reading its own factory from a table: an entry claims a slot for its type (the
// same type always gets the same slot) and puts that slot's function in its ops table.

import Synchronization

/// One pool of create slots: `capacity` factories, each found by the type it builds.
final class FactorySlots<Factory>: @unchecked Sendable {
    let kind: String
    let capacity: Int
    private let table = Mutex<[(type: ObjectIdentifier, factory: Factory)]>([])

    init(kind: String, capacity: Int) {
        self.kind = kind
        self.capacity = capacity
    }

    /// The slot of `type`, claimed now if it has none. Traps past `capacity` distinct types (a
    /// programming error in the image, found the first time its entry is built).
    func claim(_ type: Any.Type, _ factory: Factory) -> Int {
        let id = ObjectIdentifier(type)
        return table.withLock { t in
            if let i = t.firstIndex(where: { $0.type == id }) { return i }
            precondition(t.count < capacity,
                         "PluginKit: more than \(capacity) \(kind) types in one image; raise the slot count in PluginKit")
            t.append((id, factory))
            return t.count - 1
        }
    }

    func factory(_ slot: Int) -> Factory { table.withLock { $0[slot].factory } }
}

/// What the entry values (CoherencePluginEntry, TransportPluginEntry, DevicePluginEntry) share.
public enum PluginEntry {}

extension PluginEntry {
    /// A permanent descriptor (it must outlive every use of the plugin).
    /// `settings` and `description` are the ABI 3 self-description (Describe.swift).
    static func makeDescriptor(kind: gvm_plugin_kind, name: String, version: String, summary: String,
                               ops: UnsafeRawPointer, description: String? = nil,
                               settings: [(SettingInfo, model: String?)] = []) -> UnsafePointer<gvm_plugin_descriptor> {
        let d = UnsafeMutablePointer<gvm_plugin_descriptor>.allocate(capacity: 1)
        d.initialize(to: gvm_plugin_descriptor(
            abi_version: GVM_ABI_VERSION, kind: kind.rawValue, name: permanentCString(name),
            version: permanentCString(version), summary: permanentCString(summary), ops: ops,
            description: description.map(permanentCString), setting_count: UInt32(settings.count),
            settings: settingTable(settings)))
        return UnsafePointer(d)
    }
}

/// Refuses a host table smaller than this plugin was built for (an older host): fills `err` and
/// returns false. The loader checks the plugin's tables the same way.
func hostTableFits(_ declared: UInt32, _ type: Any.Type, needed: Int, _ err: UnsafeMutablePointer<gvm_error>?) -> Bool {
    if Int(declared) >= needed { return true }
    fill(err, "the host's \(type) table is \(declared) bytes, this plugin needs \(needed) (ABI \(GVM_ABI_VERSION)): use a giantvm built from the same giantvm_plugin.h")
    return false
}
