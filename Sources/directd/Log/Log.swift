#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CUV
@_spi(Daemon) import UVBind

enum LogLevel: Int, Comparable, CaseIterable {
    case error, warning, info, debug

    init?(argument: String) {
        guard let level = Self.allCases.first(where: { "\($0)" == argument }) else { return nil }
        self = level
    }

    static func < (a: LogLevel, b: LogLevel) -> Bool { a.rawValue < b.rawValue }
}

/// One line per event on standard error. The log must never stop service, so:
///
/// - every line is escaped here, centrally (`LogEscaping`), so that no call site
///   can let a config key or a peer's text forge a line;
/// - nothing ever blocks: lines go into a bounded buffer (`LogSink`) that drains
///   when standard error is writable, watched on the loop; when it is full, whole
///   lines are dropped, counted, and reported once writing works again;
/// - repetitive lines (one per connection, one per refusal) pass through a rate
///   limiter per `LogCategory` when the call site names one;
/// - each line starts with an RFC 3339 UTC timestamp, unless standard error is
///   the journal, which stamps lines itself and gets a `<N>` priority instead.
///
/// directd is single-threaded: everything here runs on the loop's thread (or
/// before the loop, at exit).
enum Log {
    /// Set once at start, before the loop runs.
    nonisolated(unsafe) static var level = LogLevel.info

    /// Always logged, whatever the level: where directd listens, the summary.
    static func line(_ text: String) { emit({ text }, severity: .notice) }

    static func debug(_ text: @autoclosure () -> String, category: LogCategory? = nil) {
        if level >= .debug { emit(text, severity: .debug, category: category) }
    }
    static func info(_ text: @autoclosure () -> String, category: LogCategory? = nil) {
        if level >= .info { emit(text, severity: .info, category: category) }
    }
    static func warning(_ text: @autoclosure () -> String, category: LogCategory? = nil) {
        if level >= .warning { emit(text, severity: .warning, category: category) }
    }
    static func error(_ text: @autoclosure () -> String, category: LogCategory? = nil) {
        emit(text, severity: .error, category: category)
    }

    /// An audit line (a connection opened, closed or refused). On the journal
    /// it goes as a native entry with `fields` (DIRECTD_CLIENT=, ...) beside
    /// MESSAGE=, instead of the plain line; if the entry cannot go, the plain
    /// line is written as anywhere else. Same level and rate limits as any line.
    static func audit(_ text: @autoclosure () -> String, severity: LogSeverity, category: LogCategory,
                      fields: () -> [(String, String)]) {
        let enabled = switch severity {
        case .error, .notice: true
        case .warning: level >= .warning
        case .info: level >= .info
        case .debug: level >= .debug
        }
        if enabled { state.emit(text, severity: severity, category: category, fields: fields) }
    }

    /// Journal entries sent, and those the journal's socket did not take.
    static var journalEntries: (sent: Int, dropped: Int) {
        (state.journal?.sent ?? 0, state.journal?.dropped ?? 0)
    }

    /// Drains the log from `loop` from now on: a watcher for standard error's
    /// writability (only while lines wait) and a timer for the "suppressed" lines.
    /// Neither keeps the loop alive (both are unreferenced).
    static func attach(to loop: UnsafeMutablePointer<uv_loop_t>) {
        state.attach(to: loop)
    }

    /// Closes the loop handles (and lets the loop run their close callbacks, so
    /// that `uv_loop_close` succeeds). Lines logged afterwards are still written
    /// without blocking; what is left is flushed at exit.
    static func detach() {
        state.detach()
    }

    /// Writes the "suppressed N similar lines" of the intervals in progress now,
    /// so that a closing line (the final summary) comes after them.
    static func emitSuppressed() { state.emitPendingSummaries() }

    /// Writes what is buffered, waiting at most `timeout` seconds for standard
    /// error to take it; what is still left then is counted as dropped. Runs by
    /// itself at exit (atexit). Returns the number of lines that could not be written.
    @discardableResult
    static func flush(timeout: Double = 1) -> Int {
        state.flush(timeoutMilliseconds: Int(timeout * 1000))
    }

    /// Lines dropped because standard error was not writable, and lines held
    /// back by the rate limits, since the start (for the metrics).
    static var linesDropped: Int { state.sink.droppedTotal }
    static var linesSuppressed: Int { state.suppressedTotal }

    private static func emit(_ text: () -> String, severity: LogSeverity, category: LogCategory? = nil) {
        state.emit(text, severity: severity, category: category)
    }

    /// Created at the first line: looks at what standard error is once.
    nonisolated(unsafe) private static var state: LogState = {
        let state = LogState.forStandardError()
        // Whatever exit path the process takes (a usage error, a failed start, the
        // end of `run`), what is buffered gets its chance to be written.
        atexit { Log.flush() }
        return state
    }()
}

/// The log's state: the sink, the format, the rate limiter and its timer.
final class LogState {
    let sink: LogSink
    let style: LogStyle
    private var limiter: LogRateLimiter
    private var summaryTimer: LogSummaryTimer?
    /// Lines the rate limiter held back, ever.
    private(set) var suppressedTotal = 0
    /// journald's native socket, when standard error is the journal.
    let journal: JournalSocket?

