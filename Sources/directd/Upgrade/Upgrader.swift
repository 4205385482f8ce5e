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
/// says hello with its handover format. From then until the new process's
/// answer, this process's loop waits on the channel and does nothing else
/// (`handOver`): no byte is read, written or accepted here, no timer fires, so
/// the state it sends (`HandoverRecord`: every listener with a connection
/// libuv may hold for it, every open session with what it has queued, each
/// connecting one) stays exactly true while the new process checks it and
/// takes over. When the new process says it serves, this process closes its
/// copies with a plain close (the sockets live on in the new process: no
/// connection is refused, nothing is sent to anyone) and drains whatever it
/// could not hand over as on SIGTERM.
///
/// Anything else rolls back: the binary missing or not executable, the new
/// process exiting or killed, a format mismatch, a refusal, or no answer
/// within `deadline`. The new process is killed, and waited for once it held
/// the sockets, so that it can touch none of them again; this process has
/// changed nothing, and serves on from where it stopped. Loop thread only.
final class Upgrader {
    /// What the upgrade needs of the server.
    struct Actions {
        /// The listeners now, and whether they came from a socket unit.
        var listeners: () -> (listeners: [Listener], fromSocketUnit: Bool)
        /// Every open session, in the order they opened.
        var sessions: () -> [Session]
        /// A rollback: this process serves on (the pid-file names it again,
        /// whatever the new process wrote).
        var rolledBack: () -> Void
        /// The new process serves the sessions handed over: stop without
        /// touching what it holds.
        var handedOver: (UpgradeOutcome, [Session]) -> Void
        /// Told RELOADING=1 at the start, READY=1 after a rollback, and the
        /// watchdog's pings while the loop waits on the handover.
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

    fileprivate func finished(_ attempt: Attempt, _ outcome: UpgradeOutcome, moved: [Session]) {
        guard self.attempt === attempt else { return }
        self.attempt = nil
        switch outcome {
        case .upgraded:
            Log.line("upgrade done: \(outcome.reason)")
            attempt.completion(outcome)
            actions.handedOver(outcome, moved)
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
        /// The new process has been sent the sockets: from then on a rollback
        /// waits until it has gone.
        private var sentState = false
        /// It has been killed and is gone (a zombie, for libuv to reap).
        private var gone = false
        private var done = false
        /// When it began (`ServiceNotifier.monotonicMicroseconds`, ms), for the deadline.
        private var began: UInt64 = 0
        /// The sessions sent, closed here once the new process serves them.
        private var moved: [Session] = []
        private var handedVersion: String?

        init(upgrader: Upgrader, completion: @escaping (UpgradeOutcome) -> Void) {
            self.upgrader = upgrader
            self.completion = completion
        }

        func begin(path: String) {
            let loop = upgrader.loop
            began = ServiceNotifier.monotonicMicroseconds() / 1000
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
                    self.rollBack(Attempt.noAnswer)
                }
            } catch {
                rollBack("cannot watch the handover channel: \(error)")
            }
        }

        private static let noAnswer = "no answer from the new process within \(Upgrader.deadline / 1000) s"

