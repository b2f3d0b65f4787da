// Intel 8254 programmable interval timer: three 16-bit counters clocked at 1.193182 MHz at
// ports 0x40-0x42, the control word at 0x43 (counter latch, read-back), and port 0x61 (bit 0:
// counter 2 gate, bit 1: speaker data, bit 4: refresh toggle, bit 5: counter 2 output), as PCs
// wire them. Modes 0 (interrupt on terminal count), 2 (rate generator) and 3 (square wave) are
// modelled exactly enough for Linux's PIT calibration and timer; 1, 4 and 5 count like mode 0.
// Binary counting only (the BCD bit is stored and reported, but counts are binary).
// Counter 0's output drives the device's `irq:` line: a host timer at the programmed rate pulses
// it (assert + deassert) at each terminal count — with an IOAPIC place it on pin 2 (`irq: 2`,
// the MADT/MP tables' IRQ0 -> GSI2 override).
//
// Threading: io() (vCPU or forwarding thread) and the timer callback (host timer thread) both
// take `lock`; set_irq is called outside it.
import PluginKit
import Synchronization

struct PITCounter: Equatable {
    var mode: UInt8 = 0
    var access: UInt8 = 3          // 1 LSB, 2 MSB, 3 LSB then MSB
    var bcd = false
    var reload: UInt32 = 0x10000   // 0 programmed = 65536
    var loadTicks: UInt64 = 0      // tick count at which counting (re)started
    var counting = false
    var writeLow: UInt8? = nil     // LSB written, waiting for the MSB
    var readMSBNext = false
    var latched: [UInt8] = []      // latched count bytes still to read
    var status: UInt8? = nil       // latched status
    var nullCount = true
    var gate = true
    var frozenElapsed: UInt64 = 0  // ticks counted before the gate went low
}

struct PITState: Equatable {
    static let hz: UInt64 = 1_193_182
    var counters = [PITCounter(), PITCounter(), PITCounter()]
    var speaker: UInt8 = 0
    var refreshToggle = false

    init() { counters[2].gate = false }

    /// Ticks elapsed since the counter was loaded (counting only while the gate is high).
    func elapsed(_ c: PITCounter, _ now: UInt64) -> UInt64 {
        guard c.counting else { return 0 }
        return c.gate ? c.frozenElapsed + (now - min(now, c.loadTicks)) : c.frozenElapsed
    }

    /// The counting element's value now.
    func count(_ i: Int, _ now: UInt64) -> UInt16 {
        let c = counters[i]
        guard c.counting else { return UInt16(truncatingIfNeeded: c.reload) }
        let e = elapsed(c, now)
        let r = UInt64(c.reload)
        switch c.mode {
        case 2:
            return UInt16(truncatingIfNeeded: r - e % r)
        case 3:
            // Decrements by two; a full period is `reload` ticks.
            let half = (r + 1) / 2
            let p = e % r
            let inHalf = p < half ? p : p - half
            return UInt16(truncatingIfNeeded: (r - 2 * inHalf) & ~1)
        default:
            return UInt16(truncatingIfNeeded: (r &- e) & 0xFFFF)
        }
    }

    func output(_ i: Int, _ now: UInt64) -> Bool {
        let c = counters[i]
        guard c.counting else { return c.mode != 0 }
        let e = elapsed(c, now)
        let r = UInt64(c.reload)
        switch c.mode {
        case 2: return e % r != r - 1
        case 3: return e % r < (r + 1) / 2
        case 0: return e >= r
        default: return e != r  // modes 1, 4, 5: a one-tick pulse at terminal count
        }
    }

    /// Period of counter 0's interrupts in nanoseconds, or nil if it does not tick periodically.
    /// For mode 0 (one-shot) returns the delay to terminal count via `oneShot`.
    func timerPlan(now: UInt64) -> (delayNs: UInt64, periodNs: UInt64)? {
        let c = counters[0]
        guard c.counting, c.gate else { return nil }
        let periodNs = UInt64(c.reload) * 1_000_000_000 / PITState.hz
        switch c.mode {
        case 2, 3: return (periodNs, periodNs)
        default:
            let e = elapsed(c, now)
            let r = UInt64(c.reload)
            guard e < r else { return nil }
            return ((r - e) * 1_000_000_000 / PITState.hz, 0)
        }
    }

    /// A write to port offset 0-3 (0x40-0x43). Returns true when
    /// counter 0's timing changed (the caller re-plans its host timer).
    mutating func write(_ port: Int, _ v: UInt8, now: UInt64) -> Bool {
        if port == 3 {
            let sel = Int(v >> 6)
            if sel == 3 { // read-back
                for i in 0..<3 where v & (2 << i) != 0 {
                    if v & 0x20 == 0 { latchCount(i, now) }
                    if v & 0x10 == 0 && counters[i].status == nil {
                        let c = counters[i]
                        counters[i].status = (output(i, now) ? 0x80 : 0) | (c.nullCount ? 0x40 : 0) | c.access << 4 | c.mode << 1 | (c.bcd ? 1 : 0)
                    }
                }
                return false
            }
            let access = (v >> 4) & 3
            if access == 0 { latchCount(sel, now); return false }
            var c = counters[sel]
            c.access = access
            var mode = (v >> 1) & 7
            if mode > 5 { mode -= 4 } // 6, 7 are aliases of 2, 3
            c.mode = mode
            c.bcd = v & 1 != 0
            c.counting = false
            c.writeLow = nil
            c.readMSBNext = false
            c.latched = []
            c.nullCount = true
            counters[sel] = c
            return sel == 0
        }
        guard port < 3 else { return false }
        var c = counters[port]
        var value: UInt32
        switch c.access {
        case 1: value = UInt32(v)
        case 2: value = UInt32(v) << 8
        default:
            if let lo = c.writeLow {
                value = UInt32(lo) | UInt32(v) << 8
                c.writeLow = nil
            } else {
                c.writeLow = v
                if c.mode == 0 { c.counting = false } // mode 0: writing the LSB stops the count
                counters[port] = c
                return port == 0
            }
        }
        c.reload = value == 0 ? 0x10000 : value
        c.loadTicks = now
        c.frozenElapsed = 0
        c.counting = true
        c.nullCount = false
        counters[port] = c
        return port == 0
    }

