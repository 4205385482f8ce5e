import CUV
#if canImport(Glibc)
import Glibc
#endif
@testable import UVBind

/// A private libuv loop per test, so tests can run in parallel.
final class TestLoop {
    let loop: UnsafeMutablePointer<uv_loop_t>

    init() {
        loop = .allocate(capacity: 1)
        precondition(uv_loop_init(loop) == 0)
    }

    /// Runs until `done()` or for at most `iterations` loop turns of up to 10 ms each.
    func run(until done: () -> Bool, iterations: Int = 300) {
        for _ in 0..<iterations where !done() {
            uv_run(loop, UV_RUN_NOWAIT)
            if !done() { usleep(10_000) }
        }
    }

    /// Lets pending close callbacks run, then closes the loop. The result is
    /// EBUSY if a handle was still open (a leak, or a listener a test forgot);
    /// such handles are closed here so the test fails instead of hanging.
    func close() -> Int32 {
        for _ in 0..<100 where uv_run(loop, UV_RUN_NOWAIT) != 0 {}
        let result = uv_loop_close(loop)
        if result != 0 {
            uv_walk(loop, { handle, _ in
                if uv_is_closing(handle) == 0 { uv_close(handle, nil) }
            }, nil)
            for _ in 0..<100 where uv_run(loop, UV_RUN_NOWAIT) != 0 {}
            _ = uv_loop_close(loop)
        }
        loop.deallocate()
        return result
    }
}

/// The kernel's list of listening TCP sockets, from /proc/net/tcp and tcp6:
/// what is really open, whatever the code under test believes.
enum ListeningSockets {
    struct Socket: Hashable, CustomStringConvertible {
        let ip: IPAddress
        let port: UInt16
        var description: String { SocketAddress(ip: ip, port: port).description }
    }

    /// `root`: /proc/net is the process's network namespace; a test that moved
    /// its thread into another one reads /proc/thread-self/net.
    static func all(root: String = "/proc/net") -> [Socket] {
        read("\(root)/tcp", v6: false) + read("\(root)/tcp6", v6: true)
    }

    static func on(port: UInt16, root: String = "/proc/net") -> [Socket] {
        all(root: root).filter { $0.port == port }
    }

    private static func read(_ path: String, v6: Bool) -> [Socket] {
        guard let file = fopen(path, "r") else { return [] }
        defer { fclose(file) }
        var sockets: [Socket] = []
        var line: UnsafeMutablePointer<CChar>?
        var capacity = 0
        defer { free(line) }
        while getline(&line, &capacity, file) > 0 {
            let fields = String(cString: line!).split(separator: " ")
            // sl local_address rem_address st ...; st 0A is LISTEN.
            guard fields.count > 3, fields[3] == "0A" else { continue }
            let local = fields[1].split(separator: ":")
            guard local.count == 2, let port = UInt16(local[1], radix: 16) else { continue }
            // The address is printed as 32-bit words in host (little-endian) order.
            var bytes: [UInt8] = []
            var hex = local[0][...]
            while hex.count >= 8 {
                let word = UInt32(hex.prefix(8), radix: 16)!
                bytes += [UInt8(word & 0xFF), UInt8(word >> 8 & 0xFF), UInt8(word >> 16 & 0xFF), UInt8(word >> 24)]
                hex = hex.dropFirst(8)
            }
            let ip: IPAddress = v6
                ? .v6(IPv6Address(bytes: bytes))
                : .v4(IPv4Address(bytes[0], bytes[1], bytes[2], bytes[3]))
            sockets.append(Socket(ip: ip, port: port))
        }
        return sockets
    }
}

/// A plain blocking TCP connect, as an outside client would make it.
/// Returns 0 on success or the errno (ECONNREFUSED for nothing listening).
func connectResult(to address: SocketAddress) -> Int32 {
    let fd = socket(address.family == .ipv6 ? AF_INET6 : AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return errno }
    defer { Glibc.close(fd) }
    var timeout = timeval(tv_sec: 2, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    let length = socklen_t(address.family == .ipv6 ? MemoryLayout<sockaddr_in6>.size : MemoryLayout<sockaddr_in>.size)
    let result = address.withSockaddr { Glibc.connect(fd, $0, length) }
    return result == 0 ? 0 : errno
}

func addr(_ text: String, _ port: UInt16, scope: UInt32 = 0) -> SocketAddress {
    if let v4 = IPv4Address(text) { return SocketAddress(ip: .v4(v4), port: port) }
    return SocketAddress(ip: .v6(IPv6Address(text)!), port: port, scopeID: scope)
}

/// The host this runs on has IPv6 loopback (most CI machines do; skip when not).
let hostHasIPv6Loopback: Bool = {
    (try? InterfaceTable.current())?.addresses.contains { $0.ip == .v6(.loopback) } ?? false
}()
