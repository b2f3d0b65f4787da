// Fuzz target "config": arbitrary bytes as the text of a cluster config (ConfigLoader.parse, the
// reader behind `validate`, `up`, `run` and every node). Errors are the expected answer; a trap,
// a hang (libFuzzer -timeout) or a memory blow-up (-rss_limit_mb) is a failure.
#if !FUZZING
@testable import Config
#endif

enum ConfigFuzz {
    static func exercise(_ bytes: [UInt8]) {
        _ = try? ConfigLoader.parse(yaml: String(decoding: bytes, as: UTF8.self), path: "/fuzz/cluster.yaml")
    }
}
