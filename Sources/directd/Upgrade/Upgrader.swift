#if canImport(Glibc)
import Glibc
#endif
import CUV
import UVBind

/// How an upgrade ended, for the log, SIGUSR2's caller and `directd upgrade`.
enum UpgradeOutcome: Equatable {
    /// The new process serves; this one drains and exits.
    case upgraded(pid: Int32, version: String)
    /// Nothing changed: this process serves on, for this reason.
    case rolledBack(String)
    /// Not started: one is in progress already, or directd is stopping.
    case notStarted(String)

    var succeeded: Bool { if case .upgraded = self { true } else { false } }

    /// One line: what happened and why.
    var reason: String {
        switch self {
        case .upgraded(let pid, let version): "upgraded: pid \(pid) (\(version)) serves now"
        case .rolledBack(let why): "rolled back: \(why)"
        case .notStarted(let why): "not started: \(why)"
        }
    }
}

/// An in-place upgrade, on the running (old) process's side: SIGUSR2, or
/// `start(completion:)` from elsewhere.
///
/// It starts the binary installed at the path directd was started from
/// (`InstalledExecutable`), with the same arguments, and talks to it over a
/// `HandoverChannel` (`HandoverMessage`): the new process reads its config and
/// says hello with its handover format; this one holds its sessions (reads
/// stopped, queued writes let out, at most `quietLimit`), then sends the state
/// (`HandoverRecord`) with the listening sockets, the quiet sessions' sockets
/// and their pipes; the new process checks everything, takes over and says it
/// serves. Then this process closes its copies with a plain close (the sockets
/// live on in the new process: no connection is refused, nothing is sent to
/// anyone) and drains the sessions it kept as on SIGTERM.
///
/// Anything else rolls back: the binary missing or not executable, the new
/// process exiting or killed, a format mismatch, a refusal, or no answer
/// within `deadline`. Until the end this process has only held its sessions,
/// and the new one has read nothing from them, so a rollback kills the new
/// process, lets the sessions read again and serves on. Loop thread only.
final class Upgrader {
    /// What the upgrade needs of the server.
    struct Actions {
        /// The listeners now, and whether they came from a socket unit.
        var listeners: () -> (listeners: [Listener], fromSocketUnit: Bool)
        /// Stop reading on every session that can be handed over.
        var holdSessions: () -> Void
        /// Every held session has nothing in flight (or has closed).
        var heldSessionsAreQuiet: () -> Bool
        /// The held sessions to hand over (the others read again, and stay).
        var sessionsToHandOver: () -> [Session]
        /// A rollback: the held sessions read again.
        var releaseSessions: () -> Void
        /// A rollback, after the sessions: this process serves on (the
        /// pid-file names it again, whatever the new process wrote).
        var rolledBack: () -> Void
        /// The new process serves: stop without touching what it holds.
        var handedOver: (UpgradeOutcome) -> Void
        /// Told RELOADING=1 at the start, READY=1 after a rollback.
        var notifier: () -> ServiceNotifier?
    }

    /// The whole handover's bound, in milliseconds: past it the new process is
    /// killed and the upgrade rolled back (README: "Upgrading in place").
    static let deadline: UInt64 = 10_000

    private let loop: UnsafeMutablePointer<uv_loop_t>
    private let actions: Actions
    private var attempt: Attempt?
    private var closed = false

    init(loop: UnsafeMutablePointer<uv_loop_t>, actions: Actions) {
        self.loop = loop
        self.actions = actions
    }

    var inProgress: Bool { attempt != nil }

    /// Starts an upgrade; `completion` hears the outcome (once, on the loop).
    func start(cause: String, completion: @escaping (UpgradeOutcome) -> Void = { _ in }) {
        guard !closed else { return completion(.notStarted("directd is stopping")) }
        guard attempt == nil else {
            Log.warning("\(cause): an upgrade is in progress already; ignored")
            return completion(.notStarted("an upgrade is in progress already"))
        }
        guard let path = InstalledExecutable.path else {
            return completion(.rolledBack("the path directd was started from is unknown"))
        }
        Log.line("\(cause): upgrading in place: starting \(LogEscaping.escaped(path))")
        actions.notifier()?.reloading()
        let attempt = Attempt(upgrader: self, completion: completion)
        self.attempt = attempt
        attempt.begin(path: path)
    }

    /// directd stops: an upgrade in progress is rolled back (its process killed).
    func close() {
        closed = true
        attempt?.rollBack("directd is stopping")
    }

