// ABI 4 replicated ranges in the simulation: what the host does at start-up for a range every
// node loaded itself (GVM_HINT_REPLICATED; NodeAssembly's CoherenceStack.replicate): the hint on
// every node, then the same bytes installed SHARED on each node whose plugin accepted. Golden
// memory starts with those bytes, so every later load and every present copy is checked against
// them (and against later writes) like any other page.
//
// Threading: the simulation's (one thread); call before `run`.

import PluginAPI

extension SimCluster {
    /// Replicates `pages`: `words(gfn)` gives each page's initial 8-byte words by offset (the rest
    /// is zeros). Returns each node's hint status (GVM_ERR_UNSUPPORTED when the plugin has no hint
    /// hook); pages are installed only on nodes that answered GVM_OK, golden memory is set only
    /// when every node did.
    @discardableResult
    public func replicate(pages: Range<UInt64>, words: (UInt64) -> [Int: UInt64]) -> [Int32] {
        let page = UInt64(GVM_PAGE_SIZE)
        var statuses: [Int32] = []
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: Int(page), alignment: 4096)
        defer { buffer.deallocate() }
        for n in nodes {
            let end = MemoryLayout<gvm_coherence_ops>.offset(of: \.hint)! + MemoryLayout<UnsafeRawPointer>.size
            guard Int(n.ops.pointee.size) >= end, let hint = n.ops.pointee.hint, let inst = n.instance else {
                statuses.append(GVM_ERR_UNSUPPORTED.rawValue)
                continue
            }
            let rc = hint(inst, GVM_HINT_REPLICATED, pages.lowerBound * page, UInt64(pages.count) * page)
            statuses.append(rc)
            guard rc == GVM_OK.rawValue else { continue }
            for g in pages {
                buffer.initializeMemory(as: UInt8.self, repeating: 0, count: Int(page))
                for (off, v) in words(g) { buffer.storeBytes(of: v, toByteOffset: off, as: UInt64.self) }
                _ = n.install(g, UnsafeRawPointer(buffer), GVM_PAGE_SHARED)
            }
        }
        if statuses.allSatisfy({ $0 == GVM_OK.rawValue }) {
            for g in pages {
                let w = words(g)
                if !w.isEmpty { golden[g] = w }
                dirty.insert(g)
            }
        }
        return statuses
    }
}
