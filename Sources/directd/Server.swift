#if canImport(Glibc)
import Glibc
#endif
import CUV
import UVBind

/// directd's composition root on one libuv loop: the listeners, the accept gate,
/// the session table, the buffer pool and the lifecycle, wired together. Each of
/// those owns one job; this class only connects them. Loop thread only.
final class Server: SessionHost, ReloadTarget {
    let loop: UnsafeMutablePointer<uv_loop_t>
    /// The settings in force for new connections.
    private(set) var settings: Settings
    let pool: BufferPool
    let table = SessionTable()
    /// Counters for the metrics endpoint and `directd status`.
    let metrics = Metrics()
    let gate: AcceptGate
    /// Splicing or copying, per relayed connection; its pipe pool is bounded by
    /// memory-limit like the buffer pool, and its pipes count as descriptors.
    let relay: RelayStrategy
    private var lifecycle: Lifecycle!
    private var source: ListenerSource?
    /// Readiness, reload, stop and status for a service manager (silent without one).
    private(set) var notifier: ServiceNotifier?
    /// The listeners in the manager's fdstore; set by the command before listening.
    var descriptorStore: FileDescriptorStore?
    private lazy var reloader = Reloader(target: self)
    /// The clients the rate limit tracks: allocated when it is first on, then
    /// kept, whatever reloads do to the options.
    private lazy var rates = RateLimitTable()
    private var ratesAllocated = false
    /// The metrics and control endpoints, closed when the loop finishes.
    var endpoints: [RequestServer] = []
    /// The last refusals, for `directd status`.
    var recentRefusals = RecentRefusals()
    /// Upgrades asked for over the control socket, and their outcomes.
    var upgradeLedger = UpgradeLedger()
    /// In-place upgrades (SIGUSR2, or `upgrade(completion:)`).
    private lazy var upgrader = Upgrader(loop: loop, actions: .init(
        listeners: { [unowned self] in
            (self.source?.listeners ?? [], self.source?.origin == .serviceManager)
        },
        sessions: { [unowned self] in
            self.table.sessions.values.sorted { $0.id < $1.id }
        },
        rolledBack: { [unowned self] in
            do throws(PIDFile.WriteError) {
                try self.pidFile?.write()
            } catch {
                Log.warning("\(error)")
            }
        },
        handedOver: { [unowned self] outcome, moved in self.handedOver(outcome, moved: moved) },
        notifier: { [unowned self] in self.notifier }))
    /// Listening sockets an upgrade handed this process (it is the new one);
    /// set by the command before listening.
    var handedListeners: HandedListeners?
    /// This process took over from another (`MAINPID=` at readiness).
    var isUpgrade = false
    /// `pid-file`, if set; set by the command (a rollback writes it again).
    var pidFile: PIDFile?
    /// Sessions an upgrade handed this process, not reading until it serves.
    private var restored: [Session] = []
    /// Sessions waiting for relay memory, for a rate-limited warning.
    private var memoryWarningAt: UInt64 = 0
    /// The tick's expiries, cut only if they still hold after the next poll.
    private lazy var expiries = ExpiryConfirmation(loop: loop) { [unowned self] session, expiry in
        self.expire(session, expiry)
    }

    init(loop: UnsafeMutablePointer<uv_loop_t>, settings: Settings) {
        self.loop = loop
        self.settings = settings
        pool = BufferPool(memoryLimit: settings.memoryLimit)
        gate = AcceptGate(loop: loop)
        relay = RelayStrategy(mode: settings.relayMode,
                              pipes: PipePool(limit: Self.pipeLimit(memoryLimit: settings.memoryLimit),
                                              pipeSize: Self.pipeSize))
        lifecycle = Lifecycle(loop: loop, actions: .init(
            stopAccepting: { [unowned self] in self.stopAccepting() },
            openConnections: { [unowned self] in self.table.count },
            cutConnections: { [unowned self] reason in self.cutConnections(reason) },
            summary: { [unowned self] in
                Log.line(self.table.summary + (self.rateLimitCounts.map { "; \($0)" } ?? "")
                         + (self.source?.problem.map { "; \($0)" } ?? ""))
            },
            reload: { [unowned self] in self.reloader.request(cause: "SIGHUP") },
            upgrade: { [unowned self] in self.upgrader.start(cause: "SIGUSR2") },
            tick: { [unowned self] now in self.tick(now) }))
        lifecycle.setGrace(settings.grace)
        gate.accept = { [unowned self] listener in self.accept(on: listener) }
        relay.pipes.hasRoom = { [unowned gate] count in gate.hasRoom(for: count) }
        relay.pipes.descriptorsChanged = { [unowned gate] delta in gate.sessionDescriptorsChanged(by: delta) }
        allocateRateTableIfOn(settings)
    }

