/// The kinds of line that can come in floods, one per connection or per refusal.
/// A call site names its category; each category has its own allowance.
enum LogCategory: CaseIterable, Hashable {
    case opened
    case closed
    case refusedAllowList
    case refusedMaxConnections
    case refusedPerClient
    case refusedRateLimit
    case refusedBanned
    case banned
    case acceptFailed
    case upstreamFailed

    /// For the "suppressed" line.
    var name: String {
        switch self {
        case .opened: "connection opened"
        case .closed: "connection closed"
        case .refusedAllowList: "refused: not in the whitelist"
        case .refusedMaxConnections: "refused: max-connections"
        case .refusedPerClient: "refused: max-connections-per-client"
        case .refusedRateLimit: "refused: rate-limit"
        case .refusedBanned: "refused: banned"
        case .banned: "banned"
        case .acceptFailed: "accept failed"
        case .upstreamFailed: "upstream failed"
        }
    }
}

/// Lets the first `burst` lines of a category through in each interval, counts
/// the rest, and gives one "suppressed N similar lines" summary per interval in
/// which it held some back. Pure: the caller gives the time (milliseconds on a
/// monotonic clock), so tests can drive it.
///
/// At the defaults (10 a second), the ten categories can write at most about
/// 110 lines a second in all, against the tens of thousands a connection flood
/// used to produce.
struct LogRateLimiter {
    let burst: Int
    let interval: UInt64

    init(burst: Int = 10, intervalMilliseconds: UInt64 = 1000) {
        self.burst = burst
        interval = intervalMilliseconds
    }

    struct Summary: Equatable, CustomStringConvertible {
        let category: LogCategory
        let count: Int
        /// The most serious level among the suppressed lines.
        let severity: LogSeverity
        let intervalMilliseconds: UInt64

        var description: String {
            let seconds = intervalMilliseconds % 1000 == 0 ? "\(intervalMilliseconds / 1000)" : "\(Double(intervalMilliseconds) / 1000)"
            return "suppressed \(count) similar line\(count == 1 ? "" : "s") (\(category.name)) in \(seconds) s"
        }
    }

    private struct Window {
        var start: UInt64
        var passed = 0
        var suppressed = 0
        var severity = LogSeverity.debug
    }

    private var windows: [LogCategory: Window] = [:]

    /// Whether a line of `category` may be written now; and the summary of the
    /// category's previous interval, if it ended with lines held back (to write
    /// before this line).
    mutating func admit(_ category: LogCategory, severity: LogSeverity, now: UInt64) -> (passes: Bool, ended: Summary?) {
        var window = windows[category] ?? Window(start: now)
        var ended: Summary?
        if now >= window.start + interval {
            ended = summary(category, window)
            window = Window(start: now)
        }
        let passes = window.passed < burst
        if passes {
            window.passed += 1
        } else {
            window.suppressed += 1
            window.severity = min(window.severity, severity)
        }
        windows[category] = window
        return (passes, ended)
    }

    /// The summaries of the intervals that are over; each is given once.
    mutating func takeEnded(now: UInt64) -> [Summary] {
        let interval = interval
        return take { window in now >= window.start + interval }
    }

    /// Every summary, ended or not (at exit).
    mutating func takeAll() -> [Summary] {
        take { _ in true }
    }

    /// When the first interval with lines held back ends.
    var nextSummaryDue: UInt64? {
        windows.values.filter { $0.suppressed > 0 }.map { $0.start + interval }.min()
    }

    private mutating func take(where isOver: (Window) -> Bool) -> [Summary] {
        var summaries: [Summary] = []
        for category in LogCategory.allCases {
            guard var window = windows[category], window.suppressed > 0, isOver(window),
                  let summary = summary(category, window) else { continue }
            summaries.append(summary)
            window.suppressed = 0
            window.severity = .debug
            windows[category] = window
        }
        return summaries
    }

    private func summary(_ category: LogCategory, _ window: Window) -> Summary? {
        guard window.suppressed > 0 else { return nil }
        return Summary(category: category, count: window.suppressed, severity: window.severity,
                       intervalMilliseconds: interval)
    }
}
