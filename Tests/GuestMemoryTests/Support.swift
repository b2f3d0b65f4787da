// Test support: a guest-memory harness driven by plain host threads (no KVM), with either the
// real dsm-local plugin (through its ABI descriptor) or `ScriptedCoherence`, a test double that
// records every hook call and serves or holds faults as a test tells it to.

import CSystem
import DsmLocal
import Foundation
@testable import GuestMemory
import Logging
import Metrics
import PluginAPI
import PluginHost
import Synchronization
import XCTest

let page = guestPageSize

/// Skips the test when this process cannot open a userfaultfd (reported with the real reason).
func requireUserfaultfd() throws {
    let fd = gvm_uffd_open_syscall()
    if fd >= 0 { close(fd); return }
    let dev = gvm_uffd_open_device()
    if dev >= 0 { close(dev); return }
    throw XCTSkip("userfaultfd unavailable to this process: \(String(cString: strerror(-fd))); needs root or /dev/userfaultfd access")
}

/// Runs `body` on `count` dedicated OS threads at once and waits (bounded) for all of them.
func onThreads(_ count: Int, timeout: Double = 20, file: StaticString = #filePath, line: UInt = #line,
               _ body: @escaping @Sendable (Int) -> Void) {
    let group = DispatchGroup()
    for i in 0..<count {
        group.enter()
        let t = Thread { body(i); group.leave() }
        t.stackSize = 1 << 20
        t.start()
    }
    if group.wait(timeout: .now() + timeout) == .timedOut {
        XCTFail("threads did not finish within \(timeout) s (a fault was never resolved)", file: file, line: line)
    }
}

/// Reads one byte through a plain load (faults if the page does not allow reads).
@inline(never) func load(_ p: UnsafeMutableRawPointer) -> UInt8 { p.load(as: UInt8.self) }

/// Stores one byte (faults if the page does not allow writes).
@inline(never) func store(_ p: UnsafeMutableRawPointer, _ v: UInt8) { p.storeBytes(of: v, as: UInt8.self) }

/// A recognisable byte for offset `o` of page `gfn`.
func pattern(_ gfn: UInt64, _ o: Int) -> UInt8 { UInt8(truncatingIfNeeded: Int(gfn) &* 31 &+ o &* 7 &+ 1) }

/// A test double of a coherence plugin, built directly on the C ABI. In `.serve` mode it acts
/// like a home node holding `home[gfn]` (or the pattern bytes on first touch); in `.hold` mode
/// it only records faults, and the test resolves them.
final class ScriptedCoherence: @unchecked Sendable {
    enum Mode { case serve, hold }
    struct Call: Equatable { var gfn: UInt64; var access: UInt32; var flags: UInt32 }

    let mode: Mode
    var memory: UnsafePointer<gvm_coherence_host>!
    private let state = Mutex<(faults: [Call], unpinned: [UInt64], home: [UInt64: [UInt8]])>(([], [], [:]))
    let ops: UnsafeMutablePointer<gvm_coherence_ops>

    init(mode: Mode) {
        self.mode = mode
        ops = .allocate(capacity: 1)
        ops.initialize(to: gvm_coherence_ops())
        ops.pointee.size = UInt32(MemoryLayout<gvm_coherence_ops>.size)
        ops.pointee.create = { _, mem, _, _, _, _ in
            // The instance is the test double itself, handed over through the settings-less path
            // below (pendingInstance), since a C function pointer cannot capture it.
            let me = ScriptedCoherence.pendingInstance!
            me.memory = mem
            return Unmanaged.passUnretained(me).toOpaque()
        }
        ops.pointee.fault = { inst, gfn, access, flags in ScriptedCoherence.from(inst).fault(gfn, access, flags) }
        ops.pointee.receive = { _, _, _, _ in }
        ops.pointee.page_unpinned = { inst, gfn in ScriptedCoherence.from(inst).state.withLock { $0.unpinned.append(gfn) } }
        ops.pointee.destroy = { _ in }
    }

    deinit { ops.deallocate() }

    nonisolated(unsafe) static var pendingInstance: ScriptedCoherence?
    static func from(_ p: UnsafeMutableRawPointer?) -> ScriptedCoherence {
        Unmanaged<ScriptedCoherence>.fromOpaque(p!).takeUnretainedValue()
    }

    var faults: [Call] { state.withLock { $0.faults } }
    var unpinned: [UInt64] { state.withLock { $0.unpinned } }

    func fault(_ gfn: UInt64, _ access: UInt32, _ flags: UInt32) {
        state.withLock { $0.faults.append(Call(gfn: gfn, access: access, flags: flags)) }
        guard mode == .serve else { return }
        serve(gfn, access)
    }

