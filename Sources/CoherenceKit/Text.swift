// Human-readable results of a conformance run (what `giantvm conformance` prints), and a note the
// crash handler prints if a plugin kills the process mid-run.

#if canImport(Glibc)
import Glibc
#endif

public enum ConformanceText {
    /// One scenario's verdict: "PASS name (N seeds)", or FAIL with the shrunk schedule, its
    /// problems and the command that replays it.
    public static func verdict(_ v: ScenarioVerdict, plugin: String, model: MemoryModel) -> String {
        let name = v.name.padding(toLength: 20, withPad: " ", startingAt: 0)
        var outcomes = ""
        if let o = v.outcomes {
            outcomes = "; " + o.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: ", ")
        }
        if let why = v.skipped { return "SKIP  \(name) \(why)" }
        guard let f = v.failure else { return "PASS  \(name) \(v.runs) seeds\(outcomes)" }
        var lines = ["FAIL  \(name) seed \(f.seed) (run \(v.runs)): found with \(f.foundNodes) nodes, size \(f.foundSize), at step \(f.foundSteps); shortest: \(f.nodes) nodes, size \(f.size), fails at step \(f.steps)"]
        lines += f.problems.map { "      " + $0 }
        lines.append("      replay: giantvm conformance \(plugin) --model \(model.rawValue) " + f.replayArguments.joined(separator: " "))
        return lines.joined(separator: "\n")
    }
}

/// What the run is doing, printed by a SIGSEGV/SIGBUS/SIGFPE/SIGILL/SIGABRT handler before the
/// process dies of it: a plugin that crashes on a message still names the scenario and seed.
public enum CrashNote {
    nonisolated(unsafe) static var buffer = UnsafeMutablePointer<CChar>.allocate(capacity: 512)
    nonisolated(unsafe) static var length = 0

    /// Sets the note (truncated to 500 bytes).
    public static func set(_ text: String) {
        let bytes = Array("\ngiantvm conformance: the plugin crashed during \(text)\n".utf8.prefix(500))
        for (i, b) in bytes.enumerated() { buffer[i] = CChar(bitPattern: b) }
        length = bytes.count
    }

    public static func install() {
        #if canImport(Glibc)
        for sig in [SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT] {
            signal(sig) { s in
                if CrashNote.length > 0 { _ = write(2, CrashNote.buffer, CrashNote.length) }
                signal(s, SIG_DFL)
                raise(s)
            }
        }
        #endif
    }
}
