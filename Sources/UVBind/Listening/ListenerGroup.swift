import CUV
#if canImport(Glibc)
import Glibc
#endif

/// The listeners of one bind value, kept equal to what it resolves to.
///
/// `open` opens a plan all or nothing; `reconcile(to:)` then moves the group to
/// another plan (a reload, or the same value after the interfaces changed):
/// listeners on targets that stay are untouched (the same socket, so no
/// connection is refused), new targets are opened all or nothing, and targets
/// that left are closed. A group never listens on anything the plan does not
/// name. The one exception to all-or-nothing is the empty value, whose IPv4 and
/// IPv6 wildcards are each optional: a family the host cannot open is skipped
/// with a warning, as long as something listens.
///
/// Ports: the group has one port. A plan's explicit port is used as given; a
/// plan with port 0 uses the port the group already has, and only a group that
/// has none yet lets the kernel choose (on the first listener, the others then
/// share it). Once chosen, the port stays for the life of the group, even while
/// no listener is open, so that clients keep finding the service where it was.
///
/// Loop thread only.
public final class ListenerGroup {
    public private(set) var listeners: [Listener] = []
    /// Notes from resolving and opening, for the log, each with its severity.
    public private(set) var notes: [BindNote] = []
    /// The port every listener shares (the kernel's choice when the plan asked
    /// for 0); 0 until one is chosen.
    public private(set) var port: UInt16 = 0
    /// The bind value the group was last reconciled to, for messages.
    public private(set) var value: String = ""
    public let loop: UnsafeMutablePointer<uv_loop_t>
    public let backlog: Int32
    private let onConnection: Listener.ConnectionHandler
    public private(set) var isClosed = false
    /// Asked before a target's socket is opened: a descriptor that already
    /// listens exactly there (a restart's stored listener) is taken over instead,
    /// so that its backlog survives. The caller vouches for the match; the
    /// descriptor is the group's once returned (closed by it if refused).
    public var takeOver: ((ListenTarget) -> Int32?)?

    /// An empty group: nothing listens until `reconcile`.
    public init(loop: UnsafeMutablePointer<uv_loop_t>, backlog: Int32 = 511,
                onConnection: @escaping Listener.ConnectionHandler) {
        self.loop = loop
        self.backlog = backlog
        self.onConnection = onConnection
    }

    /// How many times a kernel-chosen port is tried again when it is taken on
    /// another of the plan's addresses.
    static let portAttempts = 8

    /// Opens every target of `plan`, all or nothing. `interfaces` is only for
    /// messages (an unavailable address lists the machine's).
    public static func open(_ plan: BindPlan, loop: UnsafeMutablePointer<uv_loop_t>, backlog: Int32 = 511,
                            interfaces: InterfaceTable? = nil,
                            takeOver: ((ListenTarget) -> Int32?)? = nil,
                            onConnection: @escaping Listener.ConnectionHandler) throws(BindError) -> ListenerGroup {
        let group = ListenerGroup(loop: loop, backlog: backlog, onConnection: onConnection)
        group.takeOver = takeOver
        try group.reconcile(to: plan, interfaces: interfaces)
        return group
    }

    /// A group made of sockets someone else opened and listens on (socket
    /// activation). Every descriptor is checked before any is taken over; if one
    /// is refused by the checks, none is taken and all stay the caller's. A
    /// failure after the checks (uv_tcp_open, uv_listen) closes those already
    /// taken over: they are libuv's by then. `value` names them
    /// in messages ("LISTEN_FDS", say). The group's port is the first socket's.
    public static func adopt(descriptors: [Int32], value: String, loop: UnsafeMutablePointer<uv_loop_t>,
                             backlog: Int32 = 511,
                             onConnection: @escaping Listener.ConnectionHandler) throws(BindError) -> ListenerGroup {
        var seen = Set<Int32>()
        for fd in descriptors {
            guard seen.insert(fd).inserted else {
                throw BindError.adopting(fd, failed: Listener.OpenError(.adoptCheck, .invalidArgument), value: value)
            }
            do throws(Listener.OpenError) {
                _ = try Listener.checkAdoptable(fd)
            } catch {
                throw BindError.adopting(fd, failed: error, value: value)
            }
        }
        let group = ListenerGroup(loop: loop, backlog: backlog, onConnection: onConnection)
        group.value = value
        for fd in descriptors {
            do throws(Listener.OpenError) {
                group.listeners.append(try Listener.adopt(descriptor: fd, loop: loop, backlog: backlog,
                                                          onConnection: onConnection))
            } catch {
                group.close()
                throw BindError.adopting(fd, failed: error, value: value)
            }
        }
        group.port = group.listeners.first?.address.port ?? 0
        return group
    }

