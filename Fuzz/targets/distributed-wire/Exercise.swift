// Fuzz target "distributed-wire": arbitrary bytes as a message of the cpu channel (IPIs, APIC
// addresses, IRQ lines, EOIs, time sync) and of the io channel (forwarded device accesses).
// Whatever decodes must encode back to a message that decodes equal (no silent truncation).
#if !FUZZING
@testable import Distributed
#endif

enum DistributedWireFuzz {
    static func exercise(_ bytes: [UInt8]) {
        if let m = try? CPUMessage.decode(bytes) {
            precondition((try? CPUMessage.decode(m.encode())) == m, "CPUMessage \(m) does not survive encode/decode")
        }
        if let m = try? IOMessage.decode(bytes) {
            precondition((try? IOMessage.decode(m.encode())) == m, "IOMessage \(m) does not survive encode/decode")
        }
    }
}
