/// The control socket's protocol: one line in (`status` or `status json`),
/// the report out, then the socket closes. A line longer than the buffer, or
/// an unknown command, gets an `error:` line.
enum ControlRequest {
    /// Bytes a request line may take.
    static let headBytes = 256

    /// The reply to the first line of `head`, or nil while no line is complete.
    static func respond(to head: UnsafeRawBufferPointer, report: () -> StatusReport) -> [UInt8]? {
        guard let newline = head.firstIndex(of: UInt8(ascii: "\n")) else { return nil }
        var line = head[..<newline]
        if line.last == UInt8(ascii: "\r") { line = line.dropLast() }
        switch String(decoding: line, as: UTF8.self) {
        case "status": return Array(report().text.utf8)
        case "status json": return Array(report().json.utf8)
        default: return Array("error: unknown command (expected \"status\" or \"status json\")\n".utf8)
        }
    }

    static let tooLong = Array("error: request line too long\n".utf8)
}
