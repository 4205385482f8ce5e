import CUV
#if canImport(Glibc)
import Glibc
#endif

/// Keeps the listeners of a bind value equal to what it names on the machine
/// now, as interfaces and addresses come and go (a VPN that comes up after the
/// service, DHCP renumbering, IPv6 duplicate address detection).
///
/// How it works, on the host's loop:
/// - An rtnetlink socket subscribed to link and address changes is watched with
///   `uv_poll`. Its messages are hints only: a burst is coalesced with a short
///   timer, then the whole interface table is read again (over netlink, with
///   each address's flags), the value is resolved again, and the group is
///   reconciled: new addresses opened, addresses that left closed, unchanged
///   listeners untouched (the same socket). No polling timer reads the table.
/// - An element that names nothing yet (an interface not there, an address not
///   assigned, or an IPv6 address still tentative) is waiting, not an error.
/// - A bind that fails (EADDRNOTAVAIL in a race with the kernel, EADDRINUSE) is
///   left out, reported once, and tried again on the next event or when a
///   back-off timer fires (250 ms, doubling to 8 s): the loop never spins.
/// - If the kernel drops events (ENOBUFS), the table is read again in full, and
///   that is reported.
/// - Zones and interface names are matched by name each time, so an interface
///   deleted and created again with a new index is followed.
/// - Never wider: only what the value names is ever listened on. A wildcard is
///   used only when the value says so, and nothing falls back to one.
///
/// Loop thread only. `close` stops everything; the memory goes after libuv has
/// closed every handle.
public final class ListenerFollower: HandleCloseObserver {
    /// A change, for the log: one per listener opened or closed, per element
    /// that starts waiting, per failure (once, until it changes).
    public struct Event: Sendable, CustomStringConvertible {
        public enum Kind: Sendable, Hashable {
            /// A listener opened on `address`.
            case listening
            /// The listener on `address` closed; `reason`: "address removed",
            /// "interface removed", "no longer named by the value".
            case stopped
            /// `element` names nothing yet; `reason` says what is missing.
            case waiting
            /// `error` (about `address`, when it has one): not opened now, tried again later.
            case failed
            /// The kernel dropped events (ENOBUFS); everything was read again.
            case resynchronised
        }

        public let kind: Kind
        public let address: SocketAddress?
        public let element: String?
        public let reason: String?
        public let error: BindError?

        init(_ kind: Kind, address: SocketAddress? = nil, element: String? = nil, reason: String? = nil,
             error: BindError? = nil) {
            self.kind = kind
            self.address = address
            self.element = element
            self.reason = reason
            self.error = error
        }

        static func listening(_ address: SocketAddress) -> Event { Event(.listening, address: address) }
        static func stopped(_ address: SocketAddress, reason: String) -> Event {
            Event(.stopped, address: address, reason: reason)
        }
        static func waiting(element: String, reason: String) -> Event {
            Event(.waiting, element: element, reason: reason)
        }
        static func failed(_ error: BindError) -> Event { Event(.failed, address: error.address, error: error) }
        static let resynchronised = Event(.resynchronised)

        /// The log line: `listening on ADDRESS:PORT`, `stopped listening on
        /// ADDRESS:PORT (address removed)`, `waiting for ELEMENT (why)`, with
        /// control characters escaped.
        public var description: String {
            let text = switch kind {
            case .listening: "listening on \(address?.description ?? "?")"
            case .stopped: "stopped listening on \(address?.description ?? "?") (\(reason ?? ""))"
            case .waiting: "waiting for \(element ?? "?") (\(reason ?? ""))"
            case .failed: "not listening yet: \(error?.description ?? "?")"
            case .resynchronised: "interface events were lost (netlink ENOBUFS): read every interface again"
            }
            return escapingControlCharacters(text)
        }

        /// Listening, stopping and waiting are the operator's news; the rest is a warning.
        public var severity: BindNote.Severity {
            switch kind {
            case .listening, .stopped, .waiting: .info
            case .failed, .resynchronised: .warning
            }
        }
    }

