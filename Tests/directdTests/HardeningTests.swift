import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Testing

/// Clients that connect, send and never read: non-blocking sockets, all on the
/// test's thread, each sending at most `perClient` bytes.
final class StuckClients {
    private(set) var fds: [Int32] = []

    init(count: Int, port: UInt16, host: String = "127.0.0.1") throws {
        for _ in 0..<count {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            guard fd >= 0 else { throw TestFailure("socket: \(String(cString: strerror(errno)))") }
            // A small receive buffer: the kernel absorbs little of the echo, so
            // directd's own queues are what gets tested, and quickly.
            var size: Int32 = 4096
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = port.bigEndian
            inet_pton(AF_INET, host, &address.sin_addr)
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
                }
            }
            guard connected else {
                Glibc.close(fd)
                throw TestFailure("connect: \(String(cString: strerror(errno)))")
            }
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            fds.append(fd)
        }
    }

    /// Sends until no socket takes more (or `perClient` bytes each), pausing
    /// between rounds so that directd reads what it will. The kernel's buffers
    /// on both sides absorb several MiB per connection before directd's own
    /// queues are reached, hence the default. Returns the bytes sent in all.
    @discardableResult
    func fill(perClient: Int = 8 << 20, rounds: Int = 80) -> Int {
        let chunk = [UInt8](repeating: 0x5A, count: 32 << 10)
        var sent = [Int](repeating: 0, count: fds.count)
        var total = 0
        for _ in 0..<rounds {
            var progress = false
            for (index, fd) in fds.enumerated() where sent[index] < perClient {
                let count = min(chunk.count, perClient - sent[index])
                let result = chunk.withUnsafeBytes { send(fd, $0.baseAddress, count, Int32(MSG_NOSIGNAL)) }
                if result > 0 {
                    sent[index] += result
                    total += result
                    progress = true
                }
            }
            if !progress { break }
            usleep(20_000)
        }
        return total
    }

    func close() {
        fds.forEach { Glibc.close($0) }
        fds = []
    }

    deinit { close() }
}

/// Waits (bounded) until `condition` holds.
func eventually(within seconds: Double, _ condition: () -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if condition() { return true }
        usleep(50_000)
    }
    return condition()
}

/// directd under hostile or careless peers: memory per connection and in total,
/// per-client limits, the summary, descriptor limits lowered at run time.
@Suite(.serialized)
struct HardeningTests {
    enum Mode: String, CaseIterable { case echo, relay }

    /// 1,000 clients that send and never read, with the defaults: directd's
    /// resident memory stays under 64 MiB, and comes back to within 8 MiB of
    /// idle within 10 s after they leave.
    @Test(arguments: Mode.allCases)
    func clientsThatNeverReadStayWithinTheMemoryBound(_ mode: Mode) throws {
        var upstream: Daemon?
        var arguments = ["--bind-interface", "127.0.0.1", "--port", "0", "--log-level", "warning"]
        if mode == .relay {
            let echo = try Daemon(["--bind-interface", "127.0.0.1", "--port", "0", "--log-level", "warning"])
            upstream = echo
            arguments += ["--forward", "127.0.0.1:\(echo.port)"]
        }
        let daemon = try Daemon(arguments)
        defer {
            daemon.stop()
            upstream?.stop()
        }
        let idle = try #require(residentBytes(of: daemon.pid))
        let clients = try StuckClients(count: 1000, port: daemon.port)
        let sent = clients.fill()
        let during = try #require(residentBytes(of: daemon.pid))
        #expect(sent > 64 << 20, "the clients offered \(sent) bytes, more than the bound")
        #expect(during < 64 << 20, "\(mode): directd held \(during >> 20) MiB with 1,000 clients that never read")
        clients.close()
        var after = during
        let returned = eventually(within: 10) {
            after = residentBytes(of: daemon.pid) ?? after
            return after < idle + (8 << 20)
        }
        #expect(returned, "\(mode): resident memory \(after >> 20) MiB 10 s after the clients left, idle was \(idle >> 20) MiB")
        #expect(daemon.process.isRunning, "\(mode): directd died: \(daemon.logText.suffix(2000))")
        // Memory can come back before the last sessions have seen their
        // clients' resets (a loaded machine): asked again (summaries come at
        // most once a second) until every one has closed, within a bound.
        let closed = eventually(within: 30) {
            kill(daemon.pid, SIGUSR1)
            return daemon.waitForLog("summary: 0 open, 1000 total", timeout: 1.5)
        }
        #expect(closed, "every session closed once its client left: \(daemon.logText.suffix(600))")
    }

    /// A small memory-limit: the clients that never read spend it (once the
    /// kernel's own buffers are under pressure, which takes many of them),
    /// readers wait (and it is logged), and once they leave a new client is served.
    @Test func memoryLimitMakesReadersWaitAndThenResume() throws {
        let daemon = try Daemon(["--bind-interface", "127.0.0.1", "--port", "0", "--log-level", "warning",
                                 "--memory-limit", "2MiB"])
        defer { daemon.stop() }
        let clients = try StuckClients(count: 1000, port: daemon.port)
        clients.fill()
        #expect(daemon.waitForLog("memory-limit (2097152 bytes of relay buffers) reached"))
        let during = try #require(residentBytes(of: daemon.pid))
        #expect(during < 32 << 20, "directd held \(during >> 20) MiB with a 2 MiB budget")
        clients.close()
        let client = try TCPClient(host: "127.0.0.1", port: daemon.port)
        let payload = randomBytes(200_000)
        #expect(client.send(payload))
        #expect(client.receive(exactly: payload.count) == payload, "served once the budget is free again")
        #expect(daemon.process.isRunning)
    }

