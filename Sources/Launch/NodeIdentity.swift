// Which node of the config this process is: `giantvm node --id N`, or `--id auto`.
//
// With `--id auto` the id comes, in this order, from
//   1. the rank an existing launcher gave this process (the `rankSources` table below): MPI
//      launchers first, then Slurm. An MPI launcher started inside a Slurm job inherits the job's
//      SLURM_PROCID (0 in the batch script; the daemon's index under Open MPI's own srun), so its
//      own rank is the more specific one. Rank r runs node r; the launcher's process count, when
//      it states one, must equal the config's node count.
//   2. failing that, the one node of the config whose address is on a local interface (getifaddrs;
//      host names resolved with getaddrinfo). Several such nodes (all on 127.0.0.1, say) is
//      ambiguous, and an error.
// Every failure is an error naming what was looked at, never a guess. The decision is pure (the
// environment, the local addresses and the resolver are arguments), so it is unit-tested without
// a launcher; `LocalAddresses.current()` and `HostResolver.numericAddresses(of:)` are the system
// inputs the CLI passes.

import Foundation
import Glibc

/// The `--id` argument: a node id, or `auto`.
public enum NodeIDRequest: Equatable, Sendable, CustomStringConvertible {
    case auto
    case fixed(UInt32)

    /// "auto" or a decimal node id; nil for anything else.
    public init?(parsing argument: String) {
        if argument == "auto" { self = .auto; return }
        guard !argument.isEmpty, argument.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), let n = UInt32(argument) else {
            return nil
        }
        self = .fixed(n)
    }

    public var description: String {
        switch self {
        case .auto: return "auto"
        case .fixed(let n): return "\(n)"
        }
    }
}

/// One address of a local network interface (numeric, as inet_ntop prints it).
public struct LocalAddress: Equatable, Sendable, CustomStringConvertible {
    public var interface: String
    public var address: String
    public init(interface: String, address: String) { self.interface = interface; self.address = address }
    public var description: String { "\(address) on \(interface)" }
}

/// A node of the config as identity needs it: its id and the address it listens on.
public struct NodeAddress: Equatable, Sendable {
    public var id: UInt32
    public var address: String
    public init(id: UInt32, address: String) { self.id = id; self.address = address }
}

/// A launcher's environment variables: the rank of this process and, where the launcher states
/// it, how many processes it started.
public struct RankSource: Sendable {
    /// The launcher, as the messages name it.
    public var launcher: String
    /// The variable holding this process's rank (0-based).
    public var rank: String
    /// Variables holding the number of processes started, most specific first (the first set one is checked).
    public var size: [String]
    /// If non-empty, the rank variable counts only when one of these is set too (Slurm: a task
    /// of a job step, not the batch script).
    public var requires: [String]
    /// Whether this rank may be inherited from an enclosing launcher by the processes another
    /// launcher starts (Slurm's, under mpirun in a job); then the other launcher's rank wins.
    public var inheritable: Bool
    /// How to start one process per node with this launcher, `N` for the node count (for the messages).
    public var hint: String

    func hint(nodes: Int) -> String { hint.replacingOccurrences(of: "-n N", with: "-n \(nodes)") }
}

/// Where a node id came from.
public enum NodeIdentitySource: Equatable, Sendable {
    /// `--id N`.
    case option
    /// A launcher's rank variable (`variable=value`), with what else the environment said.
    case launcher(name: String, variable: String, detail: String)
    /// The node's address is on this local interface.
    case localAddress(LocalAddress)
}

/// The resolved id of this node and why.
public struct NodeIdentity: Equatable, Sendable, CustomStringConvertible {
    public var id: UInt32
    public var source: NodeIdentitySource

    public init(id: UInt32, source: NodeIdentitySource) { self.id = id; self.source = source }

    public var description: String {
        switch source {
        case .option: return "node \(id) (--id \(id))"
        case .launcher(let name, let variable, let detail):
            return "node \(id) (--id auto: \(variable)=\(id) from \(name)\(detail.isEmpty ? "" : ", \(detail)"))"
        case .localAddress(let a): return "node \(id) (--id auto: its address \(a.address) is on local interface \(a.interface))"
        }
    }

    /// The launchers whose rank `--id auto` reads, in the order they are tried.
    public static let rankSources: [RankSource] = [
        RankSource(launcher: "Open MPI", rank: "OMPI_COMM_WORLD_RANK", size: ["OMPI_COMM_WORLD_SIZE"], requires: [],
                   inheritable: false, hint: "mpirun -n N"),
        RankSource(launcher: "PMIx", rank: "PMIX_RANK", size: [], requires: [], inheritable: false,
                   hint: "one process per node"),
        RankSource(launcher: "MPICH/Hydra (PMI)", rank: "PMI_RANK", size: ["PMI_SIZE"], requires: [],
                   inheritable: false, hint: "mpiexec -n N"),
        RankSource(launcher: "Slurm", rank: "SLURM_PROCID", size: ["SLURM_STEP_NUM_TASKS", "SLURM_NTASKS", "SLURM_NPROCS"],
                   requires: ["SLURM_STEP_ID", "SLURM_STEPID"], inheritable: true, hint: "srun -n N"),
    ]

