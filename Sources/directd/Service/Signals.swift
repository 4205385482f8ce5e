import CUV
@_spi(Daemon) import UVBind

/// A libuv handle that calls back on the loop: a signal watcher or a timer.
/// One shape for both: init, start, a Swift action, and a close that happens once.
final class LoopWatcher<Handle> {
    private let handle: UnsafeMutablePointer<Handle>
    let action: (Int32) -> Void
    private var isClosed = false

    private init(loop: UnsafeMutablePointer<uv_loop_t>,
                 initialize: (UnsafeMutablePointer<uv_loop_t>, UnsafeMutablePointer<Handle>) -> Int32,
                 start: (UnsafeMutablePointer<Handle>) -> Int32,
                 action: @escaping (Int32) -> Void) throws(UVError) {
        handle = HandleStorage.allocate(Handle.self)
        self.action = action
        if let error = UVError.check(initialize(loop, handle)) {
            HandleStorage.discard(handle)
            throw error
        }
        HandleStorage.attach(self, to: handle)
        if let error = UVError.check(start(handle)) {
            close()
            throw error
        }
    }

    /// Lets the loop end while this handle is still active: for timers that
    /// serve others (the service manager's watchdog) and must not keep directd up.
    func unref() {
        guard !isClosed else { return }
        uv_unref(HandleStorage.base(handle))
    }

    /// Closes the handle; its memory goes after libuv's close callback. Once only:
    /// after that callback the handle pointer is no longer valid.
    func close() {
        guard !isClosed else { return }
        isClosed = true
        HandleStorage.close(handle)
    }
}

typealias SignalWatcher = LoopWatcher<uv_signal_t>
typealias LoopTimer = LoopWatcher<uv_timer_t>

extension LoopWatcher where Handle == uv_signal_t {
    /// Calls `action` with the signal's number each time it arrives.
    convenience init(loop: UnsafeMutablePointer<uv_loop_t>, signal: Int32,
                     action: @escaping (Int32) -> Void) throws(UVError) {
        try self.init(loop: loop, initialize: { uv_signal_init($0, $1) }, start: { handle in
            uv_signal_start(handle, { handle, signal in
                HandleStorage.owner(of: handle, as: SignalWatcher.self).action(signal)
            }, signal)
        }, action: action)
    }
}

extension LoopWatcher where Handle == uv_timer_t {
    /// Calls `action` every `interval` milliseconds.
    convenience init(loop: UnsafeMutablePointer<uv_loop_t>, everyMilliseconds interval: UInt64,
                     action: @escaping () -> Void) throws(UVError) {
        try self.init(loop: loop, initialize: { uv_timer_init($0, $1) }, start: { handle in
            uv_timer_start(handle, { handle in
                HandleStorage.owner(of: handle, as: LoopTimer.self).action(0)
            }, interval, interval)
        }, action: { _ in action() })
    }
}
