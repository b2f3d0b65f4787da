// Guest RAM over userfaultfd: the GuestMemory target's region, through its pin/unpin, is the
// machine's RAM. Every guest access then goes through the uffd handlers and the coherence plugin,
// and every host access (image loading, boot structures, device DMA) pins the pages first.
import GuestMemory

extension GuestMemory: GuestRAM {
    public var hostBase: UnsafeMutableRawPointer { base }

    public func withPinned<R>(gpa: UInt64, length: Int, write: Bool,
                              _ body: (UnsafeMutableRawBufferPointer) throws -> R) throws -> R {
        if length == 0 {
            try checkRange(gpa, 0)
            return try body(UnsafeMutableRawBufferPointer(start: base + Int(gpa), count: 0))
        }
        let range = try pin(gpa: gpa, length: length, for: write ? .write : .read)
        defer { unpin(range) }
        return try body(UnsafeMutableRawBufferPointer(start: range.pointer, count: length))
    }
}
