#if canImport(Glibc)
import Glibc
#endif
import CUV
import UVBind

/// One session an upgrade handed over, its sockets checked, waiting to be
/// rebuilt on the new process's loop (`Session.restore`).
struct HandedSession {
    let entry: HandoverRecord.SessionEntry
    let client: Int32
    let upstream: Int32?
    /// Where a session still connecting connects (an address, never a name).
    let target: Upstream?
    /// Per direction, as the new process rebuilds it (pipes included).
    let directions: [DirectionState]
    /// Which side's connection had ended (reset) by the time this process
    /// checked it: a held session does not read, so it did not notice. Such a
    /// session is not rebuilt; its other side gets the reset (`discard`).
    private(set) var endedSide: String?

    /// Checks the session's sockets against the record: each a connected TCP
    /// stream socket of IPv4 or IPv6, not a listener, bound and connected
    /// exactly where the record says.
    init(_ entry: HandoverRecord.SessionEntry, descriptors: [Int32]) throws(HandoverRefusal) {
        self.entry = entry
        client = descriptors[entry.client]
        upstream = entry.upstream.map { descriptors[$0] }
        if try !Self.check(client, "#\(entry.id)'s client", local: entry.clientLocal, peer: entry.clientPeer) {
            endedSide = "client"
        }
        target = entry.connecting ? try Self.address(entry.upstreamPeer, "#\(entry.id)'s upstream") : nil
        if let upstream, entry.connecting {
            try Self.checkConnecting(upstream, "#\(entry.id)'s upstream", local: entry.upstreamLocal, target: entry.upstreamPeer)
        } else if let upstream, try !Self.check(upstream, "#\(entry.id)'s upstream", local: entry.upstreamLocal, peer: entry.upstreamPeer) {
            endedSide = endedSide ?? "upstream"
        }
        var directions: [DirectionState] = []
        for direction in entry.directions {
            var state = DirectionState(moved: direction.moved, finished: direction.finished, ending: direction.ending,
                                       unsent: direction.unsent)
            if let read = direction.pipeReadEnd, let write = direction.pipeWriteEnd {
                let pipe = PipePool.Pipe(readEnd: descriptors[read], writeEnd: descriptors[write])
                try Self.check(pipe, "#\(entry.id)'s pipe", holding: direction.inPipe)
                state.pipe = pipe
                state.inPipe = direction.inPipe
            }
            directions.append(state)
        }
        self.directions = directions
    }

    /// An upstream address as `SocketAddress` prints it (no name: nothing is looked up here).
    private static func address(_ text: String, _ what: String) throws(HandoverRefusal) -> Upstream {
        guard let spec = try? Upstream.Spec(parsing: text), spec.host.isAddress,
              let upstream = try? Upstream(resolving: spec) else {
            throw HandoverRefusal("\(what) connects to \"\(LogEscaping.escaped(text))\", not an address")
        }
        return upstream
    }

    /// Both ends of one pipe, holding exactly `bytes`.
    private static func check(_ pipe: PipePool.Pipe, _ what: String, holding bytes: Int) throws(HandoverRefusal) {
        var read = stat(), write = stat()
        guard fstat(pipe.readEnd, &read) == 0, fstat(pipe.writeEnd, &write) == 0,
              read.st_mode & S_IFMT == S_IFIFO, write.st_mode & S_IFMT == S_IFIFO,
              read.st_ino == write.st_ino, read.st_dev == write.st_dev else {
            throw HandoverRefusal("\(what) is not the two ends of one pipe")
        }
        guard fcntl(pipe.readEnd, F_GETFL) & O_ACCMODE == O_RDONLY, fcntl(pipe.writeEnd, F_GETFL) & O_ACCMODE == O_WRONLY else {
            throw HandoverRefusal("\(what)'s ends are the wrong way round")
        }
        var held: Int32 = 0
        guard ioctl(pipe.readEnd, UInt(FIONREAD), &held) == 0, Int(held) == bytes else {
            throw HandoverRefusal("\(what) holds \(held) bytes, the state says \(bytes)")
        }
    }

    /// Where a socket is bound and connected, as `SocketAddress` prints them.
    static func addresses(of fd: Int32) -> (local: String, peer: String)? {
        guard let local = address(of: fd, peer: false), let peer = address(of: fd, peer: true) else { return nil }
        return (local, peer)
    }

