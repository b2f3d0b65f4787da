// The standard coherence statistics (giantvm_plugin.h, "Standard statistics"): every coherence
// plugin reports these names, so the host's summaries and reports read them whatever the protocol.
// `CoherenceStatistics` looks every one up at once (a protocol that never does something still
// reports it as a true 0) and offers a handle per statistic. A plugin's own extras go under its
// own prefix through `HostServices.counter` as before.

/// The names, from the C header (the one list; C plugins read the same macros).
public enum StandardStatistic {
    /// Every standard counter name, in the header's order.
    public static let counters: [String] = (0..<GVM_STAT_COUNTER_COUNT).map { String(cString: gvm_stat_counter_name($0)) }
    /// Every standard histogram name (nanoseconds).
    public static let histograms: [String] = (0..<GVM_STAT_HISTOGRAM_COUNT).map { String(cString: gvm_stat_histogram_name($0)) }
    /// The prefix reserved for the standard names.
    public static let prefix = "dsm."
}

/// Handles for every standard statistic of one plugin instance. Any thread.
public struct CoherenceStatistics: Sendable {
    public let readMiss, writeMiss, upgrade, coalesced, stale, pinDeferred: Counter
    public let messagesSent, bytesSent, messagesReceived, bytesReceived: Counter
    public let pagesSentWithData, pagesSentWithoutData, invalidationsSent, invalidationsReceived: Counter
    public let diffsMade, diffsApplied: Counter
    /// Fault latency: all kinds, then one per kind (nanoseconds).
    public let faultLatency, readMissLatency, writeMissLatency, upgradeLatency: LatencyHistogram

    /// Looks up every standard name (call from create()).
    public init(_ s: HostServices) {
        readMiss = s.counter(GVM_STAT_FAULT_READ_MISS)
        writeMiss = s.counter(GVM_STAT_FAULT_WRITE_MISS)
        upgrade = s.counter(GVM_STAT_FAULT_UPGRADE)
        coalesced = s.counter(GVM_STAT_FAULT_COALESCED)
        stale = s.counter(GVM_STAT_FAULT_STALE)
        pinDeferred = s.counter(GVM_STAT_PIN_DEFERRED)
        messagesSent = s.counter(GVM_STAT_MSG_SENT)
        bytesSent = s.counter(GVM_STAT_BYTES_SENT)
        messagesReceived = s.counter(GVM_STAT_MSG_RECEIVED)
        bytesReceived = s.counter(GVM_STAT_BYTES_RECEIVED)
        pagesSentWithData = s.counter(GVM_STAT_PAGES_SENT_DATA)
        pagesSentWithoutData = s.counter(GVM_STAT_PAGES_SENT_NODATA)
        invalidationsSent = s.counter(GVM_STAT_INV_SENT)
        invalidationsReceived = s.counter(GVM_STAT_INV_RECEIVED)
        diffsMade = s.counter(GVM_STAT_DIFF_MADE)
        diffsApplied = s.counter(GVM_STAT_DIFF_APPLIED)
        faultLatency = s.histogram(GVM_STAT_FAULT_LATENCY)
        readMissLatency = s.histogram(GVM_STAT_FAULT_LATENCY_READ_MISS)
        writeMissLatency = s.histogram(GVM_STAT_FAULT_LATENCY_WRITE_MISS)
        upgradeLatency = s.histogram(GVM_STAT_FAULT_LATENCY_UPGRADE)
    }

    /// The counter of requests of `kind`.
    public func requests(_ kind: RequestKind) -> Counter {
        switch kind {
        case .readMiss: return readMiss
        case .writeMiss: return writeMiss
        case .upgrade: return upgrade
        }
    }

    /// Records one resolved request of `kind` in the overall and the per-kind latency histograms.
    public func recordLatency(_ kind: RequestKind, nanoseconds: UInt64) {
        faultLatency.record(nanoseconds: nanoseconds)
        switch kind {
        case .readMiss: readMissLatency.record(nanoseconds: nanoseconds)
        case .writeMiss: writeMissLatency.record(nanoseconds: nanoseconds)
        case .upgrade: upgradeLatency.record(nanoseconds: nanoseconds)
        }
    }
}

/// The kinds of protocol fault the standard statistics count.
public enum RequestKind: Sendable, CaseIterable {
    /// Read access to an INVALID page (GVM_STAT_FAULT_READ_MISS).
    case readMiss
    /// Write access to an INVALID page (GVM_STAT_FAULT_WRITE_MISS).
    case writeMiss
    /// Write access to a SHARED page (GVM_STAT_FAULT_UPGRADE).
    case upgrade
}
