import CUV

/// The listeners of one bind plan, opened all or nothing.
///
/// Either every target is listening, or none is and the error says which failed:
/// an explicit value never ends up served on fewer, or wider, addresses than
/// configured. The one exception is the empty value, whose IPv4 and IPv6
/// wildcards are each optional: a family the host cannot open is skipped with a
/// warning, as long as the other one opens.
public final class ListenerGroup {
    public private(set) var listeners: [Listener]
    /// Families skipped and notes from resolving, for the log.
    public let warnings: [String]
    /// The port every listener shares (the kernel's choice when the plan asked for 0).
    public let port: UInt16

    private init(listeners: [Listener], warnings: [String], port: UInt16) {
        self.listeners = listeners
        self.warnings = warnings
        self.port = port
    }

    /// How many times a kernel-chosen port is tried again when it is taken on
    /// another of the plan's addresses.
    static let portAttempts = 8

    public static func open(_ plan: BindPlan, loop: UnsafeMutablePointer<uv_loop_t>, backlog: Int32 = 511,
                            interfaces: InterfaceTable? = nil,
                            onConnection: @escaping Listener.ConnectionHandler) throws(BindError) -> ListenerGroup {
        var attempt = 1
        while true {
            do throws(BindError) {
                return try openOnce(plan, loop: loop, backlog: backlog, interfaces: interfaces, onConnection: onConnection)
            } catch {
                // Port 0 on several addresses: the first listener's port is used for all;
                // if another address has it taken, start over with a new one.
                guard plan.port == 0, error.kind == .addressInUse, attempt < portAttempts else { throw error }
                attempt += 1
            }
        }
    }

    private static func openOnce(_ plan: BindPlan, loop: UnsafeMutablePointer<uv_loop_t>, backlog: Int32,
                                 interfaces: InterfaceTable?,
                                 onConnection: @escaping Listener.ConnectionHandler) throws(BindError) -> ListenerGroup {
        var opened: [Listener] = [], warnings = plan.notes
        var port = plan.port
        var lastSkipped: BindError?
        for var target in plan.targets {
            if port != 0 {
                var address = target.address
                address.port = port
                target = ListenTarget(address: address, optional: target.optional)
            }
            do throws(BindError) {
                let listener = try Listener.open(target, value: plan.value, loop: loop, backlog: backlog,
                                                 interfaces: interfaces, onConnection: onConnection)
                opened.append(listener)
                port = listener.address.port
            } catch {
                if target.optional, error.kind == .familyNotSupported || error.kind == .addressNotAvailable {
                    warnings.append("warning: not listening on \(target.address.family): \(error)")
                    lastSkipped = error
                    continue
                }
                opened.forEach { $0.close() }
                throw error
            }
        }
        if opened.isEmpty, let lastSkipped { throw lastSkipped }
        return ListenerGroup(listeners: opened, warnings: warnings, port: port)
    }

    /// Closes every listener (the sockets close at once).
    public func close() {
        listeners.forEach { $0.close() }
    }
}
