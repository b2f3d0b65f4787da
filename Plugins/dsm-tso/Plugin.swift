// dsm-tso: an experimental hybrid protocol — NOT IMPLEMENTED YET.
//
// This folder holds only its real beginning: the plugin loads, declares its design, validates its
// settings, and refuses to run with a clear message, so that nothing claims to work that does not.
//
// Intended design (see README "What works"): pages read-shared by many nodes and written rarely
// stay under Ivy single-writer invalidation; pages written by several nodes switch to a
// multiple-writer mode (twins and diffs, as TreadMarks) whose diffs are flushed at the fences the
// host signals (GVM_FENCE_RELEASE before I/O exits, IPI sends and HLT; GVM_FENCE_ACQUIRE after
// interrupts). x86 guests order plain stores without fences, so the multiple-writer mode is only
// TSO-correct for data-race-free code whose synchronisation goes through locked instructions —
// which a page-granular host cannot see. Making that sound is the open research question this
// plugin exists to explore; until it is answered it must not be used for correctness.

import PluginKit

final class TSOProtocol: CoherencePlugin {
    static let settingInfo: [SettingInfo] = [
        SettingInfo("promote_after_writers", default: "2",
                    "(design) a page written by this many nodes within an epoch switches to multiple-writer mode (2 to 64)"),
    ]
    static var pluginDescription: String? { designText }

    init(services: HostServices, memory: CoherenceHost, cluster: ClusterInfo, settings: Settings) throws {
        try settings.allowOnly(declared: Self.settingInfo)
        _ = try settings.int("promote_after_writers", default: 2, range: 2...64)
        throw PluginError("dsm-tso is experimental and not implemented yet: use coherence: {plugin: dsm-ivy}")
    }

    func fault(gfn: UInt64, access: Access, fromPin: Bool) {}
    func receive(from node: UInt32, message: UnsafeRawBufferPointer) {}

    func describe() -> String { Self.designText }

    static let designText = """
        dsm-tso (design only, not implemented):
          single-writer pages : Ivy M/S/I, as dsm-ivy
          multi-writer pages  : twin on first write, diff at GVM_FENCE_RELEASE, apply with page_patch
          promotion           : a page written by >= promote_after_writers nodes within an epoch
        """
}

let entry = CoherencePluginEntry(TSOProtocol.self, name: "dsm-tso", version: "0.0.1",
                                 summary: "experimental hybrid TSO protocol: design only, refuses to run")

@_cdecl("giantvm_plugin_entry")
public func giantvm_plugin_entry() -> UnsafeRawPointer { entry.pointer }
