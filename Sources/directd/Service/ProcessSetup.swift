#if canImport(Glibc)
import Glibc
#endif

/// What the process needs before anything else runs: the standard descriptors
/// present, and the signals whose default action would end directd out of its
/// control either ignored (those of writing) or held (those it answers) until
/// their watchers exist.
enum ProcessSetup {
    /// First thing in `main`, before libuv or the log opens a descriptor or writes.
    static func prepare() {
        openClosedStandardDescriptors()
        // A log reader gone (EPIPE) or a log file at its size limit (EFBIG) must
        // not end the process: the write fails, and the log drops and counts the
        // line. A peer that disappears makes its write fail with EPIPE, and that
        // connection closes.
        signal(SIGPIPE, SIG_IGN)
        signal(SIGXFSZ, SIG_IGN)
    }

    /// A closed 0, 1 or 2 would be the next descriptor opened: libuv's epoll
    /// descriptor there makes `uv_loop_close` abort (it asserts fd > 2), and a
    /// socket there would receive whatever writes to stdout. /dev/null takes
    /// each closed one, in order, so that each open lands on the lowest.
    private static func openClosedStandardDescriptors() {
        for fd: Int32 in 0...2 where fcntl(fd, F_GETFD) == -1 && errno == EBADF {
            let opened = open("/dev/null", O_RDWR)
            if opened >= 0, opened != fd {
                // Not the lowest free one (cannot happen, 0-2 are checked in order).
                dup2(opened, fd)
                close(opened)
            }
        }
    }

    /// The signals the server answers (Lifecycle's watchers).
    static let answered: [Int32] = [SIGINT, SIGTERM, SIGUSR1, SIGHUP, SIGUSR2]

    /// Holds the answered signals from the start of serving until their
    /// watchers exist: one sent in between (systemd may reload right after
    /// READY, an operator right after the first `listening on`) stays pending
    /// instead of taking its default action, which ends the process.
    static func holdSignals() {
        var held = answeredSet()
        sigprocmask(SIG_BLOCK, &held, nil)
    }

    /// Lets the held signals through, once the watchers are installed (libuv's
    /// handler runs on this thread, so they must not stay blocked here). A
    /// parent may also have started directd with them blocked: unblocked here
    /// too, or a stop request would never arrive. Pending ones arrive now.
    static func releaseSignals() {
        var held = answeredSet()
        // SIGCHLD too: libuv reaps an upgrade's new process when it arrives,
        // and a rollback waits for that.
        sigaddset(&held, SIGCHLD)
        sigprocmask(SIG_UNBLOCK, &held, nil)
    }

    private static func answeredSet() -> sigset_t {
        var set = sigset_t()
        sigemptyset(&set)
        for signal in answered { sigaddset(&set, signal) }
        return set
    }
}
