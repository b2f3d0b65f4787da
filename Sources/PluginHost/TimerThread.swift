// One dedicated host thread runs every plugin timer (gvm_host_services.timer_start). Callbacks run
// one at a time on that thread; cancel() waits for a running callback of the same timer unless it
// is called from the timer thread itself.

import Metrics
import Foundation
import Synchronization

public final class TimerThread: @unchecked Sendable {
    public static let shared = TimerThread()

    private struct Entry {
        var id: UInt64
        var due: UInt64
        var period: UInt64
        var body: () -> Void
    }

    private let cond = NSCondition()
    private var entries: [UInt64: Entry] = [:]
    private var nextID: UInt64 = 1
    private var running: UInt64 = 0
    /// The deadline the timer thread sleeps until (UInt64.max: no timer; 0: not sleeping). A new
    /// timer wakes the thread only when it is due earlier; a cancelled one does not wake it (it
    /// wakes at the old deadline, finds nothing due and sleeps again). Plugins that arm and cancel
    /// a watchdog per request (dsm-ivy's request_timeout) so cost no thread wake-up per request.
    private var sleepingUntil: UInt64 = 0
    private var thread: Thread?
    private var threadID: pthread_t?

    private init() {}

    public func start(delay: UInt64, period: UInt64, _ body: @escaping () -> Void) -> UInt64 {
        cond.lock()
        defer { cond.unlock() }
        if thread == nil {
            let t = Thread { [unowned self] in self.loop() }
            t.name = "gvm-timers"
            t.start()
            thread = t
        }
        let id = nextID
        nextID += 1
        let due = monotonicNanoseconds() &+ delay
        entries[id] = Entry(id: id, due: due, period: period, body: body)
        if due < sleepingUntil { cond.broadcast() }
        return id
    }

    public func cancel(_ id: UInt64) {
        cond.lock()
        defer { cond.unlock() }
        entries[id] = nil
        let onTimerThread = threadID.map { pthread_equal($0, pthread_self()) != 0 } ?? false
        while running == id && !onTimerThread { cond.wait() }
    }

    private func loop() {
        cond.lock()
        threadID = pthread_self()
        while true {
            let now = monotonicNanoseconds()
            if let next = entries.values.min(by: { $0.due < $1.due }) {
                if next.due <= now {
                    var e = next
                    if e.period > 0 {
                        e.due = max(e.due &+ e.period, now)
                        entries[e.id] = e
                    } else {
                        entries[e.id] = nil
                    }
                    running = e.id
                    cond.unlock()
                    e.body()
                    cond.lock()
                    running = 0
                    cond.broadcast()
                    continue
                }
                let wait = Double(next.due - now) / 1e9
                sleepingUntil = next.due
                _ = cond.wait(until: Date(timeIntervalSinceNow: wait))
            } else {
                sleepingUntil = UInt64.max
                cond.wait()
            }
            sleepingUntil = 0
        }
    }
}
