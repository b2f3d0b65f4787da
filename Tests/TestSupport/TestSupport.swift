// Shared helpers for every test target: where the built products are, running the built giantvm
// (or any program) with a hard timeout, and skipping with a clear reason when a requirement
// (/dev/kvm, root, userfaultfd, network namespaces) is missing.

import Foundation
import XCTest

public enum Built {
    /// The directory holding the built products (giantvm, lib*.so, the test bundle itself).
    public static var productsDirectory: String {
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var dir = (exe as NSString).deletingLastPathComponent
        // The test bundle may sit inside a .xctest directory.
        while dir.hasSuffix(".xctest") || dir.contains(".xctest/") {
            dir = (dir as NSString).deletingLastPathComponent
        }
        return dir
    }

    public static var giantvm: String { productsDirectory + "/giantvm" }

    public static func plugin(_ name: String) -> String { productsDirectory + "/lib\(name).so" }

    /// The package root (for examples/ and Guests/).
    public static var packageRoot: String {
        var dir = productsDirectory
        while dir != "/" {
            if FileManager.default.fileExists(atPath: dir + "/Package.swift") { return dir }
            dir = (dir as NSString).deletingLastPathComponent
        }
        return FileManager.default.currentDirectoryPath
    }
}

/// The result of a finished child process.
public struct ProcessResult {
    public var status: Int32
    public var stdout: String
    public var stderr: String
    public var timedOut: Bool
    public var output: String { stdout + stderr }
}

/// A child process whose output is collected; always killed on timeout or deinit.
public final class Child {
    public let process = Process()
    private let outPipe = Pipe()
    private let errPipe = Pipe()
    private let lock = NSLock()
    private var outData = Data()
    private var errData = Data()

    public init(_ executable: String, _ arguments: [String], environment: [String: String]? = nil,
                directory: String? = nil) throws {
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if let environment { process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
        if let directory { process.currentDirectoryURL = URL(fileURLWithPath: directory) }
        process.standardOutput = outPipe
        process.standardError = errPipe
        process.standardInput = FileHandle.nullDevice
        outPipe.fileHandleForReading.readabilityHandler = { [weak self] h in
            let d = h.availableData
            guard let self, !d.isEmpty else { return }
            self.lock.lock(); self.outData.append(d); self.lock.unlock()
        }
        errPipe.fileHandleForReading.readabilityHandler = { [weak self] h in
            let d = h.availableData
            guard let self, !d.isEmpty else { return }
            self.lock.lock(); self.errData.append(d); self.lock.unlock()
        }
        try process.run()
    }

    public var pid: Int32 { process.processIdentifier }

    public var stdoutSoFar: String { lock.lock(); defer { lock.unlock() }; return String(decoding: outData, as: UTF8.self) }
    public var stderrSoFar: String { lock.lock(); defer { lock.unlock() }; return String(decoding: errData, as: UTF8.self) }

    /// Waits until `predicate` holds on stdout+stderr so far, or `timeout` passes.
    @discardableResult
    public func waitForOutput(timeout: TimeInterval, _ predicate: (String) -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if predicate(stdoutSoFar + stderrSoFar) { return true }
            if !process.isRunning { return predicate(stdoutSoFar + stderrSoFar) }
            usleep(20_000)
        }
        return false
    }

    public func signal(_ sig: Int32) { if process.isRunning { kill(process.processIdentifier, sig) } }

    /// Waits for exit up to `timeout`, then SIGKILLs.
    public func wait(timeout: TimeInterval) -> ProcessResult {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(10_000) }
        let timedOut = process.isRunning
        if timedOut {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        // Drain what is left in the pipes.
        usleep(50_000)
        outPipe.fileHandleForReading.readabilityHandler = nil
        errPipe.fileHandleForReading.readabilityHandler = nil
        let restOut = (try? outPipe.fileHandleForReading.readToEnd()) ?? nil
        let restErr = (try? errPipe.fileHandleForReading.readToEnd()) ?? nil
        lock.lock()
        if let restOut { outData.append(restOut) }
        if let restErr { errData.append(restErr) }
        let r = ProcessResult(status: timedOut ? -9 : process.terminationStatus,
                              stdout: String(decoding: outData, as: UTF8.self),
                              stderr: String(decoding: errData, as: UTF8.self), timedOut: timedOut)
        lock.unlock()
        return r
    }

    deinit {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }
}

/// Runs a program to completion with a hard timeout.
public func run(_ executable: String, _ arguments: [String], timeout: TimeInterval = 60,
                environment: [String: String]? = nil, directory: String? = nil) throws -> ProcessResult {
    let c = try Child(executable, arguments, environment: environment, directory: directory)
    return c.wait(timeout: timeout)
}

/// Runs the built giantvm.
public func giantvm(_ arguments: [String], timeout: TimeInterval = 60, environment: [String: String]? = nil,
                    directory: String? = nil) throws -> ProcessResult {
    try run(Built.giantvm, arguments, timeout: timeout, environment: environment, directory: directory)
}