    /// The table's storage is allocated when the limit is first on (at the
    /// start or a reload), never while accepting.
    private func allocateRateTableIfOn(_ settings: Settings) {
        if settings.rateLimit != nil { _ = rateTable() }
    }

    /// Bytes a splice pipe holds (`F_SETPIPE_SZ`). Measured with iperf3, one
    /// stream, three interleaved rounds: the kernel's 64 KiB pipe moved
    /// 12-16 Gbit/s at 0.19-0.33 CPU s per GB; 256 KiB 17.6-19.3 at 0.18-0.23;
    /// 1 MiB 17.4-19.4 at 0.16-0.20. 256 KiB takes nearly all of the gain and
    /// holds a quarter of 1 MiB's kernel memory for a sink that does not read.
    static let pipeSize = 256 << 10
    /// Pipes open at most: memory-limit's worth of full pipes (kernel memory,
    /// bounded as the buffer pool's user-space chunks are), at least 4.
    static func pipeLimit(memoryLimit: Int) -> Int {
        max(memoryLimit / pipeSize, 4)
    }

    /// Opens every listener of the plan (all or nothing) and logs where it listens.
    func listen(_ plan: BindPlan) throws(BindError) {
        descriptorStore?.keep(only: plan.targets)
        use(try ListenerSource.open(plan, loop: loop, backlog: settings.backlog, takeOver: takeOver,
                                    onConnection: connectionPending))
    }

    /// Serves on sockets inherited from the service manager.
    func adopt(_ sockets: [InheritedSocket]) throws(BindError) {
        use(try ListenerSource.adopt(sockets, loop: loop, backlog: settings.backlog, onConnection: connectionPending))
    }

    /// Follows the bind value as the network changes (bind-dynamic): listens on
    /// what is there now, possibly nothing, and logs each change.
    func follow(_ plan: BindPlan) throws(BindError) {
        descriptorStore?.keep(only: plan.targets)
        use(try ListenerSource.follow(settings, loop: loop, takeOver: takeOver,
                                      onConnection: connectionPending) { [unowned self] event in
            if event.severity == .warning { Log.warning(event.description) } else { Log.line(event.description) }
            self.metrics.followEvent()
            self.registerListeners()
            self.gate.listenersChanged(to: self.source?.listeners.count ?? 0)
            self.descriptorStore?.sync(self.source?.listeners ?? [])
            self.notifier?.statusChanged()
        })
    }

    /// The socket an upgrade handed over for a target, else the fdstore's, if any.
    private var takeOver: ((ListenTarget) -> Int32?)? {
        let store = descriptorStore, handed = handedListeners
        guard store != nil || handed != nil else { return nil }
        return { target in handed?.takeOver(target) ?? store?.takeOver(target) }
    }

    private func use(_ source: ListenerSource) {
        self.source = source
        source.willReconcile = { [unowned self] plan, current in
            self.descriptorStore?.release(inTheWayOf: plan.targets, current: current)
        }
        source.onChange = { [unowned self] in self.listenersChanged() }
        source.notes.forEach { $0.severity == .warning ? Log.warning($0.text) : Log.info($0.text) }
        // Every listener's series exist, at 0, from the first scrape.
        registerListeners()
        // A follower logs its own changes, the first ones included.
        guard source.origin != .following else { return }
        for listener in source.listeners {
            Log.line("listening on \(listener.address)\(source.origin == .serviceManager ? " (from the service manager)" : "")")
        }
    }