    /// Moves the group to `plan`: keeps the listeners whose target is still
    /// wanted, opens the new ones all or nothing, closes the ones no longer
    /// wanted, and says which.
    ///
    /// If a new listener cannot open, the ones this call opened are closed and
    /// the group is as it was; the error names the address that failed. New
    /// listeners open before old ones close, except an old one that would stand
    /// in a new one's way (a wildcard giving way to an address of its family on
    /// the same port, or the reverse): it closes first, once the kernel's
    /// table shows no other listening socket in the way of the new ones (if
    /// one is, the change is refused with nothing touched). If the change fails
    /// anyway (a socket bound but not listening, or one that came in between),
    /// the old one listens again on the same socket: it only stopped listening
    /// (`Listener.suspend`), its address still bound. Its pending clients are
    /// lost then. A listener on a port the kernel chose at its bind cannot be
    /// suspended: it is closed and opened anew. If even that fails, it stays
    /// closed: narrower, never wider; the error says so, and reconciling to the
    /// old plan again later reopens it.
    @discardableResult
    public func reconcile(to plan: BindPlan, interfaces: InterfaceTable? = nil) throws(BindError) -> ListenerChanges {
        precondition(!isClosed, "reconcile on a closed ListenerGroup")
        let fixedPort = plan.port != 0 ? plan.port : port
        var attempt = 1
        while true {
            do throws(BindError) {
                return try reconcileOnce(plan, port: fixedPort, interfaces: interfaces)
            } catch {
                // Port 0 on several addresses: the first listener's port is used for
                // all; if another address has it taken, start over with a new one.
                guard fixedPort == 0, error.kind == .addressInUse, attempt < Self.portAttempts else { throw error }
                attempt += 1
            }
        }
    }

    private func reconcileOnce(_ plan: BindPlan, port fixedPort: UInt16,
                               interfaces: InterfaceTable?) throws(BindError) -> ListenerChanges {
        let wanted = plan.targets.map { fixedPort != 0 ? $0.with(port: fixedPort) : $0 }
        var byKey: [ListenKey: Listener] = [:]
        for listener in listeners { byKey[ListenKey(listener)] = listener }

        var changes = ListenerChanges()
        var toOpen: [ListenTarget] = []
        var wantedKeys = Set<ListenKey>()
        for target in wanted {
            let key = ListenKey(target)
            wantedKeys.insert(key)
            // A target with port 0 is never open yet: the group has no port.
            if target.address.port != 0, let listener = byKey[key] {
                changes.kept.append(listener)
            } else {
                toOpen.append(target)
            }
        }
        let leaving = listeners.filter { !wantedKeys.contains(ListenKey($0)) }
        // Old listeners in the way of new ones close first (see above), but only
        // once no other socket is seen to stand in the way of a new one: a change
        // that would fail then is refused before anything is touched.
        let inTheWay = leaving.filter { old in toOpen.contains { ListenKey(old).conflicts(with: ListenKey($0)) } }
        if !inTheWay.isEmpty {
            try foreseeConflicts(toOpen.map { fixedPort != 0 ? $0.with(port: fixedPort) : $0 }, plan: plan,
                                 interfaces: interfaces)
        }
        // Each stops listening but keeps its socket bound where it can: if the
        // change fails, that same socket listens again, its address held throughout.
        var suspended: [ObjectIdentifier: Int32] = [:]
        for old in inTheWay {
            if let fd = old.suspend() { suspended[ObjectIdentifier(old)] = fd } else { old.close() }
        }

        var chosenPort = fixedPort
        var lastSkipped: BindError?
        for var target in toOpen {
            if chosenPort != 0 { target = target.with(port: chosenPort) }
            do throws(Listener.OpenError) {
                let listener = try openOrTakeOver(target)
                changes.opened.append(listener)
                chosenPort = listener.address.port
            } catch {
                let error = BindError.opening(target, failed: error, value: plan.value, interfaces: interfaces)
                if target.optional, error.kind == .familyNotSupported || error.kind == .addressNotAvailable {
                    changes.skipped.append(.warning("not listening on \(target.address.family): \(error)"))
                    lastSkipped = error
                    continue
                }
                changes.opened.forEach { $0.close() }
                throw restoring(inTheWay, suspended: suspended, after: error)
            }
        }
        if changes.opened.isEmpty, changes.kept.isEmpty, let lastSkipped {
            throw restoring(inTheWay, suspended: suspended, after: lastSkipped)
        }

        // Committed: close what left (the sockets kept for a way back too), and keep the plan's order.
        suspended.values.forEach { _ = Glibc.close($0) }
        for listener in leaving where !listener.isClosed { listener.close() }
        changes.closed = leaving
        let current = changes.kept + changes.opened
        var ordered: [Listener] = []
        for target in wanted {
            let key = ListenKey(target.address.port == 0 ? target.with(port: chosenPort) : target)
            if let listener = current.first(where: { ListenKey($0) == key }), !ordered.contains(where: { $0 === listener }) {
                ordered.append(listener)
            }
        }
        listeners = ordered
        if chosenPort != 0 { port = chosenPort }
        value = plan.value
        notes = plan.notes + changes.skipped
        return changes
    }

