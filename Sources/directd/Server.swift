import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif
import CUV
import UVBind

/// directd's running state on one libuv loop: listeners, sessions, limits,
/// timers and signals. Loop thread only.
final class Server {
    let loop: UnsafeMutablePointer<uv_loop_t>
    let settings: Settings
    let pool = BufferPool()
    private var group: ListenerGroup?
    private var sessions: [UInt64: Session] = [:]
    private var watchers: [SignalWatcher] = []
    private var ticker: LoopTimer?
    private var nextID: UInt64 = 1

    // Totals for the summary.
    private var total: UInt64 = 0
    private var bytesFromClients: UInt64 = 0
    private var bytesToClients: UInt64 = 0

    // Stopping: listeners closed, sessions given until `drainDeadline`.
    private(set) var stopping = false
    private var drainDeadline: UInt64 = 0

    // Descriptors: sockets of open sessions, against the process limit; see
    // `connectionPending` and `acceptFailed`.
    var socketsOpen = 0
    private var descriptorBaseline = 0
    private let descriptorLimit: Int = {
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        return Int(clamping: limit.rlim_cur)   // RLIM_INFINITY is all ones: clamps to Int.max
    }()
    private var reserves: [Int32] = []
    private var heldListeners: [Listener] = []
    private var resumeAt: UInt64 = 0

    init(loop: UnsafeMutablePointer<uv_loop_t>, settings: Settings) {
        self.loop = loop
        self.settings = settings
    }

    /// Opens every listener of the plan (all or nothing) and logs where it listens.
    func listen(_ plan: BindPlan) throws(BindError) {
        let group = try ListenerGroup.open(plan, loop: loop, backlog: settings.backlog) { [unowned self] listener, error in
            self.connectionPending(on: listener, error: error)
        }
        self.group = group
        group.warnings.forEach { Log.warning($0) }
        for listener in group.listeners {
            Log.line("listening on \(listener.address)")
        }
        // One spare descriptor per listener, given up when accept hits EMFILE.
        reserves = group.listeners.compactMap { _ in
            let fd = open("/dev/null", O_RDONLY | O_CLOEXEC)
            return fd >= 0 ? fd : nil
        }
    }