    /// Every listener's connection callback.
    private var connectionPending: Listener.ConnectionHandler {
        { [unowned self] listener, error in
            guard !self.lifecycle.stopping else { return }
            self.gate.connectionPending(on: listener, error: error, needed: self.descriptorsPerSession)
        }
    }

    /// What it runs with after the start; reloads check against it.
    private(set) var privileges = Privileges.asStarted

    /// Drops root as `plan` says, once the listeners are open, and logs the
    /// identity and capabilities it ends with.
    func dropPrivileges(_ plan: PrivilegePlan) throws(PrivilegeDrop.Failure) {
        privileges = try PrivilegeDrop.perform(plan)
        if privileges.droppedTo != nil { Log.line("dropped root: \(Privileges.describeCurrent())") }
    }

    /// Where it listens now, with the kernel's ports.
    var listeningAddresses: [SocketAddress] { source?.listeners.map(\.address) ?? [] }

    /// Counts what is open before any connection, and keeps the reserves.
    /// `handedOver`: descriptors open now that sessions will count as theirs
    /// (an upgrade's sessions and waiting connections), not the baseline's.
    func measureDescriptors(handedOver: Int = 0) {
        gate.prepare(listeners: source?.listeners.count ?? 0, excluding: handedOver)
    }

    private var descriptorsPerSession: Int {
        Session.descriptorsNeeded(relaying: settings.forward != nil)
    }

    /// Starts the signals and the ticker, and says what it serves.
    func start() throws(StartError) {
        do throws(UVError) {
            try lifecycle.start(tickMilliseconds: Lifecycle.tickInterval(
                connectTimeout: settings.connectTimeout, idleTimeout: settings.idleTimeout))
        } catch {
            throw StartError(description: "cannot start the signal watchers and timer: \(error)")
        }
        if let forward = settings.forward {
            Log.line("relaying every connection to \(forward)"
                     + (settings.proxyProtocol.map { ", with a PROXY protocol \($0.rawValue) header" } ?? ""))
            Log.info(settings.relayMode.explanation)
        } else {
            Log.line("serving echo (no direct-forward configured)")
        }
        if let allowList = settings.allowList {
            Log.info(allowList.startupNote ?? "allowing clients from \(allowList.summary()) only")
        }
        if let rateLimit = RateLimitPolicy(settings) { Log.info(rateLimit.description) }
        let notifier = ServiceNotifier(loop: loop)
        notifier.statusSource = { [unowned self] in
            (self.source?.problem.map { "\($0); " } ?? "")
                + ServiceNotifier.statusLine(listeners: self.listeningAddresses, open: self.table.count,
                                             total: Int(self.table.total))
        }
        descriptorStore?.attach(notifier, listeners: source?.listeners ?? [])
        if isUpgrade { notifier.readyAsMainProcess() } else { notifier.ready() }
        notifier.statusChanged()
        self.notifier = notifier
    }

    // MARK: reloading

    /// Reads the settings again as a start would; set by the command before `start`.
    var readSettings: (@Sendable () throws -> Settings)? {
        get { reloader.readSettings }
        set { reloader.readSettings = newValue }
    }

    /// Reloads when the config file at `path` changes.
    func watchConfig(at path: String) throws(ConfigWatcher.WatchError) {
        try reloader.watchConfig(at: path, loop: loop)
    }

    /// Puts new settings in force for new connections (a reload). Established
    /// sessions keep the values they started with, except that a tightened
    /// allow-list closes the sessions it no longer allows: an operator who
    /// removes a client expects it gone. Returns how many were closed.
    @discardableResult
    func apply(_ new: Settings) -> Int {
        let old = settings
        settings = new
        pool.setMemoryLimit(new.memoryLimit)
        relay.pipes.limit = Self.pipeLimit(memoryLimit: new.memoryLimit)
        lifecycle.setGrace(new.grace)
        allocateRateTableIfOn(new)
        Log.level = new.logLevel
        if new.connectTimeout != old.connectTimeout || new.idleTimeout != old.idleTimeout {
            lifecycle.setTickInterval(Lifecycle.tickInterval(connectTimeout: new.connectTimeout,
                                                             idleTimeout: new.idleTimeout))
        }
        guard let allowList = new.allowList else { return 0 }
        let refused = table.sessions.values.filter { session in
            !(session.peer.map { allowList.allows($0.ip) } ?? false)
        }
        for session in refused {
            session.close(reason: "no longer in the whitelist", reset: true)
        }
        return refused.count
    }

