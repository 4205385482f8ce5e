import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// directd started with posix_spawn, where a test needs what Foundation's
/// Process cannot give: a standard descriptor closed, a pipe whose reader is
/// gone, or its log read the instant a line appears. Killed at deinit.
final class Spawned {
    let pid: pid_t
    /// The read end of directd's stderr when `stderr` is `.pipe`; -1 otherwise.
    let logFD: Int32
    private(set) var logText = ""
    private var exitStatus: Int32?

    enum Standard {
        /// /dev/null.
        case null
        /// Closed in the child (`<&-`, `>&-`, `2>&-`).
        case closed
        /// stderr only: a pipe the test reads (`logFD`).
        case pipe
        /// stderr only: a pipe whose read end is already closed.
        case deadPipe
        /// Appended to this file.
        case file(String)
    }

    /// `environment`: variables set (or replaced) in the child's environment.
    init(_ arguments: [String], executable: String = directdPath, prefix: [String] = [],
         stdin: Standard = .null, stdout: Standard = .null, stderr: Standard = .pipe,
         environment: [String: String] = [:]) throws {
        // posix_spawn failed with EBADF in one full run (of many), most likely
        // because a descriptor this init had just made was closed under it by
        // other code of the parallel test process (not found yet; not directd,
        // which is not running in this process). Tried again with new
        // descriptors, at most three times.
        var attempt = 0
        while true {
            attempt += 1
            do {
                (pid, logFD) = try Self.spawn(arguments, executable: executable, prefix: prefix,
                                              stdin: stdin, stdout: stdout, stderr: stderr, environment: environment)
                return
            } catch let failure as SpawnFailure where failure.status == EBADF && attempt < 3 {
                continue
            }
        }
    }

    private struct SpawnFailure: Error, CustomStringConvertible {
        let status: Int32
        let description: String
    }

