import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Testing

/// directd relaying to upstreams that the tests start, on loopback.
@Suite(.serialized)
struct RelayTests {
    func relay(to port: UInt16, _ extra: [String] = []) throws -> Daemon {
        try Daemon(["--bind-interface", "127.0.0.1", "--port", "0", "--forward", "127.0.0.1:\(port)"] + extra)
    }

    /// Sends `payload` from a second thread, half-closes, and reads everything back.
    func roundTrip(_ port: UInt16, _ payload: [UInt8], host: String = "127.0.0.1") throws -> [UInt8]? {
        let client = try TCPClient(host: host, port: port)
        Thread.detachNewThread { [payload] in
            _ = client.send(payload)
            client.finishSending()
        }
        return client.receiveAll()
    }

    @Test(arguments: ["copy", "splice"])
    func relaysManyConcurrentConnectionsIntactBothWays(_ mode: String) throws {
        let upstream = try TestServer(behaviour: Behaviour.echo)
        let daemon = try relay(to: upstream.port, ["--relay-mode", mode])
        let port = daemon.port
        let results = Observed<[Bool]>([])
        let group = DispatchGroup()
        for _ in 0..<8 {
            group.enter()
            Thread.detachNewThread {
                defer { group.leave() }
                let payload = randomBytes(4 << 20)
                let back = try? self.roundTrip(port, payload)
                results.update { $0.append(back == payload) }
            }
        }
        #expect(group.wait(timeout: .now() + 60) == .success)
        #expect(results.get() == Array(repeating: true, count: 8))
        #expect(daemon.waitForLog("#8 closed"))
        #expect(daemon.logText.contains("4194304 bytes from client, 4194304 bytes to client"))
        #expect(daemon.stop() == 0)
        upstream.stop()
    }

    @Test(arguments: ["copy", "splice"])
    func upstreamHalfCloseReachesTheClientWhichCanStillSend(_ mode: String) throws {
        // The upstream greets, half-closes, then counts what the client still sends.
        let received = Observed<Int?>(nil)
        let upstream = try TestServer { fd in
            _ = Behaviour.flood(fd, count: 1000)
            shutdown(fd, Int32(SHUT_WR))
            let count = Behaviour.drain(fd)
            received.update { $0 = count }
        }
        let daemon = try relay(to: upstream.port, ["--relay-mode", mode])
        let client = try TCPClient(host: "127.0.0.1", port: daemon.port)
        let greeting = client.receiveAll()
        #expect(greeting?.count == 1000, "the upstream's FIN arrives after its data")
        let payload = randomBytes(300_000)
        #expect(client.send(payload))
        client.finishSending()
        let deadline = Date().addingTimeInterval(10)
        while received.get() == nil, Date() < deadline { usleep(10_000) }
        #expect(received.get() == 300_000, "the client's bytes after the upstream's FIN are delivered")
        #expect(daemon.waitForLog("#1 closed: 300000 bytes from client, 1000 bytes to client"))
        daemon.stop()
        upstream.stop()
    }

    /// A client whose upstream cannot be reached gets a reset: an EOF after
    /// 0 bytes would look like an empty successful reply (issue 18, item 11).
    @Test func refusingUpstreamResetsTheClientAndIsLogged() throws {
        let closedPort = try freePort()
        let daemon = try relay(to: closedPort)
        let client = try TCPClient(host: "127.0.0.1", port: daemon.port)
        #expect(client.receiveUntilEnd().failureText == "Connection reset by peer")
        #expect(daemon.waitForLog("upstream 127.0.0.1:\(closedPort) refused: connection refused (ECONNREFUSED)"))
        daemon.stop()
    }

