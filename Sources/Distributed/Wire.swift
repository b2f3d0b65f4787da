// Message formats of the distributed VM on the cluster's `cpu` and `io` channels.
//
// Every message is `type:u8` followed by little-endian fields (Cluster.MessageWriter/Reader).
// The type bytes are handed out in Cluster's MessageType registry; each component registers
// the types it owns on its channel (InterruptForwarder: IPI..EOI; ClockAligner: TIME_*;
// StartupBarrier: DEVMAP, READY; IOForwarder: IO_REQ, IO_REP).
//
// cpu channel
//   0x01 IPI        target:u32 source:i32 mode:u8 vector:u8 level:u8
//                   (destination already resolved by the sender: one message per remote vCPU)
//   0x02 APIC_ADDR  vcpu:u32 id:u8 ldr:u32 dfr:u32        (a local APIC's ID/LDR/DFR changed)
//   0x03 IRQ_LINE   line:u32 level:u8 device:text          (to the IOAPIC's node)
//   0x04 EOI        vector:u8                              (level EOI, to the IOAPIC's node)
//   0x10 TIME_REQ   seq:u32                                (follower -> leader)
//   0x11 TIME_REP   seq:u32 hostClock:u64 guestOffset:i64 realGuestOffset:i64
//
// io channel
//   0x01 DEVMAP     count:u32 { space:u8 base:u64 length:u64 name:text } * count
//   0x02 IO_REQ     id:u64 space:u8 address:u64 itemSize:u8 count:u32 write:u8 [data: itemSize*count if write]
//   0x03 IO_REP     id:u64 status:u8 [data: itemSize*count if read and status == 0]
//   0x04 READY      (a node finished its start-up: maps, time)

import Cluster
import Machine

public typealias CPUMessageType = MessageType.CPU
public typealias IOMessageType = MessageType.IO

/// A decoding failure: which message and why (from untrusted bytes).
public struct WireError: Error, CustomStringConvertible, Equatable {
    public var message: String
    public init(_ m: String) { message = m }
    public var description: String { message }
}

/// One message of the cpu channel.
public enum CPUMessage: Equatable {
    case ipi(target: UInt32, source: Int32, mode: UInt8, vector: UInt8, level: Bool)
    /// `mode`: APICMode's raw value (0 disabled, 1 xAPIC, 2 x2APIC); a trailing byte, read as
    /// xAPIC when absent.
    case apicAddress(vcpu: UInt32, id: UInt8, ldr: UInt32, dfr: UInt32, mode: UInt8 = 1)
    case irqLine(line: UInt32, level: Bool, device: String)
    case eoi(vector: UInt8)
    case timeRequest(seq: UInt32)
    /// hostClock: the leader's host clock when it answered; guestOffset: leader guest TSC minus
    /// its host clock; realGuestOffset: the same against the raw RDTSC (same-machine check only);
    /// kvmclock: the leader VM's kvmclock (ns) read at `hostClock`, 0 when it offers none (a
    /// trailing field, read as 0 when absent).
    case timeReply(seq: UInt32, hostClock: UInt64, guestOffset: Int64, realGuestOffset: Int64, kvmclock: UInt64 = 0)

    public func encode() -> [UInt8] {
        switch self {
        case let .ipi(target, source, mode, vector, level):
            var w = MessageWriter(type: CPUMessageType.ipi.rawValue)
            w.u32(target); w.i32(source); w.u8(mode); w.u8(vector); w.u8(level ? 1 : 0)
            return w.bytes
        case let .apicAddress(vcpu, id, ldr, dfr, mode):
            var w = MessageWriter(type: CPUMessageType.apicAddress.rawValue)
            w.u32(vcpu); w.u8(id); w.u32(ldr); w.u32(dfr); w.u8(mode)
            return w.bytes
        case let .irqLine(line, level, device):
            var w = MessageWriter(type: CPUMessageType.irqLine.rawValue)
            w.u32(line); w.u8(level ? 1 : 0); w.text(device)
            return w.bytes
        case let .eoi(vector):
            var w = MessageWriter(type: CPUMessageType.eoi.rawValue)
            w.u8(vector)
            return w.bytes
        case let .timeRequest(seq):
            var w = MessageWriter(type: CPUMessageType.timeRequest.rawValue)
            w.u32(seq)
            return w.bytes
        case let .timeReply(seq, clock, off, real, kvmclock):
            var w = MessageWriter(type: CPUMessageType.timeReply.rawValue)
            w.u32(seq); w.u64(clock); w.u64(UInt64(bitPattern: off)); w.u64(UInt64(bitPattern: real)); w.u64(kvmclock)
            return w.bytes
        }
    }

