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
            queue.remove(at: index).discard()
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

/// One sd_notify datagram, with the descriptor it carries (a duplicate the
/// message owns: closed once sent or dropped).
struct NotifyMessage {
    let text: String
    let descriptor: Int32?

    init(_ text: String, descriptor: Int32? = nil) {
        self.text = text
        self.descriptor = descriptor
    }

    func discard() {
        if let descriptor { Glibc.close(descriptor) }
    }
}

/// The datagram socket toward `NOTIFY_SOCKET`: a path (`/run/systemd/notify`)
/// or an abstract name (`@name`, a leading NUL byte on the wire).
final class NotifySocket {
    enum Outcome {
        case sent, wouldBlock
        case failed(String)
    }

    struct Unusable: Error, CustomStringConvertible {
        let description: String
    }

    private let fd: Int32
    private var address = sockaddr_un()
    private let addressLength: socklen_t
    let displayName: String
    var reportedFailure = false

    init(name: String) throws(Unusable) {
        displayName = LogEscaping.escaped(name)
        var path = Array(name.utf8)
        switch path.first {
        case UInt8(ascii: "/"):
            break
        case UInt8(ascii: "@"):
            path[0] = 0
        default:
            // systemd also knows vsock: addresses (for virtual machines); directd does not.
            throw Unusable(description: "\"\(displayName)\" is neither a socket path (/...) nor an abstract name (@...)")
        }
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        // A path needs room for its terminating NUL; an abstract name does not.
        guard path.count < capacity || (path[0] == 0 && path.count <= capacity) else {
            throw Unusable(description: "\"\(displayName)\" is longer than a socket address allows (\(capacity - 1) bytes)")
        }
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: path) }
        // An abstract name's length is exact: trailing NULs would be part of it.
        addressLength = socklen_t(MemoryLayout<sa_family_t>.size + path.count + (path[0] == 0 ? 0 : 1))
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else {
            throw Unusable(description: "socket(AF_UNIX, SOCK_DGRAM) failed: \(String(cString: strerror(errno)))")
        }
    }

    deinit { Glibc.close(fd) }

    func send(_ message: String, descriptor: Int32? = nil) -> Outcome {
        var message = message
        let sent = message.withUTF8 { bytes in
            withUnsafeMutablePointer(to: &address) { pointer in
                if let descriptor {
                    return NotifySocket.sendWithDescriptor(fd, bytes, descriptor, pointer, addressLength)
                }
                return pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { address in
                    sendto(fd, bytes.baseAddress, bytes.count, Int32(MSG_DONTWAIT) | Int32(MSG_NOSIGNAL), address, addressLength)
                }
            }
        }
        if sent >= 0 { return .sent }
        switch errno {
        case EAGAIN, EINTR, ENOBUFS: return .wouldBlock
        case let code: return .failed(String(cString: strerror(code)))
        }
    }

    /// `BARRIER=1` (systemd 246 on): the manager closes its copy of the pipe's
    /// write end once it has handled every earlier message. Waits for that at
    /// most `timeout` ms; false when it did not come. Blocks: call it only
    /// before the loop runs.
    func barrier(timeout: Int32) -> Bool {
        var ends: [Int32] = [-1, -1]
        guard pipe2(&ends, O_CLOEXEC) == 0 else { return false }
        defer { Glibc.close(ends[0]) }
        let outcome = send("BARRIER=1", descriptor: ends[1])
        Glibc.close(ends[1])
        guard case .sent = outcome else { return false }
        var poller = pollfd(fd: ends[0], events: 0, revents: 0)
        var ready: Int32 = -1
        for _ in 0..<8 {   // EINTR: try again, a few times
            ready = poll(&poller, 1, timeout)
            if ready >= 0 || errno != EINTR { break }
        }
        return ready == 1 && poller.revents & Int16(POLLHUP) != 0
    }

    /// `sendmsg` with one descriptor as SCM_RIGHTS. Swift has no CMSG_* macros:
    /// the control buffer is laid out by hand, a `cmsghdr` then the int, in
    /// 8-byte words (CMSG_SPACE(4) on 64-bit Linux is 24 bytes, CMSG_LEN(4) 20).
    private static func sendWithDescriptor(_ fd: Int32, _ bytes: UnsafeBufferPointer<UInt8>, _ descriptor: Int32,
                                           _ address: UnsafeMutablePointer<sockaddr_un>,
                                           _ addressLength: socklen_t) -> Int {
        let headerSize = (MemoryLayout<cmsghdr>.size + 7) & ~7
        var control = [UInt64](repeating: 0, count: (headerSize + 8) / 8)
        var vector = iovec(iov_base: UnsafeMutableRawPointer(mutating: bytes.baseAddress), iov_len: bytes.count)
        return control.withUnsafeMutableBytes { buffer in
            let header = buffer.baseAddress!.assumingMemoryBound(to: cmsghdr.self)
            header.pointee.cmsg_level = SOL_SOCKET
            header.pointee.cmsg_type = Int32(SCM_RIGHTS)
            header.pointee.cmsg_len = headerSize + MemoryLayout<Int32>.size
            buffer.storeBytes(of: descriptor, toByteOffset: headerSize, as: Int32.self)
            return withUnsafeMutablePointer(to: &vector) { vector in
                var message = msghdr(msg_name: UnsafeMutableRawPointer(address), msg_namelen: addressLength,
                                     msg_iov: vector, msg_iovlen: 1, msg_control: buffer.baseAddress,
                                     msg_controllen: buffer.count, msg_flags: 0)
                return sendmsg(fd, &message, Int32(MSG_DONTWAIT) | Int32(MSG_NOSIGNAL))
            }
        }
    }
}
