import Glibc
import CSystem

// Dedicated OS threads and a mutex/condition pair for the node runtime. Blocking loops
// (heartbeats, fault-injection delays, waits for peers) run here, never on Swift concurrency.

/// A dedicated OS thread (pthread). Threading: `join` from any other thread, at most once.
public final class OSThread: @unchecked Sendable {
    private final class Box {
        let name: String
        let body: () -> Void
        init(_ name: String, _ body: @escaping () -> Void) { self.name = name; self.body = body }
    }
    private var tid = pthread_t()
    private var joined = false

    public init(name: String, _ body: @escaping () -> Void) throws {
        let box = Unmanaged.passRetained(Box(name, body)).toOpaque()
        let rc = pthread_create(&tid, nil, { arg in
            let box = Unmanaged<Box>.fromOpaque(arg!).takeRetainedValue()
            gvm_net_set_thread_name(box.name)
            box.body()
            return nil
        }, box)
        if rc != 0 {
            Unmanaged<Box>.fromOpaque(box).release()
            throw ClusterError("cannot start thread \(name): \(String(cString: strerror(rc)))")
        }
    }

    public func join() {
        guard !joined else { return }
        joined = true
        pthread_join(tid, nil)
    }
}

/// A mutex with one condition variable on CLOCK_MONOTONIC. Threading: any thread.
public final class Monitor: @unchecked Sendable {
    private let m = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let c = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)

    public init() {
        pthread_mutex_init(m, nil)
        var attr = pthread_condattr_t()
        pthread_condattr_init(&attr)
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC)
        pthread_cond_init(c, &attr)
        pthread_condattr_destroy(&attr)
    }

    deinit {
        pthread_cond_destroy(c); pthread_mutex_destroy(m)
        c.deallocate(); m.deallocate()
    }

    public func lock() { pthread_mutex_lock(m) }
    public func unlock() { pthread_mutex_unlock(m) }
    public func withLock<T>(_ body: () throws -> T) rethrows -> T {
        lock(); defer { unlock() }
        return try body()
    }
    /// Lock held. Spurious wake-ups happen: loop on the predicate.
    public func wait() { pthread_cond_wait(c, m) }
    /// Lock held. Waits until `deadline` (monotonic ns) at most; false once it passed.
    @discardableResult
    public func wait(until deadline: UInt64) -> Bool {
        var ts = timespec(tv_sec: Int(deadline / 1_000_000_000), tv_nsec: Int(deadline % 1_000_000_000))
        return pthread_cond_timedwait(c, m, &ts) == 0
    }
    public func broadcast() { pthread_cond_broadcast(c) }
}



/// An error of the node runtime, with a message a person can act on.
public struct ClusterError: Error, CustomStringConvertible, Sendable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
