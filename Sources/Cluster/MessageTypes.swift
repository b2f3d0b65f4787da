// Every message type byte of every channel, handed out in one place.
//
// A channel payload starts with its type byte (Channel.swift). Components register a handler for
// the types they own (`Node.register(channel:types:handler:)`), so two components sharing a
// channel never see each other's messages, and a new message type is added here first: a byte
// given out twice is caught by `MessageTypeTests` and, at run time, by `Node.register`.
//
// Ranges:
//   control, heartbeat  0x01-0x7F  the node runtime (STOP, STOP_ACK, LEAVE, LEAVE_ACK, BEAT); 0x80-0xFF tools
//   cpu, io             0x01-0x7F  the distributed VM (Sources/Distributed/Wire.swift has formats)
//   coherence           every byte belongs to the coherence plugin (never the probe: it runs only
//                       on nodes without a VM)
//   every channel       0xE0-0xE1  the start-up channel probe of `giantvm node` without a guest

/// The type bytes, per channel. Formats are documented where each message is encoded.
public enum MessageType {
    /// Control channel.
    public enum Control: UInt8, CaseIterable, Sendable {
        /// Node runtime: a node is stopping (status, origin, lost node, message). Node.swift.
        case stop = 0x01
        /// Node runtime: STOP received.
        case stopAck = 0x02
        /// Node runtime: this node leaves the cluster (node evacuation): its disconnect is not a
        /// lost peer. Empty. Node.swift.
        case leave = 0x03
        /// Node runtime: LEAVE recorded.
        case leaveAck = 0x04
        /// net-bench: echo request (lane:u8 seq:u64 padding), echo answer, bulk data, end of bulk
        /// run (frames:u64), its confirmation (frames:u64 bytes:u64). Sources/Bench/NetBench.swift.
        case netPing = 0xB0, netPong = 0xB1, netData = 0xB2, netEnd = 0xB3, netDone = 0xB4
        /// net-bench floor: "open a plain TCP echo listener" (node 0 -> peer), its answer
        /// (port:u16, then an error text when port is 0). Sources/Bench/NetBench.swift.
        case netFloorOpen = 0xB5, netFloorPort = 0xB6
        /// bench dsm: floor round trip (payload echoed), its answer, "this node finished".
        /// Sources/Bench/BenchControl.swift.
        case benchPing = 0xC0, benchPong = 0xC1, benchFinished = 0xC2
        /// bench dsm: the read-miss floor's request (24 bytes) and its 4 KiB reply.
        /// Sources/Bench/ReadMissFloor.swift.
        case benchFloorRequest = 0xC3, benchFloorReply = 0xC4
        /// The channel probe (any channel). Sources/Bench/ChannelProbe.swift.
        case probePing = 0xE0, probePong = 0xE1
    }

    /// Heartbeat channel.
    public enum Heartbeat: UInt8, CaseIterable, Sendable {
        /// Node runtime: seq:u64 sent_ns:u64.
        case beat = 0x01
        case probePing = 0xE0, probePong = 0xE1
    }

    /// cpu channel: interrupt forwarding and clock alignment (Sources/Distributed).
    public enum CPU: UInt8, CaseIterable, Sendable {
        case ipi = 0x01, apicAddress = 0x02, irqLine = 0x03, eoi = 0x04
        case timeRequest = 0x10, timeReply = 0x11
        /// Live vCPU migration (Sources/Distributed/VCPUMigrator.swift has the formats).
        case migrateRequest = 0x20, migrateState = 0x21, placement = 0x22, migrateArrived = 0x23, migrateResult = 0x24
        /// Placement policy: a node's per-vCPU fault figures for node 0 (Sources/NodeAssembly/PlacementService.swift).
        case placementFigures = 0x25
        case probePing = 0xE0, probePong = 0xE1
    }

    /// io channel: start-up barrier and I/O forwarding (Sources/Distributed).
    public enum IO: UInt8, CaseIterable, Sendable {
        case deviceMap = 0x01, request = 0x02, reply = 0x03, ready = 0x04
        /// Device DMA run on the requesting vCPU's node (Sources/Distributed/DMAForwarding.swift).
        case dmaRequest = 0x05, dmaReply = 0x06
        /// Start-up: what a node's host lets the VMM offer (hidden CPUID features, kvmclock), so
        /// every node offers the same CPUID (Sources/Distributed/StartupBarrier.swift).
        case cpuFeatures = 0x07
        /// Node evacuation: a device's home moves (Sources/Distributed/DeviceMove.swift).
        case deviceState = 0x08, deviceStateAck = 0x09, deviceRoute = 0x0A, deviceRouteAck = 0x0B
        case probePing = 0xE0, probePong = 0xE1
    }

    /// The probe's two types, the same byte on every channel.
    public static let probe: ClosedRange<UInt8> = 0xE0...0xE1

    /// Every type byte given out on `channel` with its name (the coherence channel: none, the
    /// plugin owns it). Used by tests and by `describe` output.
    public static func assigned(on channel: Channel) -> [(UInt8, String)] {
        switch channel {
        case .control: return Control.allCases.map { ($0.rawValue, "\($0)") }
        case .heartbeat: return Heartbeat.allCases.map { ($0.rawValue, "\($0)") }
        case .cpu: return CPU.allCases.map { ($0.rawValue, "\($0)") }
        case .io: return IO.allCases.map { ($0.rawValue, "\($0)") }
        case .coherence: return []
        }
    }
}