    public private(set) var value: BindValue
    public let group: ListenerGroup
    public let bindToDevice: Bool
    /// The elements waiting now (as the errors they would be without following).
    public private(set) var waiting: [BindError] = []
    public private(set) var isClosed = false
    private var requestedPort: UInt16
    private let onChange: (Event) -> Void

    private let loop: UnsafeMutablePointer<uv_loop_t>
    private let netlinkSocket: Int32
    private let poll: UnsafeMutablePointer<uv_poll_t>
    private let coalesceTimer: UnsafeMutablePointer<uv_timer_t>
    private let retryTimer: UnsafeMutablePointer<uv_timer_t>
    private var retryDelay: UInt64 = ListenerFollower.firstRetry
    /// The event socket failed and is no longer watched: only the timer refreshes.
    private var eventsLost = false
    private var failing: [String] = []
    private var handlesOpen = 0
    private var onClosed: (() -> Void)?

    /// How long a burst of events is gathered before the table is read (ms).
    static let coalesce: UInt64 = 15
    static let firstRetry: UInt64 = 250
    static let lastRetry: UInt64 = 8_000

    /// Starts following `value`: reads it (a malformed value throws, as it
    /// would without following), subscribes to the kernel's changes, and
    /// listens on whatever is there now, possibly nothing. `onChange` hears of
    /// every change, including those of this first pass, before this returns.
    public convenience init(value text: String, port: UInt16, loop: UnsafeMutablePointer<uv_loop_t>,
                            backlog: Int32 = 511, bindToDevice: Bool = false,
                            takeOver: ((ListenTarget) -> Int32?)? = nil,
                            onConnection: @escaping Listener.ConnectionHandler,
                            onChange: @escaping (Event) -> Void) throws(BindError) {
        // The group's `takeOver` is set before the first pass opens anything.
        try self.init(value: text, port: port, loop: loop, backlog: backlog, bindToDevice: bindToDevice,
                      onConnection: onConnection, onChange: onChange, beforeFirstPass: { $0.group.takeOver = takeOver })
    }

    /// `beforeFirstPass` sees the follower before any change is reported, so
    /// that the C API can answer questions about it from the first callbacks.
    init(value text: String, port: UInt16, loop: UnsafeMutablePointer<uv_loop_t>, backlog: Int32,
         bindToDevice: Bool, onConnection: @escaping Listener.ConnectionHandler,
         onChange: @escaping (Event) -> Void,
         beforeFirstPass: ((ListenerFollower) -> Void)?) throws(BindError) {
        let value = try BindValue(parsing: text)
        if bindToDevice {
            // The wildcard check is syntax: refuse it before anything opens.
            _ = try BindPlan(value, port: port, interfaces: InterfaceTable(interfaces: [], addresses: []),
                             bindToDevice: true, waiting: true)
        }
        let fd: Int32
        do throws(UVError) {
            fd = try RouteNetlink.openEvents()
        } catch {
            throw BindError(kind: .system, value: text, step: .interfaces, code: error,
                            detail: "cannot subscribe to the kernel's interface changes (rtnetlink)",
                            remedy: "Check that the program may open netlink sockets (seccomp, sandboxing)")
        }
        self.value = value
        self.requestedPort = port
        self.bindToDevice = bindToDevice
        self.loop = loop
        self.onChange = onChange
        self.netlinkSocket = fd
        self.group = ListenerGroup(loop: loop, backlog: backlog, onConnection: onConnection)
        poll = HandleStorage.allocate(uv_poll_t.self)
        coalesceTimer = HandleStorage.allocate(uv_timer_t.self)
        retryTimer = HandleStorage.allocate(uv_timer_t.self)

        // uv_poll_init does not take the descriptor over: it is closed in close().
        if let error = UVError.check(uv_poll_init(loop, poll, fd)) {
            HandleStorage.discard(poll)
            HandleStorage.discard(coalesceTimer)
            HandleStorage.discard(retryTimer)
            Glibc.close(fd)
            throw BindError(kind: .system, value: text, step: .interfaces, code: error,
                            detail: "cannot watch the kernel's interface changes", remedy: "")
        }
        uv_timer_init(loop, coalesceTimer)
        uv_timer_init(loop, retryTimer)
        for handle in [HandleStorage.base(poll), HandleStorage.base(coalesceTimer), HandleStorage.base(retryTimer)] {
            HandleStorage.attach(self, to: handle)
            handlesOpen += 1
        }
        watch()
        beforeFirstPass?(self)
        refresh()
    }

