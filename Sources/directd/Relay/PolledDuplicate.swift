import CUV
#if canImport(Glibc)
import Glibc
#endif
@_spi(Daemon) import UVBind

/// A `uv_poll_t` on a duplicate of a socket that a TCP handle owns: libuv
/// allows one watcher per descriptor, and epoll keys a registration by
/// descriptor and open file, so the duplicate is watched beside the TCP
/// handle without fighting it (`SinkWatcher`, `ConnectWatcher`). The owner
/// attached to the poll handle is retained until it has closed.
struct PolledDuplicate {
    let descriptor: Int32
    let poll: UnsafeMutablePointer<uv_poll_t>

    init?(loop: UnsafeMutablePointer<uv_loop_t>, socket: Int32, owner: AnyObject) {
        descriptor = fcntl(socket, F_DUPFD_CLOEXEC, 0)
        guard descriptor >= 0 else { return nil }
        poll = HandleStorage.allocate(uv_poll_t.self)
        guard uv_poll_init_socket(loop, poll, descriptor) == 0 else {
            HandleStorage.discard(poll)
            Glibc.close(descriptor)
            return nil
        }
        HandleStorage.attach(owner, to: poll)
    }

    /// `uv_close` takes the descriptor out of epoll at once (the handle's
    /// memory goes in its close callback), so closing the duplicate right
    /// after is safe.
    func close() {
        HandleStorage.close(poll)
        Glibc.close(descriptor)
    }
}