    init(output: LogOutput, style: LogStyle, capacity: Int = LogSink.defaultCapacity,
         limiter: LogRateLimiter = LogRateLimiter(), journal: JournalSocket? = nil) {
        self.style = style
        self.journal = journal
        self.limiter = limiter
        sink = LogSink(output: output, capacity: capacity) { count in
            LogLine.format("\(count) log lines dropped: standard error was not writable", severity: .warning, style: style)
        }
    }

    /// The log on standard error, as the environment describes it.
    static func forStandardError() -> LogState {
        func variable(_ name: String) -> String? { getenv(name).map { String(cString: $0) } }
        let style = JournalStream.standardErrorIsTheJournal(variable("JOURNAL_STREAM")) ? LogStyle.journal : .timestamped
        let (capacity, complaint) = LogSink.capacity(fromEnvironment: variable(LogSink.capacityVariable))
        let journal = style == .journal
            ? JournalSocket(path: variable(JournalSocket.pathVariable) ?? JournalSocket.defaultPath) : nil
        let state = LogState(output: LogOutput.standardError(), style: style, capacity: capacity, journal: journal)
        if let complaint { state.emitLine(complaint, severity: .warning) }
        return state
    }

    func emit(_ text: () -> String, severity: LogSeverity, category: LogCategory?,
              fields: () -> [(String, String)] = { [] }) {
        if let category {
            let now = MonotonicClock.milliseconds()
            let decision = limiter.admit(category, severity: severity, now: now)
            if let ended = decision.ended { emitLine(ended.description, severity: ended.severity) }
            guard decision.passes else {
                suppressedTotal += 1
                armSummaryTimer(now: now)
                return
            }
        }
        let line = text()
        // Only audit lines have fields; a plain line stays on the stream.
        if let journal, case let extra = fields(), !extra.isEmpty {
            var entry = JournalEntry(message: line, severity: severity)
            for (name, value) in extra { entry.add(name, value) }
            if journal.send(entry) { return }
        }
        emitLine(line, severity: severity)
    }

    func emitLine(_ text: String, severity: LogSeverity) {
        sink.append(LogLine.format(text, severity: severity, style: style))
    }

    /// The "suppressed N similar lines" lines whose interval is over.
    func emitEndedSummaries() {
        for summary in limiter.takeEnded(now: MonotonicClock.milliseconds()) {
            emitLine(summary.description, severity: summary.severity)
        }
    }

    private func armSummaryTimer(now: UInt64) {
        guard let summaryTimer, !summaryTimer.isArmed, let due = limiter.nextSummaryDue else { return }
        summaryTimer.arm(afterMilliseconds: due > now ? due - now : 0)
    }

    func attach(to loop: UnsafeMutablePointer<uv_loop_t>) {
        guard summaryTimer == nil else { return }
        sink.attach(to: loop)
        summaryTimer = LogSummaryTimer(loop: loop) { [unowned self] in
            self.emitEndedSummaries()
            self.armSummaryTimer(now: MonotonicClock.milliseconds())
        }
        armSummaryTimer(now: MonotonicClock.milliseconds())
    }

    func detach() {
        guard let summaryTimer, let loop = sink.loop else { return }
        summaryTimer.close()
        self.summaryTimer = nil
        sink.detach()
        // Let libuv run the close callbacks now: the handles are unreferenced,
        // and the caller closes the loop next.
        uv_run(loop, UV_RUN_NOWAIT)
    }

    func emitPendingSummaries() {
        for summary in limiter.takeAll() {
            emitLine(summary.description, severity: summary.severity)
        }
    }

    func flush(timeoutMilliseconds: Int) -> Int {
        // The counts of the interval in progress would otherwise be lost.
        emitPendingSummaries()
        return sink.flush(timeoutMilliseconds: timeoutMilliseconds)
    }
}

/// A one-shot, unreferenced timer on the loop for the rate limiter's summaries.
final class LogSummaryTimer {
    private let handle: UnsafeMutablePointer<uv_timer_t>
    private let action: () -> Void
    private(set) var isArmed = false
    private var isClosed = false

    init?(loop: UnsafeMutablePointer<uv_loop_t>, action: @escaping () -> Void) {
        handle = HandleStorage.allocate(uv_timer_t.self)
        self.action = action
        guard uv_timer_init(loop, handle) == 0 else {
            HandleStorage.discard(handle)
            return nil
        }
        HandleStorage.attach(self, to: handle)
        // Never the reason the loop keeps running.
        uv_unref(HandleStorage.base(handle))
    }

    func arm(afterMilliseconds delay: UInt64) {
        guard !isClosed else { return }
        isArmed = uv_timer_start(handle, { handle in
            let timer = HandleStorage.owner(of: handle, as: LogSummaryTimer.self)
            timer.isArmed = false
            timer.action()
        }, delay, 0) == 0
    }

    func close() {
        guard !isClosed else { return }
        isClosed = true
        isArmed = false
        HandleStorage.close(handle)
    }
}

/// Milliseconds on CLOCK_MONOTONIC: intervals that wall-clock steps cannot bend.
enum MonotonicClock {
    static func milliseconds() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return UInt64(now.tv_sec) * 1000 + UInt64(now.tv_nsec / 1_000_000)
    }
}
