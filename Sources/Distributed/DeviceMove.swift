// Moving device homes off a leaving node (node evacuation, docs/migration.md "Evacuating a
// node"), on the io channel. The leaving node L, once its vCPUs are gone, for its movable devices
// and successor S:
//
//   1. on L's I/O server thread (no peer's access is served meanwhile: forwarded accesses are
//      synchronous, so none is half done and new ones queue), each device's state is saved
//      (gvm_device_ops.save_state) and sent to S: DEVICE_STATE;
//   2. S creates a fresh instance of each from the config, loads the state, and points its
//      forwarding stubs for the device's ranges at the instance (its vCPUs now reach it locally);
//      it answers DEVICE_STATE_ACK (or why not);
//   3. L forwards what still reaches it for those ranges to S (accesses already on their way);
//   4. L sends DEVICE_ROUTE (devices → S) to every other node; each points its stubs at S and
//      answers DEVICE_ROUTE_ACK. Accesses a node sent to L before it switched arrive at L before
//      its ack (one ordered lane per peer) and L passes them on; once every ack is in, no access
//      for the devices goes to L any more and L may drop its instances.
//
// A refusal or a silence (a node lost during the move) is an error naming the node and device:
// the caller stops every node with it, as the devices' home is then unknown.
//
// Formats (after the type byte, little endian):
//   DEVICE_STATE      move:u64 count:u32 { name:text len:u32 blob[len] }   (len <= 65536)
//   DEVICE_STATE_ACK  move:u64 ok:u8 why:text
//   DEVICE_ROUTE      move:u64 home:u32 count:u32 { name:text }
//   DEVICE_ROUTE_ACK  move:u64
//
// Threading: `handle` on transport receive threads (never blocks: S takes the devices in on a
// thread of its own); `move` on the caller's thread, the save on the I/O server thread.

import Cluster
import Foundation
import Logging
import Machine

/// One device whose home moves: its name, its ranges on the leaving node and its state.
public struct MovingDevice: Sendable {
    public var name: String
    public var ranges: [DeviceRange]
    public var state: [UInt8]
    public init(name: String, ranges: [DeviceRange], state: [UInt8]) { self.name = name; self.ranges = ranges; self.state = state }
}

public final class DeviceMover: @unchecked Sendable {
    let node: Node
    let bus: IOBus
    let forwarder: IOForwarder
    let logger: Logger
    /// On the new home: creates the config device `name` with `state`; returns the ranges it
    /// claimed and what answers each (the stubs of those ranges are pointed at them).
    let takeIn: (_ name: String, _ state: [UInt8]) throws -> [ClaimedRange]

    private let mon = NSCondition()
    private var stateAcks: [UInt64: String?] = [:]   // move → nil (ok) or why not
    private var routeAcks: [UInt64: Set<UInt32>] = [:]
    private var nextMove: UInt64 = 1

    public static let maxState = 65536

    /// Registers the four message types on the io channel: call before `node.start()`.
    public init(node: Node, bus: IOBus, forwarder: IOForwarder, logger: Logger,
                takeIn: @escaping (_ name: String, _ state: [UInt8]) throws -> [ClaimedRange]) {
        self.node = node; self.bus = bus; self.forwarder = forwarder; self.logger = logger; self.takeIn = takeIn
        node.register(channel: .io, types: [IOMessageType.deviceState.rawValue, IOMessageType.deviceStateAck.rawValue,
                                            IOMessageType.deviceRoute.rawValue, IOMessageType.deviceRouteAck.rawValue]) {
            [weak self] from, p in self?.handle(from: from, p)
        }
    }

    // MARK: leaving node

    /// Moves the devices `save` returns (called on the I/O server thread, with no access served
    /// meanwhile) to `successor`, and every other node's routing with them. Returns how many
    /// moved and their state's bytes. Throws naming the node and the cause; after a throw the
    /// homes are unknown.
    public func move(to successor: UInt32, timeout: Double,
                     save: @escaping () throws -> [MovingDevice]) throws -> (devices: Int, stateBytes: Int) {
        let move = mon.withLock { () -> UInt64 in
            defer { nextMove += 1 }
            return (UInt64(node.id) << 48) | nextMove
        }
        var failure: Error?
        var moved = 0, bytes = 0
        let ran = forwarder.runBetweenAccesses { [self] in
            do {
                let devices = try save()
                guard !devices.isEmpty else { return }
                var w = MessageWriter(type: IOMessageType.deviceState.rawValue)
                w.u64(move); w.u32(UInt32(devices.count))
                for d in devices {
                    guard d.state.count <= Self.maxState else { throw WireError("device '\(d.name)': state of \(d.state.count) bytes exceeds \(Self.maxState)") }
                    w.text(d.name); w.u32(UInt32(d.state.count)); w.bytes += d.state
                }
                guard node.send(channel: .io, to: successor, w.bytes) == 0 else {
                    throw WireError("cannot send the devices' state to node \(successor)")
                }
                try wait(for: "node \(successor) to take the devices in", timeout: timeout) { stateAcks[move] != nil }
                if let why = mon.withLock({ stateAcks[move] }) ?? nil {
                    throw WireError("node \(successor) did not take the devices in: \(why)")
                }
                // From here on S answers for them: what still reaches this node goes on to S.
                for d in devices {
                    for r in d.ranges {
                        if let s = IOSpaceKind(rawValue: UInt32(r.space)) { forwarder.redirect(space: s, base: r.base, length: r.length, to: successor) }
                    }
                }
                moved = devices.count
                bytes = devices.reduce(0) { $0 + $1.state.count }
                let others = node.peers.filter { $0 != successor && !node.hasDeparted($0) }
                var rw = MessageWriter(type: IOMessageType.deviceRoute.rawValue)
                rw.u64(move); rw.u32(successor); rw.u32(UInt32(devices.count))
                for d in devices { rw.text(d.name) }
                for p in others where node.send(channel: .io, to: p, rw.bytes) != 0 {
                    throw WireError("cannot send the devices' new home to node \(p)")
                }
                try wait(for: "every node to route the devices to node \(successor)", timeout: timeout) {
                    (routeAcks[move] ?? []).isSuperset(of: others)
                }
            } catch { failure = error }
        }
        if !ran { throw WireError("the I/O server is stopping") }
        if let failure { throw failure }
        return (moved, bytes)
    }

