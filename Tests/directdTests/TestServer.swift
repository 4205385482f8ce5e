import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A thread-safe box for what a test server's threads observe.
final class Observed<Value: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Value
    init(_ value: Value) { self.value = value }
    func get() -> Value { lock.withLock { value } }
    func update(_ change: (inout Value) -> Void) { lock.withLock { change(&value) } }
}

/// A plain upstream on 127.0.0.1 for directd to relay to: blocking sockets, one
/// thread per connection, each running `behaviour` with the connection's fd.
/// `backlog` 0 and `accepting` false make a server that never answers.
final class TestServer: @unchecked Sendable {
    let fd: Int32
    let port: UInt16
    private let stopped = Observed(false)

    /// On `address` (127.0.0.1 by default) and `port` (0: the kernel's choice).
    init(address host: String = "127.0.0.1", port wanted: UInt16 = 0, accepting: Bool = true, backlog: Int32 = 64,
         behaviour: @escaping @Sendable (Int32) -> Void = { _ in }) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        inet_pton(AF_INET, host, &address.sin_addr)
        address.sin_port = wanted.bigEndian
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let fd = self.fd
        let ok = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                bind(fd, sa, length) == 0 && listen(fd, backlog) == 0 && getsockname(fd, sa, &length) == 0
            }
        }
        guard ok else { throw TestFailure("test server: \(String(cString: strerror(errno)))") }
        port = UInt16(bigEndian: address.sin_port)
        guard accepting else { return }
        let stopped = self.stopped
        Thread.detachNewThread {
            while !stopped.get() {
                let client = accept(fd, nil, nil)
                if client < 0 { if errno == EINTR { continue }; return }
                var timeout = timeval(tv_sec: 20, tv_usec: 0)
                setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
                setsockopt(client, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
                Thread.detachNewThread {
                    behaviour(client)
                    close(client)
                }
            }
        }
    }

    func stop() {
        stopped.update { $0 = true }
        shutdown(fd, Int32(SHUT_RDWR))
        close(fd)
    }

    deinit { if !stopped.get() { stop() } }
}

/// Connection behaviours for `TestServer`.
enum Behaviour {
    /// Bytes back as they come; half-close answered with half-close.
    static func echo(_ fd: Int32) {
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let got = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if got <= 0 { break }
            var offset = 0
            while offset < got {
                let sent = buffer[offset..<got].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                if sent <= 0 { return }
                offset += sent
            }
        }
        shutdown(fd, Int32(SHUT_WR))
    }

    /// Reads until EOF and returns how many bytes came.
    static func drain(_ fd: Int32) -> Int {
        var buffer = [UInt8](repeating: 0, count: 65536)
        var total = 0
        while true {
            let got = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if got <= 0 { return total }
            total += got
        }
    }

    /// Writes `count` bytes of `byte(offset)` (`pattern` by default), `chunkSize`
    /// at a time with `pause` µs after each; false if the peer went away.
    static func flood(_ fd: Int32, count: Int, chunkSize: Int = 65536, pause: UInt32 = 0,
                      byte: (Int) -> UInt8 = pattern) -> Bool {
        var chunk = [UInt8](repeating: 0, count: chunkSize)
        var offset = 0
        while offset < count {
            let size = min(chunk.count, count - offset)
            for index in 0..<size { chunk[index] = byte(offset + index) }
            var sent = 0
            while sent < size {
                let result = chunk[sent..<size].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                if result <= 0 { return false }
                sent += result
            }
            offset += size
            if pause > 0 { usleep(pause) }
        }
        return true
    }

    static func pattern(_ offset: Int) -> UInt8 { UInt8(truncatingIfNeeded: offset % 251) }

    /// `count` bytes of the pattern, built by doubling (fast even in debug builds).
    static func patterned(_ count: Int) -> [UInt8] {
        var bytes = (0..<251).map(pattern)
        while bytes.count < count { bytes += bytes }
        return Array(bytes.prefix(count))
    }

    /// Closes with a reset (SO_LINGER 0) instead of a FIN.
    static func reset(_ fd: Int32) {
        var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
    }
}

/// The resident memory of a process, in bytes, from /proc.
func residentBytes(of pid: Int32) -> Int? {
    guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
          let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
          let kib = Int(line.split(separator: " ").dropFirst().first ?? "") else { return nil }
    return kib * 1024
}

/// User plus system CPU time of a process, in seconds, from /proc.
func cpuSeconds(of pid: Int32) -> Double? {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
          let close = stat.lastIndex(of: ")") else { return nil }
    let fields = stat[stat.index(after: close)...].split(separator: " ")
    // After the command: state is field 3; utime and stime are fields 14 and 15.
    guard fields.count > 13, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
    return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
}