    // MARK: accepting

    private func accept(on listener: Listener) {
        guard let session = Session(host: self, loop: loop, pool: pool,
                                    writeQueueLimit: settings.writeQueueLimit, id: table.takeIdentifier()) else {
            Log.error("cannot create a connection handle", category: .acceptFailed)
            return gate.hold(listener)   // left pending; the ticker tries again shortly
        }
        if let error = listener.accept(into: session.clientStream) {
            Log.warning("accept on \(listener.address) failed: \(error)", category: .acceptFailed)
            return session.close(reason: nil)
        }
        admit(session, on: listener)
    }

    /// Serves the connections an upgrade handed over that the old process
    /// had not accepted yet (libuv held them while descriptors were short),
    /// as if accepted here: admission, then echo or relay. One whose
    /// listener this configuration no longer has is closed, as that
    /// listener's backlog is.
    func serveHandedConnections() {
        guard let handed = handedListeners else { return }
        defer { handed.connectionsServed() }
        for (fd, name) in handed.connectionsTaken {
            guard let listener = source?.listeners.first(where: {
                StoredListenerName(address: $0.address, device: $0.target.device) == name
            }), let session = Session(host: self, loop: loop, pool: pool,
                                      writeQueueLimit: settings.writeQueueLimit, id: table.takeIdentifier()) else {
                Glibc.close(fd)
                continue
            }
            if let error = UVError.check(uv_tcp_open(session.client, fd)) {
                Log.warning("a connection the old process left waiting on \(name) cannot be served: \(error)", category: .acceptFailed)
                Glibc.close(fd)
                session.close(reason: nil)
                continue
            }
            Log.info("serving a connection the old process had left waiting on \(listener.address)")
            admit(session, on: listener)
        }
    }

    /// An accepted connection: admitted (or refused), then echoed or relayed.
    private func admit(_ session: Session, on listener: Listener) {
        session.readPeer()
        let peer = session.peer.map(\.description) ?? "unknown peer"
        // A lookup per accepted connection, never per read: the session keeps the index.
        session.listenerIndex = metrics.listenerIndex(for: listener.address)
        if let refusal = Admission.refusal(of: session.peer, by: Admission.Policy(settings), table: table,
                                           rates: self.rateTable(), now: uv_now(loop)) {
            metrics.refused(on: session.listenerIndex, refusal.reason)
            recentRefusals.record(.init(at: uv_now(loop), reason: refusal.reason, client: session.peer, listener: listener.address))
            Admission.log(refusal, peer: session.peer, listener: listener.address)
            return session.close(reason: nil)
        }
        table.insert(session)
        session.metrics = metrics
        session.listenerCounters = metrics.listeners[session.listenerIndex]
        metrics.admitted(on: session.listenerIndex)
        notifier?.statusChanged()
        session.relayStrategy = relay
        Log.audit("#\(session.id) opened from \(peer) on \(listener.address)", severity: .info, category: .opened) {
            AuditFields.opened(session, listener: listener.address.description, upstream: settings.forward?.description)
        }
        if let forward = settings.forward {
            session.startRelay(to: forward, proxyProtocol: settings.proxyProtocol)
        } else {
            session.startEcho()
        }
    }

    private func rateTable() -> RateLimitTable {
        ratesAllocated = true
        return rates
    }

    /// The rate-limit table's counts (read-only, for status and metrics); nil
    /// while the rate limit has never been on.
    var rateLimitCounts: RateLimitTable.Counts? {
        ratesAllocated ? rates.counts(now: uv_now(loop)) : nil
    }

    // MARK: SessionHost

    func session(_ session: Session, changedDescriptorsBy delta: Int) {
        gate.sessionDescriptorsChanged(by: delta)
    }

