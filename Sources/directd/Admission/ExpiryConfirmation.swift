import CUV
@_spi(Daemon) import UVBind

/// Session deadlines decided only after the loop has looked at the sockets.
///
/// The ticker is a timer, and libuv runs timers before it polls for I/O. After
/// a stall (the process stopped and continued, a callback that blocked), every
/// session's last byte looks old at the tick, though the bytes that came
/// meanwhile wait unread in the sockets, and a connect that completed waits
/// unreported. So the tick only proposes. An idle handle makes that turn's
/// poll return at once (it still reports every socket that is ready), and a
/// check handle, which libuv runs right after the poll's callbacks, cuts only
/// the proposed sessions that saw nothing since: no byte read, for an idle
/// one; a connect still pending, for a connect timeout.
///
/// Why not look at the sockets (FIONREAD) before cutting: it would see bytes
/// waiting on one descriptor, but not a connect that completed, and it costs a
/// system call per socket; the loop's own poll answers for all of them, and
/// through the same code that moves the bytes. Both handles run only while
/// something is proposed, so an ordinary loop turn costs nothing.
final class ExpiryConfirmation {
    private struct Candidate {
        let session: Session
        let expiry: SessionTable.Expiry
        /// The session's last activity when proposed.
        let activity: UInt64
    }

    private let check: UnsafeMutablePointer<uv_check_t>
    private let idle: UnsafeMutablePointer<uv_idle_t>
    private var candidates: [Candidate] = []
    private let expire: (Session, SessionTable.Expiry) -> Void
    private var isClosed = false

    /// `expire` cuts a session whose expiry held after the poll. The init calls
    /// cannot fail (libuv's check and idle inits only fill in the handle).
    init(loop: UnsafeMutablePointer<uv_loop_t>, expire: @escaping (Session, SessionTable.Expiry) -> Void) {
        self.expire = expire
        check = HandleStorage.allocate(uv_check_t.self)
        idle = HandleStorage.allocate(uv_idle_t.self)
        uv_check_init(loop, check)
        uv_idle_init(loop, idle)
        HandleStorage.attach(self, to: check)
        HandleStorage.attach(self, to: idle)
    }

    /// What the tick found expired; cut after this loop turn's poll if nothing moved.
    func propose(_ expired: [(Session, SessionTable.Expiry)]) {
        guard !isClosed, !expired.isEmpty else { return }
        if candidates.isEmpty {
            uv_idle_start(idle) { _ in }   // only so that the poll does not wait
            uv_check_start(check) { handle in
                HandleStorage.withOwner(of: handle, as: ExpiryConfirmation.self) { $0.confirm() }
            }
        }
        for (session, expiry) in expired {
            candidates.append(Candidate(session: session, expiry: expiry, activity: session.lastActivity))
        }
    }

    /// After the poll: cut what is still expired.
    private func confirm() {
        let proposed = candidates
        candidates = []
        uv_idle_stop(idle)
        uv_check_stop(check)
        for candidate in proposed where !candidate.session.isClosed {
            let stillExpired = switch candidate.expiry {
            case .connectTimeout: candidate.session.connecting
            case .idle: !candidate.session.connecting && candidate.session.lastActivity == candidate.activity
            }
            if stillExpired { expire(candidate.session, candidate.expiry) }
        }
    }

    /// Closes both handles (the server is finishing).
    func close() {
        guard !isClosed else { return }
        isClosed = true
        candidates = []
        HandleStorage.close(check)
        HandleStorage.close(idle)
    }
}
