import CUV
import UVBind

/// A signal watched on the loop (SIGINT, SIGTERM, SIGUSR1), delivered as a loop callback.
final class SignalWatcher {
    private let handle: UnsafeMutablePointer<uv_signal_t>
    private let action: (Int32) -> Void

    init(loop: UnsafeMutablePointer<uv_loop_t>, signal: Int32, action: @escaping (Int32) -> Void) throws(UVError) {
        handle = HandleStorage.allocate(uv_signal_t.self)
        self.action = action
        if let error = UVError.check(uv_signal_init(loop, handle)) {
            HandleStorage.discard(handle)
            throw error
        }
        HandleStorage.attach(self, to: handle)
        let result = uv_signal_start(handle, { handle, signal in
            HandleStorage.owner(of: handle, as: SignalWatcher.self).action(signal)
        }, signal)
        if let error = UVError.check(result) {
            close()
            throw error
        }
    }

    private var isClosed = false

    /// Closes the handle; its memory goes after libuv's close callback. Once only:
    /// after that callback the handle pointer is no longer valid.
    func close() {
        guard !isClosed else { return }
        isClosed = true
        HandleStorage.close(handle)
    }
}

/// A repeating timer on the loop.
final class LoopTimer {
    private let handle: UnsafeMutablePointer<uv_timer_t>
    private let action: () -> Void

    init(loop: UnsafeMutablePointer<uv_loop_t>, everyMilliseconds interval: UInt64,
         action: @escaping () -> Void) throws(UVError) {
        handle = HandleStorage.allocate(uv_timer_t.self)
        self.action = action
        if let error = UVError.check(uv_timer_init(loop, handle)) {
            HandleStorage.discard(handle)
            throw error
        }
        HandleStorage.attach(self, to: handle)
        let result = uv_timer_start(handle, { handle in
            HandleStorage.owner(of: handle, as: LoopTimer.self).action()
        }, interval, interval)
        if let error = UVError.check(result) {
            close()
            throw error
        }
    }

    private var isClosed = false

    /// Closes the handle; its memory goes after libuv's close callback. Once only:
    /// after that callback the handle pointer is no longer valid.
    func close() {
        guard !isClosed else { return }
        isClosed = true
        HandleStorage.close(handle)
    }
}
