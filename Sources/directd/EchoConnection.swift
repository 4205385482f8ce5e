import CUV
import UVBind

/// One accepted client, served with an echo: bytes go back as they come.
///
/// The hot path allocates nothing: each connection owns one read buffer and one
/// write request for its whole life. A read goes straight back with
/// `uv_try_write`; whatever the socket does not take at once is queued with
/// `uv_write` from the same buffer, and reading stops until it drains. That is the
/// backpressure: a peer that sends without reading fills its own socket buffers,
/// never directd's memory. An EOF from the peer (a half-close) is answered, once
/// every echoed byte is written, with a shutdown of our side; the connection
/// closes when both directions are done or on any error.
final class EchoConnection {
    static let bufferSize = 64 * 1024

    let handle: UnsafeMutablePointer<uv_tcp_t>
    private let buffer: UnsafeMutableRawBufferPointer
    private let writeRequest: UnsafeMutablePointer<uv_write_t>
    private let shutdownRequest: UnsafeMutablePointer<uv_shutdown_t>
    private var writing = false
    private var peerFinished = false
    private var closed = false
    private let onClose: (EchoConnection) -> Void

    /// Initialises the TCP handle on `loop`; nil (after logging) if libuv refuses.
    init?(loop: UnsafeMutablePointer<uv_loop_t>, onClose: @escaping (EchoConnection) -> Void) {
        handle = HandleStorage.allocate(uv_tcp_t.self)
        if let error = UVError.check(uv_tcp_init(loop, handle)) {
            HandleStorage.discard(handle)
            Log.error("cannot create a connection handle: \(error)")
            return nil
        }
        buffer = .allocate(byteCount: Self.bufferSize, alignment: 16)
        writeRequest = .allocate(capacity: 1)
        shutdownRequest = .allocate(capacity: 1)
        self.onClose = onClose
        HandleStorage.attach(self, to: handle)
        HandleStorage.attachUnretained(self, to: writeRequest)
        HandleStorage.attachUnretained(self, to: shutdownRequest)
    }

    deinit {
        buffer.deallocate()
        writeRequest.deallocate()
        shutdownRequest.deallocate()
    }

    var stream: UnsafeMutablePointer<uv_stream_t> { HandleStorage.stream(handle) }

    func start() {
        uv_tcp_nodelay(handle, 1)
        startReading()
    }

    private func startReading() {
        let result = uv_read_start(stream, { handle, _, buf in
            // Every read lands in the connection's one buffer.
            let connection = HandleStorage.owner(of: handle, as: EchoConnection.self)
            buf!.pointee = uv_buf_init(connection.buffer.baseAddress!.assumingMemoryBound(to: CChar.self),
                                       UInt32(connection.buffer.count))
        }, { stream, nread, _ in
            HandleStorage.owner(of: stream, as: EchoConnection.self).didRead(nread)
        })
        if result < 0 { close() }
    }

    private func didRead(_ nread: Int) {
        if nread > 0 {
            echo(from: 0, count: nread)
        } else if nread == Int(UV_EOF.rawValue) {
            peerFinished = true
            if !writing { finishWriting() }
        } else if nread < 0 {
            close()   // reset or other error: nothing more can be delivered
        }
        // nread == 0: libuv's EAGAIN, nothing to do.
    }

    /// Sends `buffer[offset..<offset+count]`: at once if the socket takes it all,
    /// else queued, with reading stopped until the write completes.
    private func echo(from offset: Int, count: Int) {
        var buf = uv_buf_init(buffer.baseAddress!.advanced(by: offset).assumingMemoryBound(to: CChar.self),
                              UInt32(count))
        let sent = uv_try_write(stream, &buf, 1)
        if sent == count { return }
        if sent < 0, sent != UV_EAGAIN.rawValue {
            close()
            return
        }
        let done = max(Int(sent), 0)
        buf = uv_buf_init(buf.base + done, UInt32(count - done))
        uv_read_stop(stream)
        writing = true
        let result = uv_write(writeRequest, stream, &buf, 1) { request, status in
            let connection = HandleStorage.requestOwner(of: request, as: EchoConnection.self)
            connection.didWrite(status)
        }
        if result < 0 { close() }
    }

    private func didWrite(_ status: Int32) {
        writing = false
        guard status == 0, !closed else {
            close()
            return
        }
        if peerFinished { finishWriting() } else { startReading() }
    }

    /// The peer has finished and every byte is echoed: send our FIN, then close.
    private func finishWriting() {
        let result = uv_shutdown(shutdownRequest, stream) { request, _ in
            HandleStorage.requestOwner(of: request, as: EchoConnection.self).close()
        }
        if result < 0 { close() }
    }

    /// Closes the socket now; pending requests complete with UV_ECANCELED first.
    func close() {
        guard !closed else { return }
        closed = true
        HandleStorage.close(handle)
        onClose(self)
    }
}
