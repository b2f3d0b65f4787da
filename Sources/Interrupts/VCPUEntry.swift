// What a vCPU's thread does before each entry into the guest, as a pure function of its interrupt
// state: stop, reset (INIT), start at a SIPI vector, park (halted or waiting for SIPI with nothing
// to wake it), or enter — with an NMI and/or one external interrupt injected, or asking KVM for an
// interrupt window when the guest cannot take the pending interrupt yet.
//
// `VCPUInterrupts.nextEntry` evaluates it under the vCPU's lock and applies the interrupt-state
// half; the runner does the CPU half (registers, KVM_NMI, KVM_INTERRUPT, KVM_RUN). No KVM, no
// threads, no allocation: tested exhaustively in InterruptsTests.

public enum VCPUEntry {
    /// The inputs, read under the vCPU's interrupt lock.
    public struct State: Equatable, Sendable {
        /// The machine is stopping.
        public var stopping: Bool
        public var runState: VCPURunState
        public var pendingINIT: Bool
        /// A SIPI received while waiting for one.
        public var sipiVector: UInt8?
        public var pendingNMI: Bool
        /// The highest vector the local APIC presents to the CPU now (IRR above PPR), if any.
        public var deliverableVector: UInt8?
        /// The guest could take an external interrupt after its last exit (kvm_run
        /// ready_for_interrupt_injection and RFLAGS.IF).
        public var canInject: Bool
        /// The TPR class (CR8) the guest enters with.
        public var cr8: UInt64
        /// The 8259's INTR reaches the CPU: its output is high and LINT0 is unmasked in ExtINT mode
        /// (or the APIC is hardware-disabled, LINT0 passing INTR through). The vector comes from
        /// the 8259's interrupt acknowledge, outside the local APIC (no IRR, ISR or EOI).
        public var extINT: Bool

        public init(stopping: Bool = false, runState: VCPURunState = .running, pendingINIT: Bool = false,
                    sipiVector: UInt8? = nil, pendingNMI: Bool = false, deliverableVector: UInt8? = nil,
                    canInject: Bool = false, cr8: UInt64 = 0, extINT: Bool = false) {
            self.stopping = stopping; self.runState = runState; self.pendingINIT = pendingINIT
            self.sipiVector = sipiVector; self.pendingNMI = pendingNMI; self.deliverableVector = deliverableVector
            self.canInject = canInject; self.cr8 = cr8; self.extINT = extINT
        }
    }

    /// How to enter the guest.
    public struct Entry: Equatable, Sendable {
        /// Queue an NMI (KVM_NMI).
        public var nmi: Bool
        /// Inject this external interrupt (KVM_INTERRUPT); the APIC acknowledges it (IRR to ISR).
        public var inject: UInt8?
        /// kvm_run.request_interrupt_window: exit as soon as the guest can take an interrupt.
        public var requestWindow: Bool
        /// kvm_run.cr8 on entry.
        public var cr8: UInt64
        /// Acknowledge the 8259 (INTA) and inject the vector it returns (instead of `inject`).
        public var injectExtINT: Bool
        public init(nmi: Bool = false, inject: UInt8? = nil, requestWindow: Bool = false, cr8: UInt64 = 0,
                    injectExtINT: Bool = false) {
            self.nmi = nmi; self.inject = inject; self.requestWindow = requestWindow; self.cr8 = cr8
            self.injectExtINT = injectExtINT
        }
    }

    public enum Action: Equatable, Sendable {
        /// Leave the run loop.
        case stop
        /// INIT: back to the power-on state (registers, APIC), then wait for a SIPI.
        case reset
        /// SIPI: real mode at `sipiVector << 12`, then run.
        case start(sipiVector: UInt8)
        /// Nothing to do until another thread changes the state (sleep on the vCPU's condition).
        case park
        /// Enter the guest.
        case enter(Entry)
        /// Live migration: capture this vCPU's state and hand it to `node` (VCPUMigration.swift).
        case depart(node: UInt32)
        /// Live migration: this vCPU's state arrived here; load it, then run.
        case arrive
    }

    /// The decision. In order: a stop wins; then a pending INIT (whatever the run state); a vCPU
    /// waiting for SIPI starts when it has one and parks otherwise; a halted vCPU parks unless an
    /// NMI, or (with IF set when it halted) a deliverable interrupt, wakes it; a running (or woken)
    /// vCPU enters with the pending NMI and, when the guest can take one, the deliverable vector —
    /// or, when it cannot, asks for an interrupt window. After the injected vector is acknowledged
    /// no other vector is deliverable (its class now bounds PPR and it was the highest in IRR), so
    /// an injection never needs a window too. The 8259's ExtINT goes before the APIC's vectors
    /// (as KVM's own APIC orders them); an APIC vector still pending then asks for a window.
    public static func decide(_ s: State) -> Action {
        if s.stopping { return .stop }
        if s.pendingINIT { return .reset }
        switch s.runState {
        case .waitingForSIPI:
            guard let v = s.sipiVector else { return .park }
            return .start(sipiVector: v)
        case let .halted(interruptsEnabled):
            let wakes = s.pendingNMI || (interruptsEnabled && (s.deliverableVector != nil || s.extINT))
            if !wakes { return .park }
        case .running:
            break
        }
        var e = Entry(nmi: s.pendingNMI, cr8: s.cr8)
        if s.extINT {
            if s.canInject { e.injectExtINT = true } else { e.requestWindow = true }
            if s.deliverableVector != nil { e.requestWindow = true }
        } else if let v = s.deliverableVector {
            if s.canInject { e.inject = v } else { e.requestWindow = true }
        }
        return .enter(e)
    }
}
