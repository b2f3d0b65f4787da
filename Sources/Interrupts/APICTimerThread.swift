// The local APIC timers of one node's vCPUs, run by one thread.
import Foundation

/// One thread for every local APIC timer: sleeps until the earliest deadline, raises the timer
/// interrupt on each expired APIC, kicks that vCPU. Threading: `rearm()` from any thread (never
/// while holding a vCPU lock); lock order is timer lock, then a vCPU lock.
public final class APICTimerThread: @unchecked Sendable {
    let cond = NSCondition()
    var stopped = false
    var generation: UInt64 = 0
    let vcpus: [VCPUInterrupts]
    var thread: Thread?
    let done = DispatchSemaphore(value: 0)
    let clock: () -> UInt64

    /// `clock`: monotonic nanoseconds, the time base of every APIC's timer deadline.
    public init(vcpus: [VCPUInterrupts], clock: @escaping () -> UInt64) {
        self.vcpus = vcpus
        self.clock = clock
    }

    public func start() {
        let t = Thread { [self] in loop(); done.signal() }
        t.name = "apic-timer"
        thread = t
        t.start()
    }

    /// A timer was programmed: re-evaluate the earliest deadline.
    public func rearm() {
        cond.lock()
        generation &+= 1
        cond.signal()
        cond.unlock()
    }

    public func stop() {
        cond.lock()
        stopped = true
        cond.signal()
        cond.unlock()
        if thread != nil { _ = done.wait(timeout: .now() + 5) }
    }

    private func loop() {
        cond.lock()
        while !stopped {
            let now = clock()
            var earliest: UInt64?
            for v in vcpus {
                v.cond.lock()
                var fired = false
                if let d = v.apic.timerDeadline, d <= now {
                    if v.apic.timerExpired(now: now) {
                        v.cond.broadcast()
                        fired = v.state == .running
                    }
                }
                if let d = v.apic.timerDeadline { earliest = min(earliest ?? d, d) }
                v.cond.unlock()
                if fired { v.kick() }
            }
            let gen = generation
            if let e = earliest {
                let now2 = clock()
                if e > now2 {
                    _ = cond.wait(until: Date(timeIntervalSinceNow: Double(e - now2) / 1e9))
                }
            } else {
                while generation == gen && !stopped { cond.wait() }
            }
        }
        cond.unlock()
    }
}
