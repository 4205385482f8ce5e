import CUV
import UVBind

/// Where the server's listeners come from, behind one seam:
/// - **a plan**: the bind value resolved once, opened all or nothing;
/// - **inherited sockets**: descriptors from the service manager (socket
///   activation), already checked against the bind value;
/// - **following** (`bind-dynamic`): the value followed as interfaces and
///   addresses come and go, never wider than it names.
/// A reload moves any of them to new settings through UVBind's reconcile:
/// listeners still wanted keep their socket (nothing is refused), new ones open
/// all or nothing, the others close. Loop thread only.
final class ListenerSource {
    private let group: ListenerGroup
    private let follower: ListenerFollower?
    /// Where the listeners came from.
    enum Origin {
        case plan, serviceManager, following
    }
    let origin: Origin
    /// Told the plan a reload moves to, before anything changes (the fdstore
    /// lets go of listeners in the way).
    var willReconcile: ((BindPlan, [Listener]) -> Void)?
    /// The plan in force (origin `.plan`): what a recovery opens again.
    private var inForce: BindPlan?
    /// Listeners a failed reconcile lost, retried with back-off.
    private let recovery: ListenerRecovery
    /// The listeners changed outside a reload (a recovery): reserves and status follow.
    var onChange: (() -> Void)?

    private init(group: ListenerGroup, follower: ListenerFollower?, origin: Origin, plan: BindPlan? = nil) {
        self.group = group
        self.follower = follower
        self.origin = origin
        inForce = plan
        recovery = ListenerRecovery(loop: group.loop)
    }

    /// What is wrong with the listeners (some lost and being retried), for the
    /// status line and the summary; nil when nothing is.
    var problem: String? { recovery.note }

    var listeners: [Listener] { group.listeners }
    var notes: [BindNote] { group.notes }

    /// Opens every listener of `plan`, all or nothing.
    /// `takeOver`: a socket already listening for a target (the fdstore's).
    static func open(_ plan: BindPlan, loop: UnsafeMutablePointer<uv_loop_t>, backlog: Int32,
                     takeOver: ((ListenTarget) -> Int32?)? = nil,
                     onConnection: @escaping Listener.ConnectionHandler) throws(BindError) -> ListenerSource {
        ListenerSource(group: try ListenerGroup.open(plan, loop: loop, backlog: backlog, takeOver: takeOver,
                                                     onConnection: onConnection),
                       follower: nil, origin: .plan, plan: plan)
    }

    /// Takes over listening sockets handed over by the service manager.
    static func adopt(_ sockets: [InheritedSocket], loop: UnsafeMutablePointer<uv_loop_t>, backlog: Int32,
                      onConnection: @escaping Listener.ConnectionHandler) throws(BindError) -> ListenerSource {
        let group = try ListenerGroup.adopt(descriptors: sockets.map(\.fd), value: "LISTEN_FDS", loop: loop,
                                           backlog: backlog, onConnection: onConnection)
        return ListenerSource(group: group, follower: nil, origin: .serviceManager)
    }

    /// Follows `settings`' bind value as the network changes; `onChange` hears
    /// of every listener opened or closed and every element still waited for.
    static func follow(_ settings: Settings, loop: UnsafeMutablePointer<uv_loop_t>,
                       takeOver: ((ListenTarget) -> Int32?)? = nil,
                       onConnection: @escaping Listener.ConnectionHandler,
                       onChange: @escaping (ListenerFollower.Event) -> Void) throws(BindError) -> ListenerSource {
        let follower = try ListenerFollower(value: settings.bindInterface, port: settings.port, loop: loop,
                                            backlog: settings.backlog, bindToDevice: settings.bindToDevice,
                                            takeOver: takeOver, onConnection: onConnection, onChange: onChange)
        return ListenerSource(group: follower.group, follower: follower, origin: .following)
    }

    /// Moves the listeners to `settings` (a reload). On failure nothing changed
    /// and the error says why. Returns the lines to log.
    func reconcile(to settings: Settings) throws(BindError) -> [String] {
        if let follower {
            if let willReconcile, let table = try? InterfaceTable.current(resolving: settings.bindInterface),
               let plan = try? BindPlan(BindValue(parsing: settings.bindInterface), port: settings.port,
                                        interfaces: table, bindToDevice: settings.bindToDevice, waiting: true) {
                willReconcile(plan, follower.group.listeners)
            }
            // The follower logs its own changes as they happen.
            try follower.update(value: settings.bindInterface, port: settings.port)
            return []
        }
        let plan = try BindPlan(value: settings.bindInterface, port: settings.port,
                                bindToDevice: settings.bindToDevice)
        willReconcile?(plan, group.listeners)
        let before = group.listeners.count
        let changes: ListenerChanges
        do {
            changes = try group.reconcile(to: plan)
        } catch {
            // Narrower than the plan in force, never wider: what was lost is retried.
            if group.listeners.count < before { recoverLost() }
            throw error
        }
        inForce = plan
        recovery.end()
        changes.kept.forEach { Log.debug("still listening on \($0.address) (the same socket)") }
        return changes.opened.map { "listening on \($0.address)" }
            + changes.closed.map { "stopped listening on \($0.address) (no longer in the bind value)" }
            + changes.skipped.map(\.text)
    }

    /// The plan in force is missing listeners: opens them again with back-off.
    private func recoverLost() {
        guard let plan = inForce else { return }
        recovery.begin(missing: missing(from: plan)) { [unowned self] in
            guard !self.group.isClosed else { return [] }
            do throws(BindError) {
                let changes = try self.group.reconcile(to: plan)
                changes.opened.forEach { Log.line("listening on \($0.address) again") }
            } catch {
                Log.error("\(error)")
            }
            self.onChange?()
            return self.missing(from: plan)
        }
    }

    /// The plan's addresses that no listener has (with the group's port).
    private func missing(from plan: BindPlan) -> [String] {
        let open = Set(group.listeners.map { "\($0.address.ip)" })
        return plan.targets.filter { !open.contains("\($0.address.ip)") }
            .map { target in
                let address = target.address
                return "\(SocketAddress(ip: address.ip, port: address.port != 0 ? address.port : group.port, scopeID: address.scopeID, zone: address.zone))"
            }
    }

    /// Closes every listener now (the sockets close at once).
    func close() {
        recovery.end()
        if let follower { follower.close() } else { group.close() }
    }
}
