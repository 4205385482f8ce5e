import CUV
#if canImport(Glibc)
import Glibc
#endif

/// A network namespace of the test's own, for tests that make interfaces come
/// and go: never the host's. Linux keeps the namespace per thread, so the
/// calling thread alone moves into a new, empty one (`unshare(CLONE_NEWNET)`),
/// runs the body (which must not suspend: a synchronous test), and moves back;
/// `ip`, spawned from that thread, works inside it. The namespace, and every
/// interface made in it, goes when the last socket in it closes.
enum NetworkNamespace {
    /// Root, and a kernel that allows new network namespaces, and iproute2.
    static let available: Bool = {
        guard getuid() == 0, access("/usr/sbin/ip", X_OK) == 0 || access("/sbin/ip", X_OK) == 0 else { return false }
        var ok = false
        let thread = Thread { ok = (try? NetworkNamespace.run { }) != nil }
        thread.join()
        return ok
    }()

    struct Failure: Error, CustomStringConvertible { let description: String }

    static func run(_ body: () throws -> Void) throws {
        let saved = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC)
        guard saved >= 0 else { throw Failure(description: "cannot open this thread's namespace") }
        defer { close(saved) }
        guard unshare(CLONE_NEWNET) == 0 else { throw Failure(description: "unshare(CLONE_NEWNET): errno \(errno)") }
        defer {
            // Back to where the thread was, whatever happened: other tests run on it later.
            precondition(setns(saved, CLONE_NEWNET) == 0, "cannot return to the test's network namespace")
        }
        try ip("link", "set", "lo", "up")
        try body()
    }

    /// Runs `ip ARGS...` in the calling thread's namespace; throws on failure.
    static func ip(_ arguments: String...) throws {
        try ip(arguments)
    }

    static func ip(_ arguments: [String]) throws {
        let status = spawn(["ip"] + arguments)
        guard status == 0 else { throw Failure(description: "ip \(arguments.joined(separator: " ")) exited \(status)") }
    }

    /// posix_spawnp from this thread (a forked child starts in its namespace).
    static func spawn(_ arguments: [String]) -> Int32 {
        var pid = pid_t()
        let argv = arguments.map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        guard posix_spawnp(&pid, arguments[0], &actions, nil, argv, environ) == 0 else { return -1 }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        return (status & 0x7F) == 0 ? (status >> 8) & 0xFF : -1
    }
}

// glibc declares these only with _GNU_SOURCE, which Swift's Glibc module lacks.
@_silgen_name("unshare") private func unshare(_ flags: Int32) -> Int32
@_silgen_name("setns") private func setns(_ fd: Int32, _ type: Int32) -> Int32
private let CLONE_NEWNET: Int32 = 0x4000_0000

/// A plain pthread, for running one check on a thread of its own.
final class Thread {
    private var thread = pthread_t()
    private let body: () -> Void

    init(_ body: @escaping () -> Void) {
        self.body = body
        let box = Unmanaged.passRetained(self).toOpaque()
        pthread_create(&thread, nil, { raw in
            let me = Unmanaged<Thread>.fromOpaque(raw!).takeRetainedValue()
            me.body()
            return nil
        }, box)
    }

    func join() { pthread_join(thread, nil) }
}
