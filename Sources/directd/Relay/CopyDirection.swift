import CUV
@_spi(Daemon) import UVBind

/// A relay direction that copies through user space: libuv reads into a pooled
/// chunk, and the same chunk is written on.
///
/// Each read is first offered to the sink with `uv_try_write`; what the socket
/// does not take is queued with `uv_write` from the same chunk. Backpressure
/// is per connection and in total:
/// - a read is at most `readLength` bytes (the write queue limit, or a chunk),
///   and reading stops as soon as the sink's queue has no room for another
///   read, until it drains: one direction never holds more than
///   `write-queue-limit` bytes, however slowly its sink reads;
/// - when the pool's budget (`memory-limit`) is spent, the read fails with
///   `UV_ENOBUFS` (the allocator handed libuv no buffer) and the direction
///   waits in the pool until a chunk comes back.
/// An EOF from the source becomes a shutdown of the sink (after every queued
/// byte), and the direction is finished when that shutdown completes.
final class CopyDirection: RelayDirection, ChunkWaiter {
    /// `unowned(unsafe)`: the session owns its directions and outlives them, so
    /// the checked `unowned` (an atomic retain on every access, in every read
    /// callback) buys nothing here.
    unowned(unsafe) let session: Session
    /// The session's pool and limits, kept here for the per-read callbacks.
    private let pool: BufferPool
    private let queueLimit: Int
    private let readLength: Int
    let source: UnsafeMutablePointer<uv_stream_t>
    let sink: UnsafeMutablePointer<uv_stream_t>
    private(set) var bytesMoved: UInt64 = 0
    /// Where the bytes it moves are counted for the metrics.
    private let counting: ByteCounting
    private(set) var finished = false
    let descriptorsUsed = 0
    /// Reading stopped because the sink's queue is full.
    private var paused = false
    /// Reading stopped because the pool had no chunk.
    private var waitingForChunk = false
    /// The session, held while this direction waits in the pool: the pool's
    /// queue may outlive the session's handles (it closes meanwhile), and
    /// `session` is unowned.
    private var sessionWhileWaiting: Session?
    private var shutdownRequest: UnsafeMutablePointer<uv_shutdown_t>?
    /// What an upgrade handed over still to write, in pooled chunks (taken
    /// when the session is rebuilt, so that a budget too small for them
    /// refuses the handover), and whether the source's EOF follows them.
    private var handedChunks: [(chunk: UnsafeMutableRawPointer, count: Int)] = []
    private var handedEnding = false

    /// `alreadyMoved`: bytes an earlier direction moved before handing over
    /// (a splice direction that falls back to copying).
    init(session: Session, source: UnsafeMutablePointer<uv_stream_t>, sink: UnsafeMutablePointer<uv_stream_t>,
         alreadyMoved: UInt64 = 0) {
        self.session = session
        self.bytesMoved = alreadyMoved
        self.pool = session.pool
        self.queueLimit = session.writeQueueLimit
        self.readLength = session.readLength
        self.source = source
        self.sink = sink
        counting = session.byteCounting(from: source, to: sink)
    }

    /// A direction an upgrade handed over: it goes on from `state`. A
    /// finished one (its source's EOF passed on) is never started. Nil when
    /// the pool has no room for the bytes still to write.
    convenience init?(session: Session, source: UnsafeMutablePointer<uv_stream_t>,
                      sink: UnsafeMutablePointer<uv_stream_t>, handedOver state: DirectionState) {
        self.init(session: session, source: source, sink: sink, alreadyMoved: state.moved)
        finished = state.finished
        handedEnding = state.ending
        var offset = 0
        while offset < state.unsent.count {
            guard let chunk = pool.take() else {
                giveBackHandedChunks()
                return nil
            }
            let count = min(BufferPool.size, state.unsent.count - offset)
            state.unsent.withUnsafeBytes { bytes in
                UnsafeMutableRawPointer(BufferPool.data(of: chunk)).copyMemory(from: bytes.baseAddress! + offset, byteCount: count)
            }
            handedChunks.append((chunk, count))
            offset += count
        }
    }

    deinit {
        shutdownRequest?.deallocate()
    }

    func start() -> UVError? {
        if !handedChunks.isEmpty || handedEnding { return writeHandedOver() }
        return startReading()
    }

    /// What the old process had queued goes out first, in order, then the
    /// FIN it had seen, or the reading (once the queue has room).
    private func writeHandedOver() -> UVError? {
        let chunks = handedChunks
        handedChunks = []
        for (index, (chunk, count)) in chunks.enumerated() {
            guard !session.isClosed else {
                chunks[index...].forEach { pool.give($0.chunk) }
                return nil
            }
            forward(chunk: chunk, count: count)
        }
        guard !session.isClosed else { return nil }
        if handedEnding {
            // The source has ended: nothing more is read (not even by a
            // write callback that finds the queue has room again).
            handedEnding = false
            paused = false
            endOfSource()
            return nil
        }
        if paused { return nil }   // the write callbacks start the reading
        return startReading()
    }

    private func giveBackHandedChunks() {
        handedChunks.forEach { pool.give($0.chunk) }
        handedChunks = []
    }

