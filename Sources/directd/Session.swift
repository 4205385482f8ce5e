import CUV
import UVBind

/// One accepted client: served with an echo, or relayed to the upstream.
///
/// The client's handle (and the upstream's, for a relay) keep the session alive
/// through their `data` field until libuv has closed them; the server's table
/// keeps it listed while it is open. It ends when every flow has finished
/// (both directions half-closed in turn) or at the first error, which closes
/// both sides; a reset on one side is passed on as a reset to the other.
final class Session {
    /// `unowned(unsafe)`: the server outlives every session (it runs the loop
    /// until the last one has closed).
    unowned(unsafe) let server: Server
    /// The server's pool, kept here for the per-read callbacks.
    let pool: BufferPool
    let id: UInt64
    let client: UnsafeMutablePointer<uv_tcp_t>
    private(set) var upstream: UnsafeMutablePointer<uv_tcp_t>?
    private var flows: [Flow] = []
    private(set) var isClosed = false
    private(set) var connecting = false
    var peer: SocketAddress?
    var listener: SocketAddress?
    let opened: UInt64
    private(set) var lastActivity: UInt64

    /// Initialises the client handle; nil (after logging) if libuv refuses.
    init?(server: Server, id: UInt64) {
        self.server = server
        self.pool = server.pool
        self.id = id
        opened = uv_now(server.loop)
        lastActivity = opened
        client = HandleStorage.allocate(uv_tcp_t.self)
        if let error = UVError.check(uv_tcp_init(server.loop, client)) {
            HandleStorage.discard(client)
            Log.error("cannot create a connection handle: \(error)")
            return nil
        }
        HandleStorage.attach(self, to: client)
        server.socketsOpen += 1
    }

    /// Descriptors this session holds (or will, once connected).
    var socketCount: Int { upstream == nil ? 1 : 2 }

    var clientStream: UnsafeMutablePointer<uv_stream_t> { HandleStorage.stream(client) }

    /// The client's address, once accepted.
    func readPeer() {
        var storage = sockaddr_storage()
        var length = Int32(MemoryLayout<sockaddr_storage>.size)
        peer = withUnsafeMutablePointer(to: &storage) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                uv_tcp_getpeername(client, sa, &length) == 0 ? SocketAddress(sa) : nil
            }
        }
    }

    func touch() { lastActivity = uv_now(server.loop) }

    func startEcho() {
        uv_tcp_nodelay(client, 1)
        let flow = Flow(session: self, source: clientStream, sink: clientStream)
        flows = [flow]
        if let error = flow.start() { fail(error, side: clientStream) }
    }

    /// Connects to the upstream; the client is read only once that succeeds.
    func startRelay(to target: Upstream) {
        let handle = HandleStorage.allocate(uv_tcp_t.self)
        if let error = UVError.check(uv_tcp_init(server.loop, handle)) {
            HandleStorage.discard(handle)
            return close(reason: "cannot create the upstream handle: \(error)")
        }
        HandleStorage.attach(self, to: handle)
        upstream = handle
        server.socketsOpen += 1
        connecting = true
        let request = UnsafeMutablePointer<uv_connect_t>.allocate(capacity: 1)
        HandleStorage.attachUnretained(self, to: request)
        let result = target.address.withSockaddr { address in
            uv_tcp_connect(request, handle, address) { request, status in
                let session = HandleStorage.requestOwner(of: request, as: Session.self)
                request!.deallocate()
                session.connected(status)
            }
        }
        if let error = UVError.check(result) {
            request.deallocate()
            connecting = false
            server.upstreamFailed(self, reason: "cannot connect to \(target): \(error)")
            close(reason: nil)
        }
    }

    private func connected(_ status: Int32) {
        connecting = false
        guard !isClosed else { return }   // timed out or stopped while connecting
        guard status == 0, let upstream else {
            server.upstreamFailed(self, reason: "upstream \(server.settings.forward!) refused: \(UVError(status))")
            return close(reason: nil)
        }
        uv_tcp_nodelay(client, 1)
        uv_tcp_nodelay(upstream, 1)
        touch()
        let upstreamStream = HandleStorage.stream(upstream)
        flows = [Flow(session: self, source: clientStream, sink: upstreamStream),
                 Flow(session: self, source: upstreamStream, sink: clientStream)]
        for flow in flows {
            if let error = flow.start() { return fail(error, side: flow.source) }
        }
    }

    func flow(readingFrom stream: UnsafeMutablePointer<uv_stream_t>) -> Flow {
        flows.count == 1 || flows[0].source == stream ? flows[0] : flows[1]
    }

    func flow(writingTo stream: UnsafeMutablePointer<uv_stream_t>) -> Flow {
        flows.count == 1 || flows[0].sink == stream ? flows[0] : flows[1]
    }

    /// Bytes from the client, bytes to the client.
    var byteCounts: (fromClient: UInt64, toClient: UInt64) {
        guard let first = flows.first else { return (0, 0) }
        return (first.bytes, flows.count == 2 ? flows[1].bytes : first.bytes)
    }

    func flowFinished() {
        if flows.allSatisfy(\.finished) { close(reason: nil) }
    }

    /// An error on one side (reset, broken pipe, timeout) ends the session. The
    /// other side is reset rather than given a FIN: its stream is incomplete, and
    /// a FIN would tell it the transfer ended cleanly.
    func fail(_ error: UVError, side: UnsafeMutablePointer<uv_stream_t>) {
        let which = side == clientStream ? "client" : "upstream"
        close(reason: "\(which) \(error)", reset: true)
    }

    /// Closes both sides now. Pending writes complete with ECANCELED first, and
    /// the memory goes when libuv's close callbacks have run.
    func close(reason: String?, reset: Bool = false) {
        guard !isClosed else { return }
        isClosed = true
        for handle in [client, upstream].compactMap({ $0 }) {
            if reset { HandleStorage.closeWithReset(handle) } else { HandleStorage.close(handle) }
        }
        server.sessionClosed(self, reason: reason)
    }
}