        /// Before the hello: the loop serves on meanwhile.
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
                handOver()
            case .serving(let pid) where sentState:
                finish(.upgraded(pid: pid, version: handedVersion ?? "?"))
            case .refused(let why):
                rollBack("the new process refused: \(LogEscaping.escaped(why))")
            default:
                rollBack("the new process sent \"\(LogEscaping.escaped(message.text))\" out of turn")
            }
        }

        /// Sends the state, then waits on the channel for the answer, the
        /// loop stopped meanwhile (see the type's comment): bounded by the
        /// deadline, the watchdog pinged on the way. Signals and requests
        /// that arrive meanwhile are served after it.
        private func handOver() {
            guard sendState(), let channel else { return }
            while !done {
                let elapsed = ServiceNotifier.monotonicMicroseconds() / 1000 - began
                guard elapsed < Upgrader.deadline else { return rollBack(Self.noAnswer) }
                upgrader.actions.notifier()?.keepAlive()
                guard channel.waitReadable(milliseconds: Int32(min(Upgrader.deadline - elapsed, 250))) else { continue }
                switch channel.receive(blocking: false) {
                case .nothing:
                    continue
                case .closed:
                    // It has exited or is exiting, without serving: killed, and
                    // waited for; its exit status names the cause (`processEnded`).
                    process?.killAndAwaitExit()
                    gone = true
                    watcher?.close()
                    watcher = nil
                    return
                case .failed(let error):
                    return rollBack("reading the handover channel: \(String(cString: strerror(error)))")
                case .message(let text, let descriptors):
                    descriptors.forEach { _ = Glibc.close($0) }
                    guard let message = HandoverMessage(parsing: text) else {
                        return rollBack("the new process sent \"\(LogEscaping.escaped(String(text.prefix(80))))\", not a handover message")
                    }
                    handle(message)
                }
            }
        }

        /// The state file, then the descriptors in batches; false when it rolled back.
        private func sendState() -> Bool {
            guard !done, let channel else { return false }
            let (listeners, fromSocketUnit) = upgrader.actions.listeners()
            var descriptors: [Int32] = []
            var entries: [HandoverRecord.ListenerEntry] = []
            for listener in listeners {
                guard let fd = listener.fileDescriptor else { continue }
                var entry = HandoverRecord.ListenerEntry(descriptor: descriptors.count,
                                                         name: StoredListenerName(address: listener.address, device: listener.target.device))
                descriptors.append(fd)
                // A connection libuv accepted and directd left there (descriptors short).
                let waiting = cuv_stream_accepted_fd(listener.stream)
                if waiting >= 0 {
                    entry.waiting = descriptors.count
                    descriptors.append(waiting)
                }
                entries.append(entry)
            }
            var sessions: [HandoverRecord.SessionEntry] = []
            let now = uv_now(upgrader.loop)
            for session in upgrader.actions.sessions() {
                guard let entry = Self.entry(for: session, now: now, descriptors: &descriptors) else { continue }
                sessions.append(entry)
                moved.append(session)
            }
            let record = HandoverRecord(fromSocketUnit: fromSocketUnit, descriptorCount: descriptors.count,
                                        listeners: entries, sessions: sessions)
            let queued = sessions.reduce(0) { $0 + $1.directions.reduce(0) { $0 + $1.unsent.count } }
            let connecting = sessions.filter(\.connecting).count
            let waiting = entries.filter { $0.waiting != nil }.count
            let notes = [queued > 0 ? "\(queued) bytes queued" : nil, connecting > 0 ? "\(connecting) connecting" : nil,
                         waiting > 0 ? "\(waiting) connections not yet accepted" : nil].compactMap { $0 }
            Log.info("upgrade: handing over \(entries.count) listeners and \(sessions.count) sessions"
                     + (notes.isEmpty ? "" : " (\(notes.joined(separator: ", ")))"))
            let stateFile: Int32
            switch SealedStateFile.make(record.encoded()) {
            case .failure(let problem):
                rollBack("\(problem)")
                return false
            case .success(let fd): stateFile = fd
            }
            defer { _ = Glibc.close(stateFile) }
            let batches = stride(from: 0, to: descriptors.count, by: HandoverChannel.descriptorsPerMessage).map {
                Array(descriptors[$0..<min($0 + HandoverChannel.descriptorsPerMessage, descriptors.count)])
            }
            // From the first descriptor sent on, the new process may hold them.
            sentState = true
            var error = channel.send(HandoverMessage.state(batches: batches.count).text, descriptors: [stateFile], blocking: true)
            for batch in batches where error == 0 {
                error = channel.send(HandoverMessage.descriptors(count: batch.count).text, descriptors: batch, blocking: true)
            }
            guard error == 0 else {
                rollBack("sending the state: \(String(cString: strerror(error)))")
                return false
            }
            return true
        }

        /// One session's entry, its descriptors appended; nil for one that
        /// stays here (closed, or its state cannot be read exactly, or a side
        /// that has reset already: this process passes that on).
        private static func entry(for session: Session, now: UInt64, descriptors: inout [Int32]) -> HandoverRecord.SessionEntry? {
            guard let snapshot = session.snapshot, let client = HandedSession.addresses(of: snapshot.client) else { return nil }
            var upstreamAddresses: (local: String, peer: String)?
            if let fd = snapshot.upstream {
                if snapshot.connecting {
                    // Not connected yet: where it connects from, and to.
                    guard let local = HandedSession.address(of: fd, peer: false), let target = snapshot.target else { return nil }
                    upstreamAddresses = (local, target.description)
                } else {
                    guard let addresses = HandedSession.addresses(of: fd) else { return nil }
                    upstreamAddresses = addresses
                }
            }
            let clientIndex = descriptors.count
            descriptors.append(snapshot.client)
            let upstreamIndex = snapshot.upstream.map { fd -> Int in
                descriptors.append(fd)
                return descriptors.count - 1
            }
            let directions = snapshot.directions.map { state -> HandoverRecord.SessionEntry.Direction in
                var direction = HandoverRecord.SessionEntry.Direction(moved: state.moved, finished: state.finished,
                                                                      ending: state.ending, unsent: state.unsent)
                if let pipe = state.pipe {
                    // The bytes stay in the pipe; its ends go over.
                    direction.pipeReadEnd = descriptors.count
                    direction.pipeWriteEnd = descriptors.count + 1
                    direction.inPipe = state.inPipe
                    descriptors += [pipe.readEnd, pipe.writeEnd]
                }
                return direction
            }
            return .init(id: session.id, age: now - min(now, session.opened), idle: now - min(now, session.lastActivity),
                         writeQueueLimit: session.writeQueueLimit, client: clientIndex,
                         clientLocal: client.local, clientPeer: client.peer, upstream: upstreamIndex,
                         upstreamLocal: upstreamAddresses?.local ?? "", upstreamPeer: upstreamAddresses?.peer ?? "",
                         listener: session.listenerCounters?.label ?? "", connecting: snapshot.connecting,
                         proxyProtocol: snapshot.proxyProtocol, directions: directions)
        }

        private func processEnded(_ how: String) {
            guard !done else { return }
            // A last message (a refusal naming the cause) may be waiting.
            if !sentState { readable() }
            guard !done else { return }
            rollBack("the new process \(how) before it took over")
        }

        private func finish(_ outcome: UpgradeOutcome) {
            guard !done else { return }
            done = true
            watcher?.close()
            timer?.close()
            channel?.close()
            channel = nil
            if case .upgraded = outcome {
                // It serves: no longer ours to watch (and never to kill).
                process?.release()
                upgrader.finished(self, outcome, moved: moved)
                return
            }
            // Once it held the sockets, it must be gone before this process
            // touches them again.
            if sentState, !gone { process?.killAndAwaitExit() } else { process?.kill() }
            moved = []
            upgrader.finished(self, outcome, moved: [])
        }

        func rollBack(_ why: String) { finish(.rolledBack(why)) }
    }
}