    private func startReading() -> UVError? {
        UVError.check(uv_read_start(source, { handle, _, buf in
            // Hand libuv a pooled chunk, or nothing when the budget is spent
            // (libuv then reports UV_ENOBUFS to the read callback).
            HandleStorage.withOwner(of: handle, as: Session.self) { session in
                buf!.pointee = session.pool.take().map {
                    uv_buf_init(BufferPool.data(of: $0), UInt32(session.readLength))
                } ?? uv_buf_init(nil, 0)
            }
        }, { stream, nread, buf in
            HandleStorage.withOwner(of: stream, as: Session.self) { session in
                // Only copy directions start reads on their source, so the cast holds.
                unsafeDowncast(session.direction(readingFrom: stream!), to: CopyDirection.self)
                    .didRead(nread, buf!.pointee)
            }
        }))
    }

    func stop() {
        uv_read_stop(source)
        giveBackHandedChunks()   // a rebuilt session closed before it started
    }

    // MARK: upgrades

    var handoverState: DirectionState? {
        guard let unsent = WriteQueue.unsent(of: sink) else { return nil }
        return DirectionState(moved: bytesMoved, finished: finished, ending: shutdownRequest != nil && !finished,
                              unsent: unsent)
    }

    private func didRead(_ nread: Int, _ buf: uv_buf_t) {
        guard nread > 0 else {
            if let base = buf.base { pool.give(BufferPool.chunk(ofData: base)) }
            if nread < 0 {
                let error = UVError(Int32(nread))
                if error == .endOfFile {
                    // libuv makes up an EOF on EPOLLHUP after a partial read, so
                    // this may be a reset: the socket's pending error tells.
                    if let reset = SocketEnd.pendingError(of: source) {
                        session.fail(reset, side: source)
                    } else {
                        endOfSource()
                    }
                } else if error == .noBufferSpace {
                    waitForChunk()
                } else {
                    session.fail(error, side: source)
                }
            }
            return   // 0: libuv's EAGAIN, nothing read
        }
        bytesMoved += UInt64(nread)
        counting.add(UInt64(nread), spliced: false)
        session.touch()
        forward(chunk: BufferPool.chunk(ofData: buf.base!), count: nread)
    }

    private func forward(chunk: UnsafeMutableRawPointer, count: Int) {
        var buf = uv_buf_init(BufferPool.data(of: chunk), UInt32(count))
        // Fast path: the socket takes it all now, and the chunk goes straight back.
        let sent = uv_try_write(sink, &buf, 1)
        if sent == count {
            pool.give(chunk)
            return
        }
        if sent < 0, UVError(sent) != .tryAgain {
            pool.give(chunk)
            session.fail(UVError(sent), side: sink)
            return
        }
        let done = Int(max(sent, 0))
        buf = uv_buf_init(buf.base + done, UInt32(count - done))
        let request = BufferPool.request(of: chunk)
        // The request names its direction: libuv runs every write callback
        // (with ECANCELED at worst) before the handles' close callbacks, and
        // the session keeps its directions until then.
        HandleStorage.attachUnretained(self, to: request)
        let queued = uv_write(request, sink, &buf, 1) { request, status in
            let direction = HandleStorage.requestOwner(of: request, as: CopyDirection.self)
            direction.pool.give(UnsafeMutableRawPointer(request!))
            direction.didWrite(status)
        }
        if queued < 0 {
            pool.give(chunk)
            session.fail(UVError(queued), side: sink)
            return
        }
        if !hasRoomForARead, !paused {
            paused = true
            uv_read_stop(source)
        }
    }

    /// The sink's queue can take one more full read within the limit.
    @inline(__always)
    private var hasRoomForARead: Bool {
        uv_stream_get_write_queue_size(sink) + readLength <= queueLimit
    }

    private func didWrite(_ status: Int32) {
        guard status == 0 else {
            // ECANCELED: the session is closing already.
            if UVError(status) != .cancelled { session.fail(UVError(status), side: sink) }
            return
        }
        if paused, !session.isClosed, hasRoomForARead {
            paused = false
            if !waitingForChunk, let error = startReading() { session.fail(error, side: source) }
        }
    }

    private func waitForChunk() {
        uv_read_stop(source)
        guard !waitingForChunk else { return }
        waitingForChunk = true
        sessionWhileWaiting = session
        session.waitingForMemory()
        pool.wait(self)
    }

    func resumeAfterWaiting() -> Bool {
        // The pool's queue holds this direction for the whole call.
        defer { sessionWhileWaiting = nil }
        waitingForChunk = false
        guard !session.isClosed else { return false }
        if paused { return true }   // the write callback starts it
        if let error = startReading() { session.fail(error, side: source) }
        return true
    }

    /// The source sent FIN: pass it on once every queued byte is written.
    private func endOfSource() {
        let request = UnsafeMutablePointer<uv_shutdown_t>.allocate(capacity: 1)
        shutdownRequest = request
        HandleStorage.attachUnretained(self, to: request)
        let result = uv_shutdown(request, sink) { request, status in
            let direction = HandleStorage.requestOwner(of: request, as: CopyDirection.self)
            direction.finished = true
            if status == 0 {
                direction.session.directionFinished()
            } else if UVError(status) != .cancelled {
                direction.session.fail(UVError(status), side: direction.sink)
            }
        }
        if result < 0 { session.fail(UVError(result), side: sink) }
    }
}
