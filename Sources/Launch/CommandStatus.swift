// The exit status of a command that ran a group of processes (`giantvm up`, `net-bench`): the
// processes' own status, so `up` exits as `run` does for the same guest (a guest's
// isa-debug-exit value, a vCPU failure, a reset request all keep their distinct statuses).

extension LaunchResult {
    /// 124 when the deadline stopped the processes; 128 + n when the command was interrupted by
    /// signal n; 0 when every process exited 0; otherwise the exit code of the first process that
    /// exited non-zero — the later ones usually only echo it (a distributed VM's stop status
    /// travels to every node) or were killed for outliving the grace period. A process killed by
    /// a signal has no status of its own: when every failure was a kill, 1 (its peers report it
    /// as lost, which is status 1 too).
    public var commandStatus: Int32 {
        if timedOut { return 124 }
        if let sig = interruptedBy { return 128 + sig }
        if allSucceeded { return 0 }
        let exited = failed.filter { if case .exited = ends[$0] { return true } else { return false } }
        let first = firstFailure.flatMap { exited.contains($0) ? $0 : nil } ?? exited.first
        guard let first else { return 1 }
        let status = ends[first].status
        return status >= 1 && status <= 255 ? status : 1
    }
}
