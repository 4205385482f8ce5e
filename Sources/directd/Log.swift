#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// One line per event on standard error, written whole with a single call so that
/// lines from a busy loop never interleave.
enum Log {
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

    static func info(_ text: String) { line(text) }
    static func warning(_ text: String) { line(text.hasPrefix("warning: ") ? text : "warning: \(text)") }
    static func error(_ text: String) { line("error: \(text)") }
}
