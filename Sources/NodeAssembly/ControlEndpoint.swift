// The node's control endpoint: `POST /migrate?vcpu=N&to=M` on its metrics listener (YAML
// `metrics:`; node i at port + i). Any node takes the request: the migrator routes it to the node
// that runs the vCPU (docs/migration.md). `POST /leave?to=M`, on the node that leaves (node
// evacuation, Evacuation.swift): its pages and manager role go to M, then it leaves the cluster
// and exits 0; the answer is `200 left node=N to=M pages_moved=…` or `409 failed: <why>`.
// The answer is one line:
//   200  ok vcpu=N to=M pause_ns=P state_bytes=B: <message>
//   409  failed vcpu=N to=M: <why>            (the VM keeps running)
//   400  <what is wrong with the request>
//   403  <why the request was not authenticated>
//
// With `key_file`, a request must carry `&t=UNIX_SECONDS&mac=HEX`: HMAC-SHA256 under the cluster
// key of "giantvm-control-v1 migrate vcpu=N to=M t=T" (the key the nodes authenticate each other
// with). It is accepted within 60 s of `t`, and each MAC once (no replay).
//
// Threading: on the metrics server's thread; blocks it for at most `timeout` seconds.
import Cluster
import Config
import Distributed
import Foundation
import Logging
import Synchronization
import Telemetry

/// Signs and checks control requests with the cluster key (nil key: no authentication).
final class ControlAuth: @unchecked Sendable {
    let auth: Authenticator?
    private let seen = Mutex<[String: Double]>([:])

    init(config cfg: ClusterConfig) throws {
        auth = cfg.keyFile == nil ? nil
            : try Authenticator(cluster: cfg.cluster, selfID: 0, nodeCount: cfg.nodes.count, keyFile: cfg.keyFile,
                                logger: Logger(label: "giantvm.control"))
    }

    static func text(vcpu: Int, to: UInt32, t: Int) -> String { "giantvm-control-v1 migrate vcpu=\(vcpu) to=\(to) t=\(t)" }
    /// The signed text of `/leave` (node evacuation).
    static func leaveText(node: UInt32, to: UInt32, t: Int) -> String { "giantvm-control-v1 leave node=\(node) to=\(to) t=\(t)" }

    func mac(vcpu: Int, to: UInt32, t: Int) -> String { mac(text: ControlAuth.text(vcpu: vcpu, to: to, t: t)) }

    func mac(text: String) -> String {
        let bytes = Array(text.utf8)
        return bytes.withUnsafeBytes { auth?.sign($0) ?? [] }.map { String(format: "%02x", $0) }.joined()
    }

    /// nil when accepted, else why not.
    func check(vcpu: Int, to: UInt32, query q: [String: String]) -> String? {
        check(query: q) { ControlAuth.text(vcpu: vcpu, to: to, t: $0) }
    }

    /// nil when accepted, else why not; `text(t)` is the signed text for time t.
    func check(query q: [String: String], text: (Int) -> String) -> String? {
        guard auth != nil else { return nil }
        guard let ts = q["t"], let t = Int(ts), let m = q["mac"], m.count == 64 else {
            return "this cluster has a key_file: the request needs t= and mac= (giantvm migrate adds them)"
        }
        let now = Date().timeIntervalSince1970
        guard abs(now - Double(t)) <= 60 else { return "the request's time \(t) is more than 60 s from this node's clock" }
        let want = Array(mac(text: text(t)).utf8), got = Array(m.lowercased().utf8)
        var diff: UInt8 = 0
        for (x, y) in zip(want, got) { diff |= x ^ y }
        guard diff == 0 else { return "wrong MAC (not signed with this cluster's key_file)" }
        let fresh = seen.withLock { d -> Bool in
            d = d.filter { now - $0.value < 120 }
            guard d[m] == nil else { return false }
            d[m] = now
            return true
        }
        return fresh ? nil : "this request was already used (replay)"
    }
}

