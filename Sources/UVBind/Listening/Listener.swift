import CUV
#if canImport(Glibc)
import Glibc
#endif

/// One listening TCP socket on a libuv loop.
///
/// Opened by `ListenerGroup` (or `Listener.open`, or taken over from a
/// descriptor with `Listener.adopt`), closed with `close()`; its memory goes
/// when libuv's close callback has run. Loop thread only.
///
/// A listener knows nothing about bind values or the interface table: when it
/// cannot open, it throws the step and libuv's code (`Listener.OpenError`), and
/// the group that asked words the message with the value and the interfaces.
public final class Listener: HandleCloseObserver {
    public typealias ConnectionHandler = (Listener, UVError?) -> Void

    /// What was asked for (for an adopted socket: what it was found bound to).
    public let target: ListenTarget
    /// Where the socket is really bound (`uv_tcp_getsockname`), with the kernel's port.
    public private(set) var address: SocketAddress
    /// The handle. Valid until `close()`; the package's own code only.
    package let handle: UnsafeMutablePointer<uv_tcp_t>
    /// Taken over from a descriptor someone else opened (socket activation).
    public let isAdopted: Bool
    private var onConnection: ConnectionHandler?
    private var backlog: Int32 = 511
    public private(set) var isClosed = false

    private init(target: ListenTarget, handle: UnsafeMutablePointer<uv_tcp_t>, adopted: Bool) {
        self.target = target
        self.address = target.address
        self.handle = handle
        self.isAdopted = adopted
    }

    public var stream: UnsafeMutablePointer<uv_stream_t> { HandleStorage.stream(handle) }

    /// The socket's descriptor (`uv_fileno`); nil once closed.
    public var fileDescriptor: Int32? {
        guard !isClosed else { return nil }
        var fd = uv_os_fd_t(-1)
        return uv_fileno(HandleStorage.base(handle), &fd) == 0 ? fd : nil
    }

    /// Creates the socket, binds it to its device if the target names one, binds
    /// it (IPv6 only for IPv6), listens and reads back the bound address. On any
    /// failure the socket is already closed when this throws.
    public static func open(_ target: ListenTarget, loop: UnsafeMutablePointer<uv_loop_t>,
                            backlog: Int32 = 511,
                            onConnection: @escaping ConnectionHandler) throws(OpenError) -> Listener {
        let address = target.address
        let handle = HandleStorage.allocate(uv_tcp_t.self)
        // With a family, uv_tcp_init_ex creates the socket now, so that options
        // can be set on it before the bind.
        let family = address.family == .ipv6 ? AF_INET6 : AF_INET
        if let error = UVError.check(uv_tcp_init_ex(loop, handle, UInt32(family))) {
            HandleStorage.discard(handle)
            throw OpenError(.socket, error)
        }
        let listener = Listener(target: target, handle: handle, adopted: false)
        HandleStorage.attach(listener, to: handle)

        if let device = target.device, let error = listener.bindToDevice(device) {
            listener.close()
            throw OpenError(.bindToDevice, error)
        }
        let flags = target.ipv6Only ? UV_TCP_IPV6ONLY.rawValue : 0
        // libuv defers EADDRINUSE from bind to uv_listen; both steps are checked.
        if let error = UVError.check(address.withSockaddr { uv_tcp_bind(handle, $0, UInt32(flags)) }) {
            listener.close()
            throw OpenError(.bind, error)
        }
        try listener.start(backlog: backlog, onConnection: onConnection)
        return listener
    }

