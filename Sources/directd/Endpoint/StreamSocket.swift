import CUV
#if canImport(Glibc)
import Glibc
#endif
@_spi(Daemon) import UVBind

/// The listening socket of a `RequestServer`: a TCP listener opened by UVBind
/// (IPv6 only for IPv6, never SO_REUSEPORT, exactly the one address), or a
/// unix stream socket created with `mode` before it listens. Loop only.
final class StreamSocket {
    private enum Kind {
        case tcp(Listener)
        case unix(UnsafeMutablePointer<uv_pipe_t>, path: String)
    }

    private let kind: Kind
    private let loop: UnsafeMutablePointer<uv_loop_t>
    let address: String
    var onConnection: () -> Void = {}

    private init(kind: Kind, loop: UnsafeMutablePointer<uv_loop_t>, address: String) {
        self.kind = kind
        self.loop = loop
        self.address = address
    }

    static func open(_ place: MetricsEndpoint.Place, mode: mode_t,
                     loop: UnsafeMutablePointer<uv_loop_t>) throws(EndpointError) -> StreamSocket {
        switch place {
        case .tcp(let target):
            var socket: StreamSocket?
            do throws(Listener.OpenError) {
                let listener = try Listener.open(target, loop: loop, backlog: 64) { _, _ in socket?.onConnection() }
                socket = StreamSocket(kind: .tcp(listener), loop: loop, address: "\(listener.address)")
                return socket!
            } catch {
                throw EndpointError("cannot listen on \(target.address): \(error.code)", code: error.code)
            }
        case .unix(let path):
            return try openUnix(path, mode: mode, loop: loop)
        }
    }

    /// Binds under a umask that leaves only the owner's bits, sets `mode`, then
    /// listens: no client can connect before the mode is in force.
    private static func openUnix(_ path: String, mode: mode_t,
                                 loop: UnsafeMutablePointer<uv_loop_t>) throws(EndpointError) -> StreamSocket {
        try removeStale(path)
        let handle = HandleStorage.allocate(uv_pipe_t.self)
        if let error = UVError.check(uv_pipe_init(loop, handle, 0)) {
            HandleStorage.discard(handle)
            throw EndpointError("cannot create a socket for unix:\(path): \(error)", code: error)
        }
        let socket = StreamSocket(kind: .unix(handle, path: path), loop: loop, address: "unix:\(path)")
        HandleStorage.attach(socket, to: handle)
        let previous = umask(0o177)
        let bound = uv_pipe_bind(handle, path)
        umask(previous)
        if let error = UVError.check(bound) {
            HandleStorage.close(handle)
            throw EndpointError("cannot bind unix:\(path): \(error)", code: error)
        }
        guard chmod(path, mode) == 0 else {
            let error = UVError(-errno)
            socket.close()
            throw EndpointError("cannot set the mode of unix:\(path): \(error)", code: error)
        }
        let listening = uv_listen(HandleStorage.stream(handle), 64) { server, status in
            guard status == 0 else { return }
            HandleStorage.withOwner(of: server, as: StreamSocket.self) { $0.onConnection() }
        }
        if let error = UVError.check(listening) {
            socket.close()
            throw EndpointError("cannot listen on unix:\(path): \(error)", code: error)
        }
        return socket
    }

    /// A socket file left by an instance that is gone is removed; a live one
    /// (it accepts a connection), or anything that is not a socket, is an error.
    private static func removeStale(_ path: String) throws(EndpointError) {
        var info = stat()
        guard lstat(path, &info) == 0 else { return }
        guard info.st_mode & S_IFMT == S_IFSOCK else {
            throw EndpointError("unix:\(path) exists and is not a socket", code: .addressInUse)
        }
        if UnixClient.connects(to: path) {
            throw EndpointError("unix:\(path) is in use by another process", code: .addressInUse)
        }
        unlink(path)
    }

    /// An initialised client handle of the socket's kind; nil if libuv refuses.
    func makeClient() -> UnsafeMutablePointer<uv_stream_t>? {
        switch kind {
        case .tcp:
            let client = HandleStorage.allocate(uv_tcp_t.self)
            guard uv_tcp_init(loop, client) == 0 else { HandleStorage.discard(client); return nil }
            return HandleStorage.stream(client)
        case .unix:
            let client = HandleStorage.allocate(uv_pipe_t.self)
            guard uv_pipe_init(loop, client, 0) == 0 else { HandleStorage.discard(client); return nil }
            return HandleStorage.stream(client)
        }
    }

    func accept(into client: UnsafeMutablePointer<uv_stream_t>) -> UVError? {
        switch kind {
        case .tcp(let listener): listener.accept(into: client)
        case .unix(let handle, _): UVError.check(uv_accept(HandleStorage.stream(handle), client))
        }
    }

    private var closed = false
    func close() {
        guard !closed else { return }
        closed = true
        switch kind {
        case .tcp(let listener): listener.close()
        case .unix(let handle, let path):
            unlink(path)
            HandleStorage.close(handle)
        }
    }
}