    mutating func latchCount(_ i: Int, _ now: UInt64) {
        guard counters[i].latched.isEmpty else { return }
        let v = count(i, now)
        switch counters[i].access {
        case 1: counters[i].latched = [UInt8(v & 0xFF)]
        case 2: counters[i].latched = [UInt8(v >> 8)]
        default: counters[i].latched = [UInt8(v & 0xFF), UInt8(v >> 8)]
        }
    }

    mutating func read(_ port: Int, now: UInt64) -> UInt8 {
        guard port < 3 else { return 0xFF } // the control word is write-only
        if let s = counters[port].status {
            counters[port].status = nil
            return s
        }
        if !counters[port].latched.isEmpty {
            return counters[port].latched.removeFirst()
        }
        let v = count(port, now)
        switch counters[port].access {
        case 1: return UInt8(v & 0xFF)
        case 2: return UInt8(v >> 8)
        default:
            let msb = counters[port].readMSBNext
            counters[port].readMSBNext.toggle()
            return msb ? UInt8(v >> 8) : UInt8(v & 0xFF)
        }
    }

    /// Port 0x61.
    mutating func readPort61(now: UInt64) -> UInt8 {
        refreshToggle.toggle()
        return (speaker & 0x03) | (refreshToggle ? 0x10 : 0) | (output(2, now) ? 0x20 : 0)
    }

    mutating func writePort61(_ v: UInt8, now: UInt64) {
        speaker = v & 0x03
        let gate = v & 1 != 0
        var c = counters[2]
        if gate != c.gate {
            if gate {
                if c.mode == 1 || c.mode == 5 || c.mode == 2 || c.mode == 3 {
                    c.frozenElapsed = 0 // rising gate (re)triggers
                }
                c.loadTicks = now
            } else if c.counting {
                c.frozenElapsed = elapsed(c, now)
            }
            c.gate = gate
            counters[2] = c
        }
    }
}

public final class PIT8254: DeviceModel {
    public static let modelName = "i8254"
    public static let summary = "8254 PIT (ports 0x40-0x43, 0x61): counters 0-2, modes 0/2/3, IRQ from counter 0"
    let services: HostServices
    let host: DeviceHost
    let irq: UInt32?
    let state = Mutex(PITState())
    let timerID = Mutex<UInt64>(0)
    let ticksCounter: Counter
    let base: UInt64

    public init(services: HostServices, host: DeviceHost, config: DeviceConfig, settings: Settings) throws {
        try settings.allowOnly([])
        self.services = services
        self.host = host
        irq = config.irq
        base = config.base ?? 0x40
        ticksCounter = services.counter("pit.\(config.name).irqs")
        try host.map(.pio, base: base, length: 4)
        try host.map(.pio, base: 0x61, length: 1)
    }

    var nowTicks: UInt64 {
        let ns = services.nowNanoseconds()
        return UInt64((Double(ns) * Double(PITState.hz) / 1e9).rounded(.down))
    }

    public func io(space: IOSpace, offset: UInt64, data: UnsafeMutableBufferPointer<UInt8>, isWrite: Bool) {
        let port = portFor(offset)
        let now = nowTicks
        if isWrite {
            let replan = state.withLock { s -> Bool in
                if port == 0x61 { s.writePort61(data[0], now: now); return false }
                return s.write(port, data[0], now: now)
            }
            if replan { planTimer() }
        } else {
            let v = state.withLock { s -> UInt8 in port == 0x61 ? s.readPort61(now: now) : s.read(port, now: now) }
            data[0] = v
            for i in 1..<data.count { data[i] = 0 }
        }
    }

    /// Offsets are from the lowest base the instance mapped (giantvm_plugin.h): 0-3 are
    /// 0x40-0x43 and 0x21 is port 0x61.
    func portFor(_ offset: UInt64) -> Int { offset == 0x61 - base ? 0x61 : Int(offset) }

    func planTimer() {
        let old = timerID.withLock { id -> UInt64 in let o = id; id = 0; return o }
        if old != 0 { services.cancelTimer(old) }
        guard irq != nil, let plan = state.withLock({ $0.timerPlan(now: nowTicks) }) else { return }
        let id = services.startTimer(afterNanoseconds: max(plan.delayNs, 1000), periodNanoseconds: plan.periodNs) { [weak self] in
            self?.tick()
        }
        timerID.withLock { $0 = id }
    }

    func tick() {
        guard let irq else { return }
        ticksCounter.add()
        host.setIRQ(irq, level: true)
        host.setIRQ(irq, level: false)
    }

    public func reset() {
        state.withLock { $0 = PITState() }
        planTimer()
    }

    public func shutdown() {
        let old = timerID.withLock { id -> UInt64 in let o = id; id = 0; return o }
        if old != 0 { services.cancelTimer(old) }
    }
}