enum ControlEndpoint {
    /// Parses `path` and runs it against `migrator`; nil when the path is not a control path.
    static func handle(path: String, migrator: VCPUMigrator?, auth: ControlAuth, timeout: Double,
                       leave: ((_ to: UInt32) -> Result<String, AssemblyError>)? = nil, selfID: UInt32 = 0) -> (status: String, body: String)? {
        let parts = path.split(separator: "?", maxSplits: 1)
        if parts.first == "/leave" {
            var q: [String: String] = [:]
            if parts.count == 2 {
                for kv in parts[1].split(separator: "&") {
                    let p = kv.split(separator: "=", maxSplits: 1)
                    if p.count == 2 { q[String(p[0])] = String(p[1]) }
                }
            }
            guard let ts = q["to"], let to = UInt32(ts), to < 64 else {
                return ("400 Bad Request", "leave: 'to' must be a node id 0-63 (got '\(q["to"] ?? "")')\n")
            }
            if let why = auth.check(query: q, text: { ControlAuth.leaveText(node: selfID, to: to, t: $0) }) {
                return ("403 Forbidden", "leave: \(why)\n")
            }
            guard let leave else { return ("409 Conflict", "failed: this VM runs on one node\n") }
            switch leave(to) {
            case let .success(line): return ("200 OK", line + "\n")
            case let .failure(e): return ("409 Conflict", "failed: \(e.message)\n")
            }
        }
        if parts.first == "/placement" {
            // The vCPU-to-node map as this node knows it: "placement 0:0 1:0 2:1 …".
            guard let migrator else { return ("409 Conflict", "failed: this VM runs on one node\n") }
            let map = migrator.placement.nodes.enumerated().map { "\($0.offset):\($0.element)" }
            return ("200 OK", "placement " + map.joined(separator: " ") + "\n")
        }
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
        if let why = auth.check(vcpu: v, to: to, query: q) { return ("403 Forbidden", "migrate: \(why)\n") }
        let r = migrator.migrate(vcpu: v, to: to, timeout: timeout)
        if r.ok {
            return ("200 OK", "ok vcpu=\(v) to=\(to) pause_ns=\(r.pauseNanoseconds) state_bytes=\(r.stateBytes): \(r.message)\n")
        }
        return ("409 Conflict", "failed vcpu=\(v) to=\(to): \(r.message)\n")
    }
}

/// The client side: `giantvm migrate` (and tests) ask one node's control endpoint.
public enum ControlClient {
    /// POSTs `/migrate?vcpu=N&to=M` to node `via` of `cfg` and returns (ok, answer line).
    /// Errors name the config, the node and the cause.
    public static func migrate(config cfg: ClusterConfig, vcpu: Int, to: UInt32, via: UInt32, timeout: Double = 15) throws -> (ok: Bool, answer: String) {
        guard let mc = cfg.metrics else {
            throw AssemblyError("\(cfg.sourcePath): no `metrics:` section: the control endpoint lives on each node's metrics listener")
        }
        guard vcpu >= 0, vcpu < cfg.totalVCPUs else {
            throw AssemblyError("\(cfg.sourcePath): --vcpu \(vcpu): the VM has vCPUs 0-\(cfg.totalVCPUs - 1)")
        }
        guard Int(to) < cfg.nodes.count else { throw AssemblyError("\(cfg.sourcePath): --to \(to): the VM has nodes 0-\(cfg.nodes.count - 1)") }
        guard let node = cfg.nodes.first(where: { $0.id == via }) else {
            throw AssemblyError("\(cfg.sourcePath): --via \(via): the VM has nodes 0-\(cfg.nodes.count - 1)")
        }
        let (host, port) = mc.endpoint(of: node)
        var path = "/migrate?vcpu=\(vcpu)&to=\(to)"
        let auth = try ControlAuth(config: cfg)
        if auth.auth != nil {
            let t = Int(Date().timeIntervalSince1970)
            path += "&t=\(t)&mac=\(auth.mac(vcpu: vcpu, to: to, t: t))"
        }
        let r: (status: Int, body: String)
        do {
            r = try HTTPGet.get(host: host, port: port, path: path, timeout: timeout, limit: 1 << 16, method: "POST")
        } catch {
            throw AssemblyError("node \(via) (\(host):\(port)): control endpoint unreachable: \(error)")
        }
        let line = r.body.trimmingCharacters(in: .whitespacesAndNewlines)
        if r.status == 400 || r.status == 403 { throw AssemblyError("node \(via): \(line)") }
        return (r.status == 200, line)
    }
}