    /// Takes over a socket that is already bound and listening (a descriptor
    /// from systemd's socket activation, say): checks it is a TCP stream socket
    /// of IPv4 or IPv6 that listens (`SO_ACCEPTCONN`), and for IPv6 that it is
    /// IPv6 only (UVBind never serves IPv4 on an IPv6 socket), then watches it
    /// on `loop` and reads back where it is bound.
    ///
    /// If a check fails, the descriptor is left alone and stays the caller's.
    /// Once it is taken over (from step `open` on), it is the listener's, and
    /// closed with it, also when a later step fails. Never adopt a descriptor
    /// that another libuv handle watches.
    public static func adopt(descriptor fd: Int32, loop: UnsafeMutablePointer<uv_loop_t>,
                             backlog: Int32 = 511,
                             onConnection: @escaping ConnectionHandler) throws(OpenError) -> Listener {
        let device = try checkAdoptable(fd)
        let handle = HandleStorage.allocate(uv_tcp_t.self)
        if let error = UVError.check(uv_tcp_init(loop, handle)) {
            HandleStorage.discard(handle)
            throw OpenError(.socket, error)
        }
        if let error = UVError.check(uv_tcp_open(handle, fd)) {
            // Not taken over: close the handle without its descriptor.
            HandleStorage.close(handle)
            throw OpenError(.adopt, error)
        }
        let bound: SocketAddress
        do throws(UVError) {
            bound = try SocketAddress.local(of: handle)
        } catch {
            HandleStorage.close(handle)
            throw OpenError(.getsockname, error)
        }
        let listener = Listener(target: ListenTarget(address: bound, device: device), handle: handle, adopted: true)
        HandleStorage.attach(listener, to: handle)
        try listener.start(backlog: backlog, onConnection: onConnection)
        return listener
    }

    /// The checks of `adopt`, made before anything is changed; returns the
    /// device the socket is bound to, if any.
    static func checkAdoptable(_ fd: Int32) throws(OpenError) -> String? {
        func option(_ level: Int32, _ name: Int32) throws(OpenError) -> Int32 {
            var value: Int32 = 0
            var length = socklen_t(MemoryLayout<Int32>.size)
            guard getsockopt(fd, level, name, &value, &length) == 0 else {
                throw OpenError(.adoptCheck, UVError(-errno))
            }
            return value
        }
        guard fd >= 0 else { throw OpenError(.adoptCheck, .badDescriptor) }
        let domain = try option(SOL_SOCKET, SO_DOMAIN)
        guard domain == AF_INET || domain == AF_INET6 else {
            throw OpenError(.adoptCheck, .familyNotSupported)
        }
        guard try option(SOL_SOCKET, SO_TYPE) == Int32(SOCK_STREAM.rawValue),
              try option(SOL_SOCKET, SO_PROTOCOL) == Int32(IPPROTO_TCP) else {
            throw OpenError(.adoptCheck, .wrongProtocolType)
        }
        guard try option(SOL_SOCKET, SO_ACCEPTCONN) == 1 else {
            throw OpenError(.adoptListening, .invalidArgument)
        }
        if domain == AF_INET6, try option(Int32(IPPROTO_IPV6), IPV6_V6ONLY) == 0 {
            throw OpenError(.adoptIPv6Only, .invalidArgument)
        }
        return boundDevice(of: fd)
    }

    /// The socket's inode: the same socket, whichever descriptor names it.
    @_spi(Daemon) public static func inode(of fd: Int32) -> UInt64? {
        var status = stat()
        guard fstat(fd, &status) == 0 else { return nil }
        return UInt64(status.st_ino)
    }

    /// The name the kernel gives now to the interface the socket is bound to
    /// (`SO_BINDTODEVICE` stores an index): nil when it is bound to none, or when
    /// that interface is gone.
    @_spi(Daemon) public static func boundDevice(of fd: Int32) -> String? {
        var name = [CChar](repeating: 0, count: Int(IF_NAMESIZE) + 1)
        var length = socklen_t(IF_NAMESIZE)
        guard getsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, &name, &length) == 0, length > 0, name[0] != 0 else {
            return nil
        }
        return String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// The interface the socket is bound to now, by its current name (see
    /// `boundDevice(of:)`); nil once closed. It differs from `target.device`
    /// when that interface was renamed or deleted, and another may have the
    /// name now.
    public var currentDevice: String? {
        fileDescriptor.flatMap(Self.boundDevice(of:))
    }

    /// Listens and reads back the bound address; closes the listener on failure.
    private func start(backlog: Int32, onConnection: @escaping ConnectionHandler) throws(OpenError) {
        self.backlog = backlog
        if let error = listen() {
            close()
            throw OpenError(.listen, error)
        }
        do throws(UVError) {
            var bound = try SocketAddress.local(of: handle)
            // Keep the name the operator knows the zone by.
            if bound.scopeID == target.address.scopeID, target.address.zone != nil { bound.zone = target.address.zone }
            address = bound
        } catch {
            close()
            throw OpenError(.getsockname, error)
        }
        self.onConnection = onConnection
    }

