#if canImport(Glibc)
import Glibc
#endif
@_spi(Daemon) import UVBind

/// directd's listeners in systemd's file descriptor store, so that a restart
/// or a crash refuses nothing: while directd runs, each listener is also held
/// by the manager (`FDSTORE=1`, one message per listener named by
/// `StoredListenerName`); the next directd is handed them back in `LISTEN_FDS`
/// and takes over, by name, those its configuration still wants. Connections
/// that arrive in between wait in the kernel's backlog.
///
/// Fail closed: a stored descriptor is served only when it is a listening TCP
/// socket bound exactly where its name says (IPv6 only for IPv6), and only for
/// a listener the bind value resolves to. One that is not (wider than its
/// name, not a listener) is closed with a warning; one the configuration no
/// longer wants is closed. Both are taken out of the store (`FDSTOREREMOVE`).
///
/// Without `NOTIFY_SOCKET`, with sockets from a socket unit (which holds them
/// already), or with `FDSTORE=0` (systemd 254 on passes a non-zero
/// `FileDescriptorStoreMax=` as `FDSTORE`; 252 passes nothing), nothing is stored. A manager that refuses
/// (`FileDescriptorStoreMax=0` on systemd 252) logs it and drops the
/// descriptor: directd does not depend on the store. Loop thread only.
final class FileDescriptorStore {
    /// A descriptor handed back under one of directd's names, checked.
    private struct Returned {
        let fd: Int32
        let name: StoredListenerName
    }

    /// Handed back and checked, not taken over yet.
    private var returned: [Returned] = []
    /// What the manager holds, as far as directd knows: name to socket inode.
    private var held: [String: UInt64] = [:]
    /// Names to take out of the store before the first listener opens.
    private var removals: [String] = []
    private let environment: [String: String]
    /// False: sockets come from a socket unit, or storing is off.
    let isStoring: Bool
    private var isFrozen = false
    private weak var notifier: ServiceNotifier?

    static let environmentKeys = ["NOTIFY_SOCKET", "FDSTORE"]
    /// How long a start (or a reload that must free an address) waits for the
    /// manager to confirm it let go of removed listeners (`BARRIER=1`), in ms.
    static let barrierTimeout: Int32 = 1000

    /// The passed descriptors whose names are directd's (`stored`) and the
    /// rest (a socket unit's), in order.
    static func split(_ passed: [(fd: Int32, name: String?)])
        -> (stored: [(fd: Int32, name: StoredListenerName)], others: [(fd: Int32, name: String?)]) {
        var stored: [(fd: Int32, name: StoredListenerName)] = []
        var others: [(fd: Int32, name: String?)] = []
        for (fd, name) in passed {
            if let name, let parsed = StoredListenerName(parsing: name) {
                stored.append((fd, parsed))
            } else {
                others.append((fd, name))
            }
        }
        return (stored, others)
    }

    /// Checks every stored descriptor handed back. `fromSocketUnit`: other
    /// sockets came from a socket unit; they decide where directd listens, and
    /// the stored ones (left from runs without the unit) are all closed.
    init(stored: [(fd: Int32, name: StoredListenerName)], fromSocketUnit: Bool,
         environment: [String: String] = ServiceEnvironment.current(FileDescriptorStore.environmentKeys)) {
        self.environment = environment
        let notifying = !(environment["NOTIFY_SOCKET"] ?? "").isEmpty
        isStoring = notifying && !fromSocketUnit && environment["FDSTORE"] != "0"
        for (fd, name) in stored {
            if fromSocketUnit {
                discard(fd, name, "the socket unit's sockets are served instead")
                continue
            }
            switch Self.check(fd, name) {
            case .failure(let problem):
                Log.warning("stored \(name) \(problem): closed, never served")
                discard(fd, name, nil)
            case .success:
                if returned.contains(where: { $0.name == name }) {
                    Log.warning("stored \(name) was handed back twice: the second closed, never served")
                    Glibc.close(fd)   // the name stays: the first one is served
                    continue
                }
                returned.append(Returned(fd: fd, name: name))
                // A refused twin's removal takes this one out of the store too:
                // then it counts as not held, and is stored again by `sync`.
                held[name.description] = removals.contains(name.description) ? nil : (Listener.inode(of: fd) ?? 0)
            }
        }
    }

    /// Closes the handed-back listeners that no target of `targets` names
    /// (the configuration changed since they were stored), and takes every
    /// closed one out of the store, waiting (bounded) until the manager has
    /// let go of them: its copy would keep the address taken otherwise.
    func keep(only targets: [ListenTarget]) {
        let (wanted, stale) = partition(returned) { entry in targets.contains { entry.name.names($0) } }
        returned = wanted
        for entry in stale {
            discard(entry.fd, entry.name, "the configuration no longer names it")
        }
        guard !removals.isEmpty else { return }
        defer { removals.removeAll() }
        guard let name = environment["NOTIFY_SOCKET"], !name.isEmpty, let socket = try? NotifySocket(name: name) else { return }
        for removal in removals {
            _ = socket.send("FDSTOREREMOVE=1\nFDNAME=\(removal)")
        }
        if !socket.barrier(timeout: Self.barrierTimeout) {
            Log.warning("the service manager did not confirm it let go of the closed stored listeners within \(Self.barrierTimeout) ms; one of their addresses may still be taken")
        }
    }

