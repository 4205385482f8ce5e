import CUV
import UVBind

/// One direction of a connection: bytes read from `source` are written to `sink`.
///
/// An echo has one flow (the client to itself), a relay two. Each read is first
/// offered to the sink with `uv_try_write`; what the socket does not take is
/// queued with `uv_write` from the same chunk. When the sink's queue passes the
/// limit, reading from the source stops until the queue drains to half of it:
/// a slow reader slows the writer instead of growing directd's memory. An EOF
/// from the source becomes a shutdown of the sink (after every queued byte),
/// and the flow is finished when that shutdown completes.
final class Flow {
    /// `unowned(unsafe)`: the session owns its flows and outlives them, so the
    /// checked `unowned` (an atomic retain on every access, in every read
    /// callback) buys nothing here.
    unowned(unsafe) let session: Session
    /// The session's write queue limit, kept here for the per-read check.
    private let queueLimit: Int
    let source: UnsafeMutablePointer<uv_stream_t>
    let sink: UnsafeMutablePointer<uv_stream_t>
    private(set) var bytes: UInt64 = 0
    private(set) var finished = false
    private var paused = false
    private var shutdownRequest: UnsafeMutablePointer<uv_shutdown_t>?

    init(session: Session, source: UnsafeMutablePointer<uv_stream_t>, sink: UnsafeMutablePointer<uv_stream_t>) {
        self.session = session
        self.source = source
        self.sink = sink
        self.queueLimit = session.server.settings.writeQueueLimit
    }

    deinit {
        shutdownRequest?.deallocate()
    }

    /// Starts reading; libuv's error if it refuses.
    func start() -> UVError? {
        UVError.check(uv_read_start(source, { handle, _, buf in
            // Hand libuv a pooled chunk; the read callback passes it on or back.
            let chunk = HandleStorage.withOwner(of: handle, as: Session.self) { $0.pool.take() }
            buf!.pointee = uv_buf_init(BufferPool.data(of: chunk), UInt32(BufferPool.size))
        }, { stream, nread, buf in
            HandleStorage.withOwner(of: stream, as: Session.self) { session in
                session.flow(readingFrom: stream!).didRead(nread, buf!.pointee)
            }
        }))
    }

    private func didRead(_ nread: Int, _ buf: uv_buf_t) {
        guard nread > 0 else {
            if let base = buf.base { session.pool.give(BufferPool.chunk(ofData: base)) }
            if nread < 0 {
                let error = UVError(Int32(nread))
                if error == .endOfFile { endOfSource() } else { session.fail(error, side: source) }
            }
            return   // 0: libuv's EAGAIN, nothing read
        }
        bytes += UInt64(nread)
        session.touch()
        forward(chunk: BufferPool.chunk(ofData: buf.base!), count: nread)
    }

    private func forward(chunk: UnsafeMutableRawPointer, count: Int) {
        var buf = uv_buf_init(BufferPool.data(of: chunk), UInt32(count))
        // Fast path: the socket takes it all now, and the chunk goes straight back.
        let sent = uv_try_write(sink, &buf, 1)
        if sent == count {
            session.pool.give(chunk)
            return
        }
        if sent < 0, UVError(sent) != .tryAgain {
            session.pool.give(chunk)
            session.fail(UVError(sent), side: sink)
            return
        }
        let done = Int(max(sent, 0))
        buf = uv_buf_init(buf.base + done, UInt32(count - done))
        let request = BufferPool.request(of: chunk)
        HandleStorage.attachUnretained(session, to: request)
        let queued = uv_write(request, sink, &buf, 1) { request, status in
            let session = HandleStorage.requestOwner(of: request, as: Session.self)
            let sink = request!.pointee.handle!
            session.pool.give(UnsafeMutableRawPointer(request!))
            session.flow(writingTo: sink).didWrite(status)
        }
        if queued < 0 {
            session.pool.give(chunk)
            session.fail(UVError(queued), side: sink)
            return
        }
        if uv_stream_get_write_queue_size(sink) > queueLimit, !paused {
            paused = true
            uv_read_stop(source)
        }
    }

    private func didWrite(_ status: Int32) {
        guard status == 0 else {
            // ECANCELED: the session is closing already.
            if UVError(status) != .cancelled { session.fail(UVError(status), side: sink) }
            return
        }
        if paused, !session.isClosed,
           uv_stream_get_write_queue_size(sink) <= queueLimit / 2 {
            paused = false
            if let error = start() { session.fail(error, side: source) }
        }
    }

    /// The source sent FIN: pass it on once every queued byte is written.
    private func endOfSource() {
        let request = UnsafeMutablePointer<uv_shutdown_t>.allocate(capacity: 1)
        shutdownRequest = request
        HandleStorage.attachUnretained(session, to: request)
        let result = uv_shutdown(request, sink) { request, status in
            let session = HandleStorage.requestOwner(of: request, as: Session.self)
            let flow = session.flow(writingTo: request!.pointee.handle!)
            flow.finished = true
            if status == 0 {
                session.flowFinished()
            } else if UVError(status) != .cancelled {
                session.fail(UVError(status), side: flow.sink)
            }
        }
        if result < 0 { session.fail(UVError(result), side: sink) }
    }
}