    /// `SO_BINDTODEVICE` on the socket libuv created.
    private func bindToDevice(_ device: String) -> UVError? {
        var fd = uv_os_fd_t(-1)
        if let error = UVError.check(uv_fileno(HandleStorage.base(handle), &fd)) { return error }
        var name = Array(device.utf8CString)
        let status = setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, &name, socklen_t(name.count))
        return status == 0 ? nil : UVError(-errno)
    }

    private func listen() -> UVError? {
        UVError.check(uv_listen(stream, backlog) { server, status in
            let listener = HandleStorage.owner(of: server, as: Listener.self)
            listener.onConnection?(listener, UVError.check(status))
        })
    }

    /// Accepts a pending connection into an initialised client stream.
    ///
    /// Until it is called, libuv stops watching the listener: a connection
    /// callback that does not accept pauses accepting (pending connections wait
    /// in the kernel's backlog), and a later `accept` resumes it. When the accept
    /// itself fails, libuv drops that connection and does not watch the listener
    /// again; this re-arms it so that accepting goes on.
    public func accept(into client: UnsafeMutablePointer<uv_stream_t>) -> UVError? {
        guard let error = UVError.check(uv_accept(stream, client)) else { return nil }
        // Re-arm only when libuv dropped the connection (accepted_fd is reset);
        // watching again while it still holds one would trip libuv's assertion.
        if !isClosed, error != .tryAgain, stream.pointee.accepted_fd == -1 { _ = listen() }
        return error
    }

    /// Stops listening but keeps the socket bound, for `resume(_:target:...)`:
    /// a wildcard can then open on the same port (a socket bound and not
    /// listening, with SO_REUSEADDR, does not stand in its way), and if that
    /// change fails the same socket listens again, its address never released
    /// in between. Connections pending in the backlog are reset. The listener
    /// is closed; the returned descriptor is the caller's. Nil, with the
    /// listener untouched, when it cannot be done: a port the kernel chose at
    /// the bind (target port 0) is released by the kernel when listening stops.
    package func suspend() -> Int32? {
        guard !isClosed, target.address.port != 0, let fd = fileDescriptor else { return nil }
        let copy = fcntl(fd, F_DUPFD_CLOEXEC, 3)
        guard copy >= 0 else { return nil }
        // connect(AF_UNSPEC) on a listening TCP socket stops listening (tcp_disconnect).
        var unspecified = sockaddr()
        unspecified.sa_family = sa_family_t(AF_UNSPEC)
        guard connect(copy, &unspecified, socklen_t(MemoryLayout<sockaddr>.size)) == 0 else {
            Glibc.close(copy)
            return nil
        }
        close()   // the handle and its descriptor; the socket lives on in `copy`
        return copy
    }

    /// Listens again on a socket from `suspend()`, as a new listener for
    /// `target`. Takes the descriptor in every case: on failure (another
    /// socket listens there now, say) it is closed.
    package static func resume(_ fd: Int32, target: ListenTarget, loop: UnsafeMutablePointer<uv_loop_t>,
                               backlog: Int32, onConnection: @escaping ConnectionHandler) throws(OpenError) -> Listener {
        guard Glibc.listen(fd, backlog) == 0 else {
            let error = OpenError(.listen, UVError(-errno))
            Glibc.close(fd)
            throw error
        }
        let handle = HandleStorage.allocate(uv_tcp_t.self)
        if let error = UVError.check(uv_tcp_init(loop, handle)) {
            HandleStorage.discard(handle)
            Glibc.close(fd)
            throw OpenError(.socket, error)
        }
        if let error = UVError.check(uv_tcp_open(handle, fd)) {
            HandleStorage.close(handle)   // without the descriptor: it is not the handle's yet
            Glibc.close(fd)
            throw OpenError(.adopt, error)
        }
        let listener = Listener(target: target, handle: handle, adopted: false)
        HandleStorage.attach(listener, to: handle)
        // From here the descriptor is the listener's: a failing start closes both.
        try listener.start(backlog: backlog, onConnection: onConnection)
        return listener
    }

    /// Stops listening at once (the socket closes now); memory goes after the loop
    /// runs the close callback, and then `closed` runs. Closing twice does nothing.
    public func close(closed: (() -> Void)? = nil) {
        guard !isClosed else { return }
        isClosed = true
        onConnection = nil
        onClosed = closed
        HandleStorage.close(handle)
    }

    private var onClosed: (() -> Void)?

    package func handleDidClose() {
        let closed = onClosed
        onClosed = nil
        closed?()
    }
}
