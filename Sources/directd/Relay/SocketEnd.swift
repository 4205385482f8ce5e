import CUV
#if canImport(Glibc)
import Glibc
#endif
@_spi(Daemon) import UVBind

/// How a socket's stream ended, asked of the kernel once, at its end.
///
/// libuv cannot be trusted to report a reset: when EPOLLHUP comes with a
/// partial read, it makes up an EOF without the read that would have returned
/// ECONNRESET. Measured on Linux 6.18 (a 62,437-byte burst, then the peer's
/// FIN or reset, 20 runs each): after a reset, `SO_ERROR` held ECONNRESET (or
/// EPIPE, after a FIN first) every time, and 0 after every FIN. The other
/// signs are ambiguous: `tcp_info` says CLOSE after a reset but also after a
/// FIN that answers our own, and POLLHUP comes with both; POLLERR agrees with
/// SO_ERROR but costs a poll. So one `getsockopt` at EOF decides; the read
/// path pays nothing.
enum SocketEnd {
    /// The socket's pending error (a reset, say), if any; reading it clears it.
    static func pendingError(descriptor: Int32) -> UVError? {
        var error: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        guard getsockopt(descriptor, SOL_SOCKET, SO_ERROR, &error, &length) == 0, error != 0 else { return nil }
        return UVError(-error)
    }

    /// The pending error of a stream's socket (nil without a descriptor).
    static func pendingError(of stream: UnsafeMutablePointer<uv_stream_t>) -> UVError? {
        var descriptor: uv_os_fd_t = -1
        guard uv_fileno(HandleStorage.base(stream), &descriptor) == 0 else { return nil }
        return pendingError(descriptor: descriptor)
    }
}
