#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import ArgumentParser

enum LogLevel: Int, Comparable, CaseIterable, ExpressibleByArgument {
    case error, warning, info, debug

    init?(argument: String) {
        guard let level = Self.allCases.first(where: { "\($0)" == argument }) else { return nil }
        self = level
    }

    static func < (a: LogLevel, b: LogLevel) -> Bool { a.rawValue < b.rawValue }
}

/// One line per event on standard error, written whole with a single call so that
/// lines never interleave. Plain text, no colours: the log is usually a file or
/// a journal, not a terminal.
enum Log {
    /// Set once at start, before the loop runs; directd is single-threaded.
    nonisolated(unsafe) static var level = LogLevel.info

    static func line(_ text: String) {
        var text = text
        text.append("\n")
        text.withUTF8 { bytes in
            var offset = 0
            while offset < bytes.count {
                let written = write(2, bytes.baseAddress! + offset, bytes.count - offset)
                if written < 0 {
                    if errno == EINTR { continue }
                    return
                }
                offset += written
            }
        }
    }

    static func debug(_ text: @autoclosure () -> String) { if level >= .debug { line(text()) } }
    static func info(_ text: @autoclosure () -> String) { if level >= .info { line(text()) } }
    static func warning(_ text: String) {
        if level >= .warning { line(text.hasPrefix("warning: ") ? text : "warning: \(text)") }
    }
    static func error(_ text: String) { line("error: \(text)") }
}