extension ControlClient {
    /// The vCPU-to-node map as node `via` knows it (index: vCPU, value: node).
    public static func placement(config cfg: ClusterConfig, via: UInt32, timeout: Double = 10) throws -> [UInt32] {
        guard let mc = cfg.metrics else {
            throw AssemblyError("\(cfg.sourcePath): no `metrics:` section: the control endpoint lives on each node's metrics listener")
        }
        guard let node = cfg.nodes.first(where: { $0.id == via }) else {
            throw AssemblyError("\(cfg.sourcePath): --via \(via): the VM has nodes 0-\(cfg.nodes.count - 1)")
        }
        let (host, port) = mc.endpoint(of: node)
        let r: (status: Int, body: String)
        do { r = try HTTPGet.get(host: host, port: port, path: "/placement", timeout: timeout, limit: 1 << 16, method: "POST") } catch {
            throw AssemblyError("node \(via) (\(host):\(port)): control endpoint unreachable: \(error)")
        }
        let words = r.body.split(whereSeparator: { $0 == " " || $0 == "\n" })
        guard r.status == 200, words.first == "placement", words.count == cfg.totalVCPUs + 1 else {
            throw AssemblyError("node \(via): unexpected placement answer (\(r.status)): \(r.body.prefix(200))")
        }
        var map: [UInt32] = []
        for (i, w) in words.dropFirst().enumerated() {
            let kv = w.split(separator: ":")
            guard kv.count == 2, Int(kv[0]) == i, let n = UInt32(kv[1]), Int(n) < cfg.nodes.count else {
                throw AssemblyError("node \(via): bad placement entry '\(w)'")
            }
            map.append(n)
        }
        return map
    }

    /// Asks node `node` to leave the cluster (`POST /leave?to=M`, node evacuation): its pages and
    /// manager role go to `to`, then it exits 0. Returns (ok, answer line).
    public static func leave(config cfg: ClusterConfig, node: UInt32, to: UInt32, timeout: Double = 90) throws -> (ok: Bool, answer: String) {
        guard let mc = cfg.metrics else {
            throw AssemblyError("\(cfg.sourcePath): no `metrics:` section: the control endpoint lives on each node's metrics listener")
        }
        guard let n = cfg.nodes.first(where: { $0.id == node }) else {
            throw AssemblyError("\(cfg.sourcePath): --node \(node): the VM has nodes 0-\(cfg.nodes.count - 1)")
        }
        guard Int(to) < cfg.nodes.count, to != node else {
            throw AssemblyError("\(cfg.sourcePath): --to \(to): not another node of the VM (nodes 0-\(cfg.nodes.count - 1))")
        }
        let (host, port) = mc.endpoint(of: n)
        var path = "/leave?to=\(to)"
        let auth = try ControlAuth(config: cfg)
        if auth.auth != nil {
            let t = Int(Date().timeIntervalSince1970)
            path += "&t=\(t)&mac=\(auth.mac(text: ControlAuth.leaveText(node: node, to: to, t: t)))"
        }
        let r: (status: Int, body: String)
        do {
            r = try HTTPGet.get(host: host, port: port, path: path, timeout: timeout, limit: 1 << 16, method: "POST")
        } catch {
            throw AssemblyError("node \(node) (\(host):\(port)): control endpoint unreachable: \(error)")
        }
        let line = r.body.trimmingCharacters(in: .whitespacesAndNewlines)
        if r.status == 400 || r.status == 403 { throw AssemblyError("node \(node): \(line)") }
        return (r.status == 200, line)
    }

    /// Moves every vCPU off node `node`, each to the node with vCPUs (not `node`) that runs the
    /// fewest at that moment; asks node `via`. Returns one answer line per vCPU moved, and whether
    /// all moved. Pages the node owns and device homes stay where they are (`leave` moves them).
    public static func evacuate(config cfg: ClusterConfig, node: UInt32, via: UInt32) throws -> (ok: Bool, lines: [String]) {
        guard Int(node) < cfg.nodes.count else { throw AssemblyError("\(cfg.sourcePath): --node \(node): the VM has nodes 0-\(cfg.nodes.count - 1)") }
        let targets = cfg.nodes.filter { $0.id != node && $0.vcpus > 0 }.map(\.id)
        guard !targets.isEmpty else { throw AssemblyError("\(cfg.sourcePath): no other node runs vCPUs: node \(node)'s have nowhere to go") }
        var map = try placement(config: cfg, via: via)
        var lines: [String] = []
        var ok = true
        for v in map.indices where map[v] == node {
            let to = targets.min { a, b in
                let ca = map.filter { $0 == a }.count, cb = map.filter { $0 == b }.count
                return ca != cb ? ca < cb : a < b
            }!
            let r = try migrate(config: cfg, vcpu: v, to: to, via: via)
            lines.append(r.answer)
            if r.ok { map[v] = to } else { ok = false }
        }
        return (ok, lines)
    }
}
