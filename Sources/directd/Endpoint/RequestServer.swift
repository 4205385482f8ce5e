import CUV
#if canImport(Glibc)
import Glibc
#endif
@_spi(Daemon) import UVBind

/// A small request/response endpoint on the loop (the metrics page, the
/// control socket): one request head per connection, one reply, close.
///
/// Bounded against hostile or slow clients: a head larger than `headBytes`
/// gets `overflowReply`; a connection that has not finished within the
/// deadline is closed; at most `connections` are open, and past that the
/// oldest is closed to make room (a hundred idle connections cannot lock out
/// the scraper that comes next). Everything is non-blocking on the loop.
final class RequestServer {
    struct Limits {
        var headBytes = 8 << 10
        var deadlineMilliseconds: UInt64 = 5000
        var connections = 16
    }

    let limits: Limits
    /// The reply to a complete head, or nil while the head is incomplete.
    let answer: (UnsafeRawBufferPointer) -> [UInt8]?
    let overflowReply: [UInt8]
    private let loop: UnsafeMutablePointer<uv_loop_t>
    private let socket: StreamSocket
    private var open: [RequestConnection] = []
    /// Told of each connection's descriptor (+1, -1), for the accept gate's budget.
    var descriptorsChanged: (Int) -> Void = { _ in }
    /// Where it listens (the kernel's port for TCP port 0), for the log.
    var address: String { socket.address }

    init(loop: UnsafeMutablePointer<uv_loop_t>, endpoint: MetricsEndpoint.Place, mode: mode_t, limits: Limits,
         overflowReply: [UInt8], answer: @escaping (UnsafeRawBufferPointer) -> [UInt8]?) throws(EndpointError) {
        self.loop = loop
        self.limits = limits
        self.answer = answer
        self.overflowReply = overflowReply
        socket = try StreamSocket.open(endpoint, mode: mode, loop: loop)
        socket.onConnection = { [unowned self] in self.acceptOne() }
    }

    private func acceptOne() {
        guard let client = socket.makeClient() else { return }
        if let error = socket.accept(into: client) {
            Log.debug("accept on \(socket.address) failed: \(error)")
            return HandleStorage.close(client)
        }
        if open.count >= limits.connections { open.first?.close() }
        guard let connection = RequestConnection(server: self, stream: client, loop: loop) else { return }
        open.append(connection)
        descriptorsChanged(1)
        connection.start()
    }

    func connectionClosed(_ connection: RequestConnection) {
        guard let index = open.firstIndex(where: { $0 === connection }) else { return }
        open.remove(at: index)
        descriptorsChanged(-1)
    }

    /// Connections open now (tests, status).
    var openConnections: Int { open.count }

    /// Closes the listening socket and every connection.
    func close() {
        socket.close()
        for connection in open { connection.close() }
    }
}
