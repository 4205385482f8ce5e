#if canImport(Glibc)
import Glibc
#endif

/// Connecting a socket to a path: the one place that fills a `sockaddr_un`.
enum UnixSocketAddress {
    /// Bytes a path may have (sun_path holds them and a NUL).
    static let maximumPathBytes = 107

    /// `connect(2)` of `fd` to `path`: 0, or the errno.
    static func connect(_ fd: Int32, to path: String) -> Int32 {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count <= maximumPathBytes else { return ENAMETOOLONG }
        // sun_path is a fixed C array: copied byte by byte, NUL-terminated by the zeroed struct.
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in bytes.enumerated() { raw[index] = byte }
        }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        return connected == 0 ? 0 : errno
    }
}