    public static func decode(_ b: UnsafeRawBufferPointer) throws -> CPUMessage {
        var r = MessageReader(b)
        guard let t = r.u8() else { throw WireError("empty cpu message") }
        guard let type = CPUMessageType(rawValue: t) else { throw WireError("unknown cpu message type 0x\(String(t, radix: 16))") }
        let m: CPUMessage?
        switch type {
        case .ipi:
            if let target = r.u32(), let src = r.i32(), let mode = r.u8(), let vec = r.u8(), let lvl = r.u8(), lvl <= 1, mode <= 7 {
                m = .ipi(target: target, source: src, mode: mode, vector: vec, level: lvl == 1)
            } else { m = nil }
        case .apicAddress:
            if let v = r.u32(), let id = r.u8(), let ldr = r.u32(), let dfr = r.u32() {
                let mode = r.u8() ?? 1
                m = mode <= 2 ? .apicAddress(vcpu: v, id: id, ldr: ldr, dfr: dfr, mode: mode) : nil
            } else { m = nil }
        case .irqLine:
            if let line = r.u32(), let lvl = r.u8(), lvl <= 1, let dev = r.text() {
                m = .irqLine(line: line, level: lvl == 1, device: dev)
            } else { m = nil }
        case .eoi:
            m = r.u8().map { .eoi(vector: $0) }
        case .timeRequest:
            m = r.u32().map { .timeRequest(seq: $0) }
        case .timeReply:
            if let s = r.u32(), let c = r.u64(), let o = r.u64(), let real = r.u64() {
                m = .timeReply(seq: s, hostClock: c, guestOffset: Int64(bitPattern: o), realGuestOffset: Int64(bitPattern: real),
                               kvmclock: r.u64() ?? 0)
            } else { m = nil }
        case .probePing, .probePong:
            throw WireError("cpu message type 0x\(String(t, radix: 16)) belongs to the channel probe")
        case .migrateRequest, .migrateState, .placement, .migrateArrived, .migrateResult:
            throw WireError("cpu message type 0x\(String(t, radix: 16)) belongs to the vCPU migrator (VCPUMigrator.swift)")
        case .placementFigures:
            throw WireError("cpu message type 0x\(String(t, radix: 16)) belongs to the placement policy (PlacementService.swift)")
        }
        guard let m else { throw WireError("truncated or invalid cpu message \(type) (\(b.count) bytes)") }
        guard r.remaining == 0 else { throw WireError("cpu message \(type) has \(r.remaining) trailing bytes") }
        return m
    }

    public static func decode(_ bytes: [UInt8]) throws -> CPUMessage { try bytes.withUnsafeBytes { try decode($0) } }
}

/// One device range as announced by its home node.
public struct DeviceRange: Equatable, Sendable {
    public var space: UInt8   // IOSpaceKind raw value: 1 PIO, 2 MMIO
    public var base: UInt64
    public var length: UInt64
    public var name: String
    public init(space: UInt8, base: UInt64, length: UInt64, name: String) {
        self.space = space; self.base = base; self.length = length; self.name = name
    }
}

/// One message of the io channel.
public enum IOMessage: Equatable {
    case deviceMap([DeviceRange])
    case request(id: UInt64, space: UInt8, address: UInt64, itemSize: UInt8, count: UInt32, isWrite: Bool, data: [UInt8])
    case reply(id: UInt64, status: UInt8, data: [UInt8])
    case ready
    /// kvmFeatures:u32 count:u32 { leaf:u32 subleaf:u32 register:u8 bit:u8 name:text }: what the
    /// sender's host lets the VMM offer (Machine.HostCPUFeatures).
    case cpuFeatures(HostCPUFeatures)

    /// Upper bound of one forwarded access (a whole `rep ins/outs` page-sized string and more).
    public static let maxData = 1 << 20

    public func encode() -> [UInt8] {
        switch self {
        case let .deviceMap(ranges):
            var w = MessageWriter(type: IOMessageType.deviceMap.rawValue)
            w.u32(UInt32(ranges.count))
            for r in ranges { w.u8(r.space); w.u64(r.base); w.u64(r.length); w.text(r.name) }
            return w.bytes
        case let .request(id, space, address, size, count, isWrite, data):
            var w = MessageWriter(type: IOMessageType.request.rawValue)
            w.u64(id); w.u8(space); w.u64(address); w.u8(size); w.u32(count); w.u8(isWrite ? 1 : 0)
            w.bytes += data
            return w.bytes
        case let .reply(id, status, data):
            var w = MessageWriter(type: IOMessageType.reply.rawValue)
            w.u64(id); w.u8(status)
            w.bytes += data
            return w.bytes
        case .ready:
            return [IOMessageType.ready.rawValue]
        case let .cpuFeatures(f):
            var w = MessageWriter(type: IOMessageType.cpuFeatures.rawValue)
            w.u32(f.kvmFeatures); w.u32(UInt32(f.hidden.count))
            for h in f.hidden { w.u32(h.leaf); w.u32(h.subleaf); w.u8(h.register); w.u8(h.bit); w.text(h.name) }
            return w.bytes
        }
    }

