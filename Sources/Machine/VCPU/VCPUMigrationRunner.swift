// Live vCPU migration, the run-loop side (the protocol is in Interrupts/VCPUMigration.swift, the
// cluster side in Distributed/VCPUMigrator.swift). On the source the vCPU's thread, at its next
// exit, lets KVM finish the instruction that exit left half done (an I/O, MMIO or MSR exit is
// completed only by the next KVM_RUN), captures the KVM state and hands it, with the interrupt
// state, to the sink under the vCPU's lock; on the destination it loads the state that arrived
// and runs.
//
// Threading: `depart`/`arrive` on the vCPU's own thread; the Machine methods from any thread.
import Foundation
import Interrupts
import KVM

/// Where a departing vCPU's state goes: the cluster's migrator.
/// Threading: `departed` on the vCPU's thread with its interrupt lock held (send and return; never
/// block, never take another vCPU's lock); the others on the vCPU's thread, no lock held.
public protocol VCPUMigrationSink: AnyObject, Sendable {
    /// Vcpu `vcpu` stopped here at `stoppedAt` (monotonic ns, before its state was captured):
    /// hand `kvm` and `interrupts` to node `to` (and move the placement). Throwing keeps the vCPU here.
    func departed(vcpu: Int, to node: UInt32, kvm: VCPUState, interrupts: [UInt8], stoppedAt: UInt64) throws
    /// The departure could not happen (capture or send failed): the vCPU keeps running here.
    func departureFailed(vcpu: Int, to node: UInt32, _ why: String)
    /// The vCPU's state was loaded here and it is about to run.
    func arrived(vcpu: Int)
}

extension VCPURunner {
    /// How many further exits one unfinished instruction may ask for while it is being finished
    /// (a string I/O instruction moves at most a page per exit).
    static var maxFinishingExits: Int { 4096 }

    enum Finishing { case done, stopping, unfinished }

    /// Lets KVM finish the instruction the last exit left half done (`VirtualCPU.finishPendingExit`)
    /// and handles the further exits it asks for, before this vCPU's registers are captured (a
    /// departure) or replaced (INIT). Captured unfinished, the state is that of an instruction
    /// that did not happen yet; and the KVM vCPU left behind still owes it its completion, which
    /// the next KVM_RUN on this node performs over whatever state is loaded by then (an arriving
    /// vCPU's): an MMIO read's register, RFLAGS and RIP from the old instruction.
    func finishPendingExits() throws -> Finishing {
        for _ in 0..<Self.maxFinishingExits {
            let exit = try vcpu.finishPendingExit()
            if case .interrupted = exit { return .done }
            switch try handle(exit) {
            case .handled, .interrupted:
                continue
            case .halted:
                irq.halt(interruptsEnabled: vcpu.interruptFlag)
                return .done
            case .stopped:
                return .stopping
            }
        }
        return .unfinished
    }

    func depart(to node: UInt32) throws {
        guard let sink = env.migration else {
            irq.cancelDeparture()
            return
        }
        let stoppedAt = env.clock()
        switch try finishPendingExits() {
        case .done:
            break
        case .stopping:
            irq.cancelDeparture()
            return
        case .unfinished:
            irq.cancelDeparture()
            sink.departureFailed(vcpu: index, to: node, "the instruction at its last exit was still doing I/O after \(Self.maxFinishingExits) exits; ask again")
            return
        }
        do {
            let state = try vcpu.captureState()
            try irq.completeDeparture(now: env.clock()) { bytes in
                try sink.departed(vcpu: index, to: node, kvm: state, interrupts: bytes, stoppedAt: stoppedAt)
            }
        } catch {
            irq.cancelDeparture()
            sink.departureFailed(vcpu: index, to: node, "\(error)")
        }
    }

    func arrive() throws {
        guard let state = irq.takeArrival() as? VCPUState else { throw failure("live migration: the state that arrived is not a vCPU state") }
        do { try vcpu.restoreState(state) } catch { throw failure("live migration: cannot load the arrived state: \(error)") }
        arrived = true
        apicChanged(addressing: false, timer: true)
        env.migration?.arrived(vcpu: index)
    }
}

extension Machine {
    /// Connects live migration (before `run`).
    public func setMigrationSink(_ sink: any VCPUMigrationSink) { environment.migration = sink }

    /// Asks resident vCPU `vcpu` to leave for node `node` at its next exit. False when it is not
    /// resident here (or already leaving).
    public func requestDeparture(vcpu: Int, to node: UInt32) -> Bool {
        guard let irq = interruptState(of: vcpu) else { return false }
        return irq.requestDeparture(to: node)
    }

    /// Loads vCPU `vcpu`'s migrated interrupt state and queues its KVM state for its thread.
    public func installArrival(vcpu: Int, interrupts: [UInt8], kvm: VCPUState) throws {
        guard let irq = interruptState(of: vcpu) else {
            throw MachineError.config("vCPU \(vcpu) has no KVM vCPU on this node (machine created without allVCPUs)")
        }
        try irq.installArrival(interrupts, kvmState: kvm, now: clock())
        environment.rearmTimer()
    }

    /// The vCPUs resident on this node now.
    public var residentVCPUs: [Int] { interrupts.filter { $0.isResident }.map(\.index) }
}
