// virtio-blk (device ID 2) over virtio-mmio: a raw image file on the device's home node.
// One request queue (size up to 256). Requests (virtio 1.x 5.2.6): a 16-byte device-readable
// header { u32 type; u32 reserved; u64 sector }, data buffers (device-readable for OUT,
// device-writable for IN / GET_ID), and a final device-writable status byte (0 OK, 1 IOERR,
// 2 UNSUPP). Types: IN 0, OUT 1, FLUSH 4 (fsync), GET_ID 8 (20 bytes, the instance name).
// Features: SIZE_MAX, SEG_MAX, BLK_SIZE, FLUSH, RO when read-only, INDIRECT_DESC.
// A request outside the disk, or an OUT to a read-only disk, completes with IOERR (a normal
// guest-visible error, not a malformed ring); a malformed chain sets NEEDS_RESET.
//
// Settings: path (the image file, required; absolute, or relative to the node's working
// directory), read_only (default false), max_request (bytes of data per request, default 1MiB,
// 4KiB-16MiB). The image size must be a positive multiple of 512.
// Counters: virtio-blk.<name>.reads, .writes, .flushes, .bytes_read, .bytes_written, .errors.
import Foundation
import PluginKit

/// The image file and the request logic, free of the ABI (unit-tested with a file and an array).
public final class VirtioBlkBackend: VirtioBackend {
    public static let sectorSize: UInt64 = 512
    public enum ReqType { public static let input: UInt32 = 0, output: UInt32 = 1, flush: UInt32 = 4, getID: UInt32 = 8 }
    public enum Status { public static let ok: UInt8 = 0, ioError: UInt8 = 1, unsupported: UInt8 = 2 }
    enum Feature {
        static let sizeMax: UInt64 = 1 << 1, segMax: UInt64 = 1 << 2, readOnly: UInt64 = 1 << 5
        static let blkSize: UInt64 = 1 << 6, flush: UInt64 = 1 << 9
    }
    static let queueSize: UInt16 = 256
    static let segMax: UInt32 = 126

    let fd: Int32
    public let path: String
    public let readOnly: Bool
    public let sizeBytes: UInt64
    let maxRequest: Int
    let id: [UInt8]
    var buffer: [UInt8]
    public private(set) var stats = (reads: 0, writes: 0, flushes: 0, bytesRead: UInt64(0), bytesWritten: UInt64(0), errors: 0)
    let onIOError: (String) -> Void

