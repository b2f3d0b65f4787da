// dsm-tso's settings (YAML `coherence: {plugin: dsm-tso, settings: {...}}`): its own keys, and
// every dsm-ivy key (for the sc pages, which dsm-ivy's engine runs).
//
//   relaxed          guest-physical ranges whose pages are of class mw (multiple writers), as
//                    "BASE:LENGTH" items separated by commas, BASE a page-aligned address
//                    (decimal or 0x hex), LENGTH a size in the config's grammar that is a
//                    multiple of 4KiB: "0x200000:64KiB, 0x400000:4KiB". Default: none (then
//                    dsm-tso is exactly dsm-ivy).
//   relaxed_start    mw (default): relaxed pages are mw from the start; sc: they start sc (Ivy)
//                    and a page's home switches it to mw when several nodes write it: after
//                    `switch_after` ownership moves between different writers (default 4, 1 ...
//                    1000), each within `switch_window` of the previous (default 10ms; 1us ... 10s);
//                    and back to sc after `switch_back_after` diffs in a row from one writer
//                    (default 16; 0 = never; 1 ... 100000)
//   flush_interval   a dirty mw page's diff is out at most this long after its first write, even
//                    without a fence (default 1ms; 10us ... 1s)
//   manager_chunk, hold_time, request_timeout, send_wait: as dsm-ivy (docs/dsm-ivy.md); the
//                    home of an mw page is its Ivy manager; a fence waits at most request_timeout.
//   read_ahead       as dsm-ivy's but default 0 (off), and only sc pages outside every relaxed
//                    range are read ahead; a guest hint over a prefetched page is refused.
//
// Threading: value types; safe anywhere.

import IvyCore
import PluginKit

public struct TSOConfig: Sendable, Equatable {
    public var ivy: IvyConfig
    /// Relaxed page ranges (gfn ranges), sorted, disjoint.
    public var relaxed: [Range<UInt64>] = []
    public var flushIntervalNanoseconds: UInt64 = 1_000_000
    /// Relaxed pages start sc and switch to mw when several nodes write them.
    public var startSc = false
    public var switchAfter = 4
    public var switchWindowNanoseconds: UInt64 = 10_000_000
    public var switchBackAfter = 16

    public static let ownKeys = ["relaxed", "flush_interval", "relaxed_start", "switch_after", "switch_window", "switch_back_after"]
    public static var settingKeys: [String] { ownKeys + IvyConfig.settingKeys }
    public static let flushIntervalRange: ClosedRange<UInt64> = (10 * Units.microsecond)...Units.second

    public static func parse(_ settings: [String: String], pageCount: UInt64, nodeCount: UInt32) throws -> TSOConfig {
        for key in settings.keys.sorted() where !settingKeys.contains(key) {
            throw PluginError("unknown setting '\(key)' (accepted: \(settingKeys.sorted().joined(separator: ", ")))")
        }
        var ivySettings = settings
        for k in ownKeys { ivySettings[k] = nil }
        // Read-ahead is off unless asked for: a prefetched copy makes its page "in use", so a
        // guest hint declaring it relaxed later is refused (GVM_ERR_STATE, the cluster stops
        // naming the page). With read_ahead set, dsm-ivy prefetches only pages of class sc
        // outside every relaxed range (TSONode sets IvyNode.readAheadFilter).
        if ivySettings["read_ahead"] == nil { ivySettings["read_ahead"] = "0" }
        // Zero-fill ahead likewise: pages made present ahead are in use.
        if ivySettings["zero_ahead"] == nil { ivySettings["zero_ahead"] = "1" }
        var ivy = try IvyConfig.parse(ivySettings, pageCount: pageCount, nodeCount: nodeCount)
        try ivy.parseLivenessSettings(ivySettings)
        var config = TSOConfig(ivy: ivy)
        if let text = settings["relaxed"] {
            config.relaxed = try parseRanges(text, pageCount: pageCount)
        }
        switch settings["relaxed_start"] ?? "mw" {
        case "mw": config.startSc = false
        case "sc": config.startSc = true
        case let v: throw PluginError("setting 'relaxed_start': '\(v)' is not mw or sc")
        }
        let s = Settings(settings)
        config.switchAfter = try s.int("switch_after", default: 4, range: 1...1000)
        config.switchBackAfter = try s.int("switch_back_after", default: 16, range: 0...100_000)
        config.switchWindowNanoseconds = try s.duration("switch_window", default: 10_000_000, range: Units.microsecond...(10 * Units.second))
        if let t = settings["flush_interval"] {
            switch Units.duration(t, range: flushIntervalRange) {
            case .success(let ns): config.flushIntervalNanoseconds = ns
            case .failure(let f): throw PluginError("setting 'flush_interval': \(f.message)")
            }
        }
        return config
    }

    /// "BASE:LENGTH, ..." -> sorted, merged gfn ranges inside guest memory.
    public static func parseRanges(_ text: String, pageCount: UInt64) throws -> [Range<UInt64>] {
        let page = UInt64(GVM_PAGE_SIZE)
        let memory = pageCount * page
        var out: [Range<UInt64>] = []
        for item in text.split(separator: ",").map({ String($0).trimmed }) where !item.isEmpty {
            let parts = item.split(separator: ":", omittingEmptySubsequences: false).map { String($0).trimmed }
            guard parts.count == 2 else {
                throw PluginError("setting 'relaxed': '\(item)' is not BASE:LENGTH (e.g. 0x200000:64KiB)")
            }
            guard let base = parseAddress(parts[0]) else {
                throw PluginError("setting 'relaxed': base '\(parts[0])' is not a decimal or 0x hex address")
            }
            let length: UInt64
            switch Units.size(parts[1], range: page...memory) {
            case .success(let b): length = b
            case .failure(let f): throw PluginError("setting 'relaxed': '\(item)': length: \(f.message)")
            }
            guard base % page == 0, length % page == 0 else {
                throw PluginError("setting 'relaxed': '\(item)' is not page aligned (base and length multiples of 4KiB)")
            }
            guard base < memory, length <= memory - base else {
                throw PluginError("setting 'relaxed': '\(item)' ends beyond guest memory (\(Units.format(bytes: memory)))")
            }
            out.append((base / page)..<((base + length) / page))
        }
        guard !out.isEmpty else { throw PluginError("setting 'relaxed': no range in '\(text)'") }
        out.sort { $0.lowerBound < $1.lowerBound }
        var merged: [Range<UInt64>] = []
        for r in out {
            if let last = merged.last, r.lowerBound <= last.upperBound {
                merged[merged.count - 1] = last.lowerBound..<max(last.upperBound, r.upperBound)
            } else {
                merged.append(r)
            }
        }
        return merged
    }

    static func parseAddress(_ s: String) -> UInt64? {
        let t = s.lowercased()
        if t.hasPrefix("0x") { return UInt64(t.dropFirst(2), radix: 16) }
        return UInt64(t, radix: 10)
    }

    /// Whether `gfn` lies in a relaxed range.
    public func isRelaxed(_ gfn: UInt64) -> Bool {
        relaxed.contains { $0.contains(gfn) }
    }
}

extension String {
    var trimmed: String {
        var s = Substring(self)
        while s.first == " " || s.first == "\t" { s.removeFirst() }
        while s.last == " " || s.last == "\t" { s.removeLast() }
        return String(s)
    }
}
