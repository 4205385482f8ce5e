import CUV
#if canImport(Glibc)
import Glibc
#endif
import UVBind

/// A relay direction that moves bytes inside the kernel: `splice(2)` from the
/// source socket into a pipe, then from the pipe into the sink socket. No byte
/// crosses into user space.
///
/// **How the sockets are watched.** libuv has no splice API, and it allows one
/// watcher per descriptor: the connection's `uv_tcp_t` handles own the socket
/// descriptors, and libuv registers them in epoll whenever a read or a write is
/// pending on them. A spliced connection therefore never starts a read or a
/// write on its TCP handles; each socket is instead watched through a `dup()` of
/// its descriptor with a `uv_poll_t` (`SplicedSocket`). epoll keys its
/// registrations by descriptor number and open file, so the duplicate is a
/// registration of its own: libuv's watcher for the original stays idle
/// (or, once a direction falls back to copying, works beside it without either
/// disturbing the other). Closing stays with the session: `stop()` closes the
/// duplicates first, so that the TCP handle's close (with `SO_LINGER` 0 when
/// the stream was cut) is the last reference to the socket, and the reset goes
/// out as it does on the copy path. The price is one more descriptor per
/// socket, which the descriptor budget counts.
///
/// **Backpressure.** The pipe bounds what is held: a direction splices into its
/// pipe only when the pipe is empty, and while the pipe holds bytes that the
/// sink does not take, it stops watching the source and watches the sink for
/// room instead. The pipe goes back to the pool as soon as it is empty and the
/// source has nothing more, so an idle connection holds no pipe.
///
/// **Ends.** The source's EOF (splice returns 0) becomes `shutdown(SHUT_WR)` of
/// the sink once the pipe is empty; the socket sends its FIN after every byte
/// already in it. An error on either side goes to the session, which resets
/// both. When no pipe can be had (the pool is at its limit, or descriptors are
/// short), or the kernel refuses to splice these sockets (EINVAL or ENOSYS at
/// the first splice, in `auto` mode), the direction hands over to a
/// `CopyDirection` while its pipe is empty, and the connection goes on.
final class SpliceDirection: RelayDirection {
    unowned(unsafe) let session: Session
    let source: UnsafeMutablePointer<uv_stream_t>
    let sink: UnsafeMutablePointer<uv_stream_t>
    /// The source's socket (this direction reads it) and the sink's (it writes it).
    private let input: SplicedSocket
    private let output: SplicedSocket
    private let pipes: PipePool
    private let mode: RelayMode
    private var pipe: PipePool.Pipe?
    /// Bytes in the pipe now.
    private var inPipe = 0
    private(set) var bytesMoved: UInt64 = 0
    private(set) var finished = false
    /// The duplicate of its source's descriptor (each socket's duplicate is
    /// counted once, by the direction that reads it); pipes are counted by the pool.
    let descriptorsUsed = 1
    private var sourceEnded = false
    /// A splice from the source has worked: from then on EINVAL is an error, not
    /// a kernel that cannot splice these sockets.
    private var splicedOnce = false
    private var stopped = false
    /// The last splice from the source moved less than `smallRead`: the socket
    /// very likely has nothing more, and the level-triggered poll says if it has.
    private var lastReadWasSmall = false
    private static let smallRead = 4096

    /// Bytes asked of one splice into the pipe: more than any pipe holds, so the
    /// pipe's room (or the bytes the socket has) is what limits it.
    private static let spliceLength = 1 << 20
    /// Rounds (in and out) on one readiness event before the loop serves other
    /// connections; epoll is level-triggered, so the rest comes next turn.
    private static let roundsPerEvent = 16
    private static let flags = UInt32(CUV_SPLICE_F_MOVE | CUV_SPLICE_F_NONBLOCK)

    init(session: Session, source: UnsafeMutablePointer<uv_stream_t>, sink: UnsafeMutablePointer<uv_stream_t>,
         input: SplicedSocket, output: SplicedSocket, pipes: PipePool, mode: RelayMode) {
        self.session = session
        self.source = source
        self.sink = sink
        self.input = input
        self.output = output
        self.pipes = pipes
        self.mode = mode
        input.reader = self
        output.writer = self
    }

    func start() -> UVError? {
        input.watch(readable: true)
    }

    /// The session is closing: stop watching, close both duplicates (before the
    /// TCP handles close, so that their close is the socket's last reference),
    /// and let the pipe go. A pipe that still holds bytes is destroyed.
    func stop() {
        guard !stopped else { return }
        stopped = true
        input.close()
        output.close()
        releasePipe()
    }