    /// The largest rank or process count read from the environment (more is not a count of nodes).
    static let largestCount: UInt64 = 1 << 20

    /// Resolves `request` against the config's `nodes` (sorted by id, ids 0...n-1 as the config
    /// loader guarantees). `configName` names the config in messages. `localAddresses` and
    /// `resolve` are called only when no launcher rank is found.
    public static func resolve(_ request: NodeIDRequest, nodes: [NodeAddress], configName: String,
                               environment: [String: String],
                               localAddresses: () throws -> [LocalAddress],
                               resolve: (String) -> Result<[String], NodeIdentityError>) throws -> NodeIdentity {
        guard !nodes.isEmpty else { throw NodeIdentityError("\(configName) has no nodes") }
        let range = "nodes: 0-\(nodes.count - 1)"
        if case .fixed(let n) = request {
            guard let node = nodes.first(where: { $0.id == n }) else {
                throw NodeIdentityError("\(configName): there is no node \(n) (\(range))")
            }
            return NodeIdentity(id: node.id, source: .option)
        }
        if let fromLauncher = try fromLauncher(nodes: nodes, configName: configName, environment: environment) {
            return fromLauncher
        }
        return try fromLocalAddress(nodes: nodes, configName: configName, localAddresses: localAddresses, resolve: resolve)
    }

    /// A value that is set and not empty.
    private static func value(_ environment: [String: String], _ name: String) -> String? {
        guard let v = environment[name], !v.isEmpty else { return nil }
        return v
    }

    /// A rank or count: a decimal number up to `largestCount`.
    private static func number(_ environment: [String: String], _ name: String, what: String) throws -> UInt64 {
        let text = value(environment, name) ?? ""
        guard text.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), let n = UInt64(text), n <= largestCount else {
            throw NodeIdentityError("--id auto: \(name)='\(text)' is not \(what) (a number 0-\(largestCount))")
        }
        return n
    }

    private static func fromLauncher(nodes: [NodeAddress], configName: String,
                                     environment env: [String: String]) throws -> NodeIdentity? {
        var chosen: (source: RankSource, rank: UInt64)?
        for source in rankSources where value(env, source.rank) != nil {
            let rank = try number(env, source.rank, what: "a process rank")
            if !source.requires.isEmpty && !source.requires.contains(where: { value(env, $0) != nil }) {
                // Slurm's batch script has SLURM_PROCID=0 but is no task of a step.
                if chosen != nil { continue }
                let job = value(env, "SLURM_JOB_ID").map { " of Slurm job \($0)" } ?? ""
                throw NodeIdentityError("""
                    --id auto: \(source.rank)=\(rank) is set but \(source.requires.joined(separator: " / ")) is not: \
                    this process is the batch script\(job), not a task started by srun; start one node per task \
                    with `srun -n \(nodes.count) giantvm node --config \(configName) --id auto`
                    """)
            }
            if let (first, firstRank) = chosen {
                // A second launcher's rank: MPI ranks must agree; Slurm's may be inherited.
                if !source.inheritable && firstRank != rank {
                    throw NodeIdentityError("""
                        --id auto: the launchers disagree: \(first.rank)=\(firstRank) but \(source.rank)=\(rank); \
                        pass --id N
                        """)
                }
                continue
            }
            chosen = (source, rank)
        }
        guard let (source, rank) = chosen else { return nil }
        var detail: [String] = []
        if let sizeVariable = source.size.first(where: { value(env, $0) != nil }) {
            let size = try number(env, sizeVariable, what: "a process count")
            if size != UInt64(nodes.count) {
                throw NodeIdentityError("""
                    --id auto: \(source.launcher) started \(size) process\(size == 1 ? "" : "es") (\(sizeVariable)=\(size)) \
                    but \(configName) has \(nodes.count) node\(nodes.count == 1 ? "" : "s"): start one per node \
                    (\(source.hint(nodes: nodes.count)))
                    """)
            }
            detail.append("process \(rank) of \(size)")
        }
        guard rank < UInt64(nodes.count) else {
            throw NodeIdentityError("""
                --id auto: \(source.rank)=\(rank) (\(source.launcher)) but \(configName) has no node \(rank) \
                (nodes: 0-\(nodes.count - 1)): start one process per node (\(source.hint(nodes: nodes.count)))
                """)
        }
        if source.launcher == "Slurm" {
            if let job = value(env, "SLURM_JOB_ID") {
                detail.append("job \(job)" + (value(env, "SLURM_STEP_ID").map { " step \($0)" } ?? ""))
            }
            if let host = value(env, "SLURMD_NODENAME") { detail.append("on \(host)") }
        }
        return NodeIdentity(id: nodes[Int(rank)].id,
                            source: .launcher(name: source.launcher, variable: source.rank, detail: detail.joined(separator: ", ")))
    }

    private static func fromLocalAddress(nodes: [NodeAddress], configName: String,
                                         localAddresses: () throws -> [LocalAddress],
                                         resolve: (String) -> Result<[String], NodeIdentityError>) throws -> NodeIdentity {
        let looked = "no launcher rank in the environment (looked at \(rankSources.map(\.rank).joined(separator: ", ")))"
        let local: [LocalAddress]
        do { local = try localAddresses() } catch {
            throw NodeIdentityError("--id auto: \(looked), and the local interfaces cannot be listed: \(error)")
        }
        var matches: [(node: NodeAddress, at: LocalAddress)] = []
        var unresolved: [String] = []
        for node in nodes {
            switch resolve(node.address) {
            case .failure(let why):
                unresolved.append("node \(node.id) \(node.address): \(why)")
            case .success(let addresses):
                if let hit = local.first(where: { addresses.contains($0.address) }) { matches.append((node, hit)) }
            }
        }
        let fix = "pass --id N, or start the nodes with a launcher (srun, mpirun)"
        if matches.count == 1 {
            return NodeIdentity(id: matches[0].node.id, source: .localAddress(matches[0].at))
        }
        if matches.isEmpty {
            let listed = nodes.map { "node \($0.id) \($0.address)" }.joined(separator: ", ")
            let here = local.isEmpty ? "none" : local.map(\.description).joined(separator: ", ")
            let failed = unresolved.isEmpty ? "" : "; could not resolve \(unresolved.joined(separator: "; "))"
            throw NodeIdentityError("""
                --id auto: \(looked), and no node address of \(configName) is on this host \
                (\(listed); local addresses: \(here)\(failed)): \(fix)
                """)
        }
        let which = matches.map { "node \($0.node.id) (\($0.at))" }.joined(separator: ", ")
        throw NodeIdentityError("""
            --id auto: \(looked), and \(matches.count) nodes of \(configName) have addresses on this host: \(which); \
            which one this process is, is ambiguous: \(fix)
            """)
    }
}

