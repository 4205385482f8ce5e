import CUV
#if canImport(Glibc)
import Glibc
#endif
import UVBind

/// Tells a service manager (systemd) how directd is doing: the `sd_notify`
/// protocol, implemented directly. Each message is one datagram of
/// `KEY=value` lines sent to the AF_UNIX socket named by `NOTIFY_SOCKET`;
/// libsystemd is not needed for that.
///
/// Nothing here may stall the loop: the socket is non-blocking, and a
/// message the manager cannot take yet (its queue is full) waits in a small
/// queue and is retried on the next status tick, in order.
///
/// Without `NOTIFY_SOCKET` (or with one this code cannot reach) every call
/// does nothing; no timer is created and no socket opened.
///
/// Call it freely:
/// - `ready()` once the listeners are open, and again when a reload is done
///   (applied or rejected);
/// - `reloading()` when a reload starts (sends `MONOTONIC_USEC` as systemd
///   253's `Type=notify-reload` requires);
/// - `stopping()` when the drain begins;
/// - `status(_:)` on every change: at most one `STATUS=` a second reaches
///   the manager, the latest value wins; or, on hot paths, set `statusSource`
///   once and call `statusChanged()`, which builds no string;
/// - `close()` before the loop closes.
/// The watchdog (`WATCHDOG=1` at half of `WATCHDOG_USEC`) runs by itself from
/// `init` on, on an unreferenced timer that never keeps the loop alive.
final class ServiceNotifier {
    /// The environment variables this type reads.
    static let environmentKeys = ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"]

    /// Milliseconds between two `STATUS=` messages, at least.
    static let statusInterval: UInt64 = 1000
    /// Messages kept while the manager's queue is full; past it the oldest
    /// `STATUS=` or `WATCHDOG=1` goes first (a newer one supersedes it anyway).
    static let queueLimit = 16

    private let loop: UnsafeMutablePointer<uv_loop_t>
    private let socket: NotifySocket?
    /// Microseconds between two `WATCHDOG=1`: half of `WATCHDOG_USEC`; nil when
    /// the manager does not watch this process.
    let watchdogInterval: UInt64?
    private var watchdog: LoopTimer?

    /// Runs while a status was sent less than a second ago; its tick sends the
    /// latest pending status or, when there is none, closes it (idle again).
    private var statusTimer: LoopTimer?
    private var pendingStatus: String?
    /// Set by `statusChanged()` while the status timer runs: ask `statusSource` on its tick.
    private var statusIsStale = false
    private var lastStatus: String?
    /// Messages waiting to be sent, in order; more than one only while the manager is busy.
    private var queue: [NotifyMessage] = []
    private var isClosed = false

