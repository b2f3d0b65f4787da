// The `giantvm` command: one root command, one file per subcommand.

import ArgumentParser
import Config
import Foundation
import Glibc
import Logging

@main
struct GiantVM: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "giantvm",
        abstract: "A distributed hypervisor: many machines run one virtual machine.",
        discussion: """
            Each physical node runs one `giantvm node` process on stock KVM. Together they present a
            single x86-64 VM: vCPUs are spread over the nodes, guest memory is kept coherent by a
            distributed shared memory over userfaultfd, and interrupts and I/O are forwarded between
            nodes. Transports, coherence protocols and devices are plugins (.so files) named in one
            YAML file that every node reads.

            Start here:
              giantvm validate examples/cluster-3node.yaml     check a config, every problem with line:column
              giantvm plugins list                             what plugins are installed, with ABI versions
            """,
        version: "0.1.0",
        subcommands: [Validate.self, Plugins.self, ConformanceCommand.self, Bench.self, Run.self, NodeCommand.self, Up.self, NetBench.self, Top.self, AB.self,
                      Migrate.self, Evacuate.self]
    )
}

/// Options every subcommand takes.
struct GlobalOptions: ParsableArguments {
    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "notice"

    func validate() throws {
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError("--log-level '\(logLevel)' is not one of trace, debug, info, notice, warning, error, critical")
        }
    }

    /// Sends swift-log output to stderr at the chosen level. Call once, first thing in run().
    func bootstrapLogging(label: String = "giantvm") -> Logger {
        let level = Logger.Level(rawValue: logLevel) ?? .notice
        LoggingBootstrapOnce.run(level: level)
        var logger = Logger(label: label)
        logger.logLevel = level
        return logger
    }
}

enum LoggingBootstrapOnce {
    nonisolated(unsafe) private static var done = false
    static func run(level: Logger.Level) {
        guard !done else { return }
        done = true
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = level
            return h
        }
    }
}

/// Prints to stderr and exits with `code`: for errors the user must read, without a stack trace.
func fail(_ message: String, code: Int32 = 1) -> Never {
    FileHandle.standardError.write(Data("giantvm: error: \(message)\n".utf8))
    exit(code)
}

/// Prints a line to stdout at once (stdout may be a pipe to a launcher).
@Sendable func say(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}

/// The longest a CLI duration may be (seconds): Config's `Durations.cliRange`.
let secondsMax = Double(Durations.cliRange.upperBound) / 1e9

/// Checks a duration option (seconds) with the one duration grammar's range, before any
/// arithmetic uses it.
func checkSeconds(_ value: Double, option: String) throws {
    do { _ = try Durations.checkCLI(value, option: option) } catch { throw ValidationError("\(error)") }
}

/// Calls `body` once, `seconds` from now, on its own thread.
func stopAfter(_ seconds: Double, _ body: @escaping @Sendable () -> Void) {
    let t = Thread {
        Thread.sleep(forTimeInterval: seconds)
        body()
    }
    t.name = "duration"
    t.start()
}

/// Turns SIGINT/SIGTERM into a callback on a dedicated thread.
/// Threading: `blockTerminationSignals` on the main thread before any other thread starts.
final class SignalWaiter: @unchecked Sendable {
    private var set = sigset_t()

    static func blockTerminationSignals() -> SignalWaiter {
        let w = SignalWaiter()
        sigemptyset(&w.set)
        sigaddset(&w.set, SIGINT)
        sigaddset(&w.set, SIGTERM)
        pthread_sigmask(SIG_BLOCK, &w.set, nil)
        return w
    }

    /// Calls `body` with the signal number for every SIGINT/SIGTERM, on its own thread.
    func start(_ body: @escaping (Int32) -> Void) {
        let blocked = set
        let t = Thread {
            var s = blocked
            while true {
                var sig: Int32 = 0
                if sigwait(&s, &sig) == 0 { body(sig) }
            }
        }
        t.name = "signals"
        t.start()
    }
}