    /// Counts the descriptors in use before any connection (libuv's own, the
    /// listeners, the reserves, standard streams): sessions add theirs to it.
    func measureDescriptors() {
        descriptorBaseline = ((try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd"))?.count ?? 16)
    }

    /// Room for one more session's sockets (two for a relay), with a margin for
    /// libuv's internals.
    private var hasDescriptorRoom: Bool {
        descriptorBaseline + socketsOpen + (settings.forward == nil ? 1 : 2) + 4 <= descriptorLimit
    }

    /// SIGINT/SIGTERM drain then stop (a second one stops at once); SIGUSR1 logs a summary.
    func start() throws(StartError) {
        do throws(UVError) {
            try startWatching()
        } catch {
            throw StartError(description: "cannot start the signal watchers and timer: \(error)")
        }
        if let forward = settings.forward {
            Log.line("relaying every connection to \(forward)")
        } else {
            Log.line("serving echo (no direct-forward configured)")
        }
        if let allowList = settings.allowList { Log.info("allowing clients from \(allowList) only") }
    }

    private func startWatching() throws(UVError) {
        for signal in [SIGINT, SIGTERM] {
            watchers.append(try SignalWatcher(loop: loop, signal: signal) { [unowned self] signal in
                self.stop(signal: signal)
            })
        }
        watchers.append(try SignalWatcher(loop: loop, signal: SIGUSR1) { [unowned self] _ in
            Log.line(self.summary)
        })
        // One timer for every deadline: connect and idle timeouts, the drain, the
        // retry after EMFILE. It ticks at a quarter of the shortest timeout.
        let shortest = [settings.connectTimeout, settings.idleTimeout, 1.0].filter { $0 > 0 }.min()!
        let interval = UInt64(min(max(shortest * 250, 10), 250))
        ticker = try LoopTimer(loop: loop, everyMilliseconds: interval) { [unowned self] in self.tick() }
    }

    var summary: String {
        "summary: \(sessions.count) open, \(total) total, \(bytesFromClients) bytes from clients, \(bytesToClients) bytes to clients"
    }

    // MARK: accepting

    private func connectionPending(on listener: Listener, error: UVError?) {
        if let error {
            return acceptFailed(on: listener, error: error)
        }
        // Not accepting it leaves it to libuv, which stops watching this listener
        // until `uv_accept` is called again (see `resumeAccepting`).
        if stopping { return }
        if !heldListeners.isEmpty {
            return hold(listener)
        }
        if !hasDescriptorRoom {
            Log.warning("accepting paused: \(socketsOpen) sockets open, near the descriptor limit (\(descriptorLimit)); retrying shortly")
            return hold(listener)
        }
        accept(on: listener)
    }

    private func hold(_ listener: Listener) {
        if !heldListeners.contains(where: { $0 === listener }) { heldListeners.append(listener) }
        resumeAt = uv_now(loop) + 250
    }

    private func accept(on listener: Listener) {
        guard let session = Session(server: self, id: nextID) else {
            // Leave the connection pending; the ticker tries again shortly.
            return hold(listener)
        }
        nextID += 1
        if let error = listener.accept(into: session.clientStream) {
            Log.warning("accept on \(listener.address) failed: \(error)")
            session.close(reason: nil)
            return
        }
        session.readPeer()
        session.listener = listener.address
        let peer = session.peer.map(\.description) ?? "unknown peer"
        if let allowList = settings.allowList, !(session.peer.map { allowList.allows($0.ip) } ?? false) {
            Log.info("refused \(peer) on \(listener.address): not in the whitelist")
            return session.close(reason: nil)
        }
        if sessions.count >= settings.maxConnections {
            Log.warning("refused \(peer) on \(listener.address): max-connections (\(settings.maxConnections)) reached")
            return session.close(reason: nil)
        }
        sessions[session.id] = session
        total += 1
        Log.info("#\(session.id) opened from \(peer) on \(listener.address)")
        if let forward = settings.forward {
            session.startRelay(to: forward)
        } else {
            session.startEcho()
        }
    }

    /// Out of descriptors (EMFILE/ENFILE): libuv would call back again at once for
    /// the same pending connection, spinning the loop. Giving up one reserved
    /// descriptor lets libuv accept that connection; `connectionPending` then
    /// holds it unaccepted, which makes libuv stop watching the listener. The
    /// ticker re-reserves and resumes shortly after.
    private func acceptFailed(on listener: Listener, error: UVError) {
        guard error == .tooManyOpenFiles || error == .tooManyOpenFilesInSystem else {
            Log.warning("accept on \(listener.address) failed: \(error)")
            return
        }
        if heldListeners.isEmpty {
            Log.warning("accept on \(listener.address) failed: \(error); accepting paused, retrying shortly (\(sessions.count) connections open)")
        }
        hold(listener)
        if let fd = reserves.popLast() { Glibc.close(fd) }
    }

    private func resumeAccepting() {
        while reserves.count < (group?.listeners.count ?? 0) {
            let fd = open("/dev/null", O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else {
                resumeAt = uv_now(loop) + 250
                return
            }
            reserves.append(fd)
        }
        guard hasDescriptorRoom else {
            resumeAt = uv_now(loop) + 250
            return
        }
        let held = heldListeners
        heldListeners = []
        Log.info("accepting again (\(sessions.count) connections open)")
        for listener in held where !listener.isClosed {
            accept(on: listener)
        }
    }

    // MARK: sessions

    func upstreamFailed(_ session: Session, reason: String) {
        Log.warning("#\(session.id) from \(session.peer.map(\.description) ?? "?"): \(reason)")
    }

    func sessionClosed(_ session: Session, reason: String?) {
        socketsOpen -= session.socketCount
        guard sessions.removeValue(forKey: session.id) != nil else { return }
        let (fromClient, toClient) = session.byteCounts
        bytesFromClients += fromClient
        bytesToClients += toClient
        let seconds = Double(uv_now(loop) - session.opened) / 1000
        Log.info("#\(session.id) closed: \(fromClient) bytes from client, \(toClient) bytes to client, \(seconds) s\(reason.map { ", \($0)" } ?? "")")
        if stopping, sessions.isEmpty { finish() }
    }

    private func tick() {
        let now = uv_now(loop)
        if !heldListeners.isEmpty, !stopping, now >= resumeAt { resumeAccepting() }
        if stopping, now >= drainDeadline {
            for session in Array(sessions.values) {
                session.close(reason: "grace period over")
            }
            return
        }
        let connectLimit = UInt64(settings.connectTimeout * 1000)
        let idleLimit = UInt64(settings.idleTimeout * 1000)
        // Nothing can expire in an echo without an idle timeout: skip the scan.
        guard settings.forward != nil || idleLimit > 0 else { return }
        var expired: [(Session, String?)] = []
        for session in sessions.values {
            if session.connecting, now - session.opened >= connectLimit {
                upstreamFailed(session, reason: "upstream \(settings.forward!) did not answer within \(settings.connectTimeout) s")
                expired.append((session, nil))
            } else if idleLimit > 0, !session.connecting, now - session.lastActivity >= idleLimit {
                expired.append((session, "idle for \(settings.idleTimeout) s"))
            }
        }
        for (session, reason) in expired { session.close(reason: reason) }
    }

    // MARK: stopping

    /// First signal: stop accepting now, let sessions finish within the grace period.
    /// Second signal: close everything now.
    func stop(signal: Int32? = nil) {
        if stopping {
            Log.line("signal \(signal ?? 0) again: closing \(sessions.count) connections now")
            drainDeadline = 0
            tick()
            return
        }
        stopping = true
        drainDeadline = uv_now(loop) + UInt64(settings.grace * 1000)
        group?.close()
        heldListeners = []
        if let signal {
            Log.line("signal \(signal): stopped accepting; \(sessions.count) connections get \(settings.grace) s to finish")
        }
        if sessions.isEmpty { finish() }
    }

    /// Closes the remaining handles so that the loop ends.
    private func finish() {
        if group != nil { Log.line(summary) }   // not after a start that failed
        watchers.forEach { $0.close() }
        watchers = []
        ticker?.close()
        ticker = nil
        reserves.forEach { Glibc.close($0) }
        reserves = []
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