    @Test func perClientLimitRefusesTheConnectionOverIt() throws {
        let daemon = try Daemon(["--bind-interface", "127.0.0.1", "--port", "0", "--max-connections-per-client", "2"])
        defer { daemon.stop() }
        let first = try TCPClient(host: "127.0.0.1", port: daemon.port)
        let second = try TCPClient(host: "127.0.0.1", port: daemon.port)
        #expect(first.send([1]) && first.receive(exactly: 1) == [1])
        #expect(second.send([2]) && second.receive(exactly: 1) == [2])
        let third = try TCPClient(host: "127.0.0.1", port: daemon.port)
        #expect(third.receiveAll() == [], "the third connection from one address is closed at once")
        #expect(daemon.waitForLog("max-connections-per-client (2) reached"))
        // Another address is counted apart.
        let other = try TCPClient(host: "127.0.0.1", port: daemon.port, source: "127.0.0.2")
        #expect(other.send([3]) && other.receive(exactly: 1) == [3])
        // A slot freed is a slot again.
        first.finishSending()
        #expect(first.receiveAll() == [])
        #expect(daemon.waitForLog("#1 closed"))
        let fourth = try TCPClient(host: "127.0.0.1", port: daemon.port)
        #expect(fourth.send([4]) && fourth.receive(exactly: 1) == [4])
    }

    @Test func summaryCountsTheBytesOfOpenConnections() throws {
        let daemon = try Daemon(["--bind-interface", "127.0.0.1", "--port", "0"])
        defer { daemon.stop() }
        let client = try TCPClient(host: "127.0.0.1", port: daemon.port)
        let payload = randomBytes(1000)
        #expect(client.send(payload) && client.receive(exactly: 1000) == payload)
        kill(daemon.pid, SIGUSR1)
        #expect(daemon.waitForLog("summary: 1 open, 1 total, 1000 bytes from clients, 1000 bytes to clients"))
    }

    /// The descriptor limit lowered under a running directd: it notices, pauses
    /// accepting (clients wait in the backlog instead of being accepted and
    /// closed), and serves them once the limit is raised again.
    @Test func loweredDescriptorLimitPausesAcceptingAndNothingIsDropped() throws {
        let daemon = try Daemon(["--bind-interface", "127.0.0.1", "--port", "0"])
        defer { daemon.stop() }
        let port = daemon.port
        #expect(try TCPClient(host: "127.0.0.1", port: port).send([1]))
        let pid = String(daemon.pid)
        func prlimit(_ limit: Int) throws {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/prlimit")
            process.arguments = ["--pid", pid, "--nofile=\(limit):20000"]
            try process.run()
            process.waitUntilExit()
            #expect(process.terminationStatus == 0)
        }
        let open = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count
        try prlimit(open + 3)
        #expect(daemon.waitForLog("descriptor limit changed from 20000 to \(open + 3)"))
        var clients: [TCPClient] = []
        for _ in 0..<20 {
            clients.append(try TCPClient(host: "127.0.0.1", port: port, connectTimeout: 2))
        }
        #expect(daemon.waitForLog("accepting paused"))
        // Held in the backlog, not accepted and closed: nothing arrives yet.
        for client in clients.prefix(3) {
            var timeout = timeval(tv_sec: 0, tv_usec: 200_000)
            setsockopt(client.fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            #expect(client.receiveUntilEnd().failureText == "Resource temporarily unavailable",
                    "a waiting client was closed instead of held")
        }
        try prlimit(20000)
        #expect(daemon.waitForLog("accepting again"))
        for (index, client) in clients.enumerated() {
            var timeout = timeval(tv_sec: 10, tv_usec: 0)
            setsockopt(client.fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            let byte = UInt8(index)
            #expect(client.send([byte]) && client.receive(exactly: 1) == [byte], "client \(index) served")
        }
    }

    /// A flood of refused connections is logged a few lines a second, then one
    /// "suppressed" line, even at --log-level warning.
    @Test func refusalFloodIsRateLimited() throws {
        let daemon = try Daemon(["--bind-interface", "127.0.0.1", "--port", "0", "--log-level", "warning",
                                 "--max-connections", "1"])
        defer { daemon.stop() }
        let holder = try TCPClient(host: "127.0.0.1", port: daemon.port)
        #expect(holder.send([1]) && holder.receive(exactly: 1) == [1])
        for _ in 0..<300 {
            let client = try TCPClient(host: "127.0.0.1", port: daemon.port)
            _ = client.receiveAll()
        }
        #expect(daemon.waitForLog("suppressed", timeout: 5))
        let refusals = daemon.logText.split(separator: "\n").filter { $0.contains("max-connections (1) reached") }
        #expect(refusals.count < 60, "\(refusals.count) refusal lines for 300 refusals")
        #expect(refusals.count >= 1)
    }
}