    private func releasePipe() {
        guard let pipe else { return }
        self.pipe = nil
        if inPipe == 0 { pipes.give(pipe) } else { pipes.destroy(pipe) }
        inPipe = 0
    }

    /// Moves what there is: drains the pipe into the sink, refills it from the
    /// source, until one side would block. Called when the source is readable
    /// or the sink writable.
    func pump() {
        for _ in 0..<Self.roundsPerEvent {
            guard !stopped, !session.isClosed else { return }
            if inPipe > 0 {
                let sent = splice(pipe!.readEnd, nil, output.descriptor, nil, inPipe, Self.flags)
                if sent > 0 {
                    inPipe -= sent
                    if inPipe > 0 { continue }
                    if lastReadWasSmall, !sourceEnded {
                        // A small read (an interactive message) had taken all
                        // the socket held: wait for the next instead of asking
                        // once more only to hear EAGAIN. This keeps a round trip
                        // at two system calls, as copying costs.
                        releasePipe()
                        return waitForSource()
                    }
                } else {
                    let error = errno
                    if sent < 0, error == EAGAIN { return waitForSink() }
                    return session.fail(UVError(sent < 0 ? -error : -EPIPE), side: sink)
                }
            }
            if sourceEnded { return endOfSource() }
            if pipe == nil {
                guard let taken = pipes.take() else { return handOverToCopying(reason: nil) }
                pipe = taken
            }
            let read = spliceIn()
            if read > 0 {
                inPipe = read
                lastReadWasSmall = read < Self.smallRead
                bytesMoved += UInt64(read)
                splicedOnce = true
                session.touch()
            } else if read == 0 {
                sourceEnded = true
            } else {
                let error = errno
                if error == EAGAIN {
                    // The source has nothing more for now: the pipe is empty, back it goes.
                    releasePipe()
                    return waitForSource()
                }
                if !splicedOnce, error == EINVAL || error == ENOSYS {
                    return kernelRefused(error)
                }
                return session.fail(UVError(-error), side: source)
            }
        }
        // Out of rounds: stay registered for whichever side is next; the
        // level-triggered event comes back on the loop's next turn.
        if inPipe > 0 { waitForSink() } else { waitForSource() }
    }

    @inline(__always)
    private func spliceIn() -> Int {
        if !splicedOnce, SpliceDirection.failFirstSpliceForTests {
            errno = EINVAL
            return -1
        }
        return splice(input.descriptor, nil, pipe!.writeEnd, nil, Self.spliceLength, Self.flags)
    }

    private func waitForSink() {
        if let error = input.watch(readable: false) ?? output.watch(writable: true) {
            session.fail(error, side: sink)
        }
    }

    private func waitForSource() {
        if let error = output.watch(writable: false) ?? input.watch(readable: true) {
            session.fail(error, side: source)
        }
    }

    /// The source sent FIN and the pipe is empty: pass it on.
    private func endOfSource() {
        releasePipe()
        _ = input.watch(readable: false)
        _ = output.watch(writable: false)
        if shutdown(output.descriptor, Int32(SHUT_WR)) != 0 {
            return session.fail(UVError(-errno), side: sink)
        }
        finished = true
        session.directionFinished()
    }

    /// EINVAL or ENOSYS at the first splice: this kernel (or this kind of
    /// socket) cannot splice. `auto` copies instead; `splice` was asked for
    /// explicitly, so the connection fails and says why.
    private func kernelRefused(_ error: Int32) {
        if mode == .splice {
            Log.warning("#\(session.id): splice(2) refused: \(UVError(-error)); relay-mode splice cannot relay this connection (auto would copy)")
            return session.fail(UVError(-error), side: source)
        }
        handOverToCopying(reason: "splice(2) refused: \(UVError(-error))")
    }

    /// Gives this direction to a `CopyDirection` for the rest of the connection.
    /// Only called with an empty pipe, so no byte is left behind or reordered.
    private func handOverToCopying(reason: String?) {
        Log.debug("#\(session.id): copying \(source == session.clientStream ? "from the client" : "from the upstream"): \(reason ?? "no pipe free (pool limit or descriptors)")")
        stopped = true
        releasePipe()
        input.leave(reader: self)
        output.leave(writer: self)
        session.replace(self, with: CopyDirection(session: session, source: source, sink: sink, alreadyMoved: bytesMoved))
    }

    /// The poll handle reported an error for one of this direction's sockets.
    fileprivate func failed(_ error: UVError, socket: SplicedSocket) {
        guard !stopped else { return }
        session.fail(error, side: socket === input ? source : sink)
    }

