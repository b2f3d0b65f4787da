// MetricsConfig: the YAML `metrics:` section (live Prometheus metrics of every node) and the
// limits on nodes and vCPUs that the reader checks.
//
//   metrics: {address: 127.0.0.1, port: 9400, hot_pages: 10}
//
// Node i serves `http://address:(port + i)/metrics`. `address` is where each node listens, on its
// own host: 127.0.0.1 keeps the endpoint on that host; 0.0.0.0 listens on every interface, and
// then `giantvm top` reaches node i at its `nodes[i].address`.

import Foundation
import Yams

/// `metrics:`: where every node serves its live metrics (Prometheus text).
public struct MetricsConfig: Sendable, Equatable {
    /// The listen address (an IPv4 literal) on each node's host.
    public var address: String
    /// The base port: node i listens on `port + i`.
    public var port: UInt16
    /// How many of the most-faulted pages each node exports.
    public var hotPages: Int

    public static let defaultPort: UInt16 = 9400
    public static let defaultHotPages = 10
    public static let maxHotPages = 100

    public init(address: String = "127.0.0.1", port: UInt16 = MetricsConfig.defaultPort, hotPages: Int = MetricsConfig.defaultHotPages) {
        self.address = address; self.port = port; self.hotPages = hotPages
    }

    /// The port node `id` listens on (the reader checked that every node's fits in 16 bits).
    public func port(of id: UInt32) -> UInt16 { UInt16(clamping: UInt32(port) + id) }

    /// Where a client reaches node `node`: its own address when the listener is on every
    /// interface, else the listen address.
    public func endpoint(of node: NodeConfig) -> (host: String, port: UInt16) {
        (address == "0.0.0.0" ? node.address : address, port(of: node.id))
    }
}

extension ClusterConfig {
    /// Most nodes in one VM: the widest coherence protocol here, dsm-ivy, keeps each page's
    /// copyset as a 64-bit mask (one bit per node; GiantVM's was 16 bits wide).
    public static let maxNodes = 64
    /// Most vCPUs in one VM: xAPIC ids are 8 bits and 0xFF is the broadcast id, so 0-254.
    public static let maxVCPUs = 255
}

extension Reader {
    /// The node and vCPU limits of one VM, on the parsed `nodes:` list.
    mutating func checkLimits(_ nodes: [NodeConfig], rawCount: Int, _ node: Node) {
        if rawCount > ClusterConfig.maxNodes {
            report(node, "nodes", "\(rawCount) nodes: a VM has at most \(ClusterConfig.maxNodes) "
                   + "(the coherence protocol keeps a page's sharers as a 64-bit mask)")
        }
        let vcpus = nodes.reduce(0) { $0 + Int($1.vcpus) }
        if vcpus > ClusterConfig.maxVCPUs {
            report(node, "nodes", "\(vcpus) vCPUs in all: a VM has at most \(ClusterConfig.maxVCPUs) "
                   + "(xAPIC ids are 8 bits; 0xFF is broadcast)")
        }
    }

    /// `metrics:` (a mapping with address, port, hot_pages; all optional).
    mutating func metricsSection(_ node: Node, nodes: [NodeConfig], nodeCount: Int) -> MetricsConfig? {
        guard let m = mapping(node, "metrics", allowed: ["address", "port", "hot_pages"]) else { return nil }
        var cfg = MetricsConfig()
        if let v = m["address"]?.value, let a = string(v, "metrics.address") {
            var addr = in_addr()
            if inet_pton(AF_INET, a, &addr) == 1 { cfg.address = a } else {
                report(v, "metrics.address", "'\(a)' is not an IPv4 address (e.g. 127.0.0.1, or 0.0.0.0 for every interface)")
            }
        }
        if let v = m["port"]?.value, let p = integer(v, "metrics.port", range: 1...65535, what: "a port") {
            let last = Int(p) + max(nodeCount, 1) - 1
            if last > 65535 {
                report(v, "metrics.port", "node \(nodeCount - 1) would listen on \(last): the base port plus the node id must be a port")
            } else { cfg.port = UInt16(p) }
        }
        if let v = m["hot_pages"]?.value,
           let n = integer(v, "metrics.hot_pages", range: 0...UInt64(MetricsConfig.maxHotPages), what: "a page count (0-\(MetricsConfig.maxHotPages))") {
            cfg.hotPages = Int(n)
        }
        // A node's metrics port must not be a node's cluster port on the same address.
        let portNode = m["port"]?.value ?? node
        for n in nodes {
            let port = cfg.port(of: n.id)
            let host = cfg.address == "0.0.0.0" ? n.address : cfg.address
            if let clash = nodes.first(where: { $0.port == port && ($0.address == host || cfg.address == "0.0.0.0" && $0.address == n.address) }) {
                report(portNode, "metrics.port", "node \(n.id) would serve metrics on \(host):\(port), the cluster port of nodes[\(clash.id)]")
                break
            }
        }
        return cfg
    }
}
