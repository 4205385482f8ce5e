import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif
import CUV
import UVBind

/// Decides what happens to each pending connection: accept it now, hold every
/// listener until descriptors are free, or (once accepted) refuse it.
///
/// Holding works with libuv's rule: a connection callback that does not accept
/// leaves the connection with libuv, which stops watching that listener until
/// `uv_accept` is called again, so waiting clients stay in the kernel's backlog
/// instead of being accepted and dropped. Loop thread only.
final class AcceptGate {
    private let loop: UnsafeMutablePointer<uv_loop_t>
    /// Accepts one pending connection of a listener (the server's part).
    var accept: (Listener) -> Void = { _ in }

    // MARK: descriptors

    /// The process's descriptor limit, read again on every pending connection:
    /// an operator may lower it under a running process (`prlimit --pid`).
    private(set) var descriptorLimit = AcceptGate.currentDescriptorLimit()
    /// Descriptors in use before any session: libuv's, the listeners, the
    /// reserves, the standard streams.
    private var baseline = 16
    /// Descriptors the sessions hold.
    private(set) var sessionDescriptors = 0
    /// Spare descriptors, one per listener, given up when accept fails with
    /// EMFILE so that the pending connection can be taken off libuv and held.
    private var reserves: [Int32] = []
    private var wantedReserves = 0
    /// Listeners left unaccepted until descriptors are free.
    private var held: [Listener] = []
    private var resumeAt: UInt64 = 0
    /// Margin for libuv's own descriptors (its EMFILE reserve, the signal pipe).
    private static let margin = 4
    /// Milliseconds between attempts to resume.
    private static let retryInterval: UInt64 = 250

    init(loop: UnsafeMutablePointer<uv_loop_t>) {
        self.loop = loop
    }

    deinit {
        reserves.forEach { Glibc.close($0) }
    }

    static func currentDescriptorLimit() -> Int {
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        return Int(clamping: limit.rlim_cur)   // RLIM_INFINITY is all ones: clamps to Int.max
    }

    /// Keeps one spare descriptor per listener, and counts what is open before
    /// any session (less `sessions`: open already, counted by their sessions).
    func prepare(listeners: Int, excluding sessions: Int = 0) {
        wantedReserves = listeners
        refillReserves()
        baseline = max((Self.openDescriptors() ?? 16) - sessions, 0)
    }

    private static func openDescriptors() -> Int? {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")).map { $0.count - 1 }
    }

    /// The listeners changed (a reload, the network): one reserve each.
    func listenersChanged(to count: Int) {
        wantedReserves = count
        while reserves.count > count, let fd = reserves.popLast() { Glibc.close(fd) }
        refillReserves()
    }

    @discardableResult
    private func refillReserves() -> Bool {
        while reserves.count < wantedReserves {
            let fd = open("/dev/null", O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { return false }
            reserves.append(fd)
        }
        return true
    }

    /// Descriptors counted as in use: the baseline measured at start and the sessions'.
    var descriptorsInUse: Int { baseline + sessionDescriptors }

    func sessionDescriptorsChanged(by delta: Int) {
        sessionDescriptors += delta
    }

    /// Reads the limit again; logs when it changed.
    func refreshLimit() {
        let limit = Self.currentDescriptorLimit()
        guard limit != descriptorLimit else { return }
        let used = baseline + sessionDescriptors
        Log.warning("descriptor limit changed from \(descriptorLimit) to \(limit) (\(used) in use)"
                    + (used + Self.margin >= limit ? "; accepting pauses until descriptors are free" : ""))
        descriptorLimit = limit
    }

    /// Room for `count` more descriptors, with libuv's margin.
    func hasRoom(for count: Int) -> Bool {
        baseline + sessionDescriptors + count + Self.margin <= descriptorLimit
    }

    // MARK: pending connections

    /// A connection is pending on `listener` (or accepting failed): accept it now,
    /// or hold the listener. `needed` is how many descriptors a session takes.
    func connectionPending(on listener: Listener, error: UVError?, needed: Int) {
        if let error {
            return acceptFailed(on: listener, error: error)
        }
        if !held.isEmpty {
            return hold(listener)
        }
        refreshLimit()
        if !hasRoom(for: needed) {
            Log.warning("accepting paused: \(sessionDescriptors) descriptors held by connections, near the limit of \(descriptorLimit); retrying shortly")
            return hold(listener)
        }
        accept(listener)
    }

    /// Leaves `listener`'s connection pending; tried again after a short while.
    func hold(_ listener: Listener) {
        if !held.contains(where: { $0 === listener }) { held.append(listener) }
        resumeAt = uv_now(loop) + Self.retryInterval
    }

    var isHolding: Bool { !held.isEmpty }

    /// Out of descriptors (EMFILE/ENFILE) at accept. libuv first tries its own
    /// fallback, which accepts and closes every pending connection, and calls
    /// back only when that is impossible; either way the limit has been reached
    /// sooner than the check above expected (it was lowered, or another part of
    /// the process took descriptors). Giving up one reserve lets libuv accept
    /// the connection, which `connectionPending` then holds unaccepted: libuv
    /// stops watching the listener, and nothing spins.
    private func acceptFailed(on listener: Listener, error: UVError) {
        guard error == .tooManyOpenFiles || error == .tooManyOpenFilesInSystem else {
            Log.warning("accept on \(listener.address) failed: \(error)", category: .acceptFailed)
            return
        }
        refreshLimit()
        if held.isEmpty {
            Log.warning("accept on \(listener.address) failed: \(error) (limit \(descriptorLimit), \(baseline + sessionDescriptors) in use); accepting paused, retrying shortly")
        }
        hold(listener)
        if let fd = reserves.popLast() { Glibc.close(fd) }
    }

    /// Called on every tick: resumes held listeners once descriptors are free.
    func tick(now: UInt64, needed: Int, open sessions: Int) {
        refreshLimit()
        guard !held.isEmpty, now >= resumeAt else { return }
        guard refillReserves(), hasRoom(for: needed) else {
            resumeAt = now + Self.retryInterval
            return
        }
        let listeners = held
        held = []
        Log.info("accepting again (\(sessions) connections open)")
        for listener in listeners where !listener.isClosed {
            accept(listener)
        }
    }

    /// Stops holding (the listeners are closing).
    func release() {
        held = []
    }

    /// Gives the reserves back (the server is done).
    func close() {
        held = []
        reserves.forEach { Glibc.close($0) }
        reserves = []
        wantedReserves = 0
    }
}
