// virtio-net (device ID 1) over virtio-mmio: a NIC whose frames go to a backend on the device's
// home node. Queues: 0 receive, 1 transmit (size up to 256 each). Every frame in either
// direction is preceded in guest memory by the 12-byte virtio_net_hdr of virtio 1.x (flags,
// gso_type, hdr_len, gso_size, csum_start, csum_offset, num_buffers); no offloads are offered,
// so the device sends the header as zeros with num_buffers = 1 and ignores the one it gets.
// Features: MAC, STATUS (link always up), INDIRECT_DESC. Config space: mac[6], status u16.
//
// Backends (setting `backend`):
//   socket  one UDP datagram per Ethernet frame, to `peer` (host:port, required) from `bind`
//           (host:port, default 127.0.0.1:0): a user-space link for tests, no privileges needed.
//   tap     a Linux TAP interface `ifname` (default gvmtap0): attached when it exists (a
//           persistent TAP made with `ip tuntap add`), created by the node otherwise (needs
//           CAP_NET_ADMIN; the node brings it down when it closes it).
// Other settings: mac (aa:bb:cc:dd:ee:ff, default 52:54:00:12:34:56), rx_backlog (frames held
// while the guest has posted no receive buffer, default 256, 1-4096; older frames are kept,
// newer dropped and counted).
// Counters: virtio-net.<name>.tx_frames, .rx_frames, .tx_bytes, .rx_bytes, .rx_dropped.
//
// Threading: a receive thread waits on the backend's descriptor and delivers under the
// transport's lock; io() takes the same lock. shutdown() stops and joins the thread.
import CSystem
import Foundation
import PluginKit
import Synchronization

/// A frame link (UDP socket or TAP): one read/write per frame.
public final class FrameLink {
    public let fd: Int32
    public let what: String

    init(fd: Int32, what: String) { self.fd = fd; self.what = what }
    deinit { close(fd) }

    /// A UDP socket bound to `bind` and connected to `peer` (both "host:port", IPv4).
    public static func udp(peer: String, bind: String, device: String) throws -> FrameLink {
        let p = try parseAddress(peer, key: "peer", device: device)
        let b = try parseAddress(bind, key: "bind", device: device)
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw PluginError("\(device): socket(): \(String(cString: strerror(errno)))") }
        var bb = b, pp = p
        let len = socklen_t(MemoryLayout<sockaddr_in>.size)
        if withUnsafePointer(to: &bb, { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(fd, $0, len) } }) != 0 {
            let e = String(cString: strerror(errno)); close(fd)
            throw PluginError("\(device): setting 'bind': cannot bind UDP \(bind): \(e)")
        }
        if withUnsafePointer(to: &pp, { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, len) } }) != 0 {
            let e = String(cString: strerror(errno)); close(fd)
            throw PluginError("\(device): setting 'peer': cannot connect UDP to \(peer): \(e)")
        }
        var big: Int32 = 4 << 20
        _ = setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, socklen_t(4))
        _ = setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &big, socklen_t(4))
        return FrameLink(fd: fd, what: "UDP \(bind) -> \(peer)")
    }

    static func parseAddress(_ text: String, key: String, device: String) throws -> sockaddr_in {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 2, let port = UInt16(parts[1]) else {
            throw PluginError("\(device): setting '\(key)': '\(text)' is not host:port (IPv4, e.g. 127.0.0.1:7000)")
        }
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_port = port.bigEndian
        guard inet_pton(AF_INET, String(parts[0]), &a.sin_addr) == 1 else {
            throw PluginError("\(device): setting '\(key)': '\(parts[0])' is not an IPv4 address")
        }
        return a
    }

    /// Opens (or creates) TAP interface `ifname` and sets it up.
    public static func tap(ifname: String, device: String) throws -> FrameLink {
        guard !ifname.isEmpty, ifname.utf8.count < 16 else {
            throw PluginError("\(device): setting 'ifname': '\(ifname)' is not an interface name (1-15 bytes)")
        }
        let fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC)
        guard fd >= 0 else { throw PluginError("\(device): cannot open /dev/net/tun for TAP '\(ifname)': \(String(cString: strerror(errno)))") }
        var req = [UInt8](repeating: 0, count: 40)       // struct ifreq: name[16], short flags
        for (i, c) in ifname.utf8.enumerated() { req[i] = c }
        let flags: UInt16 = 0x0002 | 0x1000              // IFF_TAP | IFF_NO_PI
        req[16] = UInt8(flags & 0xFF); req[17] = UInt8(flags >> 8)
        let tunsetiff: UInt = 0x4004_54CA
        if req.withUnsafeMutableBytes({ gvm_ioctl_ptr(fd, tunsetiff, $0.baseAddress) }) != 0 {
            let e = errno; close(fd)
            let hint = e == EPERM ? " (creating or attaching a TAP needs CAP_NET_ADMIN, or a persistent TAP owned by this user)" : ""
            throw PluginError("\(device): TUNSETIFF '\(ifname)': \(String(cString: strerror(e)))\(hint)")
        }
        // Bring the link up (SIOCGIFFLAGS / SIOCSIFFLAGS on a datagram socket).
        let s = socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        if s >= 0 {
            var r2 = [UInt8](repeating: 0, count: 40)
            for (i, c) in ifname.utf8.enumerated() { r2[i] = c }
            if r2.withUnsafeMutableBytes({ gvm_ioctl_ptr(s, 0x8913, $0.baseAddress) }) == 0 {   // SIOCGIFFLAGS
                r2[16] |= 0x1                                                                  // IFF_UP
                _ = r2.withUnsafeMutableBytes { gvm_ioctl_ptr(s, 0x8914, $0.baseAddress) }     // SIOCSIFFLAGS
            }
            close(s)
        }
        return FrameLink(fd: fd, what: "TAP \(ifname)")
    }

    func send(_ frame: UnsafeRawBufferPointer) -> Int { write(fd, frame.baseAddress, frame.count) }
}

