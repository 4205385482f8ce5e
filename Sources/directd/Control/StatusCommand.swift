import ArgumentParser

/// `directd status`: asks a running directd, over its control socket, what it
/// is doing. Nothing there is exit 69 (unavailable), a socket it may not open 77.
struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show what a running directd is doing, read from its control socket.")

    static let fallbackPath = "/run/directd/control.sock"

    @Option(help: ArgumentHelp("The running directd's control-socket. Default: $RUNTIME_DIRECTORY/control.sock, else \(Status.fallbackPath).",
                               valueName: "path"))
    var controlSocket: String?

    @Flag(help: "One JSON object, for scripts.")
    var json = false

    func run() throws {
        let path = controlSocket
            ?? Server.defaultControlSocket(environment: ServiceEnvironment.current(["RUNTIME_DIRECTORY"]))
            ?? Self.fallbackPath
        let reply: [UInt8]
        do {
            reply = try UnixClient.exchange(path, request: Array((json ? "status json\n" : "status\n").utf8))
        } catch {
            let (message, status) = Self.describe(error, path: path)
            Log.error(message)
            throw ExitCode(status.rawValue)
        }
        let text = String(decoding: reply, as: UTF8.self)
        if text.hasPrefix("error:") {
            Log.error("directd at \(path) answered: \(text.dropFirst(7).trimmedOfWhitespace)")
            throw ExitCode(ExitStatus.software.rawValue)
        }
        for line in text.split(separator: "\n", omittingEmptySubsequences: false).dropLast() {
            StandardOutput.line(String(line))
        }
    }

    /// What a failed exchange with the control socket means, and its exit code.
    static func describe(_ error: UnixClient.Failure, path: String) -> (String, ExitStatus) {
        switch error {
        case .nothingListening(let why):
            ("no directd answers at \(path) (\(why)): is it running, with control-socket set to this path?", .unavailable)
        case .permissionDenied(let why):
            ("cannot open the control socket \(path) (\(why)): it is for directd's own user", .noPermission)
        case .failed(let why):
            ("the control socket \(path) did not answer: \(why)", .unavailable)
        }
    }
}