    public init(name: String, path: String, readOnly: Bool, maxRequest: Int, onIOError: @escaping (String) -> Void = { _ in }) throws {
        self.path = path
        self.readOnly = readOnly
        self.maxRequest = maxRequest
        self.onIOError = onIOError
        fd = open(path, readOnly ? O_RDONLY | O_CLOEXEC : O_RDWR | O_CLOEXEC)
        guard fd >= 0 else {
            throw PluginError("virtio-blk '\(name)': cannot open disk image '\(path)' \(readOnly ? "read-only" : "read-write"): \(String(cString: strerror(errno)))")
        }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            close(fd)
            throw PluginError("virtio-blk '\(name)': cannot stat disk image '\(path)': \(String(cString: strerror(errno)))")
        }
        let size = UInt64(max(st.st_size, 0))
        guard st.st_mode & S_IFMT == S_IFREG || st.st_mode & S_IFMT == S_IFBLK, size > 0, size % VirtioBlkBackend.sectorSize == 0 else {
            close(fd)
            throw PluginError("virtio-blk '\(name)': disk image '\(path)' is \(size) bytes: it must be a regular file whose size is a positive multiple of 512")
        }
        sizeBytes = size
        id = Array(name.utf8.prefix(20)) + [UInt8](repeating: 0, count: max(0, 20 - name.utf8.count))
        buffer = [UInt8](repeating: 0, count: maxRequest)
    }

    deinit { close(fd) }

    public var deviceID: UInt32 { 2 }
    public var features: UInt64 {
        Feature.sizeMax | Feature.segMax | Feature.blkSize | Feature.flush | VirtioFeature.indirectDesc | (readOnly ? Feature.readOnly : 0)
    }
    public var queueMaxSizes: [UInt16] { [VirtioBlkBackend.queueSize] }

    /// capacity u64 (sectors), size_max u32, seg_max u32, geometry (4 bytes, zero), blk_size u32.
    public func configBytes() -> [UInt8] {
        le(sizeBytes / VirtioBlkBackend.sectorSize, 8) + le(UInt64(maxRequest), 4) + le(UInt64(VirtioBlkBackend.segMax), 4)
            + [0, 0, 0, 0] + le(VirtioBlkBackend.sectorSize, 4)
    }

    public func reset() {}

    var limits: Virtqueue.Limits {
        Virtqueue.Limits(maxBytes: UInt64(maxRequest) + 16 + 1, maxSegments: Int(VirtioBlkBackend.segMax) + 2, indirect: true)
    }

    public func notify(queue q: Int, _ t: VirtioTransport) throws {
        var done = 0
        while let chain = try t.nextChain(q, limits: limits) {
            let written = try serve(chain, t.mem)
            try t.complete(q, head: chain.head, written: written)
            done += 1
        }
        if done > 0 { t.notifyDriver(q) }
    }

    /// Serves one request; returns the bytes written to the writable buffers (data + status).
    /// Throws only for a malformed chain.
    func serve(_ chain: DescriptorChain, _ mem: GuestDMA) throws -> UInt32 {
        let readable = chain.readable, writable = chain.writable
        guard chain.readableBytes >= 16 else {
            throw BlkChainError("virtio-blk request has \(chain.readableBytes) device-readable bytes, less than its 16-byte header")
        }
        guard chain.writableBytes >= 1 else { throw BlkChainError("virtio-blk request has no device-writable status byte") }
        var header = [UInt8](repeating: 0, count: 16)
        guard header.withUnsafeMutableBytes({ ChainIO.gather(mem, readable, offset: 0, into: $0) }) else {
            throw ChainError.unreadable(what: "virtio-blk request header", gpa: readable.first?.gpa ?? 0)
        }
        let type = UInt32(header[0]) | UInt32(header[1]) << 8 | UInt32(header[2]) << 16 | UInt32(header[3]) << 24
        var sector: UInt64 = 0
        for i in 0..<8 { sector |= UInt64(header[8 + i]) << (8 * UInt64(i)) }
        let statusOffset = chain.writableBytes - 1
        var status = Status.ok
        var dataWritten = 0
        switch type {
        case ReqType.input:
            let n = statusOffset
            if let err = rangeError(sector: sector, bytes: n) {
                status = fail(err)
            } else if n > 0 {
                let got = pread(fd, &buffer, n, off_t(sector * VirtioBlkBackend.sectorSize))
                if got != n {
                    status = fail("read of \(n) bytes at sector \(sector) of '\(path)' failed: \(got < 0 ? String(cString: strerror(errno)) : "short read")")
                } else {
                    guard buffer.withUnsafeBytes({ ChainIO.scatter(mem, writable, offset: 0, UnsafeRawBufferPointer(rebasing: $0[0..<n])) }) else {
                        throw BlkChainError("virtio-blk IN data buffer is not guest RAM")
                    }
                    dataWritten = n
                    stats.reads += 1
                    stats.bytesRead += UInt64(n)
                }
            }
        case ReqType.output:
            let n = chain.readableBytes - 16
            if readOnly {
                status = fail("write to read-only disk '\(path)'")
            } else if let err = rangeError(sector: sector, bytes: n) {
                status = fail(err)
            } else if n > 0 {
                guard buffer.withUnsafeMutableBytes({ ChainIO.gather(mem, readable, offset: 16, into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<n])) }) else {
                    throw BlkChainError("virtio-blk OUT data buffer is not guest RAM")
                }
                let put = pwrite(fd, buffer, n, off_t(sector * VirtioBlkBackend.sectorSize))
                if put != n {
                    status = fail("write of \(n) bytes at sector \(sector) of '\(path)' failed: \(put < 0 ? String(cString: strerror(errno)) : "short write")")
                } else {
                    stats.writes += 1
                    stats.bytesWritten += UInt64(n)
                }
            }
        case ReqType.flush:
            if !readOnly && fsync(fd) != 0 { status = fail("fsync of '\(path)' failed: \(String(cString: strerror(errno)))") }
            stats.flushes += 1
        case ReqType.getID:
            let n = min(20, statusOffset)
            guard id.withUnsafeBytes({ ChainIO.scatter(mem, writable, offset: 0, UnsafeRawBufferPointer(rebasing: $0[0..<n])) }) else {
                throw BlkChainError("virtio-blk GET_ID buffer is not guest RAM")
            }
            dataWritten = n
        default:
            status = Status.unsupported
        }
        guard withUnsafeBytes(of: status, { ChainIO.scatter(mem, writable, offset: statusOffset, $0) }) else {
            throw BlkChainError("virtio-blk status byte is not guest RAM")
        }
        return UInt32(dataWritten + 1)
    }

    /// Why [sector, sector + bytes) is not a valid request, or nil.
    func rangeError(sector: UInt64, bytes: Int) -> String? {
        if bytes % Int(VirtioBlkBackend.sectorSize) != 0 { return "request of \(bytes) bytes is not a whole number of sectors" }
        let sectors = sizeBytes / VirtioBlkBackend.sectorSize
        if sector > sectors || UInt64(bytes) / VirtioBlkBackend.sectorSize > sectors - sector {
            return "request at sector \(sector) for \(bytes) bytes is past the end of '\(path)' (\(sectors) sectors)"
        }
        return nil
    }

    func fail(_ why: String) -> UInt8 {
        stats.errors += 1
        // the first 20 I/O errors are logged, then one per 1000 (a guest can make them at will)
        if stats.errors <= 20 || stats.errors % 1000 == 0 {
            onIOError(why + (stats.errors == 20 ? " (further I/O errors: one line per 1000)" : stats.errors > 20 ? " (I/O error \(stats.errors))" : ""))
        }
        return Status.ioError
    }

    func le(_ v: UInt64, _ n: Int) -> [UInt8] { (0..<n).map { UInt8(truncatingIfNeeded: v >> (8 * UInt64($0))) } }
}

