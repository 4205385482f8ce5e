import CUV
#if canImport(Glibc)
import Glibc
#endif
@_spi(Daemon) import UVBind

/// A relay direction that moves bytes inside the kernel: `splice(2)` from the
/// source socket into a pipe, then from the pipe into the sink socket. No byte
/// crosses into user space.
///
/// **How the sockets are watched.** libuv has no splice API, and it allows one
/// watcher per descriptor: the connection's `uv_tcp_t` handles own the socket
/// descriptors and their epoll registrations. So each side is watched the way
/// that does not fight them:
/// - *The source, for bytes to read,* through its own TCP handle:
///   `uv_read_start` with an allocator that hands libuv no buffer. libuv then
///   reads nothing and calls back with `UV_ENOBUFS` whenever the socket is
///   readable (or has hung up, or failed): that callback is the readiness
///   event, and the direction splices from the descriptor. libuv's watcher
///   stays the only one on that descriptor, and it costs nothing extra.
/// - *The sink, for room to write,* which libuv can only report for a write it
///   holds itself, through a `dup()` of the sink's descriptor watched by a
///   `uv_poll_t` (`SinkWatcher`). epoll keys registrations by descriptor number
///   and open file, so the duplicate is a registration of its own beside the
///   TCP handle's. It is made only when the sink is full, and closed with the
///   pipe when the direction goes idle: an idle connection holds two
///   descriptors, as a copying one does.
/// Closing stays with the session: `stop()` closes the duplicate first, so that
/// the TCP handle's close (with `SO_LINGER` 0 when the stream was cut) is the
/// socket's last reference, and a reset goes out as on the copy path.
///
/// **Backpressure.** The pipe bounds what is held: the direction splices into
/// its pipe only when the pipe is empty, and while the pipe holds bytes that
/// the sink does not take, it stops reading the source and watches the sink
/// for room instead. The pipe goes back to the pool as soon as it is empty and
/// the source has nothing more, so an idle connection holds no pipe.
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
    /// The sockets' descriptors (owned by their TCP handles).
    private let sourceDescriptor: Int32
    private let sinkDescriptor: Int32
    private let pipes: PipePool
    private let mode: RelayMode
    private var pipe: PipePool.Pipe?
    /// Bytes in the pipe now.
    private var inPipe = 0
    /// Watches the sink for room while it is full (and until the next idle).
    private var sinkWatcher: SinkWatcher?
    private var reading = false
    private(set) var bytesMoved: UInt64 = 0
    /// Where the bytes it moves are counted for the metrics.
    private let counting: ByteCounting
    private(set) var finished = false
    /// Pipes and sink watchers are counted by the pool, as they come and go.
    let descriptorsUsed = 0
    private var sourceEnded = false
    /// A splice from the source has worked: from then on EINVAL is an error, not
    /// a kernel that cannot splice these sockets.
    private var splicedOnce = false
    private var stopped = false
    /// The last read from the source was small (an interactive message): the
    /// socket very likely has nothing more, and the level-triggered watcher
    /// says if it has. In `auto` mode, the next read is then a plain `recv`
    /// (see `copyMessage`); connections start that way.
    private var lastReadWasSmall: Bool
    private static let smallRead = 4096
    /// Copies small messages instead of splicing them (`auto` mode only).
    private let copiesSmallMessages: Bool
    /// One buffer for every direction's small messages: the loop is one thread,
    /// and a message leaves it before the next is read.
    nonisolated(unsafe) private static let scratch = UnsafeMutableRawPointer.allocate(byteCount: scratchSize, alignment: 64)
    private static let scratchSize = 8 << 10

    /// Bytes asked of one splice into the pipe: more than any pipe holds, so the
    /// pipe's room (or the bytes the socket has) is what limits it.
    private static let spliceLength = 1 << 20
    /// Rounds (in and out) on one readiness event before the loop serves other
    /// connections; epoll is level-triggered, so the rest comes next turn.
    private static let roundsPerEvent = 16
    private static let flags = UInt32(CUV_SPLICE_F_MOVE | CUV_SPLICE_F_NONBLOCK)

    /// nil when a handle has no descriptor (it cannot then be spliced).
    /// `state`: where a direction an upgrade handed over stood, its pipe (with
    /// the bytes still for the sink) included.
    init?(session: Session, source: UnsafeMutablePointer<uv_stream_t>, sink: UnsafeMutablePointer<uv_stream_t>,
          pipes: PipePool, mode: RelayMode, state: DirectionState = DirectionState()) {
        var from: uv_os_fd_t = -1, to: uv_os_fd_t = -1
        guard uv_fileno(HandleStorage.base(source), &from) == 0,
              uv_fileno(HandleStorage.base(sink), &to) == 0 else { return nil }
        self.session = session
        self.source = source
        self.sink = sink
        sourceDescriptor = from
        sinkDescriptor = to
        self.pipes = pipes
        self.mode = mode
        counting = session.byteCounting(from: source, to: sink)
        copiesSmallMessages = mode == .auto
        lastReadWasSmall = copiesSmallMessages
        bytesMoved = state.moved
        finished = state.finished
        sourceEnded = state.ending
        if let pipe = state.pipe {
            pipes.adopt(pipe)
            self.pipe = pipe
            inPipe = state.inPipe
        }
    }

    // MARK: upgrades

    var handoverState: DirectionState? {
        // Never queued: a PROXY header still in libuv's queue makes the session copy.
        guard uv_stream_get_write_queue_size(sink) == 0 else { return nil }
        return DirectionState(moved: bytesMoved, finished: finished, ending: sourceEnded && !finished,
                              pipe: inPipe > 0 ? pipe : nil, inPipe: inPipe)
    }

    func start() -> UVError? {
        // A handed-over pipe with bytes: those go to the sink first (and a
        // source's EOF seen before the handover, after them).
        if inPipe > 0 || sourceEnded {
            pump()
            return nil
        }
        return waitForSource()
    }

    /// The session is closing: stop watching, close the sink's duplicate (before
    /// the TCP handles close, so that their close is the socket's last
    /// reference), and let the pipe go. A pipe that still holds bytes is destroyed.
    func stop() {
        guard !stopped else { return }
        stopped = true
        if reading { uv_read_stop(source) }
        releasePipe()
    }

    /// Gives the pipe back (destroyed if it holds bytes) and closes the sink watcher.
    private func releasePipe() {
        if let sinkWatcher {
            sinkWatcher.close()
            self.sinkWatcher = nil
            pipes.descriptorsChanged(-1)
        }
        guard let pipe else { return }
        self.pipe = nil
        if inPipe == 0 { pipes.give(pipe) } else { pipes.destroy(pipe) }
        inPipe = 0
    }

    /// Moves what there is: drains the pipe into the sink, refills it from the
    /// source, until one side would block. Called when the source is readable
    /// or the sink has room.
    func pump() {
        for _ in 0..<Self.roundsPerEvent {
            guard !stopped, !session.isClosed else { return }
            if inPipe > 0 {
                let sent = splice(pipe!.readEnd, nil, sinkDescriptor, nil, inPipe, Self.flags)
                if sent > 0 {
                    inPipe -= sent
                    if inPipe > 0 { continue }
                    if lastReadWasSmall, !sourceEnded {
                        // A small read (an interactive message) had taken all
                        // the socket held: wait for the next event instead of
                        // asking once more only to hear EAGAIN. This keeps a
                        // message at two system calls, as copying costs.
                        releasePipe()
                        _ = waitForSource()
                        return
                    }
                } else {
                    let error = errno
                    if sent < 0, error == EAGAIN { return waitForSink() }
                    return session.fail(UVError(sent < 0 ? -error : -EPIPE), side: sink)
                }
            }
            if sourceEnded { return endOfSource() }
            if pipe == nil {
                // Room for the pipe and for a sink watcher, should the sink fill.
                guard pipes.hasRoom(3), let taken = pipes.take() else { return handOverToCopying(reason: nil) }
                pipe = taken
            }
            if copiesSmallMessages, lastReadWasSmall {
                if copyMessage() { continue }
                return
            }
            let read = spliceIn()
            if read == 0 || (read < 0 && errno == EAGAIN), cuv_at_urgent_mark(sourceDescriptor) == 1 {
                // A TCP urgent byte (MSG_OOB): splice stops at its mark for good
                // (EAGAIN while data waits behind it, which would spin; 0 after a
                // FIN, which would lose that data). recv steps over it, as the
                // copy path's reads do.
                if copyMessage() { continue }
                return
            }
            if read > 0 {
                inPipe = read
                lastReadWasSmall = read < Self.smallRead
                bytesMoved += UInt64(read)
                counting.add(UInt64(read), spliced: true)
                splicedOnce = true
                session.touch()
            } else if read == 0 {
                sourceEnded = true
            } else {
                let error = errno
                if error == EAGAIN {
                    // The source has nothing more for now: the pipe is empty, back it goes.
                    releasePipe()
                    _ = waitForSource()
                    return
                }
                if !splicedOnce, error == EINVAL || error == ENOSYS {
                    return kernelRefused(error)
                }
                return session.fail(UVError(-error), side: source)
            }
        }
        // Out of rounds: stay registered for whichever side is next; the
        // level-triggered event comes back on the loop's next turn.
        if inPipe > 0 { waitForSink() } else { _ = waitForSource() }
    }

    /// `auto`, after a small read: measured, a 64-byte round trip is faster
    /// with `recv` and `send` than with two splices (which allocate pipe
    /// buffers for every message), so the next message is copied through one
    /// shared 8 KiB buffer. What the sink does not take at once goes into the
    /// (empty) pipe, in order, and drains from there like spliced bytes. A read
    /// that fills the buffer is bulk: the reads after it splice. Returns true to
    /// go on pumping.
    private func copyMessage() -> Bool {
        let got = recv(sourceDescriptor, Self.scratch, Self.scratchSize, 0)
        if got <= 0 {
            let error = errno
            if got == 0 {
                sourceEnded = true
                return true
            }
            if error == EAGAIN {
                releasePipe()
                _ = waitForSource()
            } else {
                session.fail(UVError(-error), side: source)
            }
            return false
        }
        bytesMoved += UInt64(got)
        counting.add(UInt64(got), spliced: false)
        session.touch()
        lastReadWasSmall = got < Self.scratchSize
        var sent = send(sinkDescriptor, Self.scratch, got, Int32(MSG_NOSIGNAL))
        if sent < 0 {
            let error = errno
            guard error == EAGAIN else {
                session.fail(UVError(-error), side: sink)
                return false
            }
            sent = 0
        }
        if sent < got {
            // An empty pipe takes at least 8 KiB (two pages, even past the
            // user's pipe-user-pages-soft): the rest fits in one write.
            let queued = write(pipe!.writeEnd, Self.scratch + sent, got - sent)
            guard queued == got - sent else {
                session.fail(UVError(-(queued < 0 ? errno : EIO)), side: sink)
                return false
            }
            inPipe = queued
            return true
        }
        if lastReadWasSmall {
            // The message went through whole: wait for the next.
            releasePipe()
            _ = waitForSource()
            return false
        }
        return true
    }

    @inline(__always)
    private func spliceIn() -> Int {
        if !splicedOnce, SpliceDirection.failFirstSpliceForTests {
            errno = EINVAL
            return -1
        }
        return splice(sourceDescriptor, nil, pipe!.writeEnd, nil, Self.spliceLength, Self.flags)
    }

    /// Reads nothing, but is told when the source is readable (see the type's comment).
    private func waitForSource() -> UVError? {
        if let sinkWatcher, let error = sinkWatcher.watch(false) { return error }
        guard !reading else { return nil }
        reading = true
        let error = UVError.check(uv_read_start(source, { _, _, buf in
            buf!.pointee = uv_buf_init(nil, 0)   // no buffer: libuv reads nothing
        }, { stream, nread, _ in
            // UV_ENOBUFS: readable. libuv reads nothing here, so it can report nothing else.
            HandleStorage.withOwner(of: stream, as: Session.self) { session in
                unsafeDowncast(session.direction(readingFrom: stream!), to: SpliceDirection.self).pump()
            }
        }))
        if let error { session.fail(error, side: source) }
        return error
    }

    /// The sink is full: stop reading the source, watch the sink for room.
    private func waitForSink() {
        if reading {
            reading = false
            uv_read_stop(source)
        }
        if sinkWatcher == nil {
            guard let watcher = SinkWatcher(loop: session.loop, descriptor: sinkDescriptor, direction: self) else {
                return session.fail(UVError(-errno), side: sink)
            }
            sinkWatcher = watcher
            pipes.descriptorsChanged(1)
        }
        if let error = sinkWatcher!.watch(true) { session.fail(error, side: sink) }
    }

    /// The source ended and the pipe is empty: pass a FIN on as a FIN, and a
    /// reset (a pending error on the source) as a reset.
    private func endOfSource() {
        if reading {
            reading = false
            uv_read_stop(source)
        }
        releasePipe()
        if let reset = SocketEnd.pendingError(descriptor: sourceDescriptor) {
            return session.fail(reset, side: source)
        }
        if shutdown(sinkDescriptor, Int32(SHUT_WR)) != 0 {
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
        stop()
        session.replace(self, with: CopyDirection(session: session, source: source, sink: sink, alreadyMoved: bytesMoved))
    }

    /// The sink watcher reported an error.
    fileprivate func sinkFailed(_ error: UVError) {
        guard !stopped else { return }
        session.fail(error, side: sink)
    }

    /// Test hook, read once: with `DIRECTD_TEST_SPLICE_EINVAL=1` in the
    /// environment, every direction's first splice fails with EINVAL as on a
    /// kernel that cannot splice, so that the tests can prove the fallback.
    /// Not an operator setting.
    static let failFirstSpliceForTests: Bool = getenv("DIRECTD_TEST_SPLICE_EINVAL").map { String(cString: $0) == "1" } ?? false
}

