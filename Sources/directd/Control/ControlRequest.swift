#if canImport(Glibc)
import Glibc
#endif

/// The control socket's protocol: one line in, the reply out, then the socket
/// closes. A line longer than the buffer, or an unknown command, gets an
/// `error:` line.
/// - `status`, `status json`: the report.
/// - `upgrade`: starts an in-place upgrade; `upgrading <attempt> pid=<pid>`.
/// - `upgrade-outcome <attempt>`: `pending`, `upgraded: ...`, `rolled back: ...`
///   or `not started: ...`, each followed by ` pid=<pid>`; a process that does
///   not know the attempt (the new one, after a handover) says `unknown pid=<pid>`.
enum ControlRequest {
    /// Bytes a request line may take.
    static let headBytes = 256

    /// The reply to the first line of `head`, or nil while no line is complete.
    static func respond(to head: UnsafeRawBufferPointer, _ answers: ControlAnswers) -> [UInt8]? {
        guard let newline = head.firstIndex(of: UInt8(ascii: "\n")) else { return nil }
        var line = head[..<newline]
        if line.last == UInt8(ascii: "\r") { line = line.dropLast() }
        let text = String(decoding: line, as: UTF8.self)
        let pid = " pid=\(getpid())\n"
        switch text {
        case "status": return Array(answers.report().text.utf8)
        case "status json": return Array(answers.report().json.utf8)
        case "upgrade":
            switch answers.startUpgrade() {
            case .success(let attempt): return Array("upgrading \(attempt)\(pid)".utf8)
            case .failure(let refusal): return Array("not started: \(refusal.reason)\(pid)".utf8)
            }
        default:
            if text.hasPrefix("upgrade-outcome "), let attempt = UInt64(text.dropFirst("upgrade-outcome ".count)) {
                switch answers.upgradeOutcome(attempt) {
                case .none: return Array("unknown\(pid)".utf8)
                case .some(.none): return Array("pending\(pid)".utf8)
                case .some(.some(let outcome)): return Array("\(outcome.reason)\(pid)".utf8)
                }
            }
            return Array("error: unknown command (expected \"status\", \"status json\", \"upgrade\" or \"upgrade-outcome N\")\n".utf8)
        }
    }

    static let tooLong = Array("error: request line too long\n".utf8)
}