/// Writes `text` to a fresh temporary file and returns its path.
public func temporaryFile(_ text: String, name: String = "config.yaml") -> String {
    let dir = NSTemporaryDirectory() + "giantvm-test-" + UUID().uuidString
    try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    let path = dir + "/" + name
    FileManager.default.createFile(atPath: path, contents: Data(text.utf8))
    return path
}

public enum Requirement {
    public static func root() throws {
        if getuid() != 0 { throw XCTSkip("needs root (network namespaces / userfaultfd in KVM); run as root") }
    }
    public static func kvm() throws {
        if access("/dev/kvm", R_OK | W_OK) != 0 { throw XCTSkip("/dev/kvm is missing or not accessible: KVM tests skipped") }
    }
    public static func userfaultfd() throws {
        if getuid() != 0 && access("/dev/userfaultfd", R_OK | W_OK) != 0 {
            throw XCTSkip("userfaultfd needs root or access to /dev/userfaultfd (vm.unprivileged_userfaultfd is 0)")
        }
    }
    public static func builtGiantVM() throws {
        if !FileManager.default.isExecutableFile(atPath: Built.giantvm) {
            throw XCTSkip("the giantvm binary is not built at \(Built.giantvm): run `swift build` first")
        }
    }

    /// A VM of the test guest can run here: the binary, /dev/kvm, userfaultfd and the guest image.
    public static func testGuestVM() throws {
        try builtGiantVM()
        try kvm()
        try userfaultfd()
        if !FileManager.default.fileExists(atPath: Built.packageRoot + "/Guests/build/testguest.elf") {
            throw XCTSkip("the test guest is not built: run `make -C Guests`")
        }
    }
}

/// A value set on one thread and read on another (tests' failure messages).
public final class LockedValue<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: T?
    public init() {}
    public func set(_ v: T) { lock.lock(); value = v; lock.unlock() }
    public func get() -> T? { lock.lock(); defer { lock.unlock() }; return value }
}

/// Writes a config that boots the test guest through multiboot with the firmware's devices on
/// node 0: `vcpus[i]` vCPUs on node i, dsm-local on one node and dsm-ivy across several, and
/// `modules` as guest.modules.
public func multibootTestConfig(cluster: String, port: Int, vcpus: [Int], cmdline: String, memory: String = "32MiB",
                                modules: [String] = []) -> String {
    let image = Built.packageRoot + "/Guests/build/testguest.elf"
    let nodes = vcpus.enumerated().map { "  - {id: \($0.offset), address: 127.0.0.1, port: \(port + $0.offset), vcpus: \($0.element)}" }
    let mods = modules.isEmpty ? "" : "\n  modules: [\(modules.map { "\"\($0)\"" }.joined(separator: ", "))]"
    return temporaryFile("""
        cluster: \(cluster)
        nodes:
        \(nodes.joined(separator: "\n"))
        memory: \(memory)
        transport: {plugin: transport-tcp}
        coherence: {plugin: \(vcpus.count == 1 ? "dsm-local" : "dsm-ivy")}
        devices:
          - {name: com1, model: uart16550, node: 0, base: 0x3f8, irq: 4}
          - {name: exit, model: isa-debug-exit, node: 0, base: 0xf4}
          - {name: results, model: results, node: 0, base: 0xe0}
          - {name: fwcfg, model: fw-cfg, node: 0}
        guest:
          image: \(image)
          protocol: multiboot
          cmdline: "\(cmdline)"\(mods)
        """)
}

/// Writes a 2-node VM config (ports from this area's range 20000-20999).
public func vmConfig(port: Int, vcpus: [Int] = [2, 2], addresses: [String]? = nil, memory: String = "32MiB",
              cmdline: String = "hello", ioapicNode: Int = 0, uartNode: Int = 0) -> String {
    let image = Built.packageRoot + "/Guests/build/testguest.elf"
    var nodes = ""
    for (i, n) in vcpus.enumerated() {
        let addr = addresses?[i] ?? "127.0.0.1"
        nodes += "  - {id: \(i), address: \(addr), port: \(port + i), vcpus: \(n)}\n"
    }
    return temporaryFile("""
        cluster: disttest
        nodes:
        \(nodes)
        memory: \(memory)
        transport: {plugin: transport-tcp}
        coherence: {plugin: dsm-ivy}
        devices:
          - {name: com1, model: uart16550, node: \(uartNode), base: 0x3f8, irq: 4}
          - {name: exit, model: isa-debug-exit, node: 0, base: 0xf4}
          - {name: results, model: results, node: 0, base: 0xe0}
        ioapic_node: \(ioapicNode)
        timeouts: {connect: 10s, heartbeat: 100ms, failure: 2s}
        guest:
          image: \(image)
          cmdline: "\(cmdline)"
        """)
}

