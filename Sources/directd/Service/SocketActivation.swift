#if canImport(Glibc)
import Glibc
#endif
import CUV
import UVBind

/// A listening TCP socket handed to directd by its service manager.
struct InheritedSocket: Equatable, Sendable, CustomStringConvertible {
    /// The descriptor, from 3 on; close-on-exec is set on it.
    let fd: Int32
    /// Its name from `LISTEN_FDNAMES` (`FileDescriptorName=` in the socket
    /// unit; systemd's default is the socket unit's name), nil when unnamed.
    let name: String?
    /// Where it is bound (`getsockname`).
    let address: SocketAddress
    /// `IPV6_V6ONLY`, for IPv6 sockets; false for IPv4.
    let ipv6Only: Bool

    /// A socket on the IPv6 wildcard without `IPV6_V6ONLY` also takes IPv4
    /// connections: wider than `::` means in a bind value.
    var isDualStack: Bool { address.family == .ipv6 && !ipv6Only && address.ip == .v6(.any) }

    /// `fd 3 (directd.socket)`, or `fd 3` when unnamed: how messages name it.
    var label: String {
        guard let name, !name.isEmpty else { return "fd \(fd)" }
        return "fd \(fd) (\(LogEscaping.escaped(name)))"
    }

    /// `fd 3 (directd.socket) 127.0.0.1:21118`, with `(IPv4 and IPv6)` for a dual-stack socket.
    var description: String { "\(label) \(address)\(isDualStack ? " (IPv4 and IPv6)" : "")" }
}

/// Why inherited sockets cannot be served. Always a configuration error: the
/// service manager was set up to hand directd something it must not serve
/// (exit 78, like a bad bind value).
struct SocketActivationError: Error, CustomStringConvertible, Equatable {
    let description: String
}

/// systemd's socket activation protocol (`sd_listen_fds`), implemented directly:
/// when `LISTEN_PID` is this process, `LISTEN_FDS` descriptors from 3 on are
/// listening sockets, named by the colon-separated `LISTEN_FDNAMES`.
///
/// The three steps, each usable alone:
/// 1. `passedDescriptors` reads the environment: which descriptors, which names.
/// 2. `inspect` checks one descriptor is a listening TCP socket and reads its address.
/// 3. `adopt` compares the sockets with what the bind value resolves to: fail
///    closed, they must be exactly those listeners.
/// `inherited()` does steps 1 and 2 for the process.
///
/// The environment is left as it is: directd starts no other program that
/// could mistake the variables for its own.
enum SocketActivation {
    static let environmentKeys = ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"]
    /// The first passed descriptor (`SD_LISTEN_FDS_START`).
    static let firstDescriptor: Int32 = 3
    /// More than this many sockets is a broken environment, not a configuration.
    static let descriptorLimit = 4096

    /// The descriptors passed to this process with their names, or nil when
    /// directd was not socket-activated (`LISTEN_PID` unset or another
    /// process's, `LISTEN_FDS` unset or 0): then it binds its own listeners.
    static func passedDescriptors(_ environment: [String: String],
                                  processID: pid_t) throws(SocketActivationError) -> [(fd: Int32, name: String?)]? {
        guard let pidText = environment["LISTEN_PID"] else { return nil }
        guard let pid = pid_t(pidText), pid > 0 else {
            throw SocketActivationError(description: "LISTEN_PID \"\(LogEscaping.escaped(pidText))\" is not a process ID")
        }
        // Meant for the process that started us (a shell, a wrapper): not ours.
        guard pid == processID, let countText = environment["LISTEN_FDS"] else { return nil }
        guard let count = Int(countText), count >= 0, count <= descriptorLimit else {
            throw SocketActivationError(description: "LISTEN_FDS \"\(LogEscaping.escaped(countText))\" is not a number of descriptors from 0 to \(descriptorLimit)")
        }
        guard count > 0 else { return nil }
        var names: [String?] = Array(repeating: nil, count: count)
        if let namesText = environment["LISTEN_FDNAMES"] {
            let given = namesText.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
            guard given.count == count else {
                throw SocketActivationError(description: "LISTEN_FDNAMES \"\(LogEscaping.escaped(namesText))\" names \(given.count) descriptor\(given.count == 1 ? "" : "s"), but LISTEN_FDS is \(count)")
            }
            names = given.map { $0.isEmpty ? nil : $0 }
        }
        return (0..<count).map { (fd: firstDescriptor + Int32($0), name: names[$0]) }
    }

