// Zero-fill ahead: the write side of read-ahead, for never-written pages.
//
// A never-written page this node owns (OZ: no copy exists anywhere, its bytes are zeros) becomes
// present here on its first local access without any message (OZ -> OM, p_installZeroModified).
// A vCPU filling a fresh table or arena takes that fault once per 4 KiB page, and on this host
// each one is a userfaultfd round trip through the handler thread (tens of µs from a guest vCPU).
// So when a local fault resolves an OZ page, the other OZ pages of its aligned group of
// `zero_ahead` pages (default 512: 2 MiB) take the same transition in the same step: installed
// as zeros, MODIFIED, in contiguous runs with one page_install_zeros each (ABI 5; a whole group of
// 512 may become one transparent huge page, which KVM then maps with one fault). Nothing else changes: each page goes exactly
// where a local store to it would have taken it, no message is sent, no other node's state moves;
// the pages are just writable here before the guest touches them. A page with anything in
// progress (a request, a held or stalled input, an open transaction), a page whose manager is
// handing over, one a protocol built on this one keeps for itself (`readAheadFilter`), a pinned
// or present page (the host refuses the batch) are left alone, to fault as before.
//
// Costs: the group's untouched pages hold memory (zeros) on this node; a peer that later wants one
// gets a zero page flagged on the wire (no bytes), as from OZ, but through the owner's OM path.
import PluginAPI
import PluginKit

/// `ivy.zero_ahead.*`: pages made present ahead, and the host calls that did it.
final class ZeroAheadStats {
    let pages, batches: (UInt64) -> Void
    init(_ s: ProtocolServices) {
        pages = s.makeCounter("ivy.zero_ahead.pages")
        batches = s.makeCounter("ivy.zero_ahead.batches")
    }
}

extension IvyNode {
    /// A zero buffer for the largest run (read only; shared by every node of the process).
    static let zeroRun: UnsafeMutableRawPointer = {
        let p = UnsafeMutableRawPointer.allocate(byteCount: IvyWire.maxBatch * IvyWire.pageSize, alignment: IvyWire.pageSize)
        p.initializeMemory(as: UInt8.self, repeating: 0, count: IvyWire.maxBatch * IvyWire.pageSize)
        return p
    }()

    /// After a local fault at gfn took it from OZ to OM: the other OZ pages of its aligned group
    /// of `zero_ahead` pages, OZ -> OM, installed as zeros in contiguous runs.
    func zeroAhead(after gfn: UInt64) {
        let group = UInt64(config.zeroAhead)
        guard group > 1, !failed, leaving == nil, frozen.isEmpty else { return }
        let first = gfn / group * group, end = min(first + group, pageCount)
        // A host without page_install_zeros (ABI 4) takes each run in page_install_batch pieces.
        let zeroRuns = host.hasZeroRuns
        let piece = zeroRuns ? group : UInt64(IvyWire.maxBatch)
        var p = first
        while p < end, !failed {
            guard canZeroAhead(p) else { p += 1; continue }
            var q = p + 1
            while q < end, q - p < piece, canZeroAhead(q) { q += 1 }
            if installZeros(p, count: Int(q - p), zeroRuns: zeroRuns) {
                for g in p..<q { state[Int(g)] = .OM }
                zaStats.pages(q - p)
            }
            p = q
        }
    }

    /// Installs zeros, MODIFIED, in `count` absent pages from gfn, all or nothing: one
    /// page_install_zeros (ABI 5: a whole aligned 2 MiB group may become one huge page), or
    /// page_install_batch from a zero buffer. A pinned or present page (the host refuses the run)
    /// or a host without the service leaves the pages to fault as before; any other failure stops
    /// the node (the host could not say which pages it filled).
    private func installZeros(_ gfn: UInt64, count: Int, zeroRuns: Bool) -> Bool {
        let status = zeroRuns ? host.installZeros(gfn, count: count)
                              : host.installBatch(gfn, count: count, bytes: Self.zeroRun, state: .modified)
        switch status {
        case .ok:
            zaStats.batches(1)
            return true
        case .pinned, PageStatus(raw: GVM_ERR_STATE.rawValue), PageStatus(raw: GVM_ERR_UNSUPPORTED.rawValue):
            return false
        default:
            fail("zero-fill ahead of gfn \(gfn)..\(gfn + UInt64(count) - 1): the host failed (\(status))")
            return false
        }
    }

    /// Whether page p may go OZ -> OM ahead of an access: OZ with nothing in progress for it.
    private func canZeroAhead(_ p: UInt64) -> Bool {
        guard state[Int(p)] == .OZ, outstanding[p] == nil, ownerTxn[p] == nil, held[p] == nil, stalled[p] == nil,
              open[p] == nil, waiting[p] == nil else { return false }
        if let keep = readAheadFilter, !keep(p) { return false }
        return true
    }
}
