import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A blocking TCP client on loopback, with a receive timeout so no test can hang.
final class TCPClient: Sendable {
    let fd: Int32

    /// Connects to `host:port`, from the address `source` if given.
    init(host: String, port: UInt16, source: String? = nil, connectTimeout: Int = 10) throws {
        let v6 = host.contains(":")
        fd = socket(v6 ? AF_INET6 : AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw TestFailure("socket: \(errno)") }
        // SO_SNDTIMEO also bounds connect(); the receive timeout bounds every read.
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        var connectLimit = timeval(tv_sec: connectTimeout, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &connectLimit, socklen_t(MemoryLayout<timeval>.size))
        // Numeric hosts only: getaddrinfo here just fills the right sockaddr.
        var hints = addrinfo()
        hints.ai_flags = AI_NUMERICHOST
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var info: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, String(port), &hints, &info) == 0, let info else {
            close(fd)
            throw TestFailure("not a numeric address: \(host)")
        }
        defer { freeaddrinfo(info) }
        if let source {
            var local: UnsafeMutablePointer<addrinfo>?
            guard getaddrinfo(source, "0", &hints, &local) == 0, let local else {
                close(fd)
                throw TestFailure("not a numeric address: \(source)")
            }
            defer { freeaddrinfo(local) }
            guard bind(fd, local.pointee.ai_addr, local.pointee.ai_addrlen) == 0 else {
                close(fd)
                throw TestFailure("bind to \(source): \(String(cString: strerror(errno)))")
            }
        }
        let result = connect(fd, info.pointee.ai_addr, info.pointee.ai_addrlen)
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        guard result == 0 else {
            let code = errno
            close(fd)
            throw TestFailure("connect to \(host):\(port): \(String(cString: strerror(code)))")
        }
    }

    deinit { close(fd) }

    func send(_ bytes: [UInt8]) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let sent = bytes[offset...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if sent < 0 { if errno == EINTR { continue }; return false }
            offset += sent
        }
        return true
    }

    /// Half-close: no more data from us; the peer sees EOF.
    func finishSending() { shutdown(fd, Int32(SHUT_WR)) }

    /// Reads until EOF (nil on error or timeout), at most `limit` bytes.
    func receiveAll(limit: Int = 80 << 20) -> [UInt8]? {
        switch receiveUntilEnd(limit: limit) {
        case .success(let data): data
        case .failure: nil
        }
    }

    /// Reads until EOF, or says which errno ended the stream (ECONNRESET, EAGAIN for a timeout).
    func receiveUntilEnd(limit: Int = 80 << 20) -> Result<[UInt8], TestFailure> {
        var data: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while data.count <= limit {
            let got = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if got == 0 { return .success(data) }
            if got < 0 {
                if errno == EINTR { continue }
                return .failure(TestFailure(String(cString: strerror(errno))))
            }
            data += chunk[0..<got]
        }
        return .failure(TestFailure("more than \(limit) bytes"))
    }

    /// Reads exactly `count` bytes (nil on EOF, error or timeout).
    func receive(exactly count: Int) -> [UInt8]? {
        var data = [UInt8](repeating: 0, count: count)
        var offset = 0
        while offset < count {
            let got = data[offset...].withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if got <= 0 { if got < 0, errno == EINTR { continue }; return nil }
            offset += got
        }
        return data
    }

    /// Sends without blocking until the socket refuses more; returns the bytes taken.
    func sendUntilBlocked(_ chunk: [UInt8], limit: Int) -> Int {
        var total = 0
        while total < limit {
            let sent = chunk.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT | MSG_NOSIGNAL)) }
            if sent < 0 {
                if errno == EINTR { continue }
                break
            }
            total += sent
        }
        return total
    }
}

func randomBytes(_ count: Int) -> [UInt8] {
    var generator = SystemRandomNumberGenerator()
    var bytes = [UInt8](repeating: 0, count: count)
    bytes.withUnsafeMutableBytes { raw in
        var offset = 0
        while offset < raw.count {
            var word = generator.next()
            let take = min(8, raw.count - offset)
            withUnsafeBytes(of: &word) { raw[offset..<offset + take].copyBytes(from: $0.prefix(take)) }
            offset += take
        }
    }
    return bytes
}

extension Result where Failure == TestFailure {
    /// The error's words, or nil when the stream ended with EOF.
    var failureText: String? {
        if case .failure(let failure) = self { return failure.description }
        return nil
    }
}
