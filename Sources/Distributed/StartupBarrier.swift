// Start-up of one VM across nodes, on the io channel: every node announces what its host lets the
// VMM offer the guest (CPU_FEATURES: the CPUID features its probe hid, kvmclock) and applies the
// merge of every node's, so each vCPU's CPUID is the same everywhere; announces the device ranges
// it homes (DEVMAP), maps every other node's ranges as forwarding stubs, and says READY when its
// own start-up (maps, time) is done; the BSP's node loads the guest once every node is ready.
//
// Peers' messages may arrive before this node asks for them (they are kept from the moment the
// barrier is created, which is before `node.start()`).
//
// Threading: `handle` on transport receive threads (never blocks); the waits on the main thread.

import Cluster
import Foundation
import Logging
import Machine

public final class StartupBarrier: @unchecked Sendable {
    let node: Node
    let logger: Logger
    private let mon = NSCondition()
    private var maps: [UInt32: [DeviceRange]] = [:]
    private var ready = Set<UInt32>()
    private var features: [UInt32: HostCPUFeatures] = [:]

    /// Registers DEVMAP and READY on the io channel: call before `node.start()`.
    public init(node: Node, logger: Logger) {
        self.node = node
        self.logger = logger
        node.register(channel: .io, types: [IOMessageType.deviceMap.rawValue, IOMessageType.ready.rawValue,
                                            IOMessageType.cpuFeatures.rawValue]) {
            [weak self] from, p in self?.handle(from: from, p)
        }
    }

    func handle(from: UInt32, _ payload: UnsafeRawBufferPointer) {
        switch try? IOMessage.decode(payload) {
        case let .deviceMap(ranges)?:
            mon.lock(); maps[from] = ranges; mon.broadcast(); mon.unlock()
        case .ready?:
            mon.lock(); ready.insert(from); mon.broadcast(); mon.unlock()
        case let .cpuFeatures(f)?:
            mon.lock(); features[from] = f; mon.broadcast(); mon.unlock()
        default:
            logger.error("dropped a malformed start-up message from node \(from)")
        }
    }

    /// The ranges of the devices that live on this node (plugin devices and the IOAPIC).
    public static func localRanges(of bus: IOBus) -> [DeviceRange] {
        var out: [DeviceRange] = []
        for s in [IOSpaceKind.pio, .mmio] {
            for r in bus.allRanges(s) where !(r.device is RemoteDevice) {
                out.append(DeviceRange(space: UInt8(s.rawValue), base: r.base, length: r.length, name: r.device.name))
            }
        }
        return out
    }

    /// Sends this node's device map to every peer, waits for theirs, and maps each remote range
    /// on `bus` as a stub forwarding through `forwarder` (`onFailure` hears of a failed access).
    /// Returns (local ranges, forwarded ranges).
    @discardableResult
    public func exchangeDeviceMaps(bus: IOBus, forwarder: IOForwarder, timeout: Double,
                                   onFailure: @escaping @Sendable (String) -> Void) throws -> (local: Int, remote: Int) {
        let mine = Self.localRanges(of: bus)
        let bytes = IOMessage.deviceMap(mine).encode()
        for p in node.peers { node.send(channel: .io, to: p, bytes) }
        try wait(for: "the device maps of every node", timeout: timeout) { maps.count == node.peers.count }
        let all = mon.withLock { maps }
        for (home, ranges) in all.sorted(by: { $0.key < $1.key }) {
            for r in ranges {
                guard let space = IOSpaceKind(rawValue: UInt32(r.space)) else { continue }
                let dev = RemoteDevice(name: r.name, home: home, base: r.base, forwarder: forwarder, onFailure: onFailure)
                do { try bus.map(space, base: r.base, length: r.length, device: dev) } catch {
                    throw WireError("device '\(r.name)' of node \(home): \(error)")
                }
            }
        }
        return (mine.count, all.values.reduce(0) { $0 + $1.count })
    }

    /// Sends `mine` (this node's Machine.hostFeatures) to every peer, waits for theirs and returns
    /// the merge of all (the same on every node), with each peer's for the log.
    public func exchangeCPUFeatures(_ mine: HostCPUFeatures, timeout: Double) throws -> (merged: HostCPUFeatures, peers: [UInt32: HostCPUFeatures]) {
        let bytes = IOMessage.cpuFeatures(mine).encode()
        for p in node.peers { node.send(channel: .io, to: p, bytes) }
        try wait(for: "the CPU features of every node", timeout: timeout) { features.count == node.peers.count }
        let all = mon.withLock { features }
        return (HostCPUFeatures.merge([mine] + all.sorted { $0.key < $1.key }.map(\.value)), all)
    }

    /// Says READY to every peer and waits until every peer said it.
    public func arriveAndWait(timeout: Double) throws {
        for p in node.peers { node.send(channel: .io, to: p, IOMessage.ready.encode()) }
        try wait(for: "every node to be ready", timeout: timeout) { ready.count == node.peers.count }
    }

    /// Waits (bounded) until `done` holds, or the node stops.
    private func wait(for what: String, timeout: Double, _ done: () -> Bool) throws {
        let deadline = Date(timeIntervalSinceNow: timeout)
        mon.lock()
        defer { mon.unlock() }
        while !done() {
            if let r = node.stopReason { throw WireError("stopped while waiting for \(what): \(r.message)") }
            if !mon.wait(until: min(deadline, Date(timeIntervalSinceNow: 0.1))) && Date() >= deadline {
                throw StartupTimeout(what: what, seconds: timeout)
            }
        }
    }
}

/// A start-up wait ran out (typed: callers need not read the message to know it).
public struct StartupTimeout: Error, CustomStringConvertible {
    public var what: String
    public var seconds: Double
    public var description: String { "timed out after \(seconds) s waiting for \(what)" }
}
