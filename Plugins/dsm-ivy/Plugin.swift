// dsm-ivy: the Ivy coherence protocol as a GiantVM coherence plugin (libdsm-ivy.so).
//
// The protocol lives in the IvyCore target (Plugins/dsm-ivy/Core: tables, engine, wire format,
// the IvyPlugin adapter); this target only exports the entry symbol, so tests and tools can link
// IvyCore without a second `giantvm_plugin_entry` in their process.
//
// Settings (YAML `coherence: {plugin: dsm-ivy, settings: {...}}`): see docs/dsm-ivy.md.

import IvyCore
import PluginKit

@_cdecl("giantvm_plugin_entry")
public func giantvm_plugin_entry() -> UnsafeRawPointer { IvyPlugin.entry.pointer }