    /// The sockets passed to this process, each set close-on-exec and checked;
    /// nil when directd was not socket-activated.
    static func inherited(
        environment: [String: String] = ServiceEnvironment.current(SocketActivation.environmentKeys),
        processID: pid_t = getpid()
    ) throws(SocketActivationError) -> [InheritedSocket]? {
        guard let passed = try passedDescriptors(environment, processID: processID) else { return nil }
        var sockets: [InheritedSocket] = []
        for (fd, name) in passed {
            sockets.append(try inspect(fd: fd, name: name))
        }
        return sockets
    }

    /// Checks that `fd` is a TCP stream socket over IPv4 or IPv6, already
    /// listening, and reads its address; sets close-on-exec on it.
    static func inspect(fd: Int32, name: String?) throws(SocketActivationError) -> InheritedSocket {
        let label = name.map { "fd \(fd) (\(LogEscaping.escaped($0)))" } ?? "fd \(fd)"
        func refuse(_ problem: String) -> SocketActivationError {
            SocketActivationError(description: "inherited \(label) \(problem); directd serves only listening TCP sockets")
        }
        let flags = fcntl(fd, F_GETFD)
        guard flags >= 0 else { throw refuse("is not an open descriptor (\(String(cString: strerror(errno))))") }
        // Whatever directd might start later must not inherit its listeners.
        guard fcntl(fd, F_SETFD, flags | FD_CLOEXEC) == 0 else {
            throw refuse("cannot be set close-on-exec (\(String(cString: strerror(errno))))")
        }

        let type: Int32
        switch integerOption(fd, SOL_SOCKET, SO_TYPE) {
        case .failure(let error) where error.code == ENOTSOCK: throw refuse("is not a socket")
        case .failure(let error): throw refuse("cannot be inspected: getsockopt(SO_TYPE): \(error)")
        case .success(let value): type = value
        }

        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let named = withUnsafeMutablePointer(to: &storage) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard named == 0 else { throw refuse("cannot be inspected: getsockname: \(String(cString: strerror(errno)))") }
        let family = Int32(storage.ss_family)
        guard family == AF_INET || family == AF_INET6 else {
            throw refuse("is \(familyName(family)), not IPv4 or IPv6")
        }
        guard type == Int32(SOCK_STREAM.rawValue) else { throw refuse("is \(typeName(type)), not a stream (TCP) socket") }
        switch integerOption(fd, SOL_SOCKET, SO_PROTOCOL) {
        case .success(let value) where value == Int32(IPPROTO_TCP): break
        case .success(let value): throw refuse("is a stream socket of protocol \(value), not TCP")
        case .failure(let error): throw refuse("cannot be inspected: getsockopt(SO_PROTOCOL): \(error)")
        }
        switch integerOption(fd, SOL_SOCKET, SO_ACCEPTCONN) {
        case .success(let value) where value != 0: break
        case .success: throw refuse("is a TCP socket that is not listening")
        case .failure(let error): throw refuse("cannot be inspected: getsockopt(SO_ACCEPTCONN): \(error)")
        }
        var ipv6Only = false
        if family == AF_INET6 {
            switch integerOption(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY) {
            case .success(let value): ipv6Only = value != 0
            case .failure(let error): throw refuse("cannot be inspected: getsockopt(IPV6_V6ONLY): \(error)")
            }
        }
        let address = withUnsafePointer(to: &storage) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { SocketAddress($0) }
        }
        guard let address else { throw refuse("has an address directd cannot read") }
        if case .v6(let ip) = address.ip, let mapped = ip.ipv4Mapped {
            // IPv4 through an IPv6 socket: no bind value names that, and directd
            // opens its own IPv6 listeners IPv6 only. Refused in `check` as at serve.
            throw SocketActivationError(description: "inherited \(label) listens on \(address), an IPv4-mapped IPv6 address, which is not an address directd serves; listen on \(SocketAddress(ip: .v4(mapped), port: address.port)) instead (ListenStream= in the socket unit)")
        }
        return InheritedSocket(fd: fd, name: name, address: address, ipv6Only: ipv6Only)
    }

    /// The sockets to serve: when a bind value is configured (`plan`), exactly
    /// the listeners it resolves to, and nothing else; without one, every
    /// socket given. Refuses, naming the socket and the value, a socket bound
    /// wider than the value or elsewhere, two sockets on one address, and a
    /// listener of the value that no socket provides.
    static func adopt(_ sockets: [InheritedSocket], plan: BindPlan?) throws(SocketActivationError) -> [InheritedSocket] {
        guard let plan else {
            // No bind value: the sockets as given, but never one wider than it
            // looks (an IPv6 wildcard that also takes IPv4).
            if let wide = sockets.first(where: \.isDualStack) {
                throw SocketActivationError(description: "\(wide.label) listens on \(wide.address) for IPv4 too (IPV6_V6ONLY is off); set BindIPv6Only=ipv6-only in the socket unit")
            }
            return sockets
        }
        return try adopt(sockets, targets: plan.targets, value: plan.value)
    }

    /// `adopt(_:plan:)` with the plan's parts. A target on port 0 (the kernel
    /// chooses) takes a socket on any port of its address.
    static func adopt(_ sockets: [InheritedSocket], targets: [ListenTarget],
                      value: String) throws(SocketActivationError) -> [InheritedSocket] {
        let listeners = targets.map { target in
            "\(target.address)\(target.ipv6Only && target.address.ip == .v6(.any) ? " IPv6 only" : "")"
        }
        let theValue = "the bind value \"\(LogEscaping.escaped(value))\" (\(listeners.isEmpty ? "no listener" : listeners.joined(separator: ", ")))"
        var problems: [String] = []
        var taken: [Int: InheritedSocket] = [:]

        for socket in sockets {
            guard let index = targets.firstIndex(where: { matches(socket, $0) }) else {
                problems.append("\(socket.label) listens on \(socket.address)\(socket.isDualStack ? " (IPv4 and IPv6)" : ""), "
                                + mismatch(socket, targets, theValue))
                continue
            }
            if let earlier = taken[index] {
                problems.append("\(socket.label) listens on \(socket.address) as \(earlier.label) does: one socket per listener")
                continue
            }
            taken[index] = socket
        }
        for (index, target) in targets.enumerated() where taken[index] == nil {
            // The empty value's two wildcards are optional, as when directd opens
            // them itself: a host without one family serves the other.
            if target.optional && !taken.isEmpty { continue }
            problems.append("no inherited socket listens on \(target.address), which \(theValue) includes")
        }
        guard problems.isEmpty else {
            throw SocketActivationError(description: "refusing the inherited sockets: " + problems.joined(separator: "; "))
        }
        return sockets
    }

    /// What `directd check` prints: one line per socket it would serve.
    static func describe(_ sockets: [InheritedSocket]) -> [String] {
        sockets.map { "would adopt \($0)" }
    }

    /// The same address (with its IPv6 scope), the same port unless the value
    /// lets the kernel choose, and on the IPv6 wildcard no IPv4 as well.
    private static func matches(_ socket: InheritedSocket, _ target: ListenTarget) -> Bool {
        socket.address.ip == target.address.ip
            && socket.address.scopeID == target.address.scopeID
            && (target.address.port == 0 || socket.address.port == target.address.port)
            && !(target.ipv6Only && socket.isDualStack)
    }

    /// Why a socket matches no listener, worded for the message.
    private static func mismatch(_ socket: InheritedSocket, _ targets: [ListenTarget], _ theValue: String) -> String {
        let isWildcard = socket.address.ip == .v4(.any) || socket.address.ip == .v6(.any)
        if socket.isDualStack {
            return "wider than \(theValue): set BindIPv6Only=ipv6-only in the socket unit"
        }
        if isWildcard && targets.contains(where: { $0.address.family == socket.address.family }) {
            return "wider than \(theValue)"
        }
        if targets.contains(where: { $0.address.ip == socket.address.ip && $0.address.scopeID == socket.address.scopeID }) {
            return "on another port than \(theValue)"
        }
        return "outside \(theValue)"
    }

    private static func integerOption(_ fd: Int32, _ level: Int32, _ name: Int32) -> Result<Int32, Errno> {
        var value: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        guard getsockopt(fd, level, name, &value, &length) == 0 else { return .failure(Errno(errno)) }
        return .success(value)
    }

    private static func familyName(_ family: Int32) -> String {
        switch family {
        case AF_UNIX: "a unix socket (AF_UNIX)"
        case AF_NETLINK: "a netlink socket"
        default: "a socket of address family \(family)"
        }
    }

    private static func typeName(_ type: Int32) -> String {
        switch type {
        case Int32(SOCK_DGRAM.rawValue): "a datagram (UDP) socket"
        case Int32(SOCK_SEQPACKET.rawValue): "a sequenced-packet socket"
        case Int32(SOCK_RAW.rawValue): "a raw socket"
        default: "a socket of type \(type)"
        }
    }

    /// An errno value, so that `Result` can carry it.
    struct Errno: Error, Equatable, CustomStringConvertible {
        let code: Int32
        init(_ code: Int32) { self.code = code }
        var description: String { String(cString: strerror(code)) }
    }
}
