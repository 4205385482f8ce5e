import CUV
@_spi(Daemon) import UVBind

/// What a session needs from the server that accepted it, and what it tells it:
/// a narrow seam, so that a session never reaches into the server's settings
/// (which a reload may replace while the session runs).
protocol SessionHost: AnyObject {
    /// The session opened or closed descriptors (sockets, pipes).
    func session(_ session: Session, changedDescriptorsBy delta: Int)
    /// The upstream could not be reached; the session closes next.
    func session(_ session: Session, upstreamFailed reason: String)
    /// A direction stopped because the relay's memory budget is spent.
    func sessionWaitsForMemory(_ session: Session)
    /// The session has closed both sides (its memory goes after libuv's callbacks).
    func sessionClosed(_ session: Session, reason: String?)
}

/// One accepted client: served with an echo, or relayed to an upstream.
///
/// The client's handle (and the upstream's, for a relay) keep the session alive
/// through their `data` field until libuv has closed them; the session table
/// keeps it listed while it is open. It ends when every direction has finished
/// (both half-closed in turn) or at the first error, which closes both sides; a
/// reset on one side is passed on as a reset to the other.
final class Session {
    /// `unowned(unsafe)`: the host (the server) outlives every session: it runs
    /// the loop until the last one has closed.
    unowned(unsafe) let host: SessionHost
    let loop: UnsafeMutablePointer<uv_loop_t>
    let pool: BufferPool
    /// Bytes queued towards one side before reading the other stops: the value
    /// at accept time, kept for the session's life.
    let writeQueueLimit: Int
    /// Bytes one read may take: a chunk, or less when the write queue limit is
    /// smaller, so that one read never overfills a queue.
    let readLength: Int
    let id: UInt64
    let client: UnsafeMutablePointer<uv_tcp_t>
    private(set) var upstream: UnsafeMutablePointer<uv_tcp_t>?
    /// Where this session relays to, as chosen when it was accepted.
    private(set) var target: Upstream?
    /// The PROXY protocol header to send the upstream first, if any.
    private var proxyProtocol: ProxyHeader.Version?
    private var directions: [any RelayDirection] = []
    private(set) var isClosed = false
    private(set) var connecting = false
    /// The client's address, once accepted (`readPeer`).
    var peer: SocketAddress?
    private(set) var opened: UInt64
    private(set) var lastActivity: UInt64
    /// Descriptors held now: sockets, and whatever the directions hold.
    private(set) var descriptors = 0
    /// Makes a relay's directions (splicing or copying); nil copies.
    var relayStrategy: RelayStrategy?
    /// The counters its events add to (set by the server at accept; nil in
    /// tests that drive a session alone), its listener's index in them and
    /// that listener's counters. `unowned(unsafe)`, as `host`: the server owns
    /// the metrics and outlives every session; and the per-read path then
    /// takes no reference count.
    unowned(unsafe) var metrics: Metrics?
    var listenerIndex = 0
    /// Its listener's counters; its directions take their `ByteCounting` from it.
    var listenerCounters: ListenerCounters?
    /// When the upstream connect began (uv_hrtime, nanoseconds): the loop's
    /// millisecond clock is too coarse for a loopback connect.
    private var connectStarted: UInt64 = 0
    /// Watches a connect an upgrade handed over (`resumeAfterUpgrade`).
    private var connectWatcher: ConnectWatcher?

    /// Descriptors a new session may need: the client's socket, and the
    /// upstream's for a relay. The accept gate checks room for this many.
    static func descriptorsNeeded(relaying: Bool) -> Int { relaying ? 2 : 1 }

    /// Initialises the client handle; nil if libuv refuses (the error is thrown
    /// away: the caller logs and retries later).
    init?(host: SessionHost, loop: UnsafeMutablePointer<uv_loop_t>, pool: BufferPool,
          writeQueueLimit: Int, id: UInt64) {
        self.host = host
        self.loop = loop
        self.pool = pool
        self.writeQueueLimit = writeQueueLimit
        self.readLength = min(BufferPool.size, writeQueueLimit)
        self.id = id
        opened = uv_now(loop)
        lastActivity = opened
        client = HandleStorage.allocate(uv_tcp_t.self)
        clientStream = HandleStorage.stream(client)
        if UVError.check(uv_tcp_init(loop, client)) != nil {
            HandleStorage.discard(client)
            return nil
        }
        HandleStorage.attach(self, to: client)
        holdDescriptors(1)
    }

