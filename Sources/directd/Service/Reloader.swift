import CUV
import UVBind

/// What a reload asks of the server it moves to new settings.
protocol ReloadTarget: AnyObject {
    /// The loop the server runs on.
    var loop: UnsafeMutablePointer<uv_loop_t> { get }
    /// The settings in force for new connections.
    var settings: Settings { get }
    /// A stop has begun: a reload then does nothing.
    var stopping: Bool { get }
    /// Where the listeners come from (nil before the first listen).
    var listenerSource: ListenerSource? { get }
    var notifier: ServiceNotifier? { get }
    /// What root left behind at the start: a reload may need more.
    var privileges: Privileges { get }
    /// Counts reloads, taken and rejected.
    var metrics: Metrics { get }
    /// The listeners changed: reserves and status follow.
    func listenersChanged()
    /// Stops as on SIGTERM.
    func stop()
    /// Puts validated settings in force; returns the sessions it closed.
    @discardableResult func apply(_ new: Settings) -> Int
}

/// Reloading, as nginx and haproxy do it: the file is read again with the
/// command-line flags on top, validated whole, and either put in force or
/// rejected with nothing changed. Triggered by SIGHUP or the config watcher,
/// through `request(cause:)`.
///
/// Reading, validating and resolving (a host name in direct-forward) run on
/// libuv's thread pool, never on the loop: a FIFO, a huge file or a resolver
/// that does not answer once froze service. Only the result is applied, on
/// the loop. Requests are coalesced by a `ReloadQueue`: one reload in flight,
/// later requests folded into one more, at most one start per
/// `minimumInterval`. Loop thread only.
final class Reloader {
    /// Reloads start at most this often (milliseconds).
    static let minimumInterval: UInt64 = 200

    private unowned let target: ReloadTarget
    /// Reads the settings again as a start would (the file, then the flags
    /// given on the command line); set by the command before the server starts.
    /// It runs on a pool thread: it may touch nothing the loop owns.
    var readSettings: (@Sendable () throws -> Settings)?
    private var watcher: ConfigWatcher?
    private lazy var queue = ReloadQueue(loop: target.loop, minimumInterval: Self.minimumInterval) {
        [unowned self] cause in self.begin(cause: cause)
    }
    /// The read in flight, if any.
    private var reading: OffLoopWork?
    private var isClosed = false

    init(target: ReloadTarget) {
        self.target = target
    }

    /// Reloads when the config file at `path` changes (what the path resolves
    /// through is watched, so an editor's atomic rename or a symlink swap is
    /// seen; bursts are debounced).
    func watchConfig(at path: String, loop: UnsafeMutablePointer<uv_loop_t>) throws(ConfigWatcher.WatchError) {
        watcher = try ConfigWatcher(loop: loop, path: path) { [unowned self] in
            self.request(cause: "config file changed")
        }
    }

    func close() {
        isClosed = true
        watcher?.close()
        watcher = nil
        queue.close()
        reading?.cancel()
    }

    /// Asks for a reload (SIGHUP, the watcher). Cheap: see `ReloadQueue`.
    func request(cause: String) {
        guard !isClosed, !target.stopping, readSettings != nil else { return }
        queue.request(cause: cause)
    }

    /// Starts one reload: the settings are read off the loop, then `finish`.
    private func begin(cause: String) {
        guard !isClosed, !target.stopping, let readSettings else { return queue.finished() }
        target.notifier?.reloading()
        Log.line("reloading (\(cause))")
        do throws(UVError) {
            reading = try OffLoopWork(loop: target.loop, work: { Result { try readSettings() } }) {
                [weak self] result in
                guard let self else { return }
                reading = nil
                if let result, !isClosed { finish(result) }
                queue.finished()
            }
        } catch {
            Log.error("cannot read the settings off the loop: \(error)")
            target.metrics.reloaded(accepted: false)
            Log.warning("reload rejected: still serving as before")
            target.notifier?.ready()
            queue.finished()
        }
    }

    /// Moves to the settings read: listeners reconciled (those still wanted
    /// keep their socket), new settings for new connections. If anything is
    /// invalid, or a listener cannot open, everything stays as it was and the
    /// log says why. Options that cannot change while running keep their value
    /// and are reported.
    private func finish(_ read: Result<Settings, any Error>) {
        guard !target.stopping else { return }
        let notifier = target.notifier
        defer { notifier?.ready() }
        let current = target.settings
        let fresh: Settings
        do {
            fresh = try read.get()
        } catch let error as ConfigError where error.turnsDirectAccessOff {
            // The operator switched the service off, as RustDesk's own option does.
            Log.warning("\(error): stopping, as on SIGTERM")
            return target.stop()
        } catch {
            Log.error("\(error)")
            target.metrics.reloaded(accepted: false)
            return Log.warning("reload rejected: still serving as before")
        }
        fresh.warnings.forEach { Log.warning($0) }
        let source = target.listenerSource
        let new = keepingUnreloadable(fresh, from: current, socketsFromServiceManager: source?.origin == .serviceManager)
        let changes = new.changes(from: current)
        if let refusal = target.privileges.reloadRefusal(new, from: current) {
            Log.error(refusal)
            return Log.warning("reload rejected: still serving as before")
        }
        if let source, source.origin != .serviceManager {
            do throws(BindError) {
                try source.reconcile(to: new).forEach { Log.line($0) }
            } catch {
                Log.error("\(error)")
                target.metrics.reloaded(accepted: false)
                target.listenersChanged()
                let now = source.listeners.map { "\($0.address)" }.joined(separator: ", ")
                // Listeners lost on the way are an error of their own (retried with back-off).
                if let problem = source.problem {
                    return Log.error("reload rejected: \(problem); listening on \(now.isEmpty ? "nothing" : now)")
                }
                return Log.warning("reload rejected: still serving as before, listening on \(now.isEmpty ? "nothing" : now)")
            }
            target.listenersChanged()
        }
        let cut = target.apply(new)
        target.metrics.reloaded(accepted: true)
        new.notes.forEach { Log.info($0) }
        let summary = changes.isEmpty ? "no option changed" : changes.map(\.description).joined(separator: "; ")
        Log.line("reloaded: \(summary)\(cut > 0 ? "; closed \(cut) connections no longer in the whitelist" : "")")
        notifier?.statusChanged()
    }

    /// `fresh` with every option that cannot change while running put back to
    /// its value in `current`, each one reported.
    private func keepingUnreloadable(_ fresh: Settings, from current: Settings,
                                     socketsFromServiceManager: Bool) -> Settings {
        var (new, refused) = fresh.keepingUnreloadable(from: current)
        if socketsFromServiceManager {
            // The sockets belong to the service manager's socket unit: where to
            // listen changes there, and with a restart, never by binding here.
            let placed = [AnyOptionSpec(OptionTable.bindInterface), AnyOptionSpec(OptionTable.port)]
            for option in placed where option.show(new) != option.show(current) {
                refused.append(Settings.Change(key: option.name, old: option.show(current), new: option.show(new),
                                               reloadable: false))
                try? option.set(&new, option.show(current))
            }
        }
        for change in refused {
            Log.warning("\(change.key) cannot change while running: keeping \(ConfigText.quoted(change.old)) (restart to use \(ConfigText.quoted(change.new)))")
        }
        return new
    }
}
