#if canImport(Glibc)
import Glibc
#endif

/// Reading the config file's bytes, bounded: a regular file only, and at most
/// `maximumSize` bytes. A FIFO at the config path froze the loop for good on a
/// reload, `/dev/zero` read 2 GB, and a 200 MB file took 14 s and 1.65 GB;
/// nothing a config file needs comes near the cap.
extension ConfigFile {
    /// 1 MiB: the example config is under 2 KiB, RustDesk's own file a few KiB.
    static let maximumSize = 1 << 20

    /// The file's bytes, or why they cannot be had (the system's words, or the
    /// kind of file, or the size against the cap).
    static func read(_ path: String) throws(ConfigError) -> [UInt8] {
        // O_NONBLOCK: opening a FIFO that has no writer must not wait for one.
        // The type is then checked on the descriptor that was opened (fstat), so
        // nothing can be swapped in between a check and the open.
        let fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY)
        guard fd >= 0 else { throw systemError(path, errno) }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw systemError(path, errno) }
        guard info.st_mode & S_IFMT == S_IFREG else {
            throw ConfigError(description: "Config file \(path) is \(kind(of: info.st_mode)), not a regular file; directd reads its configuration only from a regular file")
        }
        guard info.st_size <= maximumSize else { throw tooLarge(path, size: "\(info.st_size) bytes") }
        // Reads one byte past the cap: the file may have grown since fstat.
        var data = [UInt8](repeating: 0, count: maximumSize + 1)
        var count = 0
        while count < data.count {
            let got = data.withUnsafeMutableBytes { buffer in
                Glibc.read(fd, buffer.baseAddress! + count, buffer.count - count)
            }
            if got < 0 {
                if errno == EINTR { continue }
                throw systemError(path, errno)
            }
            if got == 0 { break }
            count += got
        }
        guard count <= maximumSize else { throw tooLarge(path, size: "more than that") }
        data.removeSubrange(count...)
        return data
    }

    private static func systemError(_ path: String, _ code: Int32) -> ConfigError {
        ConfigError(description: "Cannot read config file \(path): \(String(cString: strerror(code)))")
    }

    private static func tooLarge(_ path: String, size: String) -> ConfigError {
        ConfigError(description: "Config file \(path) is \(size), more than the \(maximumSize) bytes (1 MiB) a config file may hold")
    }

    /// "a FIFO", "a directory", ... for the message.
    private static func kind(of mode: mode_t) -> String {
        switch mode & S_IFMT {
        case S_IFIFO: "a FIFO (named pipe)"
        case S_IFCHR: "a character device"
        case S_IFBLK: "a block device"
        case S_IFDIR: "a directory"
        case S_IFSOCK: "a socket"
        default: "a file of another kind"
        }
    }
}