/// The NIC's queue logic, free of the ABI: frames out through `transmit`, frames in through
/// `receive` (unit-tested with an array as guest memory).
public final class VirtioNetBackend: VirtioBackend {
    public static let headerSize = 12
    public static let maxFrame = 65_536
    static let rx = 0, tx = 1
    enum Feature { static let mac: UInt64 = 1 << 5, status: UInt64 = 1 << 16 }
    let mac: [UInt8]
    let backlogLimit: Int
    let transmit: (UnsafeRawBufferPointer) -> Void
    var backlog: [[UInt8]] = []
    var frame = [UInt8](repeating: 0, count: VirtioNetBackend.headerSize + VirtioNetBackend.maxFrame)
    public private(set) var stats = (txFrames: 0, rxFrames: 0, txBytes: UInt64(0), rxBytes: UInt64(0), rxDropped: 0)

    public init(mac: [UInt8], backlog: Int, transmit: @escaping (UnsafeRawBufferPointer) -> Void) {
        self.mac = mac
        backlogLimit = backlog
        self.transmit = transmit
    }

    public var deviceID: UInt32 { 1 }
    public var features: UInt64 { Feature.mac | Feature.status | VirtioFeature.indirectDesc }
    public var queueMaxSizes: [UInt16] { [256, 256] }
    public func configBytes() -> [UInt8] { mac + [1, 0] }       // status: VIRTIO_NET_S_LINK_UP
    public func reset() { backlog.removeAll() }

    var limits: Virtqueue.Limits {
        Virtqueue.Limits(maxBytes: UInt64(VirtioNetBackend.headerSize + VirtioNetBackend.maxFrame), maxSegments: 64, indirect: true)
    }

