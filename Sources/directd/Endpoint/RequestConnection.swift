import CUV
@_spi(Daemon) import UVBind

/// One client of a `RequestServer`: reads a request head into a fixed buffer,
/// answers once, and closes. Bounded: the buffer never grows (a head that
/// fills it gets the server's overflow reply), and a timer closes it when the
/// head and the reply do not go through within the deadline. Loop only.
///
/// The stream and the timer each hold a reference to this object through their
/// `data` field (`HandleStorage`); it goes when both have closed.
final class RequestConnection {
    unowned(unsafe) let server: RequestServer
    let stream: UnsafeMutablePointer<uv_stream_t>
    private let timer: UnsafeMutablePointer<uv_timer_t>
    /// The request head so far (`server.limits.headBytes`), then the reply.
    private let buffer: UnsafeMutableRawPointer
    private var filled = 0
    private var reply: UnsafeMutableRawPointer?
    private(set) var isClosed = false

    /// `stream` is initialised and accepted; this takes it over.
    init?(server: RequestServer, stream: UnsafeMutablePointer<uv_stream_t>, loop: UnsafeMutablePointer<uv_loop_t>) {
        self.server = server
        self.stream = stream
        timer = HandleStorage.allocate(uv_timer_t.self)
        buffer = UnsafeMutableRawPointer.allocate(byteCount: server.limits.headBytes, alignment: 16)
        HandleStorage.attach(self, to: stream)
        if UVError.check(uv_timer_init(loop, timer)) != nil {
            HandleStorage.discard(timer)
            HandleStorage.close(stream)
            return nil
        }
        HandleStorage.attach(self, to: timer)
    }

    deinit {
        buffer.deallocate()
        reply?.deallocate()
    }

    func start() {
        uv_timer_start(timer, { timer in
            HandleStorage.withOwner(of: timer, as: RequestConnection.self) { $0.close() }
        }, server.limits.deadlineMilliseconds, 0)
        let started = uv_read_start(stream, { handle, _, buf in
            HandleStorage.withOwner(of: handle, as: RequestConnection.self) { connection in
                // The rest of the fixed buffer: a read never takes more than it holds.
                let room = connection.server.limits.headBytes - connection.filled
                buf!.pointee = uv_buf_init((connection.buffer + connection.filled).assumingMemoryBound(to: CChar.self),
                                           UInt32(room))
            }
        }, { stream, nread, _ in
            HandleStorage.withOwner(of: stream, as: RequestConnection.self) { $0.didRead(nread) }
        })
        if started != 0 { close() }
    }

    private func didRead(_ nread: Int) {
        guard !isClosed, reply == nil else { return }
        if nread < 0 { return close() }   // EOF or an error before a whole head: nothing to answer
        filled += nread
        let head = UnsafeRawBufferPointer(start: buffer, count: filled)
        if let answer = server.answer(head) {
            send(answer)
        } else if filled == server.limits.headBytes {
            send(server.overflowReply)
        }
    }

    /// Writes `bytes` and closes when the write is done (or failed).
    private func send(_ bytes: [UInt8]) {
        uv_read_stop(stream)
        let block = UnsafeMutableRawPointer.allocate(byteCount: max(bytes.count, 1), alignment: 16)
        bytes.withUnsafeBytes { block.copyMemory(from: $0.baseAddress!, byteCount: bytes.count) }
        reply = block
        var buf = uv_buf_init(block.assumingMemoryBound(to: CChar.self), UInt32(bytes.count))
        let request = UnsafeMutablePointer<uv_write_t>.allocate(capacity: 1)
        HandleStorage.attachUnretained(self, to: request)
        let queued = uv_write(request, stream, &buf, 1) { request, _ in
            let connection = HandleStorage.requestOwner(of: request, as: RequestConnection.self)
            request!.deallocate()
            connection.close()
        }
        if queued != 0 {
            request.deallocate()
            close()
        }
    }

    /// Closes the stream and the timer; pending writes end with ECANCELED first.
    func close() {
        guard !isClosed else { return }
        isClosed = true
        uv_timer_stop(timer)
        HandleStorage.close(timer)
        HandleStorage.close(stream)
        server.connectionClosed(self)
    }
}