    fileprivate func finished(_ attempt: Attempt, _ outcome: UpgradeOutcome) {
        guard self.attempt === attempt else { return }
        self.attempt = nil
        switch outcome {
        case .upgraded:
            Log.line("upgrade done: \(outcome.reason)")
            attempt.completion(outcome)
            actions.handedOver(outcome)
        default:
            Log.warning("upgrade \(outcome.reason); pid \(getpid()) (\(BuildIdentity.version)) serves on")
            actions.rolledBack()
            actions.notifier()?.ready()
            attempt.completion(outcome)
        }
    }

    /// One upgrade: the new process, the channel to it, and the deadline.
    fileprivate final class Attempt {
        unowned let upgrader: Upgrader
        let completion: (UpgradeOutcome) -> Void
        private var channel: HandoverChannel?
        private var watcher: ReadableWatcher?
        private var timer: LoopTimer?
        private var process: NewProcess?
        private var sentState = false
        private var done = false

        init(upgrader: Upgrader, completion: @escaping (UpgradeOutcome) -> Void) {
            self.upgrader = upgrader
            self.completion = completion
        }

        func begin(path: String) {
            let loop = upgrader.loop
            guard let (parent, child) = HandoverChannel.pair() else {
                return rollBack("socketpair: \(String(cString: strerror(errno)))")
            }
            channel = parent
            _ = fcntl(parent.fd, F_SETFL, fcntl(parent.fd, F_GETFL) | O_NONBLOCK)
            do throws(UVError) {
                process = try NewProcess(path: path, arguments: CommandLine.arguments, channel: child, loop: loop) {
                    // Weak: it may end after this attempt is over (killed on a rollback).
                    [weak self] how in self?.processEnded(how)
                }
            } catch {
                child.close()
                return rollBack("cannot start \(LogEscaping.escaped(path)): \(error)")
            }
            child.close()
            Log.info("upgrade: pid \(process!.pid) started; waiting for its hello")
            do throws(UVError) {
                watcher = try ReadableWatcher(loop: loop, descriptor: parent.fd) { [unowned self] in self.readable() }
                timer = try LoopTimer(loop: loop, everyMilliseconds: Upgrader.deadline) { [unowned self] in
                    self.rollBack("no answer from the new process within \(Upgrader.deadline / 1000) s")
                }
            } catch {
                rollBack("cannot watch the handover channel: \(error)")
            }
        }

        private func readable() {
            guard !done, let channel else { return }
            switch channel.receive(blocking: false) {
            case .nothing:
                return
            case .closed:
                // It has exited, or is about to: its exit status says more
                // (`processEnded`). One that lives on is killed at the deadline.
                if let ending = process?.ending { return rollBack("the new process \(ending) before it took over") }
                watcher?.close()
                watcher = nil
                Log.info("upgrade: the new process closed the handover channel; waiting for it to exit")
            case .failed(let error):
                return rollBack("reading the handover channel: \(String(cString: strerror(error)))")
            case .message(let text, let descriptors):
                descriptors.forEach { _ = Glibc.close($0) }   // the new process sends none
                guard let message = HandoverMessage(parsing: text) else {
                    return rollBack("the new process sent \"\(LogEscaping.escaped(String(text.prefix(80))))\", not a handover message")
                }
                handle(message)
            }
        }

        private func handle(_ message: HandoverMessage) {
            switch message {
            case .hello(let format, let version) where !sentState:
                guard format == HandoverRecord.formatVersion else {
                    return rollBack("version mismatch: the new process (\(LogEscaping.escaped(version))) speaks handover format \(format), this one \(HandoverRecord.formatVersion)")
                }
                handedVersion = version
                Log.info("upgrade: pid \(process?.pid ?? 0) is \(LogEscaping.escaped(version)); handing over")
                holdSessions()
            case .serving(let pid) where sentState:
                finish(.upgraded(pid: pid, version: ""))
            case .refused(let why):
                rollBack("the new process refused: \(LogEscaping.escaped(why))")
            default:
                rollBack("the new process sent \"\(LogEscaping.escaped(message.text))\" out of turn")
            }
        }

        /// Stops reading on the sessions, and waits (at most `quietLimit` ms)
        /// until what they have queued is written: then they hold nothing but
        /// their sockets and counters.
        private func holdSessions() {
            upgrader.actions.holdSessions()
            heldSessions = true
            var waited: UInt64 = 0
            guard !upgrader.actions.heldSessionsAreQuiet() else { return sendState() }
            do throws(UVError) {
                quietTimer = try LoopTimer(loop: upgrader.loop, everyMilliseconds: Self.quietTick) { [unowned self] in
                    waited += Self.quietTick
                    guard self.upgrader.actions.heldSessionsAreQuiet() || waited >= Self.quietLimit else { return }
                    self.quietTimer?.close()
                    self.quietTimer = nil
                    self.sendState()
                }
            } catch {
                rollBack("cannot start a timer: \(error)")
            }
        }

        private var quietTimer: LoopTimer?
        private var heldSessions = false
        private static let quietTick: UInt64 = 5
        /// Sessions whose writes have not drained by then stay with the old process.
        static let quietLimit: UInt64 = 500

        /// The state file, then the descriptors in batches.
        private func sendState() {
            guard !done, let channel else { return }
            let (listeners, fromSocketUnit) = upgrader.actions.listeners()
            var descriptors: [Int32] = []
            var entries: [HandoverRecord.ListenerEntry] = []
            for listener in listeners {
                guard let fd = listener.fileDescriptor else { continue }
                entries.append(.init(descriptor: descriptors.count,
                                     name: StoredListenerName(address: listener.address, device: listener.target.device)))
                descriptors.append(fd)
            }
            var sessions: [HandoverRecord.SessionEntry] = []
            let now = uv_now(upgrader.loop)
            for session in upgrader.actions.sessionsToHandOver() {
                guard let snapshot = session.snapshot, let client = HandedSession.addresses(of: snapshot.client) else { continue }
                let upstream = snapshot.upstream.flatMap(HandedSession.addresses(of:))
                if snapshot.upstream != nil, upstream == nil { continue }
                let clientIndex = descriptors.count
                descriptors.append(snapshot.client)
                let upstreamIndex = snapshot.upstream.map { fd -> Int in
                    descriptors.append(fd)
                    return descriptors.count - 1
                }
                let directions = snapshot.directions.map { state -> HandoverRecord.SessionEntry.Direction in
                    var direction = HandoverRecord.SessionEntry.Direction(moved: state.moved, finished: state.finished)
                    if let pipe = state.pipe {
                        // The bytes stay in the pipe; its ends go over.
                        direction.pipeReadEnd = descriptors.count
                        direction.pipeWriteEnd = descriptors.count + 1
                        direction.inPipe = state.inPipe
                        descriptors += [pipe.readEnd, pipe.writeEnd]
                    }
                    return direction
                }
                sessions.append(.init(id: session.id, age: now - min(now, session.opened), idle: now - min(now, session.lastActivity),
                                      writeQueueLimit: session.writeQueueLimit, client: clientIndex,
                                      clientLocal: client.local, clientPeer: client.peer, upstream: upstreamIndex,
                                      upstreamLocal: upstream?.local ?? "", upstreamPeer: upstream?.peer ?? "",
                                      directions: directions))
            }
            let record = HandoverRecord(fromSocketUnit: fromSocketUnit, descriptorCount: descriptors.count,
                                        listeners: entries, sessions: sessions)
            Log.info("upgrade: handing over \(entries.count) listeners and \(sessions.count) sessions")
            let stateFile: Int32
            switch SealedStateFile.make(record.encoded()) {
            case .failure(let problem): return rollBack("\(problem)")
            case .success(let fd): stateFile = fd
            }
            defer { _ = Glibc.close(stateFile) }
            let batches = stride(from: 0, to: descriptors.count, by: HandoverChannel.descriptorsPerMessage).map {
                Array(descriptors[$0..<min($0 + HandoverChannel.descriptorsPerMessage, descriptors.count)])
            }
            var error = channel.send(HandoverMessage.state(batches: batches.count).text, descriptors: [stateFile])
            for batch in batches where error == 0 {
                error = channel.send(HandoverMessage.descriptors(count: batch.count).text, descriptors: batch)
            }
            guard error == 0 else { return rollBack("sending the state: \(String(cString: strerror(error)))") }
            sentState = true
        }

        private func processEnded(_ how: String) {
            guard !done else { return }
            // A last message (a refusal naming the cause) may be waiting.
            readable()
            guard !done else { return }
            rollBack("the new process \(how) before it took over")
        }

        private func finish(_ outcome: UpgradeOutcome) {
            guard !done else { return }
            done = true
            watcher?.close()
            timer?.close()
            quietTimer?.close()
            channel?.close()
            channel = nil
            if case .upgraded(let pid, _) = outcome {
                // It serves: no longer ours to watch (and never to kill).
                process?.release()
                upgrader.finished(self, .upgraded(pid: pid, version: handedVersion ?? "?"))
                return
            }
            process?.kill()
            if heldSessions { upgrader.actions.releaseSessions() }
            upgrader.finished(self, outcome)
        }

        private var handedVersion: String?

        func rollBack(_ why: String) { finish(.rolledBack(why)) }
    }
}
