// The `placement` plugin: the in-tree vCPU placement policies (co-locate, follow-memory), chosen
// by the setting `policy:`. The policies live in the PlacementCore target (Plugins/placement/Core,
// unit-tested on synthetic figures); this target only exports the entry symbol.
//
// YAML: `placement: {plugin: placement, interval: 1s, settings: {policy: co-locate, ...}}`; see
// docs/migration.md ("Placement policies").

import PlacementCore
import PluginKit

@_cdecl("giantvm_plugin_entry")
public func giantvm_plugin_entry() -> UnsafeRawPointer { PlacementPolicyPlugin.entry.pointer }
