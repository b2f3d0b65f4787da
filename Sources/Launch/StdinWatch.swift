// The remote half of a node started over ssh (`giantvm node --exit-on-stdin-eof`, SSH.swift): a
// thread that reads standard input until it closes, then asks the process to stop, and ends it if
// the stop does not finish in time. The input closes when the launcher closes its pipe to ssh (a
// stop request), or when the ssh connection drops (the launcher or its host died): either way
// nothing of the node is left running on its host.
//
// Whatever arrives on standard input is read and dropped (nothing is ever sent there).

import Foundation
import Glibc

public enum StdinWatch {
    /// Seconds between the end of input and the forced exit when the node has not stopped.
    public static let defaultGrace: Double = 15

    /// The message printed (to stderr) when the input closes.
    public static func closedMessage(label: String) -> String {
        "\(label): standard input closed (the launcher asked for a stop or its ssh connection ended): stopping"
    }

    /// In a node: on end of input, sends this process SIGTERM (its usual clean stop) and, if it is
    /// still running `grace` seconds later, exits with status 143 (128 + SIGTERM).
    public static func stopProcessOnEOF(label: String, grace: Double = defaultGrace) {
        start(fd: 0, grace: grace, onEOF: {
            FileHandle.standardError.write(Data((closedMessage(label: label) + "\n").utf8))
            kill(getpid(), SIGTERM)
        }, onGraceExpired: {
            FileHandle.standardError.write(Data("\(label): still running \(Int(grace)) s after its standard input closed: exiting\n".utf8))
            _exit(128 + SIGTERM)
        })
    }

    /// Reads `fd` on a thread of its own until end of input (or a read error other than EINTR),
    /// then calls `onEOF`, and `onGraceExpired` `grace` seconds later (if the process still runs).
    @discardableResult
    public static func start(fd: Int32, grace: Double, onEOF: @escaping @Sendable () -> Void,
                             onGraceExpired: @escaping @Sendable () -> Void) -> Thread {
        let t = Thread {
            var buf = [UInt8](repeating: 0, count: 512)
            while true {
                let r = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
                if r < 0 && errno == EINTR { continue }
                if r <= 0 { break }
            }
            onEOF()
            let seconds = grace.isFinite && grace > 0 ? min(grace, 86_400) : 0
            if seconds > 0 { Thread.sleep(forTimeInterval: seconds) }
            onGraceExpired()
        }
        t.name = "stdin-watch"
        t.start()
        return t
    }
}
