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
        }
    }

    /// For `ListenerGroup.takeOver`: the handed-over socket for `target`, once.
    func takeOver(_ target: ListenTarget) -> Int32? {
        guard let index = waiting.firstIndex(where: { $0.name.names(target) }) else { return nil }
        let entry = waiting.remove(at: index)
        Log.info("taking over \(entry.name) from the old process (the same socket: nothing is refused)")
        return entry.fd
    }

    /// The sockets as socket activation's, for a process whose listeners came
    /// from a socket unit; every one is taken.
    func socketUnitSockets() throws(SocketActivationError) -> [InheritedSocket] {
        defer { waiting = [] }
        var sockets: [InheritedSocket] = []
        for entry in waiting {
            sockets.append(try SocketActivation.inspect(fd: entry.fd, name: entry.name.description))
        }
        return sockets
    }

    /// Closes what no listener took (the new configuration dropped it).
    func closeRest() {
        for entry in waiting {
            Log.line("stopped listening on \(entry.name.address) (no longer in the bind value)")
            Glibc.close(entry.fd)
        }
        waiting = []
    }
}
