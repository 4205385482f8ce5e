import CUV
#if canImport(Glibc)
import Glibc
#endif
@_spi(Daemon) import UVBind

/// The process an upgrade starts: the binary at the recorded path, with the
/// same arguments, the handover channel as descriptor 3 and
/// `DIRECTD_UPGRADE_FD=3` in its environment (libuv's `uv_spawn`, which
/// reports a missing or non-executable file at once and reaps the child).
///
/// `WATCHDOG_PID` is left out of the environment: it names this process, and
/// without it the new one applies `WATCHDOG_USEC` to itself once it is the
/// main process. Loop thread only.
final class NewProcess {
    static let channelDescriptor: Int32 = 3
    static let environmentKey = "DIRECTD_UPGRADE_FD"

    private let handle: UnsafeMutablePointer<uv_process_t>
    let pid: Int32
    /// How it ended (an exit status, or the signal that ended it); nil while it runs.
    private(set) var ending: String?
    private var onExit: ((String) -> Void)?
    private var isClosed = false

    /// Starts `path`; libuv's error when it cannot (ENOENT, EACCES, ...).
    init(path: String, arguments: [String], channel: HandoverChannel, loop: UnsafeMutablePointer<uv_loop_t>,
         onExit: @escaping (String) -> Void) throws(UVError) {
        let handle = HandleStorage.allocate(uv_process_t.self)
        self.handle = handle
        self.onExit = onExit
        var environment: [String] = []
        var index = 0
        while let entry = environ[index] {
            let text = String(cString: entry)
            index += 1
            if text.hasPrefix(Self.environmentKey + "=") || text.hasPrefix("WATCHDOG_PID=") { continue }
            environment.append(text)
        }
        environment.append("\(Self.environmentKey)=\(Self.channelDescriptor)")
        let file = strdup(path)
        let argv = Self.cStrings(arguments)
        let envp = Self.cStrings(environment)
        defer {
            Glibc.free(file)
            Self.release(argv)
            Self.release(envp)
        }
        var stdio = [uv_stdio_container_t](repeating: uv_stdio_container_t(), count: 4)
        for index in 0..<4 {
            stdio[index].flags = UV_INHERIT_FD
            stdio[index].data.fd = index < 3 ? Int32(index) : channel.fd
        }
        let result = stdio.withUnsafeMutableBufferPointer { stdio -> Int32 in
            var options = uv_process_options_t()
            options.file = UnsafePointer(file)
            options.args = argv
            options.env = envp
            options.stdio_count = 4
            options.stdio = stdio.baseAddress
            options.exit_cb = { process, status, signal in
                HandleStorage.owner(of: process, as: NewProcess.self)
                    .exited(signal != 0 ? "was killed by signal \(signal)" : "exited with status \(status)")
            }
            return uv_spawn(loop, handle, &options)
        }
        if let error = UVError.check(result) {
            // uv_spawn initialised the handle before failing: it must be closed.
            HandleStorage.close(handle)
            throw error
        }
        pid = handle.pointee.pid
        HandleStorage.attach(self, to: handle)
    }

    private func exited(_ how: String) {
        ending = how
        let callback = onExit
        onExit = nil
        callback?(how)
        close()
    }

    /// Ends it (an upgrade rolled back); it is reaped when it has gone.
    func kill() {
        guard ending == nil, !isClosed else { return }
        _ = uv_process_kill(handle, SIGKILL)
    }

    /// Ends it and waits (at most 2 s) until it has exited, without reaping
    /// it (libuv does, and reports how it ended): once it has held the
    /// sockets, this process must not touch them while it might still run.
    /// The loop waits meanwhile; SIGKILL takes a few milliseconds.
    func killAndAwaitExit() {
        guard ending == nil, !isClosed else { return }
        _ = uv_process_kill(handle, SIGKILL)
        for _ in 0..<2000 {
            var info = siginfo_t()
            // WNOWAIT: the child stays a zombie for libuv's SIGCHLD handler.
            if waitid(P_PID, id_t(pid), &info, WEXITED | WNOHANG | WNOWAIT) != 0 || info.si_signo != 0 { return }
            usleep(1000)
        }
        Log.warning("upgrade: pid \(pid) has not exited 2 s after SIGKILL")
    }

    /// Stops watching it; it runs on (it serves now). Once only.
    func release() {
        onExit = nil
        close()
    }

    private func close() {
        guard !isClosed else { return }
        isClosed = true
        HandleStorage.close(handle)
    }

    private static func cStrings(_ strings: [String]) -> UnsafeMutablePointer<UnsafeMutablePointer<CChar>?> {
        let array = UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>.allocate(capacity: strings.count + 1)
        for (index, string) in strings.enumerated() { array[index] = strdup(string) }
        array[strings.count] = nil
        return array
    }

    private static func release(_ array: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) {
        var index = 0
        while let entry = array[index] {
            Glibc.free(entry)
            index += 1
        }
        array.deallocate()
    }
}
