// dsm-tso: the hybrid protocol as a GiantVM coherence plugin (libdsm-tso.so).
//
// The protocol lives in the TSOCore target (Plugins/dsm-tso/Core: the mw table, engine, wire
// format, settings and the TSOPlugin adapter), built on dsm-ivy's IvyCore for the sc pages; this
// target only exports the entry symbol, so tests and tools can link TSOCore without a second
// `giantvm_plugin_entry` in their process.
//
// Settings (YAML `coherence: {plugin: dsm-tso, settings: {...}}`): see docs/dsm-tso.md.

import PluginKit
import TSOCore

@_cdecl("giantvm_plugin_entry")
public func giantvm_plugin_entry() -> UnsafeRawPointer { TSOPlugin.entry.pointer }