    /// The client's handle as a stream.
    let clientStream: UnsafeMutablePointer<uv_stream_t>

    /// Reads the client's address, once accepted.
    func readPeer() {
        peer = try? SocketAddress.peer(of: client)
    }

    @inline(__always)
    func touch() { lastActivity = uv_now(loop) }

    /// Where a direction from `source` to `sink` counts its bytes (asked once,
    /// when the direction is made).
    func byteCounting(from source: UnsafeMutablePointer<uv_stream_t>,
                      to sink: UnsafeMutablePointer<uv_stream_t>) -> ByteCounting {
        listenerCounters?.counting(fromClient: source == clientStream, toClient: sink == clientStream)
            ?? ByteCounting(counters: nil, fromClient: false, toClient: false)
    }

    private func holdDescriptors(_ delta: Int) {
        descriptors += delta
        host.session(self, changedDescriptorsBy: delta)
    }

    func startEcho() {
        uv_tcp_nodelay(client, 1)
        start([CopyDirection(session: self, source: clientStream, sink: clientStream)])
    }

    /// Connects to `target`; the client is read only once that succeeds, and
    /// with `proxyProtocol` the upstream gets the PROXY header before any
    /// client byte.
    func startRelay(to target: Upstream, proxyProtocol: ProxyHeader.Version? = nil) {
        self.target = target
        self.proxyProtocol = proxyProtocol
        let handle = HandleStorage.allocate(uv_tcp_t.self)
        if let error = UVError.check(uv_tcp_init(loop, handle)) {
            HandleStorage.discard(handle)
            return close(reason: "cannot create the upstream handle: \(error)", reset: true)
        }
        HandleStorage.attach(self, to: handle)
        upstream = handle
        holdDescriptors(1)
        connecting = true
        connectStarted = uv_hrtime()
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
            metrics?.upstreamFailed(UpstreamFailure(error))
            host.session(self, upstreamFailed: "cannot connect to \(target): \(error)")
            close(reason: nil, reset: true)
        }
    }

    private func connected(_ status: Int32) {
        connecting = false
        guard !isClosed else { return }   // timed out or stopped while connecting
        guard status == 0, let upstream else {
            // A reset, not a FIN: an EOF after no byte would look like an empty
            // successful reply. The same when the upstream reset before this callback.
            metrics?.upstreamFailed(UpstreamFailure(UVError(status)))
            host.session(self, upstreamFailed: "upstream \(target.map(\.description) ?? "?") refused: \(UVError(status))")
            return close(reason: nil, reset: true)
        }
        metrics?.connectTime.observe(Double(uv_hrtime() &- connectStarted) / 1e9)
        uv_tcp_nodelay(client, 1)
        uv_tcp_nodelay(upstream, 1)
        touch()
        let upstreamStream = HandleStorage.stream(upstream)
        var canSplice = true
        if let proxyProtocol {
            // Without the client's address there is nothing true to send.
            guard peer != nil else { return close(reason: "client address unreadable for the PROXY header", reset: true) }
            switch sendProxyHeader(proxyProtocol, to: upstreamStream) {
            case .failure(let error): return fail(error, side: upstreamStream)
            // A header still queued in libuv must go before any client byte, and
            // splice(2) would bypass libuv's write queue: this one copies.
            case .success(let queued): canSplice = !queued
            }
        }
        start((canSplice ? relayStrategy?.directions(for: self, client: clientStream, upstream: upstreamStream) : nil)
              ?? [CopyDirection(session: self, source: clientStream, sink: upstreamStream),
                  CopyDirection(session: self, source: upstreamStream, sink: clientStream)])
    }

    /// Queues the PROXY header on the upstream: libuv writes a stream's
    /// requests in order, so it goes before any client byte. A new connection's
    /// send buffer is empty, so `uv_try_write` takes the header at once; the
    /// queued path (with its own small allocation) is there for correctness.
    /// Succeeds with whether the header is still queued in libuv.
    private func sendProxyHeader(_ version: ProxyHeader.Version,
                                 to upstream: UnsafeMutablePointer<uv_stream_t>) -> Result<Bool, UVError> {
        guard let peer, let destination = try? SocketAddress.local(of: client) else { return .failure(.invalidArgument) }
        let header = ProxyHeader(version: version, client: peer, destination: destination)
        let requestSize = (MemoryLayout<uv_write_t>.size + 15) & ~15
        let block = UnsafeMutableRawPointer.allocate(byteCount: requestSize + ProxyHeader.maximumSize, alignment: 16)
        let data = block + requestSize
        let count = header.write(into: UnsafeMutableRawBufferPointer(start: data, count: ProxyHeader.maximumSize))
        var buf = uv_buf_init(data.assumingMemoryBound(to: CChar.self), UInt32(count))
        let sent = uv_try_write(upstream, &buf, 1)
        if sent == count {
            block.deallocate()
            return .success(false)
        }
        if sent < 0, UVError(sent) != .tryAgain {
            block.deallocate()
            return .failure(UVError(sent))
        }
        let done = Int(max(sent, 0))
        buf = uv_buf_init(buf.base + done, UInt32(count - done))
        let request = block.assumingMemoryBound(to: uv_write_t.self)
        request.pointee.data = block
        let queued = uv_write(request, upstream, &buf, 1) { request, _ in
            // Failures show on the relay's own reads and writes.
            request!.pointee.data.deallocate()
        }
        if queued < 0 {
            block.deallocate()
            return .failure(UVError(queued))
        }
        return .success(true)
    }

    private func start(_ directions: [any RelayDirection]) {
        self.directions = directions
        let extra = directions.reduce(0) { $0 + $1.descriptorsUsed }
        if extra != 0 { holdDescriptors(extra) }
        for direction in directions {
            if let error = direction.start() { return fail(error, side: direction.source) }
        }
    }

    /// A direction hands over to another mid-stream (a splice direction that
    /// falls back to copying); the new one starts at once.
    func replace(_ old: any RelayDirection, with new: any RelayDirection) {
        guard !isClosed, let index = directions.firstIndex(where: { $0 === old }) else { return }
        directions[index] = new
        if let error = new.start() { fail(error, side: new.source) }
    }

    /// The direction that reads from `stream` (each stream is read by one).
    @inline(__always)
    func direction(readingFrom stream: UnsafeMutablePointer<uv_stream_t>) -> any RelayDirection {
        directions.count == 1 || directions[0].source == stream ? directions[0] : directions[1]
    }

    /// Bytes from the client, bytes to the client, so far.
    var byteCounts: (fromClient: UInt64, toClient: UInt64) {
        guard let first = directions.first else { return (0, 0) }
        return (first.bytesMoved, directions.count == 2 ? directions[1].bytesMoved : first.bytesMoved)
    }

    func directionFinished() {
        if directions.allSatisfy(\.finished) { close(reason: nil) }
    }

    func waitingForMemory() {
        host.sessionWaitsForMemory(self)
    }

    // MARK: upgrades

    /// What an upgrade hands over of a session: its sockets and, per
    /// direction, where it stands (`DirectionState`); or, for one still
    /// connecting to its upstream, where it connects and the PROXY header it
    /// owes (the connect goes on in the kernel, whichever process holds it).
    struct Snapshot {
        let client: Int32
        let upstream: Int32?
        let connecting: Bool
        let target: SocketAddress?
        let proxyProtocol: ProxyHeader.Version?
        let directions: [DirectionState]
    }

    /// Taken while the loop waits on the handover, so nothing moves under it;
    /// nil for a closed session, or one whose state cannot be told exactly
    /// (it stays with this process).
    var snapshot: Snapshot? {
        guard !isClosed else { return nil }
        var clientFD: uv_os_fd_t = -1, upstreamFD: uv_os_fd_t = -1
        guard uv_fileno(HandleStorage.base(client), &clientFD) == 0 else { return nil }
        if let upstream, uv_fileno(HandleStorage.base(upstream), &upstreamFD) != 0 { return nil }
        if connecting {
            guard upstream != nil, let target else { return nil }
            return Snapshot(client: clientFD, upstream: upstreamFD, connecting: true, target: target.address,
                            proxyProtocol: proxyProtocol, directions: [])
        }
        guard !directions.isEmpty else { return nil }
        var states: [DirectionState] = []
        for direction in directions {
            guard let state = direction.handoverState else { return nil }
            states.append(state)
        }
        return Snapshot(client: clientFD, upstream: upstream == nil ? nil : upstreamFD, connecting: false,
                        target: target?.address, proxyProtocol: proxyProtocol, directions: states)
    }

    /// Rebuilds a session an upgrade handed over, on this process's loop:
    /// the client's socket (and the upstream's), the counters, the
    /// half-closes and the bytes still to write. Nothing is read or written
    /// until `resumeAfterUpgrade`. On failure the descriptors not taken yet
    /// stay the caller's.
    func restore(client fd: Int32, upstream upstreamFD: Int32?, directions states: [DirectionState],
                 age: UInt64, idle: UInt64) -> UVError? {
        if let error = restoreClient(fd, age: age, idle: idle) { return error }
        guard let upstreamFD else {
            guard states.count == 1, states[0].pipe == nil else { return .invalidArgument }
            guard let echo = CopyDirection(session: self, source: clientStream, sink: clientStream, handedOver: states[0]) else {
                return .noBufferSpace
            }
            directions = [echo]
            return nil
        }
        guard states.count == 2 else { return .invalidArgument }
        guard let upstreamStream = restoreUpstream(upstreamFD) else { return .invalidArgument }
        // As this process's relay-mode says, but bytes handed over go out first.
        guard let relayStrategy,
              let restored = relayStrategy.directions(for: self, client: clientStream, upstream: upstreamStream, states: states) else {
            return .noBufferSpace
        }
        directions = restored
        return nil
    }

    /// Rebuilds a session an upgrade handed over while its upstream was
    /// still connecting: once resumed, the connect's outcome is watched
    /// (`ConnectWatcher`) and the session goes on as if its own connect had
    /// finished.
    func restoreConnecting(client fd: Int32, upstream upstreamFD: Int32, to target: Upstream,
                           proxyProtocol: ProxyHeader.Version?, age: UInt64) -> UVError? {
        if let error = restoreClient(fd, age: age, idle: age) { return error }
        guard restoreUpstream(upstreamFD) != nil else { return .invalidArgument }
        self.target = target
        self.proxyProtocol = proxyProtocol
        connecting = true
        connectStarted = uv_hrtime() &- age &* 1_000_000
        return nil
    }

    private func restoreClient(_ fd: Int32, age: UInt64, idle: UInt64) -> UVError? {
        if let error = UVError.check(uv_tcp_open(client, fd)) { return error }
        readPeer()
        let now = uv_now(loop)
        opened = now > age ? now - age : 0
        lastActivity = now > idle ? now - idle : 0
        uv_tcp_nodelay(client, 1)
        return nil
    }

    private func restoreUpstream(_ fd: Int32) -> UnsafeMutablePointer<uv_stream_t>? {
        let handle = HandleStorage.allocate(uv_tcp_t.self)
        if UVError.check(uv_tcp_init(loop, handle)) != nil {
            HandleStorage.discard(handle)
            return nil
        }
        HandleStorage.attach(self, to: handle)
        upstream = handle
        holdDescriptors(1)
        guard UVError.check(uv_tcp_open(handle, fd)) == nil else { return nil }
        return HandleStorage.stream(handle)
    }

    /// Starts what a restored session had not finished: the directions, or
    /// watching its connect.
    func resumeAfterUpgrade() {
        if connecting {
            var fd: uv_os_fd_t = -1
            guard let upstream, uv_fileno(HandleStorage.base(upstream), &fd) == 0,
                  let watcher = ConnectWatcher(loop: loop, socket: fd, done: { [weak self] status in
                      self?.connectWatcher = nil
                      self?.connected(status)
                  }) else {
                return close(reason: "cannot watch the upstream connect taken over", reset: true)
            }
            connectWatcher = watcher
            return
        }
        for direction in directions where !direction.finished {
            if let error = direction.start() { return fail(error, side: direction.source) }
        }
    }

    /// An error on one side (reset, broken pipe, timeout) ends the session. The
    /// other side is reset rather than given a FIN: its stream is incomplete, and
    /// a FIN would tell it the transfer ended cleanly.
    func fail(_ error: UVError, side: UnsafeMutablePointer<uv_stream_t>) {
        let which = side == clientStream ? "client" : "upstream"
        close(reason: "\(which) \(error)", reset: true)
    }

    /// Closes both sides now: with a reset when the streams are cut short, so
    /// that neither peer takes a cut stream for a complete one. Pending writes
    /// complete with ECANCELED first, and the memory goes when libuv's close
    /// callbacks have run.
    func close(reason: String?, reset: Bool = false) {
        guard !isClosed else { return }
        isClosed = true
        connectWatcher?.close()
        connectWatcher = nil
        directions.forEach { $0.stop() }
        for handle in [client, upstream].compactMap({ $0 }) {
            if reset { HandleStorage.closeWithReset(handle) } else { HandleStorage.close(handle) }
        }
        holdDescriptors(-descriptors)
        host.sessionClosed(self, reason: reason)
    }
}
