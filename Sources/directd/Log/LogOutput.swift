#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Where log bytes go, written without ever blocking.
///
/// Setting O_NONBLOCK on descriptor 2 would change the open file description
/// that directd shares with its parent (a terminal, a shell's pipe): the
/// parent's own writes could then fail with EAGAIN. So each kind of standard
/// error gets a way that leaves that description alone:
///
/// - a pipe, FIFO or terminal: `/proc/self/fd/2` opened again, with O_NONBLOCK,
///   gives a private description of the same file;
/// - a socket (journald's stream): `send` with MSG_DONTWAIT;
/// - a regular file: plain `write` (never EAGAIN);
/// - a pipe or terminal that cannot be opened again (no /proc, a terminal owned
///   by someone else): `poll` for room first, then write at most 512 bytes,
///   which a pipe or terminal with room takes without blocking.
struct LogOutput {
    enum Method: Equatable {
        case write
        case send
        case writeWhenReady(chunk: Int)
        /// Standard error is closed: everything is dropped.
        case discard
    }

    enum WriteResult: Equatable {
        case wrote(Int)
        case wouldBlock
        case failed(Int32)
    }

    let descriptor: Int32
    let method: Method
    /// The descriptor is ours (closed at exit): the reopened private one.
    let ownsDescriptor: Bool
    /// `poll` and libuv can wait for the descriptor to take more.
    let canWait: Bool
    /// The descriptor's file description is shared with others: whoever watches
    /// it (libuv's `uv_poll_init` sets O_NONBLOCK) must restore its flags.
    let isShared: Bool

    static func standardError() -> LogOutput {
        var status = stat()
        guard fstat(2, &status) == 0 else {
            return LogOutput(descriptor: -1, method: .discard, ownsDescriptor: false, canWait: false, isShared: false)
        }
        switch status.st_mode & S_IFMT {
        case S_IFREG:
            return LogOutput(descriptor: 2, method: .write, ownsDescriptor: false, canWait: false, isShared: true)
        case S_IFSOCK:
            return LogOutput(descriptor: 2, method: .send, ownsDescriptor: false, canWait: true, isShared: true)
        case S_IFIFO, S_IFCHR:
            if let own = reopenStandardError(matching: status) {
                return LogOutput(descriptor: own, method: .write, ownsDescriptor: true, canWait: true, isShared: false)
            }
            return LogOutput(descriptor: 2, method: .writeWhenReady(chunk: 512), ownsDescriptor: false,
                             canWait: true, isShared: true)
        default:
            return LogOutput(descriptor: 2, method: .write, ownsDescriptor: false, canWait: false, isShared: true)
        }
    }

    /// A private, non-blocking description of the file on descriptor 2, or nil.
    /// O_NOCTTY: a terminal opened here must not become directd's controlling one.
    private static func reopenStandardError(matching original: stat) -> Int32? {
        let fd = open("/proc/self/fd/2", O_WRONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY)
        guard fd >= 0 else { return nil }
        var status = stat()
        guard fstat(fd, &status) == 0, status.st_dev == original.st_dev, status.st_ino == original.st_ino,
              status.st_rdev == original.st_rdev else {
            close(fd)
            return nil
        }
        return fd
    }

    /// Writes some of `bytes` without blocking.
    func write(_ bytes: UnsafeRawBufferPointer) -> WriteResult {
        while true {
            let written: Int
            switch method {
            case .discard:
                return .wrote(bytes.count)
            case .write:
                written = Glibc.write(descriptor, bytes.baseAddress, bytes.count)
            case .send:
                written = Glibc.send(descriptor, bytes.baseAddress, bytes.count, Int32(MSG_DONTWAIT | MSG_NOSIGNAL))
            case .writeWhenReady(let chunk):
                var ready = pollfd(fd: descriptor, events: Int16(POLLOUT), revents: 0)
                let polled = poll(&ready, 1, 0)
                if polled < 0 {
                    if errno == EINTR { continue }
                    return .failed(errno)
                }
                if polled == 0 { return .wouldBlock }
                written = Glibc.write(descriptor, bytes.baseAddress, min(bytes.count, chunk))
            }
            if written >= 0 { return .wrote(written) }
            switch errno {
            case EINTR: continue
            case EAGAIN, EWOULDBLOCK: return .wouldBlock
            default: return .failed(errno)
            }
        }
    }

    /// Waits at most `milliseconds` for room; false if the time ran out or
    /// waiting is impossible.
    func waitForRoom(milliseconds: Int32) -> Bool {
        guard canWait, milliseconds > 0 else { return false }
        var ready = pollfd(fd: descriptor, events: Int16(POLLOUT), revents: 0)
        return poll(&ready, 1, milliseconds) > 0
    }
}
