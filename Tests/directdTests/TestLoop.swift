import CUV
import Foundation
#if canImport(Glibc)
import Glibc
#endif
@testable import directd

/// A private libuv loop for one test, run in bounded slices.
final class TestLoop {
    let loop: UnsafeMutablePointer<uv_loop_t>

    init() {
        loop = .allocate(capacity: 1)
        uv_loop_init(loop)
    }

    /// Runs the loop for `milliseconds`, even when only unreferenced handles
    /// are active (a referenced timer holds it up, then stops it).
    func run(milliseconds: UInt64) {
        let stopper = try! LoopTimer(loop: loop, everyMilliseconds: max(1, milliseconds)) { [loop] in
            uv_stop(loop)
        }
        uv_run(loop, UV_RUN_DEFAULT)
        stopper.close()
        uv_run(loop, UV_RUN_NOWAIT)
    }

    /// Runs the loop in slices of `slice` ms until `done` holds or `limit` ms passed.
    @discardableResult
    func run(until done: () -> Bool, slice: UInt64 = 10, limit: UInt64 = 3000) -> Bool {
        let start = uv_hrtime()
        while !done() {
            if (uv_hrtime() - start) / 1_000_000 >= limit { return false }
            run(milliseconds: slice)
        }
        return true
    }

    /// The handles still on the loop (closing ones included).
    var handleCount: Int {
        var count = 0
        withUnsafeMutablePointer(to: &count) { pointer in
            uv_walk(loop, { _, argument in
                argument!.assumingMemoryBound(to: Int.self).pointee += 1
            }, pointer)
        }
        return count
    }

    /// Lets pending close callbacks run, then closes the loop; false when a
    /// handle was left open.
    func close() -> Bool {
        uv_run(loop, UV_RUN_NOWAIT)
        uv_run(loop, UV_RUN_NOWAIT)
        let closed = uv_loop_close(loop) == 0
        if closed { loop.deallocate() }
        return closed
    }
}

/// A datagram socket the test owns, standing in for systemd's notify socket:
/// a path or an abstract name (`@...`).
final class NotifyReceiver {
    let fd: Int32
    /// The value for NOTIFY_SOCKET.
    let name: String
    private let path: String?

    init(abstract: Bool, name given: String? = nil) throws {
        let unique = "directd-notify-\(getpid())-\(UUID().uuidString.prefix(8))"
        name = given ?? (abstract ? "@\(unique)" : FileManager.default.temporaryDirectory.appendingPathComponent("\(unique).sock").path)
        path = abstract ? nil : name
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw TestFailure("socket: \(errno)") }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        var bytes = Array(name.utf8)
        if abstract { bytes[0] = 0 }
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count + (abstract ? 0 : 1))
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        }
        guard bound == 0 else {
            Glibc.close(fd)
            throw TestFailure("bind \(name): \(String(cString: strerror(errno)))")
        }
    }

    deinit {
        Glibc.close(fd)
        if let path { unlink(path) }
    }

    /// Every datagram waiting now, without blocking.
    func drain() -> [String] {
        var messages: [String] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        for _ in 0..<1000 {
            let count = recv(fd, &buffer, buffer.count, Int32(MSG_DONTWAIT))
            guard count >= 0 else { break }
            messages.append(String(decoding: buffer[0..<count], as: UTF8.self))
        }
        return messages
    }
}
