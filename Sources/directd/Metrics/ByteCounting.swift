/// One listener's byte counters, in memory that never moves: the relay's
/// per-read path adds to them through a pointer (`ByteCounting`), with no
/// reference count, lookup or copy-on-write check. Owned by its
/// `ListenerCounters`, which the metrics keep for the process's life, so a
/// session (which never outlives the server and its metrics) may hold it.
struct ByteCounters {
    var spliced: UInt64 = 0
    var copied: UInt64 = 0
    var fromClients: UInt64 = 0
    var toClients: UInt64 = 0
}

/// Where one relay direction adds the bytes it moves, decided once when the
/// direction is made: its listener's counters (nil when the session has no
/// metrics, as in tests that drive a session alone), and whether its bytes
/// come from the client, go to it, or both (an echo).
struct ByteCounting {
    let counters: UnsafeMutablePointer<ByteCounters>?
    let fromClient: Bool
    let toClient: Bool

    @inline(__always)
    func add(_ bytes: UInt64, spliced: Bool) {
        guard let counters else { return }
        if spliced { counters.pointee.spliced &+= bytes } else { counters.pointee.copied &+= bytes }
        if fromClient { counters.pointee.fromClients &+= bytes }
        if toClient { counters.pointee.toClients &+= bytes }
    }
}
