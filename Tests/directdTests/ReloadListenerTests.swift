import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Synchronization
import Testing

/// A reload whose listener change cannot go through, on the real binary
/// (issue 18, item 3): the listener kept is the same socket, and listeners
/// lost on the way are an error that is retried, never a quiet state.
@Suite(.serialized)
struct ReloadListenerTests {
    /// directd with its bind value in a config file that the test rewrites.
    final class Reloadable {
        let directory: URL
        let config: URL
        let daemon: Daemon
        let port: UInt16

        init(bind: String, port: UInt16) throws {
            directory = FileManager.default.temporaryDirectory.appendingPathComponent("directd-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            config = directory.appendingPathComponent("directd.json")
            self.port = port
            try Self.write(bind, port: port, to: config)
            daemon = try Daemon(["--config", config.path])
        }

        static func write(_ bind: String, port: UInt16, to config: URL) throws {
            try #"{"options": {"bind-interface": "\#(bind)", "direct-access-port": "\#(port)"}}"#
                .write(to: config, atomically: true, encoding: .utf8)
        }

        /// Rewrites the bind value, sends SIGHUP and waits (bounded) for the
        /// `count`th `reload rejected` line; true if it came.
        func reloadRejected(to bind: String, count: Int) throws -> Bool {
            try Self.write(bind, port: port, to: config)
            kill(daemon.pid, SIGHUP)
            return eventually(within: 10) { daemon.logText.components(separatedBy: "reload rejected").count - 1 >= count }
        }

        deinit {
            daemon.stop()
            try? FileManager.default.removeItem(at: directory)
        }
    }

    @Test func aRejectedWideningKeepsTheSameSocketAndRefusesNoOne() throws {
        let port = try freePort()
        let served = try Reloadable(bind: "127.0.0.1", port: port)
        let inode = try #require(listeningInode("127.0.0.1", port), "directd listens on 127.0.0.1:\(port)")
        #expect(socketInodes(of: served.daemon.pid).contains(inode))
        // Another program listens on 127.0.0.2 at the same port: 0.0.0.0 cannot open.
        let other = try OtherSocket("127.0.0.2", port, listening: true)
        defer { other.close() }

        // Clients connect all along; not one may be refused.
        let flags = ClientFlags()
        let clients = Thread { [flags] in
            for _ in 0..<100_000 where !flags.stop.load(ordering: .relaxed) {
                if (try? TCPClient(host: "127.0.0.1", port: port, connectTimeout: 2)) == nil {
                    flags.failed.add(1, ordering: .relaxed)
                }
                flags.done.add(1, ordering: .relaxed)
            }
            flags.ended.store(true, ordering: .releasing)
        }
        clients.start()
        defer {
            flags.stop.store(true, ordering: .relaxed)
            _ = eventually(within: 10) { flags.ended.load(ordering: .acquiring) }
        }
        for round in 1...5 {
            #expect(try served.reloadRejected(to: "0.0.0.0", count: round), "round \(round): \(served.daemon.logText.suffix(600))")
        }
        flags.stop.store(true, ordering: .relaxed)
        #expect(eventually(within: 10) { flags.ended.load(ordering: .acquiring) })
        #expect(flags.failed.load(ordering: .relaxed) == 0,
                "\(flags.failed.load(ordering: .relaxed)) of \(flags.done.load(ordering: .relaxed)) connects failed during the reloads")
        #expect(listeningInode("127.0.0.1", port) == inode, "the same socket listens on 127.0.0.1:\(port)")
        #expect(socketInodes(of: served.daemon.pid).contains(inode))
        #expect(served.daemon.logText.contains("another socket listens on 127.0.0.2:\(port)"))
        #expect(!served.daemon.logText.contains("listening on nothing"))

        // Once the other program is gone, the same change goes through.
        other.close()
        try Reloadable.write("0.0.0.0", port: port, to: served.config)
        kill(served.daemon.pid, SIGHUP)
        #expect(served.daemon.waitForLog("listening on 0.0.0.0:\(port)"), "\(served.daemon.logText.suffix(600))")
    }

    /// A socket bound and not listening (which the kernel's listening table
    /// does not show) stands in the way of 0.0.0.0, so 127.0.0.1 stops
    /// listening for the attempt; a local process that binds and listens on
    /// 127.0.0.1 in a loop takes it in between. directd used to stay on
    /// nothing for good, logging a warning.
    @Test func listenersLostOnTheWayAreReportedAndOpenedAgain() throws {
        let port = try freePort()
        let served = try Reloadable(bind: "127.0.0.1", port: port)
        let blocker = try OtherSocket("127.0.0.2", port, listening: false, reuseAddress: false)
        defer { blocker.close() }
        let racer = PortRacer(host: "127.0.0.1", port: port)
        defer { racer.release() }

        var rounds = 0
        while !racer.won, rounds < 60 {
            rounds += 1
            #expect(try served.reloadRejected(to: "0.0.0.0", count: rounds), "round \(rounds): \(served.daemon.logText.suffix(600))")
        }
        try #require(racer.won, "the racing binder never took 127.0.0.1:\(port) in \(rounds) reloads")
        #expect(served.daemon.waitForLog("error: not listening on 127.0.0.1:\(port)"), "\(served.daemon.logText.suffix(800))")
        kill(served.daemon.pid, SIGUSR1)
        #expect(served.daemon.waitForLog("bytes to clients; error: not listening on 127.0.0.1:\(port)"),
                "the summary says so: \(served.daemon.logText.suffix(800))")

