#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// How serious a line is: the word in front of it, and its syslog priority on
/// the journal (sd-daemon(3): SD_ERR, SD_WARNING, SD_NOTICE, SD_INFO, SD_DEBUG).
enum LogSeverity: Comparable {
    case error, warning, notice, info, debug

    var syslogPriority: Int {
        switch self {
        case .error: 3
        case .warning: 4
        case .notice: 5
        case .info: 6
        case .debug: 7
        }
    }

    var word: String? {
        switch self {
        case .error: "error: "
        case .warning: "warning: "
        case .notice, .info, .debug: nil
        }
    }
}

/// What goes in front of the text.
enum LogStyle: Equatable {
    /// `2026-11-25T11:32:14.123Z warning: ...`: files, pipes, terminals.
    case timestamped
    /// `<4>warning: ...`: journald stamps each line itself and reads the priority.
    case journal
}

/// One log line, ready to write: prefix, escaped text, newline.
enum LogLine {
    /// The longest text (escaped) a line keeps. With the prefix, a line stays
    /// under PIPE_BUF (4096), so that it reaches a pipe in one atomic write and
    /// never interleaves with another writer's lines.
    static let maximumTextBytes = 3900

    static func format(_ text: String, severity: LogSeverity, style: LogStyle,
                       timestamp: @autoclosure () -> String = LogTimestamp.now()) -> String {
        var line: String
        switch style {
        case .timestamped: line = timestamp() + " "
        case .journal: line = "<\(severity.syslogPriority)>"
        }
        if let word = severity.word, !text.hasPrefix(word) { line += word }
        line += truncated(LogEscaping.escaped(text))
        line += "\n"
        return line
    }

    /// Cuts text longer than `maximumTextBytes` at a character boundary and says so.
    static func truncated(_ text: String) -> String {
        let total = text.utf8.count
        guard total > maximumTextBytes else { return text }
        var kept = String.UnicodeScalarView()
        var bytes = 0
        for scalar in text.unicodeScalars {
            let size = UTF8.width(scalar)
            if bytes + size > maximumTextBytes { break }
            kept.append(scalar)
            bytes += size
        }
        return String(kept) + " [\(total - bytes) more bytes cut]"
    }
}

/// The time in front of each line: RFC 3339, UTC, milliseconds, such as
/// `2026-11-25T11:32:14.123Z`. UTC rather than local time: one fixed width and
/// offset, sortable as text, no repeated hour at the end of summer time, and no
/// dependence on TZ or /etc/localtime (often absent in containers); logs from
/// several hosts line up without conversion.
enum LogTimestamp {
    static func now() -> String {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return format(secondsSinceEpoch: Int(now.tv_sec), milliseconds: Int(now.tv_nsec / 1_000_000))
    }

    static func format(secondsSinceEpoch seconds: Int, milliseconds: Int) -> String {
        var time = time_t(seconds)
        var parts = tm()
        guard gmtime_r(&time, &parts) != nil else { return "0000-00-00T00:00:00.000Z" }
        func digits(_ value: Int32, _ width: Int) -> String {
            let text = String(value)
            return String(repeating: "0", count: max(0, width - text.count)) + text
        }
        return digits(parts.tm_year + 1900, 4) + "-" + digits(parts.tm_mon + 1, 2) + "-" + digits(parts.tm_mday, 2)
            + "T" + digits(parts.tm_hour, 2) + ":" + digits(parts.tm_min, 2) + ":" + digits(parts.tm_sec, 2)
            + "." + digits(Int32(milliseconds), 3) + "Z"
    }
}

/// systemd sets `JOURNAL_STREAM=DEVICE:INODE` (decimal) for a service whose
/// standard error is connected to the journal (systemd.exec(5)). The variable is
/// inherited by children whose stderr may go elsewhere, so it counts only when
/// it names the very file standard error is.
enum JournalStream {
    static func standardErrorIsTheJournal(_ variable: String?) -> Bool {
        var status = stat()
        guard let variable, fstat(2, &status) == 0 else { return false }
        return matches(variable, device: UInt64(status.st_dev), inode: UInt64(status.st_ino))
    }

    static func matches(_ variable: String, device: UInt64, inode: UInt64) -> Bool {
        let parts = variable.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 2, parts.allSatisfy({ !$0.isEmpty && $0.allSatisfy(\.isASCII) && $0.allSatisfy(\.isNumber) }),
              let streamDevice = UInt64(parts[0]), let streamInode = UInt64(parts[1]) else { return false }
        return streamDevice == device && streamInode == inode
    }
}
