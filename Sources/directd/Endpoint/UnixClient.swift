#if canImport(Glibc)
import Glibc
#endif

/// A blocking client of a unix stream socket, for `directd status` and for the
/// stale-socket check at start (neither runs on a serving loop). Every call is
/// bounded: SO_RCVTIMEO/SO_SNDTIMEO and a cap on what is read.
enum UnixClient {
    enum Failure: Error {
        /// Nothing listens there (no file, or a socket nobody accepts on).
        case nothingListening(String)
        case permissionDenied(String)
        case failed(String)
    }

    /// A connected socket, or why not.
    private static func connect(_ path: String, timeoutSeconds: Int) throws(Failure) -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw .failed("cannot create a socket: \(String(cString: strerror(errno)))") }
        var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let connected = UnixSocketAddress.connect(fd, to: path)
        if connected != 0 {
            let error = connected
            Glibc.close(fd)
            if error == ENOENT || error == ECONNREFUSED { throw .nothingListening(String(cString: strerror(error))) }
            if error == EACCES || error == EPERM { throw .permissionDenied(String(cString: strerror(error))) }
            throw .failed(String(cString: strerror(error)))
        }
        return fd
    }

    /// Something accepts connections at `path`.
    static func connects(to path: String) -> Bool {
        guard let fd = try? connect(path, timeoutSeconds: 1) else { return false }
        Glibc.close(fd)
        return true
    }

    /// Sends `request`, then reads the reply until the server closes, at most
    /// `limit` bytes.
    static func exchange(_ path: String, request: [UInt8], limit: Int = 1 << 20,
                         timeoutSeconds: Int = 5) throws(Failure) -> [UInt8] {
        let fd = try connect(path, timeoutSeconds: timeoutSeconds)
        defer { Glibc.close(fd) }
        var sent = 0
        while sent < request.count {
            let count = request[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard count > 0 else { throw .failed("cannot send the request: \(String(cString: strerror(errno)))") }
            sent += count
        }
        var reply: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16 << 10)
        while reply.count < limit {
            let count = recv(fd, &chunk, chunk.count, 0)
            if count == 0 { break }
            guard count > 0 else { throw .failed("no reply: \(String(cString: strerror(errno)))") }
            reply += chunk[..<count]
        }
        return reply
    }
}
