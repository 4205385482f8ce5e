import CUV
@_spi(Daemon) import UVBind

/// Calls back on the loop while a descriptor the loop does not otherwise watch
/// (the handover channel) is readable or has hung up. Loop thread only.
final class ReadableWatcher {
    private let poll: UnsafeMutablePointer<uv_poll_t>
    private let action: () -> Void
    private var isClosed = false

    init(loop: UnsafeMutablePointer<uv_loop_t>, descriptor: Int32, action: @escaping () -> Void) throws(UVError) {
        poll = HandleStorage.allocate(uv_poll_t.self)
        self.action = action
        if let error = UVError.check(uv_poll_init(loop, poll, descriptor)) {
            HandleStorage.discard(poll)
            throw error
        }
        HandleStorage.attach(self, to: poll)
        let events = Int32(UV_READABLE.rawValue | UV_DISCONNECT.rawValue)
        if let error = UVError.check(uv_poll_start(poll, events, { handle, _, _ in
            // An error (status < 0) shows as a failed read too.
            HandleStorage.owner(of: handle, as: ReadableWatcher.self).action()
        })) {
            close()
            throw error
        }
    }

    /// Stops watching; call before the descriptor closes. Once only.
    func close() {
        guard !isClosed else { return }
        isClosed = true
        HandleStorage.close(poll)
    }
}