    func session(_ session: Session, upstreamFailed reason: String) {
        Log.warning("#\(session.id) from \(session.peer.map(\.description) ?? "?"): \(reason)", category: .upstreamFailed)
    }

    func sessionWaitsForMemory(_ session: Session) {
        let now = uv_now(loop)
        guard now >= memoryWarningAt else { return }
        memoryWarningAt = now + 1000
        Log.warning("memory-limit (\(settings.memoryLimit) bytes of relay buffers) reached: \(pool.waitingCount + 1) connections wait for a buffer")
    }

    func sessionClosed(_ session: Session, reason: String?) {
        guard table.remove(session) else { return }
        notifier?.statusChanged()
        let (fromClient, toClient) = session.byteCounts
        let seconds = Double(uv_now(loop) - session.opened) / 1000
        metrics.closed(on: session.listenerIndex, seconds: seconds)
        Log.audit("#\(session.id) closed: \(fromClient) bytes from client, \(toClient) bytes to client, \(seconds) s\(reason.map { ", \($0)" } ?? "")",
                  severity: .info, category: .closed) {
            AuditFields.closed(session, listener: metrics.listeners[session.listenerIndex].label, fromClient: fromClient,
                               toClient: toClient, seconds: seconds, reason: reason)
        }
        if lifecycle.stopping, table.isEmpty { finish() }
    }

    // MARK: ticks

    private func tick(_ now: UInt64) {
        gate.tick(now: now, needed: descriptorsPerSession, open: table.count)
        pool.trim()
        expiries.propose(table.expired(at: now, connectLimit: UInt64(settings.connectTimeout * 1000),
                                       idleLimit: UInt64(settings.idleTimeout * 1000)))
    }

    private func expire(_ session: Session, _ expiry: SessionTable.Expiry) {
        switch expiry {
        case .connectTimeout:
            metrics.upstreamFailed(.timeout)
            self.session(session, upstreamFailed: "upstream \(session.target.map(\.description) ?? "?") did not answer within \(settings.connectTimeout) s")
            session.close(reason: nil, reset: true)   // not an empty reply
        case .idle:
            session.close(reason: "idle for \(settings.idleTimeout) s", reset: true)   // cut on purpose
        }
    }

    // MARK: upgrading

    /// Starts an in-place upgrade; `completion` hears how it ended (the
    /// control socket's `directd upgrade` waits for it).
    func upgrade(completion: @escaping (UpgradeOutcome) -> Void) {
        guard !lifecycle.stopping else { return completion(.notStarted("directd is stopping")) }
        upgrader.start(cause: "upgrade requested", completion: completion)
    }

    /// The new process serves on the same listening sockets: this one lets go
    /// of its copies with a plain close (the sockets stay open in the new
    /// process, so nothing is refused and nothing is sent to anyone) and
    /// drains its open connections as a stop does. The service manager hears
    /// nothing more from it: the new process is the main one now, and a
    /// STOPPING=1 would stop the service.
    private func handedOver(_ outcome: UpgradeOutcome, moved: [Session]) {
        notifier?.close()
        notifier = nil
        // The new process opens the metrics and control endpoints once these go.
        closeEndpoints()
        // A plain close: the new process holds the same sockets, so the kernel
        // sends nothing (no FIN, no reset), and their bytes wait for it there.
        for session in moved {
            session.close(reason: "handed over (\(outcome.reason))")
        }
        Log.line("handed over: this process stops accepting; \(table.count) connections get \(settings.grace) s to finish here")
        lifecycle.stop(signal: nil, grace: settings.grace)
    }