public struct NodeIdentityError: Error, Equatable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// The addresses of this host's interfaces that are up (getifaddrs), IPv4 and IPv6.
public enum LocalAddresses {
    public static func current() throws -> [LocalAddress] {
        var list: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&list) == 0 else {
            throw NodeIdentityError("getifaddrs: \(String(cString: strerror(errno)))")
        }
        defer { freeifaddrs(list) }
        var out: [LocalAddress] = []
        var p = list
        while let entry = p {
            defer { p = entry.pointee.ifa_next }
            guard let sa = entry.pointee.ifa_addr, entry.pointee.ifa_flags & UInt32(IFF_UP) != 0,
                  let text = HostResolver.numeric(sa) else { continue }
            out.append(LocalAddress(interface: String(cString: entry.pointee.ifa_name), address: text))
        }
        return out
    }
}

/// Host names and address literals to numeric addresses (getaddrinfo), in the form
/// `LocalAddresses` lists them, so the two compare as strings.
public enum HostResolver {
    public static func numericAddresses(of host: String) -> Result<[String], NodeIdentityError> {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var res: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, nil, &hints, &res)
        guard rc == 0 else { return .failure(NodeIdentityError(String(cString: gai_strerror(rc)))) }
        defer { freeaddrinfo(res) }
        var out: [String] = []
        var p = res
        while let ai = p {
            if let sa = ai.pointee.ai_addr, let text = numeric(sa), !out.contains(text) { out.append(text) }
            p = ai.pointee.ai_next
        }
        return .success(out)
    }

    /// An IPv4 or IPv6 socket address as inet_ntop prints it (no port, no scope); nil for other families.
    static func numeric(_ sa: UnsafeMutablePointer<sockaddr>) -> String? {
        var buf = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
        switch Int32(sa.pointee.sa_family) {
        case AF_INET:
            return sa.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { sin in
                var a = sin.pointee.sin_addr
                return inet_ntop(AF_INET, &a, &buf, socklen_t(buf.count)).map { String(cString: $0) }
            }
        case AF_INET6:
            return sa.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { sin6 in
                var a = sin6.pointee.sin6_addr
                return inet_ntop(AF_INET6, &a, &buf, socklen_t(buf.count)).map { String(cString: $0) }
            }
        default:
            return nil
        }
    }
}
