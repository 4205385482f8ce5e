#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CUV
@_spi(Daemon) import UVBind

/// A bounded buffer of whole log lines in front of a `LogOutput`, drained when
/// the output takes more: by a libuv poll watcher on the loop while lines wait,
/// and by each new line before the loop runs or after it ends.
///
/// - Never blocks: the output is written without blocking, and what it does not
///   take waits here.
/// - Bounded: at most `capacity` bytes wait. A line that does not fit is dropped
///   whole, and counted. Once the backlog has drained to half the capacity, one
///   line "N log lines dropped" goes in (it may exceed the capacity by its own
///   length, so it is never dropped itself), and new lines are taken again. The
///   lines in between are dropped too, so that the count stands where the gap is.
/// - Whole lines: each write carries whole lines and, to a pipe, at most
///   PIPE_BUF bytes, so that it is atomic and lines of other writers sharing the
///   pipe do not cut into ours.
final class LogSink {
    /// Default 256 KiB. Sized for a stall, not for a flood: with the rate limiter,
    /// directd's busiest sustained log is under 10 KB/s (about 80 lines a second),
    /// so 256 KiB holds about half a minute of a stopped journald or pipe reader,
    /// on top of the 64 KiB the kernel's pipe holds; and it is a fixed, small
    /// amount of memory next to the connections' buffers.
    static let defaultCapacity = 256 << 10
    /// The environment variable that sets the capacity (bytes, or with K/KiB/M/MiB).
    static let capacityVariable = "DIRECTD_LOG_BUFFER"
    static let capacityRange = (1 << 10)...(64 << 20)

    let capacity: Int
    private let output: LogOutput
    private let dropNotice: (Int) -> String
    private var pending: [UInt8] = []
    private var head = 0
    /// Lines dropped and not yet reported in the log.
    private(set) var droppedUnreported = 0
    /// Every line dropped, reported or not.
    private(set) var droppedTotal = 0
    /// The output failed for good (EPIPE, EBADF): nothing more will be written.
    private(set) var isBroken = false

    private(set) var loop: UnsafeMutablePointer<uv_loop_t>?
    private var watcher: UnsafeMutablePointer<uv_poll_t>?
    private var isWatching = false
    private var canWatch = true

    init(output: LogOutput, capacity: Int = LogSink.defaultCapacity, dropNotice: @escaping (Int) -> String) {
        self.output = output
        self.capacity = capacity
        self.dropNotice = dropNotice
    }

    deinit {
        if output.ownsDescriptor { close(output.descriptor) }
    }

    /// Bytes waiting to be written.
    var backlog: Int { pending.count - head }

    /// Lines waiting to be written.
    var backlogLines: Int { pending[head...].reduce(0) { $0 + ($1 == 0x0A ? 1 : 0) } }

    /// Queues one line (ending with a newline) and writes what the output takes now.
    func append(_ line: String) {
        // On the loop, the watcher says when to write again; trying on every
        // line while the output is full would only add failing system calls.
        if !isWatching { pump() }
        if isBroken {
            drop()
        } else if droppedUnreported > 0 || backlog + line.utf8.count > capacity {
            // Waiting for the backlog to go down before anything new goes in.
            drop()
        } else {
            pending.append(contentsOf: line.utf8)
            if !isWatching { pump() }
        }
    }

    private func drop() {
        droppedUnreported += 1
        droppedTotal += 1
    }

    /// Writes as much as the output takes without blocking, then watches for
    /// room if lines still wait.
    func pump() {
        while backlog > 0, !isBroken {
            let result = pending.withUnsafeBytes { raw in output.write(nextChunk(raw)) }
            switch result {
            case .wrote(let count):
                consume(count)
                if droppedUnreported > 0, backlog <= capacity / 2 {
                    pending.append(contentsOf: dropNotice(droppedUnreported).utf8)
                    droppedUnreported = 0
                }
            case .wouldBlock:
                updateWatcher()
                return
            case .failed:
                // Nobody will read this stream again (a pipe's reader is gone, a
                // closed descriptor): stop trying, and count what is lost.
                isBroken = true
                discardBacklog()
            }
        }
        if droppedUnreported > 0, !isBroken, backlog == 0 {
            // Lines were dropped by `append` and the backlog is already gone.
            pending.append(contentsOf: dropNotice(droppedUnreported).utf8)
            droppedUnreported = 0
            return pump()
        }
        updateWatcher()
    }