    @Test func silentUpstreamTimesOutWithAReset() throws {
        // A listener that never accepts, with its queue full, drops new SYNs: the
        // connect neither succeeds nor fails.
        let silent = try TestServer(accepting: false, backlog: 0)
        var fillers: [TCPClient] = []
        for _ in 0..<4 {
            if let filler = try? TCPClient(host: "127.0.0.1", port: silent.port, connectTimeout: 1) { fillers.append(filler) }
        }
        let daemon = try relay(to: silent.port, ["--connect-timeout", "0.5"])
        let client = try TCPClient(host: "127.0.0.1", port: daemon.port)
        #expect(client.receiveUntilEnd().failureText == "Connection reset by peer", "a timeout is a reset, not an empty reply")
        #expect(daemon.waitForLog("did not answer within 0.5 s"))
        daemon.stop()
        silent.stop()
        _ = fillers
    }

    @Test(arguments: ["copy", "splice"])
    func upstreamResetIsPassedOnAsAReset(_ mode: String) throws {
        let upstream = try TestServer { fd in
            var buffer = [UInt8](repeating: 0, count: 65536)
            _ = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            Behaviour.reset(fd)
        }
        let daemon = try relay(to: upstream.port, ["--relay-mode", mode])
        let client = try TCPClient(host: "127.0.0.1", port: daemon.port)
        // The socket reports the reset once, to whichever call comes first: the
        // sending thread's or the reading one's.
        let sendError = Observed<Int32?>(nil)
        let sending = DispatchGroup()
        sending.enter()
        Thread.detachNewThread {
            if !client.send(randomBytes(4 << 20)) { sendError.update { $0 = errno } }
            sending.leave()
        }
        let outcome = client.receiveUntilEnd()
        #expect(sending.wait(timeout: .now() + 15) == .success)
        let sawReset: Bool
        switch outcome {
        case .failure(let failure): sawReset = failure.description == String(cString: strerror(ECONNRESET))
        case .success(let data): sawReset = data.isEmpty && sendError.get() == ECONNRESET
        }
        #expect(sawReset, "the client must see a reset, not a clean end: \(outcome), send: \(String(describing: sendError.get()))")
        #expect(daemon.waitForLog("#1 closed"))
        #expect(daemon.logText.contains("upstream connection reset by peer (ECONNRESET)")
                || daemon.logText.contains("upstream broken pipe (EPIPE)"), "\(daemon.logText)")
        daemon.stop()
        upstream.stop()
    }

    @Test(arguments: ["copy", "splice"])
    func clientThatDoesNotReadHoldsBackAFloodingUpstream(_ mode: String) throws {
        let total = 32 << 20
        let upstream = try TestServer { fd in _ = Behaviour.flood(fd, count: total) }
        let daemon = try relay(to: upstream.port, ["--relay-mode", mode])
        let before = try #require(residentBytes(of: daemon.pid))
        let client = try TCPClient(host: "127.0.0.1", port: daemon.port)
        // Let the upstream push while the client reads nothing.
        usleep(1_500_000)
        let during = try #require(residentBytes(of: daemon.pid))
        #expect(during - before < 16 << 20, "directd buffered \(during - before) bytes for a client that does not read")
        let data = try #require(client.receiveAll(limit: total))
        #expect(data.count == total)
        #expect(data == Behaviour.patterned(total), "the flood arrives intact once read")
        daemon.stop()
        upstream.stop()
    }

    @Test(.enabled(if: hostHasIPv6Loopback, "needs ::1"))
    func allowListAdmitsListedPeersOnly() throws {
        let daemon = try Daemon(["--bind-interface", "127.0.0.1,::1", "--port", "0",
                                 "--whitelist", "127.0.0.2, 2001:db8::/32"])
        let port = daemon.port
        let refused = try TCPClient(host: "127.0.0.1", port: port, source: "127.0.0.1")
        #expect(refused.receiveAll() == [], "closed at accept")
        #expect(daemon.waitForLog("refused 127.0.0.1:"))
        let refused6 = try TCPClient(host: "::1", port: port)
        #expect(refused6.receiveAll() == [], "closed at accept")
        #expect(daemon.waitForLog("refused [::1]:"))
        #expect(try roundTripFrom("127.0.0.2", port: port) == [7, 8, 9])
        daemon.stop()

        let ipv6Only = try Daemon(["--bind-interface", "127.0.0.1,::1", "--port", "0", "--whitelist", "::1/128"])
        #expect(try roundTrip(ipv6Only.port, [7, 8, 9], host: "::1") == [7, 8, 9])
        #expect(try TCPClient(host: "127.0.0.1", port: ipv6Only.port).receiveAll() == [])
        ipv6Only.stop()
    }

    func roundTripFrom(_ source: String, port: UInt16) throws -> [UInt8]? {
        let client = try TCPClient(host: "127.0.0.1", port: port, source: source)
        _ = client.send([7, 8, 9])
        client.finishSending()
        return client.receiveAll()
    }

    @Test(arguments: ["10.0.0.1/33", "127.0.0.1,x", "localhost", "192.0.2.1/24", "2001:db8::/129", "::ffff:10.0.0.0/95"])
    func invalidAllowListEntriesAreConfigurationErrors(_ entry: String) throws {
        let result = try runDirectd(["check", "--whitelist", entry])
        #expect(result.status == 78)
        #expect(result.stderr.contains("Invalid whitelist entry"), "\(result.stderr)")
    }

    @Test func connectionsPastTheLimitAreClosedAtOnce() throws {
        let daemon = try Daemon(["--bind-interface", "127.0.0.1", "--port", "0", "--max-connections", "2", "--grace", "1"])
        let port = daemon.port
        let first = try TCPClient(host: "127.0.0.1", port: port)
        let second = try TCPClient(host: "127.0.0.1", port: port)
        #expect(first.send([1]) && first.receive(exactly: 1) == [1])
        #expect(second.send([2]) && second.receive(exactly: 1) == [2])
        let third = try TCPClient(host: "127.0.0.1", port: port)
        #expect(third.receiveAll() == [], "accepted and closed, not left in the backlog")
        #expect(daemon.waitForLog("max-connections (2) reached"))
        first.finishSending()
        #expect(first.receiveAll() == [])
        #expect(daemon.waitForLog("#1 closed"))
        #expect(try roundTrip(port, [5]) == [5], "room again once one closed")
        daemon.stop()
    }

    @Test func runningOutOfDescriptorsPausesAcceptingWithoutSpinning() throws {
        let daemon = try Daemon(["--bind-interface", "127.0.0.1", "--port", "0"],
                                prefix: ["/usr/bin/prlimit", "--nofile=32:32", "--"])
        let port = daemon.port
        var clients: [TCPClient] = []
        for _ in 0..<48 {
            if let client = try? TCPClient(host: "127.0.0.1", port: port, connectTimeout: 1) { clients.append(client) }
        }
        #expect(daemon.waitForLog("accepting paused"))
        let cpuBefore = try #require(cpuSeconds(of: daemon.pid))
        usleep(1_000_000)
        let cpuAfter = try #require(cpuSeconds(of: daemon.pid))
        #expect(cpuAfter - cpuBefore < 0.3, "directd used \(cpuAfter - cpuBefore) s of CPU in 1 s while paused")
        #expect(daemon.process.isRunning)
        clients.removeAll()   // closes them all
        #expect(daemon.waitForLog("accepting again"))
        #expect(try roundTrip(port, [1, 2]) == [1, 2])
        #expect(daemon.stop() == 0)
    }

    @Test(arguments: ["copy", "splice"])
    func sigtermLetsAConnectionInFlightFinishAndRefusesNewOnes(_ mode: String) throws {
        let upstream = try TestServer(behaviour: Behaviour.echo)
        let daemon = try relay(to: upstream.port, ["--grace", "10", "--relay-mode", mode])
        let port = daemon.port
        let client = try TCPClient(host: "127.0.0.1", port: port)
        #expect(client.send([1, 2, 3]) && client.receive(exactly: 3) == [1, 2, 3])
        kill(daemon.pid, SIGTERM)
        #expect(daemon.waitForLog("stopped accepting"))
        #expect(throws: TestFailure.self) { _ = try TCPClient(host: "127.0.0.1", port: port) }
        // The connection in flight goes on and ends normally.
        let payload = randomBytes(1 << 20)
        Thread.detachNewThread { _ = client.send(payload); client.finishSending() }
        #expect(client.receiveAll() == payload)
        let start = Date()
        // The first SIGTERM is enough: wait for its exit (a second signal would
        // cut the drain short, and under a sanitizer the exit takes a while).
        #expect(daemon.stop(signal: 0, timeout: 5) == 0)
        #expect(Date().timeIntervalSince(start) < 3, "exits as soon as the last connection is done")
        upstream.stop()
    }

    @Test func secondSignalStopsAtOnce() throws {
        let daemon = try Daemon(["--bind-interface", "127.0.0.1", "--port", "0", "--grace", "60"])
        let client = try TCPClient(host: "127.0.0.1", port: daemon.port)
        #expect(client.send([1]) && client.receive(exactly: 1) == [1])
        kill(daemon.pid, SIGTERM)
        #expect(daemon.waitForLog("stopped accepting"))
        let start = Date()
        #expect(daemon.stop(signal: SIGTERM, timeout: 5) == 0)
        #expect(Date().timeIntervalSince(start) < 3)
        #expect(client.receiveUntilEnd().failureText == "Connection reset by peer", "a cut stream ends with RST")
    }

    /// Cut on purpose, so with a reset: a FIN would tell the peer its stream ended cleanly.
    @Test func idleConnectionsAreCutWithAReset() throws {
        let daemon = try Daemon(["--bind-interface", "127.0.0.1", "--port", "0", "--idle-timeout", "0.3"])
        let client = try TCPClient(host: "127.0.0.1", port: daemon.port)
        #expect(client.receiveUntilEnd().failureText == "Connection reset by peer")
        #expect(daemon.waitForLog("idle for 0.3 s"))
        daemon.stop()
    }

    @Test func summaryOnSIGUSR1() throws {
        let daemon = try Daemon(["--bind-interface", "127.0.0.1", "--port", "0"])
        #expect(try roundTrip(daemon.port, [1, 2, 3, 4]) == [1, 2, 3, 4])
        #expect(daemon.waitForLog("#1 closed"))
        kill(daemon.pid, SIGUSR1)
        #expect(daemon.waitForLog("summary: 0 open, 1 total, 4 bytes from clients, 4 bytes to clients"))
        daemon.stop()
    }

    @Test func manyShortConnectionsLeaveNothingBehind() throws {
        // 100,000 connections through the relay: memory after the first 10,000 and
        // after all of them must be the same, give or take allocator noise.
        let upstream = try TestServer(behaviour: Behaviour.echo)
        let daemon = try relay(to: upstream.port, ["--log-level", "warning"])
        let port = daemon.port
        func churn(_ count: Int) {
            let group = DispatchGroup()
            for _ in 0..<4 {
                group.enter()
                Thread.detachNewThread {
                    defer { group.leave() }
                    for _ in 0..<(count / 4) {
                        guard let client = try? TCPClient(host: "127.0.0.1", port: port) else { continue }
                        _ = client.send([42])
                        _ = client.receive(exactly: 1)
                    }
                }
            }
            _ = group.wait(timeout: .now() + 120)
        }
        churn(10_000)
        let warm = try #require(residentBytes(of: daemon.pid))
        churn(90_000)
        let after = try #require(residentBytes(of: daemon.pid))
        #expect(after - warm < 4 << 20, "resident memory grew by \(after - warm) bytes over 90,000 more connections")
        // The last sessions may still be closing: ask until the count settles.
        let expected = "summary: 0 open, 100000 total, 100000 bytes from clients, 100000 bytes to clients"
        for _ in 0..<50 where !daemon.logText.contains(expected) {
            kill(daemon.pid, SIGUSR1)
            usleep(100_000)
        }
        #expect(daemon.logText.contains(expected), "\(daemon.logText.suffix(400))")
        #expect(daemon.stop() == 0)
        upstream.stop()
    }
}
