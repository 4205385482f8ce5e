import CUV
#if canImport(Glibc)
import Glibc
#endif
import UVBind

/// directd's counters, owned by the loop: only the loop's thread touches them,
/// so they are plain integers, and a scrape (also on the loop) reads them as
/// they are. Events add here where they happen; what is a level rather than an
/// event (pools, descriptors, open sessions' bytes) is read at the scrape
/// (`MetricsSnapshot`).
///
/// The relay's hot path only adds to its listener's byte counters, through a
/// pointer each direction was handed when it was made (`ByteCounting`): no
/// lookup, no reference count. So a scrape reads a few counters per listener
/// and never walks the sessions.
final class Metrics {
    private(set) var listeners: [ListenerCounters] = []
    private var indexByLabel: [String: Int] = [:]
    /// By `UpstreamFailure.rawValue`.
    private(set) var upstreamFailures = [UInt64](repeating: 0, count: UpstreamFailure.allCases.count)
    var connectTime = Histogram(bounds: Histogram.connectBounds)
    var connectionDuration = Histogram(bounds: Histogram.durationBounds)
    /// Relayed bytes, over every listener.
    var splicedBytes: UInt64 { listeners.reduce(0) { $0 &+ $1.bytes.pointee.spliced } }
    var copiedBytes: UInt64 { listeners.reduce(0) { $0 &+ $1.bytes.pointee.copied } }
    private(set) var reloads: UInt64 = 0
    private(set) var rejectedReloads: UInt64 = 0
    /// Unix time of the start, then of the last reload that took effect.
    private(set) var lastGoodReload: Double
    private(set) var followEvents: UInt64 = 0
    let startTime: Double
    /// The start on CLOCK_MONOTONIC, for the uptime (a wall-clock step cannot bend it).
    let startMilliseconds = MonotonicClock.milliseconds()

    init() {
        startTime = Self.wallClock()
        lastGoodReload = startTime
    }

    /// The index of `address`'s counters, made at 0 the first time it is seen.
    /// Keyed by the label, so that two addresses that print alike (a zone by
    /// name or by index) can never make two series with one label. Once per
    /// accepted connection, never per read.
    func listenerIndex(for address: SocketAddress) -> Int {
        listenerIndex(label: address.description)
    }

    /// The same by its label (a session an upgrade handed over names its listener so).
    func listenerIndex(label: String) -> Int {
        if let index = indexByLabel[label] { return index }
        listeners.append(ListenerCounters(label: label))
        indexByLabel[label] = listeners.count - 1
        return listeners.count - 1
    }

    func admitted(on listener: Int) {
        listeners[listener].accepted &+= 1
        listeners[listener].open += 1
    }

    func refused(on listener: Int, _ reason: RefusalReason) {
        listeners[listener].refused[reason.rawValue] &+= 1
    }

    /// An admitted session ended after `seconds`.
    func closed(on listener: Int, seconds: Double) {
        listeners[listener].open -= 1
        connectionDuration.observe(seconds)
    }


    func upstreamFailed(_ cause: UpstreamFailure) {
        upstreamFailures[cause.rawValue] &+= 1
    }

    func reloaded(accepted: Bool) {
        if accepted {
            reloads &+= 1
            lastGoodReload = Self.wallClock()
        } else {
            rejectedReloads &+= 1
        }
    }

    func followEvent() { followEvents &+= 1 }

    /// Seconds since the Unix epoch (CLOCK_REALTIME).
    static func wallClock() -> Double {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
    }
}