/// A virtio-blk request chain that is malformed for this device type.
struct BlkChainError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

/// The device model: virtio-mmio window + the image backend.
public final class VirtioBlkDevice: DeviceModel {
    public static let modelName = "virtio-blk"
    public static let summary = "virtio-blk over virtio-mmio (v2): a raw image file on the device's node"
    public static let defaultBase: UInt64 = 0xD000_0000
    public static let settingInfo = [
        SettingInfo("path", default: nil, "raw disk image on the device's node (required; size a multiple of 512)"),
        SettingInfo("read_only", default: "false", "refuse guest writes (true/false)"),
        SettingInfo("max_request", default: "1MiB", "largest request the guest may submit (4KiB-16MiB)"),
    ]
    let transport: VirtioTransport
    let backend: VirtioBlkBackend
    let counters: [Counter]
    var reported = (reads: 0, writes: 0, flushes: 0, bytesRead: UInt64(0), bytesWritten: UInt64(0), errors: 0)

    public init(services: HostServices, host: DeviceHost, config: DeviceConfig, settings: Settings) throws {
        try settings.allowOnly(declared: Self.settingInfo)
        guard let path = settings.values["path"], !path.isEmpty else {
            throw PluginError("virtio-blk '\(config.name)': setting 'path' (the raw disk image on this node) is required")
        }
        let ro = try settings.bool("read_only", default: false)
        let maxReq = try parseByteCount(settings.string("max_request", default: "1MiB"), key: "max_request")
        guard maxReq >= 4096, maxReq <= 16 << 20, maxReq % 512 == 0 else {
            throw PluginError("virtio-blk '\(config.name)': setting 'max_request': \(maxReq) is not a multiple of 512 in 4KiB...16MiB")
        }
        let name = config.name
        backend = try VirtioBlkBackend(name: name, path: path, readOnly: ro, maxRequest: Int(maxReq)) { why in
            services.log(.warning, "virtio-blk '\(name)': I/O error returned to the guest: \(why)")
        }
        let irq = config.irq
        transport = VirtioTransport(name: "virtio-blk '\(name)'", backend: backend, mem: HostDMA(host),
                                    log: { services.log(.error, $0) },
                                    irq: { level in if let irq { host.setIRQ(irq, level: level) } })
        counters = ["reads", "writes", "flushes", "bytes_read", "bytes_written", "errors"].map { services.counter("virtio-blk.\(name).\($0)") }
        try host.map(.mmio, base: config.base ?? VirtioBlkDevice.defaultBase, length: VirtioTransport.windowSize)
        services.log(.info, "virtio-blk '\(name)': \(path), \(backend.sizeBytes) bytes\(ro ? ", read-only" : "")")
    }

    public func io(space: IOSpace, offset: UInt64, data: UnsafeMutableBufferPointer<UInt8>, isWrite: Bool) {
        transport.access(offset: offset, data: data, isWrite: isWrite)
        if isWrite && offset == 0x50 { publishCounters() }
    }

    func publishCounters() {
        let s = backend.stats
        let now: [UInt64] = [UInt64(s.reads), UInt64(s.writes), UInt64(s.flushes), s.bytesRead, s.bytesWritten, UInt64(s.errors)]
        let was: [UInt64] = [UInt64(reported.reads), UInt64(reported.writes), UInt64(reported.flushes), reported.bytesRead,
                             reported.bytesWritten, UInt64(reported.errors)]
        for i in 0..<now.count where now[i] > was[i] { counters[i].add(now[i] - was[i]) }
        reported = s
    }

    public func reset() { transport.locked { transport.reset() } }
    public func shutdown() { publishCounters() }
}

/// The device host's DMA services as `GuestDMA`.
struct HostDMA: GuestDMA {
    let host: DeviceHost
    init(_ host: DeviceHost) { self.host = host }
    func read(_ gpa: UInt64, into out: UnsafeMutableRawBufferPointer) -> Bool { host.dmaRead(gpa: gpa, into: out) == .ok }
    func write(_ gpa: UInt64, _ bytes: UnsafeRawBufferPointer) -> Bool { host.dmaWrite(gpa: gpa, bytes) == .ok }
}

/// The virtio models the devices plugin exports.
public let virtioDeviceModels: [any DeviceModel.Type] = [VirtioBlkDevice.self, VirtioNetDevice.self]