        // The other process lets go: directd listens there again by itself.
        racer.release()
        #expect(served.daemon.waitForLog("listening on 127.0.0.1:\(port) again", timeout: 40),
                "\(served.daemon.logText.suffix(800))")
        #expect(echoRoundTrip(port: port))
        #expect(served.daemon.process.isRunning)
    }

    /// The inode of the socket listening on `host:port` (IPv4), from /proc/net/tcp.
    func listeningInode(_ host: String, _ port: UInt16) -> UInt64? {
        var address = in_addr()
        inet_pton(AF_INET, host, &address)
        let local = String(format: "%08X:%04X", address.s_addr, port)
        let table = (try? String(contentsOfFile: "/proc/net/tcp", encoding: .utf8)) ?? ""
        for line in table.split(separator: "\n") {
            let fields = line.split(separator: " ")
            if fields.count > 9, fields[1] == local, fields[3] == "0A" { return UInt64(fields[9]) }
        }
        return nil
    }

    /// The inodes of the sockets process `pid` holds (/proc/PID/fd links `socket:[N]`).
    func socketInodes(of pid: Int32) -> Set<UInt64> {
        let directory = "/proc/\(pid)/fd"
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return Set(names.compactMap { name in
            guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "\(directory)/\(name)"),
                  target.hasPrefix("socket:[") else { return nil }
            return UInt64(target.dropFirst("socket:[".count).dropLast())
        })
    }
}

/// The client thread's flags, shared with the test.
final class ClientFlags: Sendable {
    let stop = Atomic<Bool>(false)
    let ended = Atomic<Bool>(false)
    let failed = Atomic<Int>(0)
    let done = Atomic<Int>(0)
}

/// A socket another program holds: listening, or only bound (which the
/// kernel's listening table does not show), with or without SO_REUSEADDR.
final class OtherSocket {
    private var fd: Int32

    init(_ host: String, _ port: UInt16, listening: Bool, reuseAddress: Bool = true) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var one: Int32 = 1
        if reuseAddress { setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size)) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        inet_pton(AF_INET, host, &address.sin_addr)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
        guard bound, !listening || listen(fd, 16) == 0 else {
            let code = errno
            Glibc.close(fd)
            throw TestFailure("cannot hold \(host):\(port): \(String(cString: strerror(code)))")
        }
    }

    func close() {
        if fd >= 0 { Glibc.close(fd) }
        fd = -1
    }

    deinit { close() }
}

/// A thread that binds and listens on `host:port` (with SO_REUSEADDR, which a
/// socket that directd only stopped listening on lets through) in a tight loop
/// until it succeeds, then holds the port until `release()`; at most 120 s.
final class PortRacer: Sendable {
    private let flags = RacerFlags()

    init(host: String, port: UInt16) {
        let flags = self.flags
        Thread {
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = port.bigEndian
            inet_pton(AF_INET, host, &address.sin_addr)
            let deadline = Date().addingTimeInterval(120)
            var held: Int32 = -1
            var tries = 0
            while held < 0, !flags.released.load(ordering: .relaxed) {
                tries += 1
                if tries % 4096 == 0, Date() >= deadline { break }
                let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
                var one: Int32 = 1
                setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
                let bound = withUnsafePointer(to: &address) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
                }
                if bound, listen(fd, 16) == 0 { held = fd } else { Glibc.close(fd) }
            }
            if held >= 0 {
                flags.won.store(true, ordering: .releasing)
                while !flags.released.load(ordering: .relaxed), Date() < deadline { usleep(5_000) }
                Glibc.close(held)
            }
            flags.ended.store(true, ordering: .releasing)
        }.start()
    }

    var won: Bool { flags.won.load(ordering: .acquiring) }

    /// Lets go of the port (and stops trying); waits (bounded) for the thread.
    func release() {
        flags.released.store(true, ordering: .relaxed)
        _ = eventually(within: 10) { flags.ended.load(ordering: .acquiring) }
    }
}

final class RacerFlags: Sendable {
    let won = Atomic<Bool>(false)
    let released = Atomic<Bool>(false)
    let ended = Atomic<Bool>(false)
}