    public func notify(queue q: Int, _ t: VirtioTransport) throws {
        if q == VirtioNetBackend.tx {
            var done = 0
            while let chain = try t.nextChain(q, limits: limits) {
                guard chain.writableBytes == 0 else { throw NetChainError("virtio-net transmit chain has device-writable buffers") }
                let n = chain.readableBytes
                guard n >= VirtioNetBackend.headerSize else {
                    throw NetChainError("virtio-net transmit chain of \(n) bytes is shorter than the 12-byte header")
                }
                let ok = frame.withUnsafeMutableBytes { ChainIO.gather(t.mem, chain.readable, offset: 0, into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<n])) }
                guard ok else { throw ChainError.unreadable(what: "virtio-net transmit buffer", gpa: chain.readable.first?.gpa ?? 0) }
                frame.withUnsafeBytes { transmit(UnsafeRawBufferPointer(rebasing: $0[VirtioNetBackend.headerSize..<n])) }
                stats.txFrames += 1
                stats.txBytes += UInt64(n - VirtioNetBackend.headerSize)
                try t.complete(q, head: chain.head, written: 0)
                done += 1
            }
            if done > 0 { t.notifyDriver(q) }
        } else {
            try deliver(t)
        }
    }

    /// A frame arrived from the link (transport lock held): queue it and deliver what fits.
    public func receive(_ bytes: UnsafeRawBufferPointer, _ t: VirtioTransport) {
        guard t.isLive else { stats.rxDropped += 1; return }
        if backlog.count >= backlogLimit {
            stats.rxDropped += 1
        } else {
            backlog.append(Array(bytes))
        }
        do { try deliver(t) } catch { t.guestError("\(error)") }
    }

    /// Moves backlog frames into posted receive buffers.
    func deliver(_ t: VirtioTransport) throws {
        var done = 0
        defer { if done > 0 { t.notifyDriver(VirtioNetBackend.rx) } }
        while !backlog.isEmpty, t.isLive, t.queues[VirtioNetBackend.rx].ready {
            guard let chain = try t.nextChain(VirtioNetBackend.rx, limits: limits) else { return }
            guard chain.readableBytes == 0 else { throw NetChainError("virtio-net receive chain has device-readable buffers") }
            let f = backlog.removeFirst()
            let need = VirtioNetBackend.headerSize + f.count
            if chain.writableBytes < need {
                // The frame does not fit the posted buffer: return the buffer empty and drop it.
                stats.rxDropped += 1
                try t.complete(VirtioNetBackend.rx, head: chain.head, written: 0)
                done += 1
                continue
            }
            var hdr = [UInt8](repeating: 0, count: VirtioNetBackend.headerSize)
            hdr[10] = 1                                          // num_buffers
            let packet = hdr + f
            guard packet.withUnsafeBytes({ ChainIO.scatter(t.mem, chain.writable, offset: 0, $0) }) else {
                throw ChainError.unreadable(what: "virtio-net receive buffer", gpa: chain.writable.first?.gpa ?? 0)
            }
            stats.rxFrames += 1
            stats.rxBytes += UInt64(f.count)
            try t.complete(VirtioNetBackend.rx, head: chain.head, written: UInt32(need))
            done += 1
        }
    }
}

struct NetChainError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

/// Parses "aa:bb:cc:dd:ee:ff".
func parseMAC(_ text: String, device: String) throws -> [UInt8] {
    let parts = text.split(separator: ":")
    let bytes = parts.compactMap { $0.count == 2 ? UInt8($0, radix: 16) : nil }
    guard parts.count == 6, bytes.count == 6 else {
        throw PluginError("\(device): setting 'mac': '\(text)' is not a MAC address (aa:bb:cc:dd:ee:ff)")
    }
    guard bytes[0] & 1 == 0 else { throw PluginError("\(device): setting 'mac': \(text) is a multicast address") }
    return bytes
}

/// The device model: virtio-mmio window, queue logic, link and its receive thread.
public final class VirtioNetDevice: DeviceModel {
    public static let modelName = "virtio-net"
    public static let summary = "virtio-net over virtio-mmio (v2): UDP socket (tests) or TAP backend on the device's node"
    public static let defaultBase: UInt64 = 0xD000_1000
    let transport: VirtioTransport
    public static let settingInfo = [
        SettingInfo("backend", default: "socket", "socket (UDP to a host-side peer) or tap"),
        SettingInfo("peer", default: nil, "socket backend: host:port the frames go to (required for socket)"),
        SettingInfo("bind", default: "127.0.0.1:0", "socket backend: local address to receive frames on"),
        SettingInfo("ifname", default: "gvmtap0", "tap backend: interface to attach (created if missing; needs CAP_NET_ADMIN)"),
        SettingInfo("mac", default: "52:54:00:12:34:56", "the NIC's MAC address"),
        SettingInfo("rx_backlog", default: "256", "frames held for the guest before the oldest are dropped"),
    ]
    let backend: VirtioNetBackend
    let link: FrameLink
    let stopping = StopFlag()
    let finished = DispatchSemaphore(value: 0)
    var thread: Thread?
    let counters: [Counter]
    var reported = [UInt64](repeating: 0, count: 5)
    let label: String

