import CUV
#if canImport(Glibc)
import Glibc
#endif
@_spi(Daemon) import UVBind

/// Tells when a connect another process began has finished: an upgrade hands
/// over sessions still connecting to their upstream, and libuv reports only
/// the connects it started itself. It watches a duplicate of the socket for
/// writability, once (`PolledDuplicate`, beside the TCP handle that owns the
/// socket), then reports the socket's error: 0 when it connected, else a
/// libuv error.
final class ConnectWatcher {
    private var watched: PolledDuplicate!
    private var descriptor: Int32 { watched.descriptor }
    private var done: ((Int32) -> Void)?

    init?(loop: UnsafeMutablePointer<uv_loop_t>, socket: Int32, done: @escaping (Int32) -> Void) {
        guard let watched = PolledDuplicate(loop: loop, socket: socket, owner: self) else { return nil }
        self.watched = watched
        self.done = done
        let started = uv_poll_start(watched.poll, Int32(UV_WRITABLE.rawValue | UV_DISCONNECT.rawValue)) { handle, status, _ in
            HandleStorage.withOwner(of: handle, as: ConnectWatcher.self) { $0.ready(status) }
        }
        if started != 0 {
            close()
            return nil
        }
    }

    private func ready(_ status: Int32) {
        guard let done else { return }
        // libuv reports a socket error (EPOLLERR) as UV_EBADF: the socket's
        // own error (refused, reset, unreachable) is the one to tell.
        var error: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        if getsockopt(descriptor, SOL_SOCKET, SO_ERROR, &error, &length) != 0 { error = errno }
        if error == 0, status == 0, !Self.isConnected(descriptor) { error = ENOTCONN }
        close()
        done(error != 0 ? -error : status)
    }

    private static func isConnected(_ fd: Int32) -> Bool {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        return withUnsafeMutablePointer(to: &storage) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { getpeername(fd, $0, &length) == 0 }
        }
    }

    /// Stops watching and closes the duplicate (the session closes first, or it connected).
    func close() {
        guard done != nil else { return }
        done = nil
        watched.close()
    }
}
