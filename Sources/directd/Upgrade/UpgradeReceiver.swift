import CUV
#if canImport(Glibc)
import Glibc
#endif
@_spi(Daemon) import UVBind

/// The new process's side of an upgrade (started with `DIRECTD_UPGRADE_FD`):
/// after its config has been read as at any start, it says hello, receives
/// the state and the descriptors, checks every one of them, and is then
/// handed the listeners through `HandedListeners`. Its answer ends the
/// handover: `serving` once it serves, or `refused: <why>` (and it exits).
///
/// Blocking, bounded by `Upgrader.deadline`: nothing is served yet.
final class UpgradeReceiver {
    private var channel: HandoverChannel?

    /// The channel named by `DIRECTD_UPGRADE_FD` (taken out of the
    /// environment), or nil for an ordinary start. A value that names no
    /// handover channel is ignored with a warning: directd starts as usual.
    static func fromEnvironment() -> UpgradeReceiver? {
        guard let value = getenv(NewProcess.environmentKey).map({ String(cString: $0) }) else { return nil }
        unsetenv(NewProcess.environmentKey)
        guard let fd = Int32(value), fd > 2, isChannel(fd), fcntl(fd, F_SETFD, FD_CLOEXEC) == 0 else {
            Log.warning("\(NewProcess.environmentKey)=\(LogEscaping.escaped(value)) names no handover channel; starting as usual")
            return nil
        }
        return UpgradeReceiver(channel: HandoverChannel(fd: fd))
    }

    private static func isChannel(_ fd: Int32) -> Bool {
        var type: Int32 = 0, domain: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        guard getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &length) == 0 else { return false }
        length = socklen_t(MemoryLayout<Int32>.size)
        guard getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &length) == 0 else { return false }
        return type == Int32(SOCK_SEQPACKET.rawValue) && domain == AF_UNIX
    }

    private init(channel: HandoverChannel) {
        self.channel = channel
    }

    /// What a handover gave this process, checked.
    struct Handover {
        let listeners: HandedListeners
        let sessions: [HandedSession]

        /// Descriptors open for the sessions and the waiting connections.
        var sessionDescriptors: Int {
            sessions.reduce(0) { $0 + $1.entry.descriptors.count } + listeners.connectionsTaken.count
        }
    }

    /// Says hello, then receives and checks the state and its descriptors
    /// (`memoryLimit`: this process's, which bounds the queued bytes it can take).
    func receive(memoryLimit: Int) throws(HandoverRefusal) -> Handover {
        guard let channel else { throw HandoverRefusal("the handover channel is closed") }
        let start = ServiceNotifier.monotonicMicroseconds() / 1000
        guard channel.send(HandoverMessage.hello(format: BuildIdentity.handoverFormat, version: BuildIdentity.version).text,
                           blocking: true) == 0 else {
            throw HandoverRefusal("cannot say hello: \(String(cString: strerror(errno)))")
        }
        func next() throws(HandoverRefusal) -> (HandoverMessage, [Int32]) {
            let elapsed = ServiceNotifier.monotonicMicroseconds() / 1000 - start
            let left = Upgrader.deadline > elapsed ? Upgrader.deadline - elapsed : 0
            guard channel.waitReadable(milliseconds: Int32(left)) else {
                throw HandoverRefusal("no state from the running process within \(Upgrader.deadline / 1000) s")
            }
            switch channel.receive(blocking: false) {
            case .message(let text, let descriptors):
                guard let message = HandoverMessage(parsing: text) else {
                    descriptors.forEach { _ = Glibc.close($0) }
                    throw HandoverRefusal("\"\(LogEscaping.escaped(String(text.prefix(80))))\" is not a handover message")
                }
                return (message, descriptors)
            case .closed: throw HandoverRefusal("the running process closed the handover channel")
            case .nothing: throw HandoverRefusal("the handover channel was readable with nothing to read")
            case .failed(let error): throw HandoverRefusal("reading the handover channel: \(String(cString: strerror(error)))")
            }
        }
        var received: [Int32] = []
        do throws(HandoverRefusal) {
            let (first, stateFiles) = try next()
            received = stateFiles
            guard case .state(let batches) = first, stateFiles.count == 1 else {
                throw HandoverRefusal("expected the state and its file, got \"\(LogEscaping.escaped(first.text))\" with \(stateFiles.count) descriptors")
            }
            let record = try HandoverRecord(decoding: try SealedStateFile.read(stateFiles[0], limit: HandoverRecord.sizeLimit(memoryLimit: memoryLimit)))
            Glibc.close(stateFiles[0])
            received = []
            for _ in 0..<batches {
                let (message, descriptors) = try next()
                received += descriptors
                guard case .descriptors(let count) = message, count == descriptors.count else {
                    throw HandoverRefusal("a batch of descriptors does not say how many it holds")
                }
            }
            guard received.count == record.descriptorCount else {
                throw HandoverRefusal("the state names \(record.descriptorCount) descriptors, \(received.count) came")
            }
            // Each descriptor named once, by a listener or a session.
            let named = record.listeners.flatMap { [$0.descriptor] + ($0.waiting.map { [$0] } ?? []) }
                + record.sessions.flatMap(\.descriptors)
            guard Set(named).count == named.count, named.count == received.count else {
                throw HandoverRefusal("the state names \(named.count) descriptors (\(Set(named).count) different ones), \(received.count) came")
            }
            Self.stallForTests()
            var sessions: [HandedSession] = []
            for entry in record.sessions { sessions.append(try HandedSession(entry, descriptors: received)) }
            return Handover(listeners: try HandedListeners(record: record, descriptors: received), sessions: sessions)
        } catch {
            received.forEach { _ = Glibc.close($0) }   // copies: the running process keeps its own
            throw error
        }
    }

    /// Serving now: the running process may exit.
    func serving() {
        guard let channel else { return }
        if channel.send(HandoverMessage.serving(pid: getpid()).text, blocking: true) != 0 {
            Log.warning("could not tell the old process that this one serves: \(String(cString: strerror(errno)))")
        }
        channel.close()
        self.channel = nil
    }

    /// Tells the running process why this one will not take over (it then
    /// rolls back), before exiting.
    func refuse(_ why: String) {
        guard let channel else { return }
        _ = channel.send(HandoverMessage.refused(String(why.prefix(HandoverChannel.messageLimit - 64))).text, blocking: true)
        channel.close()
        self.channel = nil
    }

    /// Test hook: with `DIRECTD_TEST_UPGRADE_STALL=1`, the new process stops
    /// here, holding the descriptors it was sent, until it is killed: the tests
    /// kill it in the middle of the handover. Not an operator setting.
    /// With `DIRECTD_TEST_UPGRADE_PAUSE_FILE=path`, it waits instead while that
    /// file exists (at most 5 s), then goes on: the tests change a held
    /// session's peers in between.
    private static func stallForTests() {
        if let path = getenv("DIRECTD_TEST_UPGRADE_PAUSE_FILE").map({ String(cString: $0) }) {
            Log.line("upgrade test hook: pid \(getpid()) pauses the handover while \(LogEscaping.escaped(path)) exists")
            _ = Log.flush()
            for _ in 0..<500 where access(path, F_OK) == 0 { usleep(10_000) }
        }
        guard getenv("DIRECTD_TEST_UPGRADE_STALL").map({ String(cString: $0) == "1" }) ?? false else { return }
        Log.line("upgrade test hook: pid \(getpid()) holds the handover until it is killed")
        _ = Log.flush()
        while true { pause() }
    }
}