    /// Whether a manager listens: false means every call is silent.
    var isEnabled: Bool { socket != nil && !isClosed }

    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` from
    /// `environment` (the process's by default); a value it cannot use is
    /// reported once as a warning and the notifier stays silent.
    init(loop: UnsafeMutablePointer<uv_loop_t>,
         environment: [String: String] = ServiceEnvironment.current(ServiceNotifier.environmentKeys),
         processID: pid_t = getpid()) {
        self.loop = loop
        var socket: NotifySocket?
        if let name = environment["NOTIFY_SOCKET"], !name.isEmpty {
            do {
                socket = try NotifySocket(name: name)
            } catch {
                Log.warning("NOTIFY_SOCKET: \(error); the service manager will not hear from directd")
            }
        }
        self.socket = socket
        watchdogInterval = socket == nil ? nil : Self.watchdogInterval(environment, processID: processID)
        if let watchdogInterval {
            let milliseconds = max(1, watchdogInterval / 1000)
            do {
                let timer = try LoopTimer(loop: loop, everyMilliseconds: milliseconds) { [unowned self] in
                    send("WATCHDOG=1")
                }
                timer.unref()
                watchdog = timer
            } catch {
                Log.warning("cannot start the watchdog timer: \(error)")
            }
        }
    }

    /// Half of `WATCHDOG_USEC` in microseconds, when it is set and meant for
    /// this process (`WATCHDOG_PID` unset or ours); nil otherwise.
    static func watchdogInterval(_ environment: [String: String], processID: pid_t) -> UInt64? {
        guard let text = environment["WATCHDOG_USEC"], let usec = UInt64(text), usec > 0 else { return nil }
        if let pid = environment["WATCHDOG_PID"], !pid.isEmpty {
            guard let owner = pid_t(pid), owner == processID else { return nil }
        }
        return usec / 2
    }

    /// Startup (or a reload) is complete.
    func ready() { send("READY=1") }

    /// A watchdog ping now, when there is a watchdog: the loop is waiting on
    /// something bounded (an upgrade's handover) and its timer cannot fire.
    func keepAlive() {
        if watchdogInterval != nil { send("WATCHDOG=1") }
    }

    /// An upgrade's new process serves: it is the main process from now on
    /// (`MAINPID=` from a process other than the main one needs
    /// `NotifyAccess=all`), and ready, which ends the old one's RELOADING=1.
    /// With a watchdog, its first ping goes too: the old process pings no more,
    /// and this one's timer fires only an interval from now, so upgrades in a
    /// row (or one just before the old one's next ping) would let it expire.
    func readyAsMainProcess() {
        send("MAINPID=\(getpid())\nREADY=1" + (watchdogInterval == nil ? "" : "\nWATCHDOG=1"))
    }

    /// A reload starts; `ready()` must follow, whatever the reload's outcome.
    func reloading() {
        send("RELOADING=1\nMONOTONIC_USEC=\(Self.monotonicMicroseconds())")
    }

    /// The drain has begun; the manager stops expecting readiness.
    func stopping() { send("STOPPING=1") }

    /// Hands `fd` to the manager's file descriptor store under `name` (one
    /// message per descriptor: `FDNAME=` names every descriptor of a message).
    /// A duplicate travels in the queue, so the listener may close meanwhile.
    func store(_ fd: Int32, name: String) {
        guard isEnabled else { return }
        let copy = fcntl(fd, F_DUPFD_CLOEXEC, 3)
        guard copy >= 0 else {
            return Log.warning("cannot store \(LogEscaping.escaped(name)) with the service manager: dup: \(String(cString: strerror(errno)))")
        }
        send(NotifyMessage("FDSTORE=1\nFDNAME=\(name)", descriptor: copy))
    }

    /// Takes every descriptor named `name` out of the manager's store.
    func removeStored(name: String) { send("FDSTOREREMOVE=1\nFDNAME=\(name)") }

    /// Sends what is queued, then `BARRIER=1`, and waits at most `timeout` ms
    /// for the manager to have handled all of it; false when it did not (or
    /// the queue could not be sent). Blocks the loop: only for rare steps.
    func barrier(timeout: Int32) -> Bool {
        guard isEnabled, let socket else { return false }
        flush()
        guard queue.isEmpty else { return false }
        return socket.barrier(timeout: timeout)
    }

    /// Where `statusChanged()` gets the status text: asked at most once a second.
    var statusSource: (() -> String)?

    /// A one-line status for `systemctl status`. The first change after a quiet
    /// second goes out at once; later ones within the second are coalesced and
    /// the latest is sent when the second is over.
    func status(_ text: String) {
        guard isEnabled else { return }
        // One line: a newline would start a new KEY=value assignment.
        let line = String(text.map { $0.isNewline ? " " : $0 })
        if statusTimer != nil {
            pendingStatus = line == lastStatus ? nil : line
            statusIsStale = false
            return
        }
        guard line != lastStatus else { return }
        sendStatus(line)
        do {
            let timer = try LoopTimer(loop: loop, everyMilliseconds: Self.statusInterval) { [unowned self] in
                statusTick()
            }
            timer.unref()
            statusTimer = timer
        } catch {
            // Without the timer there is no coalescing; every change is sent.
            Log.warning("cannot start the status timer: \(error)")
        }
    }

    /// `status(statusSource())`, for hot paths (every accept and close): within
    /// the second after a status went out it only marks the status stale, and
    /// `statusSource` is asked once when the second is over. Without a manager
    /// it costs one check.
    func statusChanged() {
        guard isEnabled, let statusSource else { return }
        if statusTimer != nil {
            statusIsStale = true
        } else {
            status(statusSource())
        }
    }

    /// directd's status line: `listening on 127.0.0.1:21118, [::1]:21118; 3 open, 120 total`
    /// (`systemctl status` shows it as `Status:`).
    static func statusLine(listeners: [SocketAddress], open: Int, total: Int) -> String {
        let addresses = listeners.isEmpty ? "no listener" : "listening on " + listeners.map(\.description).joined(separator: ", ")
        return "\(addresses); \(open) open, \(total) total"
    }

    /// Stops the timers; later calls are silent. Call before the loop closes.
    func close() {
        guard !isClosed else { return }
        flush()
        isClosed = true
        watchdog?.close()
        watchdog = nil
        statusTimer?.close()
        statusTimer = nil
        queue.forEach { $0.discard() }
        queue.removeAll()
    }

    private func statusTick() {
        flush()
        if statusIsStale, let statusSource {
            statusIsStale = false
            let line = String(statusSource().map { $0.isNewline ? " " : $0 })
            pendingStatus = line == lastStatus ? nil : line
        }
        if let pending = pendingStatus {
            pendingStatus = nil
            sendStatus(pending)
        } else if queue.isEmpty {
            statusTimer?.close()
            statusTimer = nil
        }
    }

    private func sendStatus(_ line: String) {
        lastStatus = line
        send("STATUS=\(line)")
    }

    private func send(_ message: String) { send(NotifyMessage(message)) }

    private func send(_ message: NotifyMessage) {
        guard isEnabled else { return message.discard() }
        if queue.count >= Self.queueLimit {
            let index = queue.firstIndex { $0.text.hasPrefix("STATUS=") || $0.text == "WATCHDOG=1" } ?? 0
            let dropped = queue.remove(at: index)
            if dropped.descriptor != nil {
                Log.warning("the service manager is not reading: dropped \"\(String(dropped.text.map { $0 == "\n" ? " " : $0 }))\"; that listener will not survive a restart")
            }
            dropped.discard()
        }
        queue.append(message)
        flush()
    }

    /// Sends what is queued, in order, until the manager would block.
    private func flush() {
        guard let socket else { return }
        while let message = queue.first {
            switch socket.send(message.text, descriptor: message.descriptor) {
            case .sent:
                queue.removeFirst().discard()
            case .wouldBlock:
                // Retried by the status timer's next tick (started if need be).
                if statusTimer == nil, !isClosed {
                    statusTimer = try? LoopTimer(loop: loop, everyMilliseconds: Self.statusInterval) { [unowned self] in
                        statusTick()
                    }
                    statusTimer?.unref()
                }
                return
            case .failed(let error):
                // The manager went away or refuses us: say so once, then drop
                // the message. directd goes on serving either way.
                queue.removeFirst().discard()
                if !socket.reportedFailure {
                    socket.reportedFailure = true
                    Log.warning("cannot notify the service manager at NOTIFY_SOCKET=\(socket.displayName): \(error)")
                }
            }
        }
    }

    /// CLOCK_MONOTONIC in microseconds, the clock `MONOTONIC_USEC` is read on.
    static func monotonicMicroseconds() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return UInt64(now.tv_sec) * 1_000_000 + UInt64(now.tv_nsec) / 1000
    }
}

/// The process environment, read for the few variables a component needs.
/// Components take a dictionary so that tests can hand them any environment.
enum ServiceEnvironment {
    static func current(_ keys: [String]) -> [String: String] {
        var values: [String: String] = [:]
        for key in keys {
            if let value = getenv(key) { values[key] = String(cString: value) }
        }
        return values
    }
}
