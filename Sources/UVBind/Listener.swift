import CUV

/// One listening TCP socket on a libuv loop.
///
/// Opened by `ListenerGroup` (or `Listener.open`), closed with `close()`; its
/// memory goes when libuv's close callback has run. Loop thread only.
public final class Listener: HandleCloseObserver {
    public typealias ConnectionHandler = (Listener, UVError?) -> Void

    /// What was asked for.
    public let target: ListenTarget
    /// Where the socket is really bound (`uv_tcp_getsockname`), with the kernel's port.
    public private(set) var address: SocketAddress
    /// The handle, as a stream for `uv_accept`. Valid until `close()`.
    public let handle: UnsafeMutablePointer<uv_tcp_t>
    private var onConnection: ConnectionHandler?
    private var backlog: Int32 = 511
    public private(set) var isClosed = false

    private init(target: ListenTarget, handle: UnsafeMutablePointer<uv_tcp_t>) {
        self.target = target
        self.address = target.address
        self.handle = handle
    }

    public var stream: UnsafeMutablePointer<uv_stream_t> { HandleStorage.stream(handle) }

    /// Creates the socket, binds it (IPv6 only for IPv6), listens and reads back the
    /// bound address. On any failure the socket is already closed when this throws.
    public static func open(_ target: ListenTarget, value: String, loop: UnsafeMutablePointer<uv_loop_t>,
                            backlog: Int32, interfaces: InterfaceTable? = nil,
                            onConnection: @escaping ConnectionHandler) throws(BindError) -> Listener {
        let address = target.address
        func failure(_ step: BindError.Step, _ code: UVError) -> BindError {
            BindError.call(step, failedWith: code, value: value, address: address,
                           interfaces: code == .addressNotAvailable ? (interfaces ?? (try? InterfaceTable.current())) : interfaces)
        }

        let handle = HandleStorage.allocate(uv_tcp_t.self)
        let family = address.family == .ipv6 ? AF_INET6 : AF_INET
        if let error = UVError.check(uv_tcp_init_ex(loop, handle, UInt32(family))) {
            HandleStorage.discard(handle)
            throw failure(.socket, error)
        }
        let listener = Listener(target: target, handle: handle)
        HandleStorage.attach(listener, to: handle)

        let flags = target.ipv6Only ? UV_TCP_IPV6ONLY.rawValue : 0
        // libuv defers EADDRINUSE from bind to uv_listen; both steps are checked.
        if let error = UVError.check(address.withSockaddr { uv_tcp_bind(handle, $0, UInt32(flags)) }) {
            listener.close()
            throw failure(.bind, error)
        }
        listener.backlog = backlog
        if let error = listener.listen() {
            listener.close()
            throw failure(.listen, error)
        }
        do throws(UVError) {
            listener.address = try listener.boundAddress()
        } catch {
            listener.close()
            throw failure(.getsockname, error)
        }
        listener.onConnection = onConnection
        return listener
    }

    private func listen() -> UVError? {
        UVError.check(uv_listen(stream, backlog) { server, status in
            let listener = HandleStorage.owner(of: server, as: Listener.self)
            listener.onConnection?(listener, UVError.check(status))
        })
    }

    private func boundAddress() throws(UVError) -> SocketAddress {
        var storage = sockaddr_storage()
        var length = Int32(MemoryLayout<sockaddr_storage>.size)
        let result = withUnsafeMutablePointer(to: &storage) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                (uv_tcp_getsockname(handle, sa, &length), SocketAddress(sa))
            }
        }
        if let error = UVError.check(result.0) { throw error }
        guard var bound = result.1 else { throw UVError.familyNotSupported }
        // Keep the name the operator knows the zone by.
        if bound.scopeID == target.address.scopeID { bound.zone = target.address.zone }
        return bound
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

    public func handleDidClose() {
        let closed = onClosed
        onClosed = nil
        closed?()
    }
}