    public init(services: HostServices, host: DeviceHost, config: DeviceConfig, settings: Settings) throws {
        try settings.allowOnly(declared: Self.settingInfo)
        label = "virtio-net '\(config.name)'"
        let kind = try settings.choice("backend", ["socket", "tap"], default: "socket")
        if kind == "socket" {
            guard let peer = settings.values["peer"] else {
                throw PluginError("\(label): backend socket needs setting 'peer' (host:port of the UDP peer)")
            }
            link = try FrameLink.udp(peer: peer, bind: settings.string("bind", default: "127.0.0.1:0"), device: label)
        } else {
            link = try FrameLink.tap(ifname: settings.string("ifname", default: "gvmtap0"), device: label)
        }
        let mac = try parseMAC(settings.string("mac", default: "52:54:00:12:34:56"), device: label)
        let backlog = try settings.int("rx_backlog", default: 256, range: 1...4096)
        let l = link
        backend = VirtioNetBackend(mac: mac, backlog: backlog) { frame in _ = l.send(frame) }
        let irq = config.irq
        transport = VirtioTransport(name: label, backend: backend, mem: HostDMA(host), log: { services.log(.error, $0) },
                                    irq: { level in if let irq { host.setIRQ(irq, level: level) } })
        counters = ["tx_frames", "rx_frames", "tx_bytes", "rx_bytes", "rx_dropped"].map { services.counter("virtio-net.\(config.name).\($0)") }
        try host.map(.mmio, base: config.base ?? VirtioNetDevice.defaultBase, length: VirtioTransport.windowSize)
        let t = Thread { [transport, backend, link, stopping, finished] in
            VirtioNetDevice.receiveLoop(link: link, transport: transport, backend: backend, stopping: stopping)
            finished.signal()
        }
        t.name = "virtio-net-rx"
        t.start()
        thread = t
        services.log(.info, "\(label): \(link.what), mac \(settings.string("mac", default: "52:54:00:12:34:56"))")
    }

    static func receiveLoop(link: FrameLink, transport: VirtioTransport, backend: VirtioNetBackend, stopping: StopFlag) {
        var buf = [UInt8](repeating: 0, count: VirtioNetBackend.maxFrame)
        while !stopping.isSet {
            var p = pollfd(fd: link.fd, events: Int16(POLLIN), revents: 0)
            let r = poll(&p, 1, 100)
            if r <= 0 { continue }
            let n = buf.withUnsafeMutableBytes { read(link.fd, $0.baseAddress, $0.count) }
            if n <= 0 {
                if n < 0 && (errno == EINTR || errno == EAGAIN || errno == ECONNREFUSED) { continue }
                usleep(10_000)   // a closed or failing link: stay quiet until shutdown
                continue
            }
            buf.withUnsafeBytes { b in transport.locked { backend.receive(UnsafeRawBufferPointer(rebasing: b[0..<n]), transport) } }
        }
    }

    public func io(space: IOSpace, offset: UInt64, data: UnsafeMutableBufferPointer<UInt8>, isWrite: Bool) {
        transport.access(offset: offset, data: data, isWrite: isWrite)
        if isWrite && offset == 0x50 { publishCounters() }
    }

    func publishCounters() {
        let s = transport.locked { backend.stats }
        let now: [UInt64] = [UInt64(s.txFrames), UInt64(s.rxFrames), s.txBytes, s.rxBytes, UInt64(s.rxDropped)]
        for i in 0..<now.count where now[i] > reported[i] { counters[i].add(now[i] - reported[i]) }
        reported = now
    }

    public func reset() { transport.locked { transport.reset() } }

    public func shutdown() {
        stopping.set()
        if thread != nil { finished.wait() }
        thread = nil
        publishCounters()
    }
}

/// A flag one thread sets and another polls.
final class StopFlag: Sendable {
    private let value = Atomic<Bool>(false)
    var isSet: Bool { value.load(ordering: .acquiring) }
    func set() { value.store(true, ordering: .releasing) }
}
