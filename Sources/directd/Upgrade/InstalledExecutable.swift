#if canImport(Glibc)
import Glibc
#endif

/// The path of the binary directd runs, read once at start: an upgrade starts
/// the file installed there then. Read before a package upgrade replaces the
/// file: afterwards `/proc/self/exe` names the old, deleted file
/// (`/usr/sbin/directd (deleted)`), and the new one is at the path itself.
enum InstalledExecutable {
    static let path: String? = {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let count = readlink("/proc/self/exe", &buffer, Int(PATH_MAX))
        guard count > 0 else { return nil }
        var path = String(decoding: buffer.prefix(count).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        // Replaced already before this start: the path is still where it was installed.
        if path.hasSuffix(" (deleted)") { path.removeLast(" (deleted)".count) }
        return path
    }()

    /// Reads the path now (call at start).
    static func record() { _ = path }
}
