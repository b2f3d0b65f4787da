// The node's control endpoint: `POST /migrate?vcpu=N&to=M` on its metrics listener (YAML
// `metrics:`; node i at port + i). Any node takes the request: the migrator routes it to the node
// that runs the vCPU (docs/migration.md). The answer is one line:
//   200  ok vcpu=N to=M pause_ns=P state_bytes=B: <message>
//   409  failed vcpu=N to=M: <why>            (the VM keeps running)
//   400  <what is wrong with the request>
//
// Threading: on the metrics server's thread; blocks it for at most `timeout` seconds.
import Distributed
import Foundation

enum ControlEndpoint {
    /// Parses `path` and runs it against `migrator`; nil when the path is not a control path.
    static func handle(path: String, migrator: VCPUMigrator?, timeout: Double) -> (status: String, body: String)? {
        let parts = path.split(separator: "?", maxSplits: 1)
        guard parts.first == "/migrate" else { return nil }
        var q: [String: String] = [:]
        if parts.count == 2 {
            for kv in parts[1].split(separator: "&") {
                let p = kv.split(separator: "=", maxSplits: 1)
                if p.count == 2 { q[String(p[0])] = String(p[1]) }
            }
        }
        guard let migrator else { return ("409 Conflict", "failed: this VM runs on one node; there is nowhere to migrate to\n") }
        guard let vs = q["vcpu"], let v = Int(vs), v >= 0, v <= 255 else {
            return ("400 Bad Request", "migrate: 'vcpu' must be a vCPU index 0-254 (got '\(q["vcpu"] ?? "")')\n")
        }
        guard let ts = q["to"], let to = UInt32(ts), to < 64 else {
            return ("400 Bad Request", "migrate: 'to' must be a node id 0-63 (got '\(q["to"] ?? "")')\n")
        }
        let r = migrator.migrate(vcpu: v, to: to, timeout: timeout)
        if r.ok {
            return ("200 OK", "ok vcpu=\(v) to=\(to) pause_ns=\(r.pauseNanoseconds) state_bytes=\(r.stateBytes): \(r.message)\n")
        }
        return ("409 Conflict", "failed vcpu=\(v) to=\(to): \(r.message)\n")
    }
}
