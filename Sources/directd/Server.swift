import CUV
import UVBind

/// directd's running state on one libuv loop: the listeners, the open
/// connections and the signal watchers. Loop thread only.
final class Server {
    let loop: UnsafeMutablePointer<uv_loop_t>
    private var group: ListenerGroup?
    private var connections: [ObjectIdentifier: EchoConnection] = [:]
    private var signals: [SignalWatcher] = []
    private(set) var stopping = false

    init(loop: UnsafeMutablePointer<uv_loop_t>) {
        self.loop = loop
    }

    /// Opens every listener of the plan (all or nothing) and logs where it listens.
    func listen(_ plan: BindPlan, backlog: Int32) throws(BindError) {
        let group = try ListenerGroup.open(plan, loop: loop, backlog: backlog) { [unowned self] listener, error in
            self.accept(on: listener, error: error)
        }
        self.group = group
        group.warnings.forEach { Log.warning($0) }
        for listener in group.listeners {
            Log.info("listening on \(listener.address)")
        }
    }

    /// Stops on SIGINT or SIGTERM: listeners and connections close, the loop ends.
    func watchSignals() throws(UVError) {
        for signal in [SIGINT, SIGTERM] {
            signals.append(try SignalWatcher(loop: loop, signal: signal) { [unowned self] signal in
                Log.info("signal \(signal): stopping")
                self.stop()
            })
        }
    }

    private func accept(on listener: Listener, error: UVError?) {
        if let error {
            Log.warning("accept on \(listener.address) failed: \(error)")
            return
        }
        guard let connection = EchoConnection(loop: loop, onClose: { [unowned self] in
            self.connections[ObjectIdentifier($0)] = nil
        }) else { return }
        connections[ObjectIdentifier(connection)] = connection
        if let error = listener.accept(into: connection.stream) {
            Log.warning("accept on \(listener.address) failed: \(error)")
            connection.close()
            return
        }
        connection.start()
    }

    func stop() {
        guard !stopping else { return }
        stopping = true
        group?.close()
        connections.values.forEach { $0.close() }
        signals.forEach { $0.close() }
        signals.removeAll()
    }

    /// Runs the loop until every handle is closed.
    func run() {
        uv_run(loop, UV_RUN_DEFAULT)
    }
}
