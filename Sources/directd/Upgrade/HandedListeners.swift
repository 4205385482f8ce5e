#if canImport(Glibc)
import Glibc
#endif
@_spi(Daemon) import UVBind

/// The listening sockets an upgrade handed over, checked, waiting to be taken
/// over by the listeners the new configuration wants.
///
/// Fail closed, with the checks a restart applies to the fdstore's sockets
/// (`FileDescriptorStore.check`: socket activation's inspection, then bound
/// exactly where the state says, IPv6 only for IPv6): one that fails refuses
/// the whole handover. A socket is served only for a target of the bind
/// value (`takeOver`, as `ListenerGroup.takeOver` asks); one the new
/// configuration no longer wants is closed (`closeRest`), a plain close: the
/// old process still holds it until it exits.
final class HandedListeners {
    private var waiting: [(fd: Int32, name: StoredListenerName)]
    /// Connections libuv had accepted in the old process for a listener and
    /// directd had not taken yet (descriptors were short), by listener.
    private var connections: [(fd: Int32, name: StoredListenerName)] = []
    /// Those of the listeners taken over, for the server to serve.
    private(set) var connectionsTaken: [(fd: Int32, name: StoredListenerName)] = []
    /// The old process served sockets from a socket unit: the new one adopts
    /// them as such (checked against the bind value as socket activation is).
    let fromSocketUnit: Bool

    init(record: HandoverRecord, descriptors: [Int32]) throws(HandoverRefusal) {
        waiting = []
        fromSocketUnit = record.fromSocketUnit
        for entry in record.listeners {
            let fd = descriptors[entry.descriptor]
            if case .failure(let problem) = FileDescriptorStore.check(fd, entry.name) {
                throw HandoverRefusal("listener \(entry.name) \(problem)")
            }
            guard !waiting.contains(where: { $0.name == entry.name }) else {
                throw HandoverRefusal("listener \(entry.name) was handed over twice")
            }
            waiting.append((fd, entry.name))
            if let index = entry.waiting {
                // One whose client left meanwhile is served as an accept of it would be: it ends at once.
                try HandedSession.checkAccepted(descriptors[index], "listener \(entry.name)'s waiting connection", by: fd)
                connections.append((descriptors[index], entry.name))
            }
        }
    }

    /// For `ListenerGroup.takeOver`: the handed-over socket for `target`, once.
    func takeOver(_ target: ListenTarget) -> Int32? {
        guard let index = waiting.firstIndex(where: { $0.name.names(target) }) else { return nil }
        let entry = waiting.remove(at: index)
        Log.info("taking over \(entry.name) from the old process (the same socket: nothing is refused)")
        takeConnections(of: entry.name)
        return entry.fd
    }

    /// The sockets as socket activation's, for a process whose listeners came
    /// from a socket unit; every one is taken.
    func socketUnitSockets() throws(SocketActivationError) -> [InheritedSocket] {
        defer { waiting = [] }
        var sockets: [InheritedSocket] = []
        for entry in waiting {
            sockets.append(try SocketActivation.inspect(fd: entry.fd, name: entry.name.description))
            takeConnections(of: entry.name)
        }
        return sockets
    }

    private func takeConnections(of name: StoredListenerName) {
        connectionsTaken += connections.filter { $0.name == name }
        connections.removeAll { $0.name == name }
    }

    /// Closes what no listener took (the new configuration dropped it), and
    /// the connections waiting for it, as its backlog's go with it.
    func closeRest() {
        for entry in waiting {
            Log.line("stopped listening on \(entry.name.address) (no longer in the bind value)")
            Glibc.close(entry.fd)
        }
        waiting = []
        connections.forEach { Glibc.close($0.fd) }
        connections = []
    }

    /// The server has the waiting connections now (or closed them).
    func connectionsServed() { connectionsTaken = [] }
}
