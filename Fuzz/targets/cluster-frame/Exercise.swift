// Fuzz target "cluster-frame": arbitrary bytes as a frame delivered to the node runtime (channel
// header, then a runtime message read field by field as Node does: u8/u32/i32/u64/text in an
// order the input picks), and, when the first byte is '#', the text of transport.faults YAML
// (parsed by Config into the typed rules the fault injector takes).
import Config
#if !FUZZING
@testable import Cluster
#endif

enum ClusterFrameFuzz {
    static func exercise(_ bytes: [UInt8]) {
        if bytes.first == UInt8(ascii: "#") {
            _ = try? FaultPlan.parse(yaml: String(decoding: bytes, as: UTF8.self), nodeCount: 3)
            return
        }
        guard case let .message(_, payload) = ChannelHeader.parse(bytes) else { return }
        precondition(payload.lowerBound == ChannelHeader.size && payload.upperBound == bytes.count, "payload range")
        bytes.withUnsafeBytes { all in
            let body = UnsafeRawBufferPointer(rebasing: all[payload])
            var r = MessageReader(body)
            var ops = bytes.prefix(payload.lowerBound + 16).makeIterator()
            while let op = ops.next() {
                let ok: Bool
                switch op % 5 {
                case 0: ok = r.u8() != nil
                case 1: ok = r.u32() != nil
                case 2: ok = r.i32() != nil
                case 3: ok = r.u64() != nil
                default: ok = r.text() != nil
                }
                precondition(r.offset <= body.count && r.remaining >= 0, "MessageReader went past the end")
                if !ok { break }
            }
        }
    }
}
