import ArgumentParser
#if canImport(Glibc)
import Glibc
#endif

/// `directd upgrade`: asks a running directd, over its control socket, to
/// upgrade in place (as SIGUSR2 does), and waits for the outcome. 0: the new
/// process serves; 75: rolled back or not started, the old one serves on (the
/// reason is printed); 69: no directd answers, or no outcome in time.
struct Upgrade: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Upgrade a running directd in place, keeping every listener and session; wait for the outcome.")

    @Option(help: ArgumentHelp("The running directd's control-socket. Default: $RUNTIME_DIRECTORY/control.sock, else \(Status.fallbackPath).",
                               valueName: "path"))
    var controlSocket: String?

    @Option(help: ArgumentHelp("Seconds to wait for the outcome (1 to 600).", valueName: "seconds"))
    var timeout: Int = 60

    func validate() throws {
        guard (1...600).contains(timeout) else { throw ValidationError("--timeout must be 1 to 600 seconds, not \(timeout)") }
    }

    func run() throws {
        let path = controlSocket
            ?? Server.defaultControlSocket(environment: ServiceEnvironment.current(["RUNTIME_DIRECTORY"]))
            ?? Status.fallbackPath
        let started: Reply
        do {
            started = try Reply(UnixClient.exchange(path, request: Array("upgrade\n".utf8)))
        } catch {
            let (message, status) = Status.describe(error, path: path)
            Log.error(message)
            throw ExitCode(status.rawValue)
        }
        guard started.text.hasPrefix("upgrading "), let attempt = UInt64(started.text.dropFirst("upgrading ".count)) else {
            return try finish(started.text, pid: started.pid, failed: true)
        }
        var last = "no answer yet"
        for _ in 0..<(timeout * 10) {
            usleep(100_000)
            // Between the old process letting go of the socket and the new one
            // opening it, nothing answers: asked again.
            guard let reply = try? Reply(UnixClient.exchange(path, request: Array("upgrade-outcome \(attempt)\n".utf8))) else {
                last = "the control socket did not answer"
                continue
            }
            if reply.pid != started.pid {
                // Another process answers on the socket: the new one serves.
                let status = (try? UnixClient.exchange(path, request: Array("status\n".utf8))).map { String(decoding: $0, as: UTF8.self) }
                let first = status?.split(separator: "\n").first.map(String.init) ?? "pid \(reply.pid.map(String.init) ?? "?")"
                StandardOutput.line("upgraded: pid \(started.pid.map(String.init) ?? "?") handed over to \(first)")
                return
            }
            switch reply.text {
            case "pending": last = "pending"
            case "unknown": return try finish("the running directd lost track of upgrade \(attempt)", pid: reply.pid, failed: true)
            default: return try finish(reply.text, pid: reply.pid, failed: !reply.text.hasPrefix("upgraded"))
            }
        }
        Log.error("no outcome from \(path) within \(timeout) s (\(last))")
        throw ExitCode(ExitStatus.unavailable.rawValue)
    }

    private func finish(_ text: String, pid: Int32?, failed: Bool) throws {
        guard failed else { return StandardOutput.line(text) }
        if text.hasPrefix("error:") {
            Log.error("directd answered: \(text)")
            throw ExitCode(ExitStatus.software.rawValue)
        }
        Log.error("upgrade \(text); pid \(pid.map(String.init) ?? "?") serves on as before")
        throw ExitCode(ExitStatus.temporaryFailure.rawValue)
    }

    /// One reply line: its text, and the `pid=` that ends it.
    private struct Reply {
        let text: String
        let pid: Int32?

        init(_ bytes: [UInt8]) {
            var line = String(decoding: bytes, as: UTF8.self)
            while line.last == "\n" { line.removeLast() }
            if let space = line.lastIndex(of: " "), line[line.index(after: space)...].hasPrefix("pid=") {
                pid = Int32(line[line.index(space, offsetBy: 5)...])
                text = String(line[..<space])
            } else {
                pid = nil
                text = line
            }
        }
    }
}