    /// A new socket for `target`, or the descriptor `takeOver` hands over for it.
    private func openOrTakeOver(_ target: ListenTarget) throws(Listener.OpenError) -> Listener {
        guard let fd = takeOver?(target) else {
            return try Listener.open(target, loop: loop, backlog: backlog, onConnection: onConnection)
        }
        do throws(Listener.OpenError) {
            return try Listener.adopt(descriptor: fd, loop: loop, backlog: backlog, onConnection: onConnection)
        } catch {
            // Refused before libuv took it (a check, or uv_tcp_open): still ours to close.
            if [.adoptCheck, .adoptListening, .adoptIPv6Only, .adopt, .socket].contains(error.step) { Glibc.close(fd) }
            throw error
        }
    }

    /// Throws the error the bind would give if a listening socket other than
    /// this group's own stands in the way of one of `targets` (the kernel's
    /// table, `ListeningTable`). Sockets bound and not listening are not seen
    /// there: their conflict still shows only at the bind.
    private func foreseeConflicts(_ targets: [ListenTarget], plan: BindPlan,
                                  interfaces: InterfaceTable?) throws(BindError) {
        let own = Set(listeners.compactMap { $0.fileDescriptor.flatMap(Listener.inode(of:)) })
        let table = ListeningTable.current()
        for target in targets {
            guard let holder = table.holder(of: target.address, excluding: own) else { continue }
            let error = BindError.opening(target, failed: Listener.OpenError(.listen, .addressInUse),
                                          value: plan.value, interfaces: interfaces)
            let held = SocketAddress(ip: holder.ip, port: holder.port)
            throw BindError(kind: error.kind, value: error.value, element: error.element, address: error.address,
                            step: error.step, code: error.code,
                            detail: error.detail + " (another socket listens on \(held); seen before anything was closed, so every listener stays as it was)",
                            remedy: error.remedy)
        }
    }

    /// Opens again the old listeners closed to make room, after the change
    /// failed; the error says so when one cannot be.
    private func restoring(_ closed: [Listener], suspended: [ObjectIdentifier: Int32],
                           after error: BindError) -> BindError {
        guard !closed.isEmpty else { return error }
        var lost: [String] = []
        for old in closed {
            guard let index = listeners.firstIndex(where: { $0 === old }) else {
                if let fd = suspended[ObjectIdentifier(old)] { Glibc.close(fd) }
                continue
            }
            if let fd = suspended[ObjectIdentifier(old)] {
                // The same socket, listening again; if that fails, a new one.
                if let again = try? Listener.resume(fd, target: old.target, loop: loop, backlog: backlog,
                                                    onConnection: onConnection) {
                    listeners[index] = again
                    continue
                }
            }
            do throws(Listener.OpenError) {
                listeners[index] = try Listener.open(old.target.with(port: old.address.port), loop: loop,
                                                     backlog: backlog, onConnection: onConnection)
            } catch {
                listeners.remove(at: index)
                lost.append("\(old.address) (\(error))")
            }
        }
        guard !lost.isEmpty else { return error }
        return BindError(kind: error.kind, value: error.value, element: error.element, address: error.address,
                         step: error.step, code: error.code,
                         detail: error.detail + "; and no longer listening on \(lost.joined(separator: ", ")), which could not be opened again",
                         remedy: error.remedy)
    }

    /// Closes every listener (the sockets close at once). The group cannot be
    /// reconciled afterwards.
    public func close() {
        isClosed = true
        listeners.forEach { $0.close() }
    }
}

/// What makes two listen targets the same socket: address, port, scope and
/// device. Whether the target was optional, or the zone's spelling, does not
/// matter; an interface re-created with a new index is a new scope.
struct ListenKey: Hashable {
    let ip: IPAddress
    let port: UInt16
    let scopeID: UInt32
    let device: String?

    init(_ target: ListenTarget) {
        ip = target.address.ip
        port = target.address.port
        scopeID = target.address.scopeID
        device = target.device
    }

    /// A listener's key, with the port it really has, and the device it is
    /// bound to now: the kernel keeps the interface's index, so if the named
    /// interface was renamed or deleted and another one took the name, this
    /// socket no longer matches a target for that name (it is replaced, rather
    /// than left serving an interface the value does not name).
    init(_ listener: Listener) {
        ip = listener.target.address.ip
        port = listener.address.port
        scopeID = listener.target.address.scopeID
        device = listener.target.device == nil ? nil : listener.currentDevice
    }

    /// Whether a socket on `self` would make binding `other` fail with EADDRINUSE.
    func conflicts(with other: ListenKey) -> Bool {
        guard self != other, ip.family == other.ip.family, port == other.port, port != 0 else { return false }
        return ip == other.ip || ip.isAny || other.ip.isAny
    }
}
