#if canImport(Glibc)
import Glibc
#endif

/// SIGUSR1's summary, coalesced: at most one line per `interval`; requests in
/// between are folded into one line, logged when the interval is over.
///
/// A storm of SIGUSR1 (one sender can make some 270,000 a second) must not
/// starve the loop. Folding the lines is not enough, since each signal still
/// costs a handler run, a write into libuv's signal pipe and a callback; so
/// for the rest of the interval SIGUSR1 is blocked on the loop thread, where
/// the kernel folds a storm into one pending signal at no cost. It is let
/// through again at the first tick after the interval, and a pending one then
/// arrives as the next request. Loop thread only (the mask is this thread's).
final class SummaryRequests {
    /// Milliseconds between two summary lines.
    static let interval: UInt64 = 1000

    private let log: () -> Void
    /// Loop time before which no summary is logged.
    private var quietUntil: UInt64 = 0
    /// A request arrived during the quiet interval (already in libuv's pipe).
    private var pending = false
    private var blocked = false

    init(log: @escaping () -> Void) {
        self.log = log
    }

    /// A SIGUSR1 arrived.
    func requested(now: UInt64) {
        guard now >= quietUntil else {
            pending = true
            return
        }
        emit(now: now)
    }

    /// From the lifecycle's ticker: the folded request, once the interval is over.
    func tick(now: UInt64) {
        guard now >= quietUntil else { return }
        if pending { emit(now: now) }
        if blocked, now >= quietUntil { setBlocked(false) }
    }

    private func emit(now: UInt64) {
        pending = false
        quietUntil = now + Self.interval
        log()
        if !blocked { setBlocked(true) }
    }

    private func setBlocked(_ block: Bool) {
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGUSR1)
        pthread_sigmask(block ? SIG_BLOCK : SIG_UNBLOCK, &set, nil)
        blocked = block
    }
}