    private func wait(for what: String, timeout: Double, _ done: () -> Bool) throws {
        let deadline = Date(timeIntervalSinceNow: timeout)
        mon.lock()
        defer { mon.unlock() }
        while !done() {
            if let r = node.stopReason { throw WireError("stopped while waiting for \(what): \(r.message)") }
            if !mon.wait(until: min(deadline, Date(timeIntervalSinceNow: 0.1))) && Date() >= deadline {
                throw WireError("no answer within \(timeout) s waiting for \(what)")
            }
        }
    }

    // MARK: receive

    func handle(from: UInt32, _ payload: UnsafeRawBufferPointer) {
        var r = MessageReader(payload)
        guard let t = r.u8(), let type = IOMessageType(rawValue: t), let move = r.u64() else {
            logger.error("dropped a malformed device-move message from node \(from)")
            return
        }
        switch type {
        case .deviceState:
            var devices: [(String, [UInt8])] = []
            guard let n = r.u32(), n >= 1, n <= 256 else { return reject(move, from, "bad device count") }
            for i in 0..<n {
                guard let name = r.text(), let len = r.u32(), len <= UInt32(Self.maxState), Int(len) <= r.remaining else {
                    return reject(move, from, "device \(i) truncated or its state over \(Self.maxState) bytes")
                }
                var blob: [UInt8] = []
                blob.reserveCapacity(Int(len))
                for _ in 0..<len { if let b = r.u8() { blob.append(b) } }
                devices.append((name, blob))
            }
            guard r.remaining == 0 else { return reject(move, from, "\(r.remaining) trailing bytes") }
            let incoming = devices
            let t = Thread { [self] in takeIn(incoming, move: move, from: from) }
            t.name = "device-move-in"
            t.start()
        case .deviceStateAck:
            guard let ok = r.u8(), let why = r.text() else { return }
            mon.withLock { stateAcks[move] = ok == 1 ? .some(nil) : .some(why); mon.broadcast() }
        case .deviceRoute:
            guard let home = r.u32(), let n = r.u32(), n <= 256 else { return }
            var names = Set<String>()
            for _ in 0..<n { guard let s = r.text() else { return }; names.insert(s) }
            var routed = 0
            for s in [IOSpaceKind.pio, .mmio] {
                for rg in bus.allRanges(s) {
                    if let stub = rg.device as? RemoteDevice, names.contains(stub.name), stub.home == from { stub.route(to: home); routed += 1 }
                }
            }
            logger.info("devices \(names.sorted().joined(separator: ", ")) moved from node \(from) to node \(home): \(routed) range(s) rerouted")
            var w = MessageWriter(type: IOMessageType.deviceRouteAck.rawValue)
            w.u64(move)
            node.send(channel: .io, to: from, w.bytes)
        case .deviceRouteAck:
            mon.withLock { routeAcks[move, default: []].insert(from); mon.broadcast() }
        default:
            logger.error("io message type 0x\(String(t, radix: 16)) from node \(from) reached the device mover: dropped")
        }
    }

    private func reject(_ move: UInt64, _ to: UInt32, _ why: String) {
        logger.error("device move from node \(to): \(why)")
        answer(move, to, why)
    }

    private func answer(_ move: UInt64, _ to: UInt32, _ why: String?) {
        var w = MessageWriter(type: IOMessageType.deviceStateAck.rawValue)
        w.u64(move); w.u8(why == nil ? 1 : 0); w.text(why ?? "")
        node.send(channel: .io, to: to, w.bytes)
    }

    /// The new home's side: every device is created and loaded, and its ranges checked against
    /// the stubs, before any stub switches (a refusal changes nothing here).
    private func takeIn(_ devices: [(String, [UInt8])], move: UInt64, from: UInt32) {
        var switches: [(RemoteDevice, IODevice)] = []
        do {
            for (name, state) in devices {
                for c in try takeIn(name, state) {
                    guard let r = bus.lookup(c.space, c.base), let stub = r.device as? RemoteDevice, stub.name == name,
                          stub.home == from, r.base == c.base, r.length == c.length else {
                        throw WireError("device '\(name)': its \(c.space) range 0x\(String(c.base, radix: 16))+0x\(String(c.length, radix: 16)) is not a range of node \(from) here (the device maps disagree)")
                    }
                    switches.append((stub, c.device))
                }
            }
        } catch {
            answer(move, from, "\(error)")
            return
        }
        for (stub, dev) in switches { stub.routeHere(dev) }
        logger.info("devices \(devices.map(\.0).joined(separator: ", ")) moved in from node \(from)")
        answer(move, from, nil)
    }
}