    /// Follows another value from now on (a reload): listeners that it still
    /// names are kept (the same sockets), the rest is reconciled as after an
    /// event. A malformed value throws and changes nothing. `port`: nil keeps
    /// the current one.
    public func update(value text: String, port: UInt16? = nil) throws(BindError) {
        let parsed = try BindValue(parsing: text)
        if bindToDevice {
            _ = try BindPlan(parsed, port: port ?? requestedPort, interfaces: InterfaceTable(interfaces: [], addresses: []),
                             bindToDevice: true, waiting: true)
        }
        value = parsed
        if let port { requestedPort = port }
        waiting = []   // report what the new value waits for
        failing = []
        retryDelay = Self.firstRetry
        refresh()
    }

    /// The event socket, for tests that shrink its buffer to force ENOBUFS.
    package var netlinkDescriptor: Int32 { netlinkSocket }

    /// The port the listeners share: the configured one, or the kernel's choice.
    public var port: UInt16 { group.port != 0 ? group.port : requestedPort }

    /// Reads the table, resolves, reconciles and reports, now. Events call it
    /// after coalescing; a host may call it too (after a reload, say).
    public func refresh() {
        guard !isClosed else { return }
        uv_timer_stop(retryTimer)
        let table: InterfaceTable
        do throws(UVError) {
            table = try RouteNetlink.readTable()
        } catch {
            report(failures: [BindError(kind: .system, value: value.text, step: .interfaces, code: error,
                                        detail: "the interface table could not be read over netlink", remedy: "")])
            scheduleRetry()
            return
        }
        let plan: BindPlan
        do throws(BindError) {
            plan = try BindPlan(value, port: requestedPort, interfaces: table,
                                bindToDevice: bindToDevice, waiting: true)
        } catch {
            // Only syntax can throw here, and syntax was checked at start.
            report(failures: [error])
            return
        }
        updateWaiting(plan.waiting, table: table)

        // Open what can be opened: a target that fails is left out and retried.
        var targets = plan.targets
        var failures: [BindError] = []
        var changes = ListenerChanges()
        for _ in 0...plan.targets.count {
            do throws(BindError) {
                changes = try group.reconcile(to: BindPlan(value: plan.value, port: plan.port, targets: targets,
                                                           notes: plan.notes))
                break
            } catch {
                guard let failed = error.address,
                      let index = targets.firstIndex(where: { $0.address.ip == failed.ip && $0.address.scopeID == failed.scopeID })
                else {
                    failures.append(error)
                    break
                }
                failures.append(error)
                targets.remove(at: index)
            }
        }
        for listener in changes.opened { onChange(.listening(listener.address)) }
        for listener in changes.closed {
            onChange(.stopped(listener.address, reason: reason(forClosing: listener, table: table)))
        }
        report(failures: failures)
        let tentativeWanted = plan.waiting.contains { error in
            error.kind == .addressNotAvailable && table.tentative.contains { $0.ip == error.address?.ip }
        }
        if failures.isEmpty && !tentativeWanted && !eventsLost {
            retryDelay = Self.firstRetry
        } else {
            scheduleRetry()
        }
    }

    private func reason(forClosing listener: Listener, table: InterfaceTable) -> String {
        let address = listener.target.address
        let held = table.addresses.contains { $0.ip == address.ip && (!address.ip.isLinkLocal || $0.index == address.scopeID) }
        if held { return "no longer named by the value" }
        if address.scopeID != 0, table.name(ofIndex: address.scopeID) == nil { return "interface removed" }
        return "address removed"
    }

    /// Reports elements that start waiting (once, until they stop).
    private func updateWaiting(_ now: [BindError], table: InterfaceTable) {
        let before = Set(waiting.compactMap(\.element))
        for error in now where !before.contains(error.element ?? "") {
            onChange(.waiting(element: error.element ?? value.text, reason: waitingReason(error, table: table)))
        }
        waiting = now
    }

