import CUV
import UVBind

/// Coalesces reload requests: one reload in flight at a time, every request
/// that arrives meanwhile folds into one more reload after it, and reloads
/// start at most once per `minimumInterval` milliseconds.
///
/// About 270,000 SIGHUP a second once starved the loop, each one a whole
/// reload: now a request costs a comparison, and the storm costs one reload
/// per interval. A request is never lost: the last one always gets a reload
/// that starts after it. Loop thread only.
final class ReloadQueue {
    private let loop: UnsafeMutablePointer<uv_loop_t>
    let minimumInterval: UInt64
    /// Starts a reload for this cause; the owner calls `finished()` when it is done.
    private let begin: (String) -> Void
    private(set) var inFlight = false
    /// The cause of the next reload, and how many more requests folded into it.
    private var pending: (cause: String, folded: Int)?
    /// Waits out `minimumInterval` before the next reload starts.
    private var delay: LoopTimer?
    private var lastStart: UInt64?
    private var isClosed = false

    init(loop: UnsafeMutablePointer<uv_loop_t>, minimumInterval: UInt64, begin: @escaping (String) -> Void) {
        self.loop = loop
        self.minimumInterval = minimumInterval
        self.begin = begin
    }

    /// A reload is wanted: now, or after the one in flight, or once the
    /// interval since the last start has passed.
    func request(cause: String) {
        guard !isClosed else { return }
        if let folded = pending {
            pending = (folded.cause, folded.folded + 1)
        } else {
            pending = (cause, 0)
        }
        startWhenDue()
    }

    /// The reload that `begin` started is done.
    func finished() {
        inFlight = false
        startWhenDue()
    }

    /// Drops what is pending; a reload in flight still calls `finished()`.
    func close() {
        isClosed = true
        pending = nil
        delay?.close()
        delay = nil
    }

    private func startWhenDue() {
        guard let next = pending, !inFlight, delay == nil, !isClosed else { return }
        let now = uv_now(loop)
        if let lastStart, now &- lastStart < minimumInterval {
            do throws(UVError) {
                let timer = try LoopTimer(loop: loop, everyMilliseconds: minimumInterval - (now &- lastStart)) {
                    [unowned self] in
                    delay?.close()
                    delay = nil
                    startWhenDue()
                }
                timer.unref()   // serving keeps the loop alive, not a reload to come
                delay = timer
                return
            } catch {
                Log.warning("cannot start the reload timer: \(error); reloading now")
            }
        }
        pending = nil
        inFlight = true
        lastStart = now
        begin(next.folded > 0 ? "\(next.cause), and \(next.folded) more requests folded into this one" : next.cause)
    }
}
