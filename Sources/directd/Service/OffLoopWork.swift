import CUV
@_spi(Daemon) import UVBind

/// One job for libuv's thread pool (`uv_queue_work`): `work` runs on a pool
/// thread, then `done` gets its value on the loop thread. For what may block
/// (reading a file, a resolver that does not answer), so that the loop never
/// waits for it.
///
/// The value crosses threads, so it is `Sendable`; `work` must touch nothing
/// that the loop owns (no Log, no handles). `cancel()` drops a job that has
/// not started; one already running finishes, and `done` gets nil.
final class OffLoopWork {
    private let request: UnsafeMutablePointer<uv_work_t>
    private let job: Job
    private var isFinished = false

    /// Queues `work`; throws if libuv refuses (then nothing runs).
    init<Value: Sendable>(loop: UnsafeMutablePointer<uv_loop_t>, work: @escaping @Sendable () -> Value,
                          done: @escaping (Value?) -> Void) throws(UVError) {
        let slot = Slot<Value>()
        job = Job(run: { slot.value = work() }, finish: { cancelled in done(cancelled ? nil : slot.value) })
        request = HandleStorage.allocate(uv_work_t.self)
        // Retained until the after-work callback, which libuv always runs once
        // (with UV_ECANCELED for a cancelled job).
        request.pointee.data = Unmanaged.passRetained(job).toOpaque()
        let queued = uv_queue_work(loop, request, { request in
            Unmanaged<Job>.fromOpaque(request!.pointee.data).takeUnretainedValue().run()
        }, { request, status in
            let job = Unmanaged<Job>.fromOpaque(request!.pointee.data).takeRetainedValue()
            request!.deallocate()
            job.finish(status == UV_ECANCELED.rawValue)
        })
        if let error = UVError.check(queued) {
            Unmanaged<Job>.fromOpaque(request.pointee.data).release()
            request.deallocate()
            throw error
        }
        job.onFinish = { [weak self] in self?.isFinished = true }
    }

    /// Drops the job if no pool thread has taken it yet; `done` then gets nil.
    func cancel() {
        guard !isFinished else { return }
        _ = uv_cancel(UnsafeMutableRawPointer(request).assumingMemoryBound(to: uv_req_t.self))
    }

    /// `run` on a pool thread, then `finish` on the loop, never at the same
    /// time: libuv hands the job from one to the other through its queue's
    /// mutex and a uv_async, which orders the write of the value before its
    /// read. That is what the `@unchecked` stands for.
    private final class Job: @unchecked Sendable {
        let run: () -> Void
        private let complete: (Bool) -> Void
        var onFinish: (() -> Void)?

        init(run: @escaping () -> Void, finish: @escaping (Bool) -> Void) {
            self.run = run
            complete = finish
        }

        func finish(_ cancelled: Bool) {
            onFinish?()
            onFinish = nil
            complete(cancelled)
        }
    }

    private final class Slot<Value>: @unchecked Sendable {
        var value: Value?
    }
}