    private func waitingReason(_ error: BindError, table: InterfaceTable) -> String {
        switch error.kind {
        case .unknownInterface: return "no interface has that name yet"
        case .unknownZone: return "its zone names no interface yet"
        case .interfaceWithoutAddresses: return "the interface has no usable address yet"
        case .addressNotAvailable:
            if let ip = error.address?.ip, table.tentative.contains(where: { $0.ip == ip }) {
                return "duplicate address detection is under way"
            }
            return "no interface holds that address yet"
        case .linkLocalWithoutZone: return "several interfaces hold it; add a zone"
        case .familyNotSupported: return "the host has no address of that family yet"
        default: return error.detail
        }
    }

    /// Reports failures once each, until the set of failing addresses changes.
    private func report(failures: [BindError]) {
        let keys = failures.map { "\($0.address?.description ?? "")|\($0.code?.name ?? $0.kind.rawValue)" }
        defer { failing = keys }
        guard keys != failing else { return }
        for error in failures where !failing.contains("\(error.address?.description ?? "")|\(error.code?.name ?? error.kind.rawValue)") {
            onChange(.failed(error))
        }
    }

    private func scheduleRetry() {
        guard !isClosed else { return }
        uv_timer_start(retryTimer, { handle in
            HandleStorage.owner(of: handle, as: ListenerFollower.self).refresh()
        }, retryDelay, 0)
        retryDelay = min(retryDelay * 2, Self.lastRetry)
    }

    private func watch() {
        uv_poll_start(poll, Int32(UV_READABLE.rawValue)) { handle, status, _ in
            HandleStorage.owner(of: handle, as: ListenerFollower.self).netlinkReadable(status: status)
        }
    }

    private func netlinkReadable(status: Int32) {
        guard !isClosed else { return }
        // On POLLERR (ENOBUFS is a socket error) libuv stops the handle and says
        // UV_EBADF: reading the socket collects the error, and watching resumes.
        let drained = RouteNetlink.drain(netlinkSocket)
        let socketFailed = if case .failed = drained { true } else { false }
        if status < 0, !socketFailed { watch() }
        switch drained {
        case .messages(0):
            return
        case .messages:
            break
        case .overflow:
            onChange(.resynchronised)
        case .failed(let error):
            // A socket in error stays readable: watching it would spin. Stop, say
            // so, and fall back to the back-off timer alone.
            uv_poll_stop(poll)
            eventsLost = true
            report(failures: [BindError(kind: .system, value: value.text, step: .interfaces, code: error,
                                        detail: "reading the kernel's interface changes failed; re-reading the interfaces on a timer instead",
                                        remedy: "")])
            scheduleRetry()
            return
        }
        // Coalesce a burst: the first event starts the timer, later ones ride on it.
        if uv_is_active(HandleStorage.base(coalesceTimer)) == 0 {
            uv_timer_start(coalesceTimer, { handle in
                HandleStorage.owner(of: handle, as: ListenerFollower.self).refresh()
            }, Self.coalesce, 0)
        }
    }

    /// Stops following and closes every listener (the sockets close at once);
    /// `closed` runs when libuv has let go of every handle.
    public func close(closed: (() -> Void)? = nil) {
        guard !isClosed else { return }
        isClosed = true
        onClosed = closed
        var remaining = group.listeners.count
        handlesOpen += remaining > 0 ? 1 : 0
        for listener in group.listeners {
            listener.close { [self] in
                remaining -= 1
                if remaining == 0 { handleDidClose() }
            }
        }
        group.close()
        uv_poll_stop(poll)
        HandleStorage.close(poll)
        HandleStorage.close(coalesceTimer)
        HandleStorage.close(retryTimer)
        Glibc.close(netlinkSocket)
    }

    package func handleDidClose() {
        handlesOpen -= 1
        guard handlesOpen == 0 else { return }
        let closed = onClosed
        onClosed = nil
        closed?()
    }
}
