import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Testing

/// A loop that stalls (SIGSTOP, or a reload that blocks) must not cut active
/// connections as idle: the ticker runs before the loop reads the bytes that
/// waited in the sockets meanwhile, so a deadline is decided only after the
/// loop has polled once more (issue 18, item 4).
@Suite(.serialized)
struct StallTests {
    /// Sends a byte every 0.1 s and reads the echo, until told to stop
    /// (bounded: 600 rounds); counts the rounds whose echo came back.
    final class Trickle: @unchecked Sendable {
        let client: TCPClient
        private let stopped = Observed(false)
        let echoed = Observed(0)
        let failed = Observed<String?>(nil)
        private let done = DispatchGroup()

        init(port: UInt16) throws {
            client = try TCPClient(host: "127.0.0.1", port: port)
            done.enter()
            Thread.detachNewThread { [self] in
                defer { done.leave() }
                for _ in 0..<600 where !stopped.get() {
                    guard client.send([7]), client.receive(exactly: 1) == [7] else {
                        failed.update { $0 = String(cString: strerror(errno)) }
                        return
                    }
                    echoed.update { $0 += 1 }
                    usleep(100_000)
                }
            }
        }

        func stop() {
            stopped.update { $0 = true }
            _ = done.wait(timeout: .now() + 15)
        }
    }

    /// Waits (bounded) until every trickle has had `rounds` echoes.
    static func waitForRounds(_ trickles: [Trickle], _ rounds: Int) -> Bool {
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline {
            if trickles.allSatisfy({ $0.echoed.get() >= rounds }) { return true }
            usleep(10_000)
        }
        return false
    }

    /// Stops directd for `seconds`, then lets it go on; SIGCONT on every exit path.
    static func stall(_ daemon: Daemon, seconds: Double) {
        kill(daemon.pid, SIGSTOP)
        defer { kill(daemon.pid, SIGCONT) }
        usleep(UInt32(seconds * 1_000_000))
    }

    @Test func activeConnectionsSurviveAStalledLoopAndAnIdleOneIsStillCut() throws {
        let daemon = try Daemon(["--bind-interface", "127.0.0.1", "--port", "0", "--idle-timeout", "1"])
        let idle = try TCPClient(host: "127.0.0.1", port: daemon.port)   // #1: sends nothing
        #expect(daemon.waitForLog("#1 opened"))
        let trickles = try (0..<3).map { _ in try Trickle(port: daemon.port) }   // #2 to #4
        defer { trickles.forEach { $0.stop() } }
        #expect(Self.waitForRounds(trickles, 3), "the trickles run")
        // Two seconds stopped: every connection's last byte is older than the
        // idle timeout when the loop wakes, but the active ones have bytes waiting.
        Self.stall(daemon, seconds: 2)
        #expect(daemon.waitForLog("#1 closed"), "the idle connection is still cut")
        let before = trickles.map { $0.echoed.get() }
        #expect(Self.waitForRounds(trickles, (before.max() ?? 0) + 5), "the active ones go on after the stall")
        for id in 2...4 {
            #expect(!daemon.logText.contains("#\(id) closed"), "#\(id) was active: \(daemon.logText.suffix(800))")
        }
        #expect(trickles.allSatisfy { $0.failed.get() == nil }, "\(trickles.map { $0.failed.get() })")
        #expect(daemon.logText.contains("#1 closed") && daemon.logText.contains("idle for 1.0 s"), "\(daemon.logText.suffix(800))")
        trickles.forEach { $0.stop() }
        _ = idle
        #expect(daemon.stop() == 0)
    }

    /// An upstream connect that completes while the loop is stopped is not
    /// cut as a connect timeout when it wakes.
    @Test func aConnectThatCompletedDuringAStallIsNotCut() throws {
        // A listener whose one-place queue is full drops SYNs: directd's connect
        // waits for the SYN's retransmission (one second later).
        let slow = try TestServer(accepting: false, backlog: 0)
        defer { slow.stop() }
        var filler: TCPClient? = try TCPClient(host: "127.0.0.1", port: slow.port)
        let daemon = try Daemon(["--bind-interface", "127.0.0.1", "--port", "0",
                                 "--forward", "127.0.0.1:\(slow.port)", "--connect-timeout", "2"])
        let client = try TCPClient(host: "127.0.0.1", port: daemon.port)
        #expect(daemon.waitForLog("#1 opened"))
        usleep(100_000)   // directd's first SYN has gone (and was dropped)
        kill(daemon.pid, SIGSTOP)
        do {
            defer { kill(daemon.pid, SIGCONT) }
            // Make room: the retransmitted SYN completes the handshake while
            // directd is stopped. Stopped longer than the connect timeout.
            let taken = accept(slow.fd, nil, nil)
            if taken >= 0 { close(taken) }
            filler = nil
            usleep(3_000_000)
        }
        // The relay works: the test's upstream accepts and echoes one message.
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(slow.fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let upstream = accept(slow.fd, nil, nil)
        #expect(upstream >= 0, "directd's connect reached the upstream")
        defer { if upstream >= 0 { close(upstream) } }
        #expect(client.send([1, 2, 3]))
        var got = [UInt8](repeating: 0, count: 3)
        if upstream >= 0 {
            setsockopt(upstream, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            #expect(recv(upstream, &got, 3, Int32(MSG_WAITALL)) == 3)
        }
        #expect(got == [1, 2, 3], "relayed after the stall: \(daemon.logText.suffix(600))")
        #expect(!daemon.logText.contains("did not answer"), "\(daemon.logText.suffix(600))")
        _ = filler
        #expect(daemon.stop() == 0)
    }
}
