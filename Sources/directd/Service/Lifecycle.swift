#if canImport(Glibc)
import Glibc
#endif
import CUV
import UVBind

/// The server's life on the loop: the signals it answers, the one timer that
/// drives every deadline, and the drain.
///
/// SIGINT or SIGTERM: stop accepting, give open connections `grace` seconds,
/// then cut the rest (with a reset: their streams are incomplete). A second
/// one cuts them at once. SIGUSR1: log a summary (at most one a second, see
/// `SummaryRequests`). SIGHUP: reload (its default action would end the
/// process). SIGUSR2: upgrade in place (`Upgrader`). Loop thread only.
final class Lifecycle {
    /// What the lifecycle asks of the server.
    struct Actions {
        /// Close the listeners: accepting stops.
        var stopAccepting: () -> Void
        /// Open connections now.
        var openConnections: () -> Int
        /// Cut every open connection now, with this reason.
        var cutConnections: (String) -> Void
        /// Log the summary line.
        var summary: () -> Void
        /// Read the configuration again (SIGHUP).
        var reload: () -> Void
        /// Hand over to the binary installed at directd's path (SIGUSR2).
        var upgrade: () -> Void
        /// Once every tick (deadlines, held listeners, memory).
        var tick: (UInt64) -> Void
    }

    private let loop: UnsafeMutablePointer<uv_loop_t>
    private let actions: Actions
    private var watchers: [SignalWatcher] = []
    private var ticker: LoopTimer?
    private var tickMilliseconds: UInt64 = 250
    private(set) var stopping = false
    private var drainDeadline: UInt64 = 0
    private var grace: Double = 0

    /// SIGUSR1, at most one summary a second.
    private lazy var summaries = SummaryRequests(log: actions.summary)

    init(loop: UnsafeMutablePointer<uv_loop_t>, actions: Actions) {
        self.loop = loop
        self.actions = actions
    }

    /// Starts the signal watchers and the ticker, which ticks every
    /// `tickMilliseconds`.
    func start(tickMilliseconds: UInt64) throws(UVError) {
        self.tickMilliseconds = tickMilliseconds
        for signal in [SIGINT, SIGTERM] {
            watchers.append(try SignalWatcher(loop: loop, signal: signal) { [unowned self] signal in
                self.stop(signal: signal, grace: self.grace)
            })
        }
        watchers.append(try SignalWatcher(loop: loop, signal: SIGUSR1) { [unowned self] _ in
            self.summaries.requested(now: uv_now(self.loop))
        })
        watchers.append(try SignalWatcher(loop: loop, signal: SIGHUP) { [unowned self] _ in
            self.actions.reload()
        })
        watchers.append(try SignalWatcher(loop: loop, signal: SIGUSR2) { [unowned self] _ in
            // Stopping already: the drain goes on, nothing is handed over.
            if self.stopping { return Log.warning("SIGUSR2 while stopping: no upgrade") }
            self.actions.upgrade()
        })
        // Signals held since the start of serving arrive now, to the watchers.
        ProcessSetup.releaseSignals()
        try startTicker()
    }

    private func startTicker() throws(UVError) {
        ticker = try LoopTimer(loop: loop, everyMilliseconds: tickMilliseconds) { [unowned self] in
            self.tick()
        }
    }

    /// Ticks at a new interval from now on (timeouts changed by a reload).
    func setTickInterval(_ milliseconds: UInt64) {
        guard milliseconds != tickMilliseconds, let old = ticker, !stopping else { return }
        let previous = tickMilliseconds
        tickMilliseconds = milliseconds
        do throws(UVError) {
            try startTicker()
            old.close()
        } catch {
            ticker = old   // keep ticking at the old interval
            tickMilliseconds = previous
            Log.warning("cannot restart the timer: \(error); keeping \(previous) ms")
        }
    }

    /// The grace period the next stop gives (settings may change while running).
    func setGrace(_ seconds: Double) { grace = seconds }

    /// The tick interval for the given timeouts: a quarter of the shortest, from
    /// 10 to 250 ms.
    static func tickInterval(connectTimeout: Double, idleTimeout: Double) -> UInt64 {
        let shortest = [connectTimeout, idleTimeout, 1.0].filter { $0 > 0 }.min()!
        return UInt64(min(max(shortest * 250, 10), 250))
    }

    private func tick() {
        let now = uv_now(loop)
        summaries.tick(now: now)
        if stopping {
            if now >= drainDeadline { actions.cutConnections("grace period over") }
            return
        }
        actions.tick(now)
    }

    /// First call: stop accepting now, let connections finish within `grace`.
    /// Second call: cut them now.
    func stop(signal: Int32?, grace: Double) {
        let open = actions.openConnections()
        if stopping {
            Log.line("\(signal.map { "signal \($0) again" } ?? "stopping again"): closing \(open) connections now")
            drainDeadline = 0
            actions.cutConnections("stopped")
            return
        }
        stopping = true
        drainDeadline = uv_now(loop) + UInt64(grace * 1000)
        if let signal {
            Log.line("signal \(signal): stopped accepting; \(open) connections get \(grace) s to finish")
        }
        actions.stopAccepting()
    }

    /// Closes the watchers and the ticker so that the loop can end.
    func finish() {
        // Without watchers libuv restores the default actions: a signal in the
        // last moments (the exit flush) would end the process. Held until exit.
        ProcessSetup.holdSignals()
        watchers.forEach { $0.close() }
        watchers = []
        ticker?.close()
        ticker = nil
    }
}