    /// Rebuilds the sessions an upgrade handed over (after the listeners);
    /// they read once `resumeRestoredSessions` says the handover is done.
    func restore(_ sessions: [HandedSession]) throws(HandoverRefusal) {
        for handed in sessions {
            let entry = handed.entry
            table.continueNumbering(after: entry.id)
            if let side = handed.endedSide {
                // Reset while held (it read nothing, so it did not notice): not
                // rebuilt; the other side gets the reset, as a relay passes it on.
                handed.discard()
                Log.info("#\(entry.id) ended during the upgrade: its \(side) had reset; the other side is reset too")
                continue
            }
            guard let session = Session(host: self, loop: loop, pool: pool,
                                        writeQueueLimit: entry.writeQueueLimit, id: entry.id) else {
                throw HandoverRefusal("cannot create a connection handle for #\(entry.id)")
            }
            session.relayStrategy = relay
            // Counted from here on under its listener (before its directions ask).
            if !entry.listener.isEmpty {
                session.metrics = metrics
                session.listenerIndex = metrics.listenerIndex(label: entry.listener)
                session.listenerCounters = metrics.listeners[session.listenerIndex]
            }
            let error: UVError?
            if entry.connecting, let upstream = handed.upstream {
                error = session.restoreConnecting(client: handed.client, upstream: upstream, to: handed.target!,
                                                  proxyProtocol: entry.proxyProtocol, age: entry.age)
            } else {
                error = session.restore(client: handed.client, upstream: handed.upstream, directions: handed.directions,
                                        age: entry.age, idle: entry.idle)
            }
            if let error {
                session.close(reason: nil)
                throw HandoverRefusal(error == .noBufferSpace
                    ? "#\(entry.id)'s queued bytes do not fit in this process's memory-limit"
                    : "cannot take over #\(entry.id): \(error)")
            }
            table.insert(session)
            restored.append(session)
            let piped = entry.directions.reduce(0) { $0 + $1.inPipe }
            let queued = entry.directions.reduce(0) { $0 + $1.unsent.count }
            let held = (piped > 0 ? ", \(piped) bytes waiting in its pipes" : "") + (queued > 0 ? ", \(queued) bytes queued" : "")
                + (entry.directions.contains(where: \.ending) ? ", a FIN to pass on after them" : "")
                + (entry.connecting ? ", still connecting" : "")
            Log.info("#\(entry.id) taken over from the old process (\(entry.clientPeer)\(entry.upstream == nil ? ", echo" : " to \(entry.upstreamPeer)")\(held))", category: .opened)
        }
    }

    /// The handover is done: the restored sessions read again.
    func resumeRestoredSessions() {
        let sessions = restored
        restored = []
        sessions.forEach { $0.resumeAfterUpgrade() }
    }

    /// The handover failed after sessions were restored: they close here
    /// with a plain close (never a reset: the old process serves them on).
    func abandonRestoredSessions() {
        let sessions = restored
        restored = []
        sessions.forEach { $0.close(reason: "the handover was refused; the old process keeps it") }
    }

    // MARK: stopping

    /// Stops as on SIGTERM: no new connections, open ones get the grace period.
    func stop() {
        lifecycle.stop(signal: nil, grace: settings.grace)
    }

    var stopping: Bool { lifecycle.stopping }
    var listenerSource: ListenerSource? { source }

    func listenersChanged() {
        registerListeners()
        gate.listenersChanged(to: source?.listeners.count ?? 0)
        descriptorStore?.sync(source?.listeners ?? [])
        notifier?.statusChanged()
    }

    private func stopAccepting() {
        notifier?.stopping()
        // The store keeps the listeners for the next start (a restart).
        descriptorStore?.freeze()
        source?.close()
        gate.release()
        if table.isEmpty { finish() }
    }

    /// Cuts every open connection with a reset: a stream cut short must not look
    /// complete to either peer.
    private func cutConnections(_ reason: String) {
        for session in Array(table.sessions.values) {
            session.close(reason: reason, reset: true)
        }
    }

    /// Closes the remaining handles so that the loop ends.
    private var finished = false
    private func finish() {
        guard !finished else { return }
        finished = true
        if source != nil {   // not after a start that failed
            Log.emitSuppressed()
            Log.line(table.summary)
        }
        lifecycle.finish()
        closeEndpoints()
        upgrader.close()
        expiries.close()
        reloader.close()
        gate.close()
        notifier?.close()
    }

    /// Runs the loop until every handle is closed.
    func run() {
        uv_run(loop, UV_RUN_DEFAULT)
    }
}

/// directd could not set up its own loop handles (exit 70).
struct StartError: Error, CustomStringConvertible {
    let description: String
}