    /// Resolves a fault as a home node would, then wakes the page.
    func serve(_ gfn: UInt64, _ access: UInt32) {
        let h = memory.pointee.host
        let want = access == GVM_ACCESS_WRITE ? GVM_PAGE_MODIFIED : GVM_PAGE_SHARED
        state.withLock { s in
            let cur = memory.pointee.page_state(h, gfn)
            if cur == GVM_PAGE_MODIFIED || (cur == GVM_PAGE_SHARED && want == GVM_PAGE_SHARED) { return }
            if cur == GVM_PAGE_SHARED {
                _ = memory.pointee.page_upgrade(h, gfn)
                return
            }
            let bytes = s.home[gfn] ?? (0..<page).map { pattern(gfn, $0) }
            let rc = bytes.withUnsafeBytes { memory.pointee.page_install(h, gfn, $0.baseAddress, want) }
            precondition(rc == GVM_OK.rawValue, "install failed: \(rc)")
        }
        memory.pointee.page_wake(h, gfn)
    }

    /// Drops the page, keeping its bytes as the home copy (as if another node took it).
    func evict(_ gfn: UInt64) -> Int32 {
        state.withLock { s in
            var buf = [UInt8](repeating: 0, count: page)
            let rc = buf.withUnsafeMutableBytes { memory.pointee.page_drop(memory.pointee.host, gfn, $0.baseAddress) }
            if rc == GVM_OK.rawValue { s.home[gfn] = buf }
            return rc
        }
    }

    /// Write-protects the page (as when another node wants to read it).
    func downgrade(_ gfn: UInt64) -> Int32 {
        state.withLock { _ in memory.pointee.page_downgrade(memory.pointee.host, gfn, nil) }
    }
}

/// Guest memory plus a bound coherence plugin, stopped and destroyed on `close()`.
final class Harness {
    let memory: GuestMemory
    let cluster: SingleNodeClusterInfo
    let services: HostServicesTable
    let metrics = MetricsRegistry()
    var plugin: CoherencePluginInstance!
    var scripted: ScriptedCoherence?

    /// `scripted == nil`: dsm-local, through its exported ABI descriptor.
    init(pages: Int = 64, wakeMode: HandlerWakeMode = .poll, handlers: Int = 1, scripted: ScriptedCoherence? = nil) throws {
        memory = try GuestMemory(bytes: UInt64(pages * page), wakeMode: wakeMode, handlerThreads: handlers,
                                 send: { _, _ in GVM_ERR_CLOSED.rawValue }, sendUrgent: { _, _ in GVM_ERR_CLOSED.rawValue })
        cluster = SingleNodeClusterInfo(memoryBytes: UInt64(pages * page))
        var logger = Logger(label: "test.plugin")
        logger.logLevel = .warning
        services = HostServicesTable(pluginName: scripted == nil ? "dsm-local" : "scripted", metrics: metrics,
                                     logger: logger, onFatal: { msg in FileHandle.standardError.write(Data("FATAL: \(msg)\n".utf8)) })
        self.scripted = scripted
        if let scripted {
            ScriptedCoherence.pendingInstance = scripted
            plugin = try CoherencePluginInstance(name: "scripted", ops: UnsafePointer(scripted.ops), services: services.pointer,
                                                 memory: memory, cluster: cluster.pointer)
            ScriptedCoherence.pendingInstance = nil
        } else {
            let desc = giantvm_plugin_entry().assumingMemoryBound(to: gvm_plugin_descriptor.self)
            precondition(desc.pointee.kind == GVM_PLUGIN_COHERENCE.rawValue)
            let ops = desc.pointee.ops.assumingMemoryBound(to: gvm_coherence_ops.self)
            plugin = try CoherencePluginInstance(name: "dsm-local", ops: ops, services: services.pointer,
                                                 memory: memory, cluster: cluster.pointer)
        }
        try plugin.start()
        try memory.start()
    }

    var host: UnsafePointer<gvm_coherence_host> { memory.coherenceHost }
    func addr(_ gfn: UInt64, _ offset: Int = 0) -> UnsafeMutableRawPointer { memory.base + Int(gfn) * page + offset }

    func close() {
        memory.stop()
        plugin.stop()
        plugin = nil
    }

    /// Host state and kernel state of a page, which must agree.
    func states(_ gfn: UInt64) throws -> (host: UInt32, kernel: UInt32) {
        (memory.pageState(gfn), try memory.kernelState(gfn))
    }
}

extension gvm_status: @retroactive CustomStringConvertible {
    public var description: String { String(cString: gvm_status_name(rawValue)) }
}