    /// Whole lines from the start of the backlog, at most PIPE_BUF bytes when
    /// the lines allow (one longer line, or the rest of a partly written one,
    /// goes alone).
    private func nextChunk(_ raw: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer {
        let limit = Int(PIPE_BUF)
        let end = min(raw.count, head + limit)
        if end == raw.count { return UnsafeRawBufferPointer(rebasing: raw[head..<end]) }
        var cut = end
        while cut > head, raw[cut - 1] != 0x0A { cut -= 1 }
        return UnsafeRawBufferPointer(rebasing: raw[head..<(cut > head ? cut : end)])
    }

    private func consume(_ count: Int) {
        head += count
        if head == pending.count {
            pending.removeAll(keepingCapacity: true)
            head = 0
        } else if head >= capacity / 2 {
            pending.removeSubrange(0..<head)
            head = 0
        }
    }

    private func discardBacklog() {
        let lost = backlogLines
        droppedUnreported += lost
        droppedTotal += lost
        pending.removeAll()
        head = 0
    }

    /// Writes the backlog, waiting for room at most `timeoutMilliseconds` in all;
    /// what is left then is dropped. Returns the lines that could not be written
    /// (including earlier drops that could not be reported).
    func flush(timeoutMilliseconds: Int) -> Int {
        let deadline = MonotonicClock.milliseconds() + UInt64(max(0, timeoutMilliseconds))
        pump()
        while backlog > 0, !isBroken {
            let now = MonotonicClock.milliseconds()
            guard now < deadline, output.waitForRoom(milliseconds: Int32(clamping: deadline - now)) else { break }
            pump()
        }
        if backlog > 0 { discardBacklog() }
        return droppedUnreported
    }

    // MARK: the loop

    /// Watches for room on `loop` whenever lines wait.
    func attach(to loop: UnsafeMutablePointer<uv_loop_t>) {
        guard self.loop == nil else { return }
        self.loop = loop
        pump()
    }

    /// Closes the watcher; the loop must run once more for libuv to free it.
    func detach() {
        if let watcher { HandleStorage.close(watcher) }
        watcher = nil
        isWatching = false
        loop = nil
    }

    private func updateWatcher() {
        let wanted = backlog > 0 && !isBroken
        if wanted, !isWatching { startWatching() }
        if !wanted, isWatching, let watcher {
            uv_poll_stop(watcher)
            isWatching = false
        }
    }

    private func startWatching() {
        guard let loop, output.canWait, canWatch else { return }
        if watcher == nil {
            let handle = HandleStorage.allocate(uv_poll_t.self)
            // uv_poll_init sets O_NONBLOCK on the descriptor: on a shared
            // description (descriptor 2 itself), put the flags back at once;
            // libuv only hands the descriptor to epoll, which does not care.
            let flags = output.isShared ? fcntl(output.descriptor, F_GETFL) : -1
            let initialized = uv_poll_init(loop, handle, output.descriptor)
            if flags >= 0 { _ = fcntl(output.descriptor, F_SETFL, flags) }
            guard initialized == 0 else {
                // epoll refuses this kind of file: lines are written as they come,
                // and at exit, instead.
                HandleStorage.discard(handle)
                canWatch = false
                return
            }
            HandleStorage.attach(self, to: handle)
            // Never the reason the loop keeps running: at the end, `flush` waits, bounded.
            uv_unref(HandleStorage.base(handle))
            watcher = handle
        }
        guard let watcher else { return }
        isWatching = uv_poll_start(watcher, Int32(UV_WRITABLE.rawValue)) { handle, _, _ in
            HandleStorage.owner(of: handle, as: LogSink.self).pump()
        } == 0
    }

    /// The capacity the environment asks for, or the default and why not.
    static func capacity(fromEnvironment text: String?) -> (Int, complaint: String?) {
        guard let text else { return (defaultCapacity, nil) }
        let units: [(String, Int)] = [("KiB", 1 << 10), ("MiB", 1 << 20), ("K", 1 << 10), ("M", 1 << 20), ("", 1)]
        for (suffix, scale) in units where text.hasSuffix(suffix) {
            let number = text.dropLast(suffix.count)
            if !number.isEmpty, number.allSatisfy({ $0.isASCII && $0.isNumber }), let value = Int(number),
               value <= capacityRange.upperBound / scale, capacityRange.contains(value * scale) {
                return (value * scale, nil)
            }
            break
        }
        return (defaultCapacity, "\(capacityVariable)=\"\(text)\" is not a size from 1K to 64M: using 256K")
    }
}