    private static func spawn(_ arguments: [String], executable: String, prefix: [String],
                              stdin: Standard, stdout: Standard, stderr: Standard,
                              environment: [String: String]) throws -> (pid_t, Int32) {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        var pipeEnds: [Int32] = [-1, -1]
        var read: Int32 = -1
        for (fd, how) in [(Int32(0), stdin), (1, stdout), (2, stderr)] {
            switch how {
            case .null:
                posix_spawn_file_actions_addopen(&actions, fd, "/dev/null", fd == 0 ? O_RDONLY : O_WRONLY, 0)
            case .closed:
                posix_spawn_file_actions_addclose(&actions, fd)
            case .file(let path):
                posix_spawn_file_actions_addopen(&actions, fd, path, O_WRONLY | O_CREAT | O_APPEND, 0o600)
            case .pipe, .deadPipe:
                guard pipe(&pipeEnds) == 0 else { throw TestFailure("pipe: \(errno)") }
                // Not inherited as they are (the child gets the write end as `fd` only).
                pipeEnds.forEach { _ = fcntl($0, F_SETFD, FD_CLOEXEC) }
                posix_spawn_file_actions_adddup2(&actions, pipeEnds[1], fd)
                if case .deadPipe = how {
                    // No reader anywhere from the start: directd's first write meets EPIPE.
                    Glibc.close(pipeEnds[0])
                } else {
                    read = pipeEnds[0]
                }
            }
        }
        closeInheritedDescriptors(&actions, from: 3)
        let argv = prefix + [executable] + arguments
        var cArguments = argv.map { strdup($0) } + [nil]
        defer { cArguments.forEach { free($0) } }
        // Every signal at its default action and unblocked, as from a login
        // shell: the test runner's dispositions and mask would otherwise carry
        // over across exec and hide what directd itself does.
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGPIPE, SIGXFSZ, SIGHUP, SIGUSR1, SIGTERM, SIGINT] { sigaddset(&defaults, signal) }
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        // Nothing blocked either (a blocked one would never take its action).
        var unblocked = sigset_t()
        sigemptyset(&unblocked)
        posix_spawnattr_setsigmask(&attributes, &unblocked)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))
        var child: pid_t = 0
        var inherited: [String] = []
        var index = 0
        while let entry = environ[index] {
            let text = String(cString: entry)
            index += 1
            if let equals = text.firstIndex(of: "="), environment[String(text[..<equals])] != nil { continue }
            inherited.append(text)
        }
        var cEnvironment = (inherited + environment.map { "\($0.key)=\($0.value)" }).map { strdup($0) } + [nil]
        defer { cEnvironment.forEach { free($0) } }
        let status = posix_spawn(&child, argv[0], &actions, &attributes, &cArguments, &cEnvironment)
        if pipeEnds[1] >= 0 { Glibc.close(pipeEnds[1]) }
        guard status == 0 else {
            if read >= 0 { Glibc.close(read) }
            throw SpawnFailure(status: status, description: "posix_spawn \(argv[0]): \(status)")
        }
        return (child, read)
    }

    /// Reads the log (bounded by `timeout`) until it contains `text`; true if it
    /// did. Returns at once when the text is already there.
    func waitForLog(_ text: String, timeout: Double = 10) -> Bool {
        guard logFD >= 0 else { return false }
        let deadline = Date().addingTimeInterval(timeout)
        var buffer = [UInt8](repeating: 0, count: 4096)
        while !logText.contains(text) {
            let left = deadline.timeIntervalSinceNow
            guard left > 0 else { return false }
            var ready = pollfd(fd: logFD, events: Int16(POLLIN), revents: 0)
            guard poll(&ready, 1, Int32(min(left * 1000, 1000)) + 1) > 0 else { continue }
            let count = Glibc.read(logFD, &buffer, buffer.count)
            if count <= 0 { return logText.contains(text) }   // directd closed its stderr (exited)
            logText += String(decoding: buffer[0..<count], as: UTF8.self)
        }
        return true
    }

    /// Sends `signal`, unless the process has been reaped (its pid may be another's by then).
    func signal(_ signal: Int32) {
        if exitStatus == nil { kill(pid, signal) }
    }

    /// Waits (bounded) for the exit; the status as Process gives it (the exit
    /// code, or the negative signal number), nil if it did not exit in time.
    func waitForExit(timeout: Double = 15) -> Int32? {
        if let exitStatus { return exitStatus }
        let deadline = Date().addingTimeInterval(timeout)
        var status: Int32 = 0
        repeat {
            let result = waitpid(pid, &status, WNOHANG)
            if result == pid {
                // WIFEXITED / WTERMSIG by hand: the C macros are not imported.
                let signal = status & 0x7f
                exitStatus = signal == 0 ? (status >> 8) & 0xff : -signal
                return exitStatus
            }
            if result < 0 { return nil }
            usleep(5_000)
        } while Date() < deadline
        return nil
    }

    var isRunning: Bool { waitForExit(timeout: 0) == nil }

    deinit {
        if exitStatus == nil {
            kill(pid, SIGKILL)
            waitpid(pid, nil, 0)
        }
        if logFD >= 0 { Glibc.close(logFD) }
    }
}

/// Connects to 127.0.0.1:`port` until it works (bounded); true if it did.
func waitUntilAccepting(port: UInt16, timeout: Double = 10) -> Bool {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        if (try? TCPClient(host: "127.0.0.1", port: port, connectTimeout: 1)) != nil { return true }
        usleep(10_000)
    }
    return false
}

/// One echo round trip through directd on 127.0.0.1:`port`.
func echoRoundTrip(port: UInt16, bytes: Int = 64) -> Bool {
    guard let client = try? TCPClient(host: "127.0.0.1", port: port, connectTimeout: 2) else { return false }
    let payload = randomBytes(bytes)
    return client.send(payload) && client.receive(exactly: bytes) == payload
}
