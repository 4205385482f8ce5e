#if canImport(Glibc)
import Glibc
#endif

/// journald's native socket, for the structured fields of the audit lines
/// (opened, closed, refused). A unix datagram socket, non-blocking: an entry
/// the socket cannot take now is dropped and counted, never waited for, and
/// the caller writes the plain line instead.
final class JournalSocket {
    /// Where journald listens.
    static let defaultPath = "/run/systemd/journal/socket"
    /// For tests only: another socket in place of journald's (a test's own
    /// datagram socket that parses what arrives).
    static let pathVariable = "DIRECTD_JOURNAL_SOCKET"

    private let fd: Int32
    /// Entries the socket did not take (full, or refused).
    private(set) var dropped = 0
    private(set) var sent = 0

    /// Connected to `path`; nil if there is nothing there.
    init?(path: String) {
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return nil }
        let connected = UnixSocketAddress.connect(fd, to: path)
        guard connected == 0 else {
            close(fd)
            return nil
        }
        self.fd = fd
    }

    deinit { close(fd) }

    /// Sends one entry without waiting; false (and counted) if it did not go.
    func send(_ entry: JournalEntry) -> Bool {
        let result = entry.bytes.withUnsafeBytes {
            Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT | MSG_NOSIGNAL))
        }
        guard result == entry.bytes.count else {
            dropped += 1
            return false
        }
        sent += 1
        return true
    }
}