    /// Where a socket is bound (or connected, `peer`); nil with errno set.
    static func address(of fd: Int32, peer: Bool) -> String? {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        return withUnsafeMutablePointer(to: &storage) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { address in
                guard (peer ? getpeername(fd, address, &length) : getsockname(fd, address, &length)) == 0 else { return nil }
                return SocketAddress(UnsafePointer(address))?.description
            }
        }
    }

    /// The session ended during the handover: its sockets and pipes are
    /// closed here, a side still connected with a reset (SO_LINGER 0), as a
    /// relay passes a reset on. Nothing of it is served.
    func discard() {
        var cut = linger(l_onoff: 1, l_linger: 0)
        for fd in [client, upstream].compactMap({ $0 }) {
            if Self.addresses(of: fd) != nil {
                setsockopt(fd, SOL_SOCKET, SO_LINGER, &cut, socklen_t(MemoryLayout<linger>.size))
            }
            close(fd)
        }
        for pipe in directions.compactMap(\.pipe) {
            close(pipe.readEnd)
            close(pipe.writeEnd)
        }
    }

    /// True when connected as the record says; false when the socket is a
    /// TCP socket whose connection has ended (ENOTCONN: reset while held).
    /// Anything else is refused.
    private static func check(_ fd: Int32, _ what: String, local: String, peer: String) throws(HandoverRefusal) -> Bool {
        try checkKind(fd, what)
        guard let bound = addresses(of: fd) else {
            if errno == ENOTCONN { return false }
            throw HandoverRefusal("\(what)'s addresses cannot be read: \(String(cString: strerror(errno)))")
        }
        guard bound.local == local, bound.peer == peer else {
            throw HandoverRefusal("\(what) is \(bound.local) to \(bound.peer), the state says \(LogEscaping.escaped(local)) to \(LogEscaping.escaped(peer))")
        }
        return true
    }

    /// A connection accepted on `listener` and not served yet: a TCP socket
    /// (not listening) bound to the listener's port.
    static func checkAccepted(_ fd: Int32, _ what: String, by listener: Int32) throws(HandoverRefusal) {
        try checkKind(fd, what)
        guard let local = address(of: fd, peer: false), let listening = address(of: listener, peer: false),
              local.split(separator: ":").last == listening.split(separator: ":").last else {
            throw HandoverRefusal("\(what) is not a connection accepted on it")
        }
    }

    /// An upstream socket still connecting: connected since exactly as the
    /// record says, or still sending its SYN from where the record says, or
    /// failed (closed: the connect's error is then reported as the old
    /// process would have). Anything else is refused.
    private static func checkConnecting(_ fd: Int32, _ what: String, local: String, target: String) throws(HandoverRefusal) {
        try checkKind(fd, what)
        if let bound = addresses(of: fd) {
            guard bound.local == local, bound.peer == target else {
                throw HandoverRefusal("\(what) is \(bound.local) to \(bound.peer), the state says \(LogEscaping.escaped(local)) to \(LogEscaping.escaped(target))")
            }
            return
        }
        guard errno == ENOTCONN else {
            throw HandoverRefusal("\(what)'s addresses cannot be read: \(String(cString: strerror(errno)))")
        }
        switch tcpState(fd) {
        case tcpSynSent:
            guard let bound = address(of: fd, peer: false), bound == local else {
                throw HandoverRefusal("\(what) connects from \(address(of: fd, peer: false) ?? "?"), the state says \(LogEscaping.escaped(local))")
            }
        case tcpClose:
            return
        case let state:
            throw HandoverRefusal("\(what) is in TCP state \(state.map(String.init) ?? "?"), not connecting")
        }
    }

    private static let tcpSynSent: UInt8 = 2, tcpClose: UInt8 = 7

    /// The socket's TCP state (`tcpi_state`, the first byte of TCP_INFO).
    private static func tcpState(_ fd: Int32) -> UInt8? {
        var info = [UInt8](repeating: 0, count: 8)
        var length = socklen_t(info.count)
        return getsockopt(fd, Int32(IPPROTO_TCP), TCP_INFO, &info, &length) == 0 && length >= 1 ? info[0] : nil
    }

    /// A TCP stream socket of IPv4 or IPv6 that does not listen.
    private static func checkKind(_ fd: Int32, _ what: String) throws(HandoverRefusal) {
        func option(_ name: Int32) -> Int32? {
            var value: Int32 = 0
            var length = socklen_t(MemoryLayout<Int32>.size)
            return getsockopt(fd, SOL_SOCKET, name, &value, &length) == 0 ? value : nil
        }
        var status = stat()
        guard fstat(fd, &status) == 0, status.st_mode & S_IFMT == S_IFSOCK else {
            throw HandoverRefusal("\(what) is not a socket")
        }
        guard option(SO_TYPE) == Int32(SOCK_STREAM.rawValue), option(SO_PROTOCOL) == Int32(IPPROTO_TCP),
              let domain = option(SO_DOMAIN), domain == AF_INET || domain == AF_INET6 else {
            throw HandoverRefusal("\(what) is not a TCP socket of IPv4 or IPv6")
        }
        guard option(SO_ACCEPTCONN) == 0 else { throw HandoverRefusal("\(what) is a listening socket") }
    }
}