    public static func decode(_ b: UnsafeRawBufferPointer) throws -> IOMessage {
        var r = MessageReader(b)
        guard let t = r.u8() else { throw WireError("empty io message") }
        guard let type = IOMessageType(rawValue: t) else { throw WireError("unknown io message type 0x\(String(t, radix: 16))") }
        func rest() -> [UInt8] { Array(UnsafeRawBufferPointer(rebasing: b[r.offset...])) }
        switch type {
        case .deviceMap:
            guard let n = r.u32(), n <= 4096 else { throw WireError("device map: bad count") }
            var out: [DeviceRange] = []
            for i in 0..<n {
                guard let s = r.u8(), s == 1 || s == 2, let base = r.u64(), let len = r.u64(), len > 0, let name = r.text() else {
                    throw WireError("device map: range \(i) truncated or invalid")
                }
                out.append(DeviceRange(space: s, base: base, length: len, name: name))
            }
            guard r.remaining == 0 else { throw WireError("device map has \(r.remaining) trailing bytes") }
            return .deviceMap(out)
        case .request:
            guard let id = r.u64(), let s = r.u8(), s == 1 || s == 2, let addr = r.u64(), let size = r.u8(),
                  [1, 2, 4, 8].contains(size), let count = r.u32(), count >= 1, let wr = r.u8(), wr <= 1 else {
                throw WireError("io request truncated or invalid (\(b.count) bytes)")
            }
            let total = Int(size) * Int(count)
            guard total <= maxData else { throw WireError("io request of \(total) bytes exceeds \(maxData)") }
            let data = rest()
            guard data.count == (wr == 1 ? total : 0) else {
                throw WireError("io request \(id): \(data.count) data bytes, expected \(wr == 1 ? total : 0)")
            }
            return .request(id: id, space: s, address: addr, itemSize: size, count: count, isWrite: wr == 1, data: data)
        case .reply:
            guard let id = r.u64(), let st = r.u8() else { throw WireError("io reply truncated") }
            return .reply(id: id, status: st, data: rest())
        case .ready:
            guard r.remaining == 0 else { throw WireError("ready has trailing bytes") }
            return .ready
        case .cpuFeatures:
            guard let kvm = r.u32(), let n = r.u32(), n <= 256 else { throw WireError("CPU features: bad header") }
            var hidden: [HostCPUFeatures.Feature] = []
            for i in 0..<n {
                guard let leaf = r.u32(), let sub = r.u32(), let reg = r.u8(), let bit = r.u8(), let name = r.text() else {
                    throw WireError("CPU features: feature \(i) truncated")
                }
                let f = HostCPUFeatures.Feature(name: name, leaf: leaf, subleaf: sub, register: reg, bit: bit)
                guard f.isValid else { throw WireError("CPU features: feature \(i) (\(name)) has register \(reg) bit \(bit)") }
                hidden.append(f)
            }
            guard r.remaining == 0 else { throw WireError("CPU features have \(r.remaining) trailing bytes") }
            return .cpuFeatures(HostCPUFeatures(hidden: hidden, kvmFeatures: kvm))
        case .probePing, .probePong:
            throw WireError("io message type 0x\(String(t, radix: 16)) belongs to the channel probe")
        case .dmaRequest, .dmaReply:
            throw WireError("io message type 0x\(String(t, radix: 16)) belongs to DMA forwarding (DMAForwarding.swift)")
        case .deviceState, .deviceStateAck, .deviceRoute, .deviceRouteAck:
            throw WireError("io message type 0x\(String(t, radix: 16)) belongs to device moves (DeviceMove.swift)")
        }
    }

    public static func decode(_ bytes: [UInt8]) throws -> IOMessage { try bytes.withUnsafeBytes { try decode($0) } }
}

/// Reply status codes.
public enum IOReplyStatus: UInt8 {
    case ok = 0
    /// No device at that address on the home node (the maps disagree): reads are all-ones.
    case noDevice = 1
    /// The home node is stopping.
    case stopping = 2
}