/// A full sink, watched for room through a duplicate of its descriptor with a
/// `uv_poll_t` (`PolledDuplicate`; see `SpliceDirection` for why a duplicate).
final class SinkWatcher {
    private var watched: PolledDuplicate!
    /// Cleared at close; the direction outlives its watcher's use (the session
    /// keeps it until the handles' close callbacks).
    private unowned(unsafe) var direction: SpliceDirection?
    private var watching = false
    private var isClosed = false

    init?(loop: UnsafeMutablePointer<uv_loop_t>, descriptor sink: Int32, direction: SpliceDirection) {
        guard let watched = PolledDuplicate(loop: loop, socket: sink, owner: self) else { return nil }
        self.watched = watched
        self.direction = direction
    }

    /// Starts or stops watching for room; nothing when unchanged (each change
    /// costs an epoll_ctl on the loop's next turn).
    func watch(_ on: Bool) -> UVError? {
        guard on != watching, !isClosed else { return nil }
        watching = on
        guard on else { return UVError.check(uv_poll_stop(watched.poll)) }
        return UVError.check(uv_poll_start(watched.poll, Int32(UV_WRITABLE.rawValue)) { handle, status, _ in
            HandleStorage.withOwner(of: handle, as: SinkWatcher.self) { $0.ready(status) }
        })
    }

    private func ready(_ status: Int32) {
        guard !isClosed, let direction else { return }
        if status < 0 {
            // libuv reports a socket error (EPOLLERR) as UV_EBADF and stops the
            // handle; the socket's own error (a reset, say) is the one to tell.
            watching = false
            return direction.sinkFailed(SocketEnd.pendingError(descriptor: watched.descriptor) ?? UVError(status))
        }
        direction.pump()
    }

    /// Stops watching and closes the duplicate.
    func close() {
        guard !isClosed else { return }
        isClosed = true
        direction = nil
        watched.close()
    }
}