    /// Test hook, read once: with `DIRECTD_TEST_SPLICE_EINVAL=1` in the
    /// environment, every direction's first splice fails with EINVAL as on a
    /// kernel that cannot splice, so that the tests can prove the fallback.
    /// Not an operator setting.
    static let failFirstSpliceForTests: Bool = getenv("DIRECTD_TEST_SPLICE_EINVAL").map { String(cString: $0) == "1" } ?? false
}

/// One socket of a spliced connection, watched through a duplicate of its
/// descriptor with a `uv_poll_t` (see `SpliceDirection` for why). Shared by the
/// connection's two directions: one reads this socket, the other writes it.
final class SplicedSocket {
    /// The duplicate: splices use it, the poll handle watches it.
    let descriptor: Int32
    private let poll: UnsafeMutablePointer<uv_poll_t>
    /// The direction that reads this socket, and the one that writes it, while
    /// they splice (strong: the poll handle keeps this object alive until its
    /// close callback, and `close` drops both).
    fileprivate var reader: SpliceDirection?
    fileprivate var writer: SpliceDirection?
    private var readable = false
    private var writable = false
    private var polling: Int32 = 0
    private(set) var isClosed = false

    /// Duplicates `stream`'s descriptor and makes its poll handle; nil when a
    /// descriptor or the handle cannot be had (the caller copies instead).
    init?(loop: UnsafeMutablePointer<uv_loop_t>, stream: UnsafeMutablePointer<uv_stream_t>) {
        var fd: uv_os_fd_t = -1
        guard uv_fileno(HandleStorage.base(stream), &fd) == 0 else { return nil }
        descriptor = fcntl(fd, F_DUPFD_CLOEXEC, 0)
        guard descriptor >= 0 else { return nil }
        poll = HandleStorage.allocate(uv_poll_t.self)
        guard uv_poll_init_socket(loop, poll, descriptor) == 0 else {
            HandleStorage.discard(poll)
            Glibc.close(descriptor)
            return nil
        }
        HandleStorage.attach(self, to: poll)
    }

    func watch(readable: Bool) -> UVError? {
        self.readable = readable
        return update()
    }

    func watch(writable: Bool) -> UVError? {
        self.writable = writable
        return update()
    }

    /// Starts, changes or stops the poll only when the events change: each
    /// change costs an epoll_ctl on the loop's next turn.
    private func update() -> UVError? {
        guard !isClosed else { return nil }
        let events = (readable ? Int32(UV_READABLE.rawValue) : 0) | (writable ? Int32(UV_WRITABLE.rawValue) : 0)
        guard events != polling else { return nil }
        polling = events
        if events == 0 { return UVError.check(uv_poll_stop(poll)) }
        return UVError.check(uv_poll_start(poll, events) { handle, status, events in
            HandleStorage.withOwner(of: handle, as: SplicedSocket.self) { $0.ready(status, events) }
        })
    }

    private func ready(_ status: Int32, _ events: Int32) {
        if status < 0 {
            // libuv reports a socket error (EPOLLERR) as UV_EBADF and stops the
            // handle; the socket's own error (a reset, say) is the one to tell.
            polling = 0
            (reader ?? writer)?.failed(pendingError() ?? UVError(status), socket: self)
            return
        }
        // A hang-up or an error shows as readable: the splice reports what it was.
        let readEvents = Int32(UV_READABLE.rawValue) | Int32(UV_DISCONNECT.rawValue)
        if readable, events & readEvents != 0, let reader { reader.pump() }
        if writable, !isClosed, events & Int32(UV_WRITABLE.rawValue) != 0, let writer { writer.pump() }
    }

    /// The socket's pending error (SO_ERROR), if any.
    private func pendingError() -> UVError? {
        var error: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        guard getsockopt(descriptor, SOL_SOCKET, SO_ERROR, &error, &length) == 0, error != 0 else { return nil }
        return UVError(-error)
    }

    fileprivate func leave(reader direction: SpliceDirection) {
        if reader === direction { reader = nil; _ = watch(readable: false) }
        if reader == nil, writer == nil { close() }
    }

    fileprivate func leave(writer direction: SpliceDirection) {
        if writer === direction { writer = nil; _ = watch(writable: false) }
        if reader == nil, writer == nil { close() }
    }

    /// Stops watching and closes the duplicate. `uv_close` takes the
    /// descriptor out of epoll at once (the handle's memory goes in its close
    /// callback), so closing the duplicate right after is safe.
    func close() {
        guard !isClosed else { return }
        isClosed = true
        reader = nil
        writer = nil
        HandleStorage.close(poll)
        Glibc.close(descriptor)
    }
}
