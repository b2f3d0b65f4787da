// Where a scenario puts its pages when the plugin keeps some memory under a weaker class.
//
// A protocol with relaxed (multiple-writer) memory names it in its `relaxed` setting (dsm-tso:
// guest-physical BASE:LENGTH ranges separated by commas, page aligned; docs/dsm-tso.md). The kit
// reads the same setting, so that
//   - the scenarios that need sequential consistency (locks, flags spun on, cmpxchg counters,
//     pins that must hold off writers, litmus variables) use pages outside every relaxed range,
//     and those pages get every per-step check as for an SC protocol (single writer, every copy
//     up to date, every load the latest store), whatever --model says;
//   - data that a program only touches under such synchronisation, or races on, goes to relaxed
//     pages, which the per-step checks skip: the relaxed scenarios (Relaxed.swift) judge what a
//     multiple-writer protocol promises for them instead;
//   - the simulated guest memory covers every relaxed range (the plugin refuses a range beyond it).
// Without the setting every page is sc and the scenarios use gfns 0, 1, 2, ... as always.
//
// Threading: single-threaded (see SimNode).

import PluginAPI

public struct PageLayout: Sendable, Equatable {
    /// Pages (gfns) in some relaxed range.
    public let relaxed: Set<UInt64>
    /// The simulated guest memory holds at least this many pages (every relaxed page).
    public let minimumPages: Int

    /// The largest simulated guest memory the kit makes for relaxed ranges (16 MiB).
    public static let maximumPages = 4096

    public init() {
        relaxed = []
        minimumPages = 0
    }

    /// The layout the plugin settings imply; throws naming the setting when `relaxed` is malformed
    /// or reaches beyond what the kit simulates.
    public init(settings: [(String, String)]) throws {
        var pages: Set<UInt64> = []
        for (key, value) in settings where key == "relaxed" {
            for item in value.split(separator: ",").map({ String($0).kitTrimmed(" \t") }) where !item.isEmpty {
                let parts = item.split(separator: ":", omittingEmptySubsequences: false).map { String($0).kitTrimmed(" \t") }
                guard parts.count == 2, let base = Self.number(parts[0]), let length = Self.size(parts[1]) else {
                    throw SimError("setting 'relaxed': '\(item)' is not BASE:LENGTH (a decimal or 0x address, a size such as 8KiB)")
                }
                let page = UInt64(GVM_PAGE_SIZE)
                let limit = UInt64(Self.maximumPages) * page
                guard base % page == 0, length % page == 0, length > 0 else {
                    throw SimError("setting 'relaxed': '\(item)' is not page aligned (base and length multiples of 4KiB, length > 0)")
                }
                guard base < limit, length <= limit - base else {
                    throw SimError("setting 'relaxed': '\(item)' ends beyond the \(Self.maximumPages) pages (16MiB) the kit simulates")
                }
                for g in (base / page)..<((base + length) / page) { pages.insert(g) }
            }
        }
        relaxed = pages
        minimumPages = pages.max().map { Int($0) + 1 } ?? 0
    }

    /// Whether any page is relaxed (the relaxed scenarios run only then).
    public var hasRelaxed: Bool { !relaxed.isEmpty }

    /// The k-th page (0-based) outside every relaxed range.
    public func sc(_ k: Int) -> UInt64 {
        var g: UInt64 = 0
        var seen = 0
        while true {
            if !relaxed.contains(g) {
                if seen == k { return g }
                seen += 1
            }
            g += 1
        }
    }

    /// The first `count` pages outside every relaxed range.
    public func sc(count: Int) -> [UInt64] { (0..<count).map { sc($0) } }

    /// The k-th relaxed page (0-based), cycling when there are fewer; nil without relaxed pages.
    public func mw(_ k: Int) -> UInt64? {
        guard hasRelaxed else { return nil }
        let sorted = relaxed.sorted()
        return sorted[k % sorted.count]
    }

    /// Pages a cluster needs to hold `used` (and every relaxed page), at least `atLeast`.
    public func pageCount(_ used: [UInt64], atLeast: Int) -> Int {
        max(atLeast, minimumPages, used.max().map { Int($0) + 1 } ?? 0)
    }

    static func number(_ s: String) -> UInt64? {
        let t = s.lowercased()
        return t.hasPrefix("0x") ? UInt64(t.dropFirst(2), radix: 16) : UInt64(t)
    }

    static func size(_ s: String) -> UInt64? {
        let t = s.lowercased()
        for (suffix, unit) in [("kib", UInt64(1) << 10), ("mib", 1 << 20), ("gib", 1 << 30), ("b", 1)] where t.hasSuffix(suffix) {
            guard let n = number(String(t.dropLast(suffix.count)).kitTrimmed(" ")), n <= UInt64.max / unit else { return nil }
            return n * unit
        }
        return number(t)
    }
}

extension String {
    func kitTrimmed(_ set: String) -> String {
        var s = Substring(self)
        while let f = s.first, set.contains(f) { s = s.dropFirst() }
        while let l = s.last, set.contains(l) { s = s.dropLast() }
        return String(s)
    }
}
