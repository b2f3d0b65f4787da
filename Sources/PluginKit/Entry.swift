import Synchronization

/// Builders for the descriptor a Swift plugin's `giantvm_plugin_entry` returns.
public enum PluginEntry {}

private let entryLock = Mutex<[String: UnsafeRawPointer]>([:])

extension PluginEntry {
    /// Runs `build` once per plugin name and caches the descriptor pointer (the host calls the
    /// entry once, but tests may load a .so twice).
    static func once(_ name: String, _ build: () -> UnsafeRawPointer) -> UnsafeRawPointer {
        entryLock.withLock { cache in
            if let p = cache[name] { return p }
            let p = build()
            cache[name] = p
            return p
        }
    }

    static func makeDescriptor(kind: gvm_plugin_kind, name: String, version: String, summary: String,
                               ops: UnsafeRawPointer, abiVersion: UInt32 = GVM_ABI_VERSION) -> UnsafeRawPointer {
        let d = UnsafeMutablePointer<gvm_plugin_descriptor>.allocate(capacity: 1)
        d.initialize(to: gvm_plugin_descriptor(
            abi_version: abiVersion, kind: kind.rawValue, name: permanentCString(name),
            version: permanentCString(version), summary: permanentCString(summary), ops: ops))
        return UnsafeRawPointer(d)
    }
}