    /// For `ListenerGroup.takeOver`: the handed-back socket for `target`, once.
    func takeOver(_ target: ListenTarget) -> Int32? {
        guard let index = returned.firstIndex(where: { $0.name.names(target) }) else { return nil }
        let entry = returned.remove(at: index)
        Log.info("taking over stored \(entry.name) (the same socket: its waiting connections are served)")
        return entry.fd
    }

    /// After the listeners opened: what was handed back and not taken over is
    /// closed and taken out of the store, and from now on the store follows
    /// the listeners (`sync`).
    func attach(_ notifier: ServiceNotifier, listeners: [Listener]) {
        self.notifier = notifier
        for entry in returned {
            discard(entry.fd, entry.name, "no listener of the configuration took it over")
        }
        returned.removeAll()
        for removal in removals { notifier.removeStored(name: removal) }
        removals.removeAll()
        sync(listeners)
    }

    /// Makes the store hold exactly `listeners`: a new one stored, one closed
    /// taken out, one replaced by another socket on its address swapped.
    func sync(_ listeners: [Listener]) {
        guard isStoring, !isFrozen, let notifier else { return }
        var current: [String: (fd: Int32, inode: UInt64)] = [:]
        for listener in listeners {
            guard let fd = listener.fileDescriptor else { continue }
            let name = StoredListenerName(address: listener.address, device: listener.target.device).description
            current[name] = (fd, (Listener.inode(of: fd) ?? 0))
        }
        for (name, _) in held where current[name] == nil {
            notifier.removeStored(name: name)
            held[name] = nil
        }
        for (name, socket) in current.sorted(by: { $0.key < $1.key }) where held[name] != socket.inode {
            if held[name] != nil { notifier.removeStored(name: name) }
            notifier.store(socket.fd, name: name)
            held[name] = socket.inode
        }
    }

    /// Before a reload that would open `targets`: listeners that stand in the
    /// way of one of them (the wildcard and an address of its family, on one
    /// port) are taken out of the store first, and the manager's answer is
    /// awaited (bounded): its copy would keep the address taken. Rare (the
    /// operator widens or narrows on the same port), so a short wait is spent.
    func release(inTheWayOf targets: [ListenTarget], current listeners: [Listener]) {
        guard isStoring, !isFrozen, let notifier else { return }
        var released = false
        for listener in listeners {
            let address = listener.address
            let stays = targets.contains { StoredListenerName(address: address, device: listener.target.device).names($0) }
            let blocks = targets.contains { target in
                target.address.family == address.family && target.address.port == address.port
                    && (target.address.ip.isAny || address.ip.isAny) && target.address.ip != address.ip
            }
            guard !stays, blocks else { continue }
            let name = StoredListenerName(address: address, device: listener.target.device).description
            guard held[name] != nil else { continue }
            notifier.removeStored(name: name)
            held[name] = nil
            released = true
        }
        if released, !notifier.barrier(timeout: Self.barrierTimeout) {
            Log.warning("the service manager did not confirm it let go of a listener within \(Self.barrierTimeout) ms; the reload may find its address taken")
        }
    }

    /// A stop: the listeners close, and the store keeps them for the next start
    /// (a restart; `systemctl stop` empties the store itself).
    func freeze() { isFrozen = true }

    /// Closes a handed-back descriptor and marks its name for removal.
    private func discard(_ fd: Int32, _ name: StoredListenerName, _ why: String?) {
        if let why { Log.info("closed stored \(name): \(why)") }
        Glibc.close(fd)
        held[name.description] = nil
        if !removals.contains(name.description) { removals.append(name.description) }
    }

    /// The socket-activation checks, then: bound exactly where the name says.
    static func check(_ fd: Int32, _ name: StoredListenerName) -> Result<Void, Problem> {
        let socket: InheritedSocket
        do throws(SocketActivationError) {
            socket = try SocketActivation.inspect(fd: fd, name: name.description)
        } catch {
            return .failure(Problem(description: "is refused: \(error)"))
        }
        let bound = StoredListenerName(address: socket.address, device: Listener.boundDevice(of: fd))
        let widerFamily = socket.address.family == .ipv6 && !socket.ipv6Only
        guard bound == name, !widerFamily else {
            let wider = widerFamily || (socket.address.ip.isAny && !name.address.ip.isAny)
            return .failure(Problem(description: "listens on \(socket.address)\(widerFamily ? " for IPv4 too (IPV6_V6ONLY is off)" : "")\(bound.device.map { " on device \($0)" } ?? ""), \(wider ? "wider than" : "not") what its name says"))
        }
        return .success(())
    }

    struct Problem: Error, CustomStringConvertible {
        let description: String
    }
}

private func partition<T>(_ items: [T], _ keep: (T) -> Bool) -> ([T], [T]) {
    var kept: [T] = [], other: [T] = []
    for item in items { if keep(item) { kept.append(item) } else { other.append(item) } }
    return (kept, other)
}
