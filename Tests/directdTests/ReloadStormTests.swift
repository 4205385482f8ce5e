import CUV
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Testing
@testable import directd

/// Reload requests are coalesced (issue 18 item 10): one reload in flight,
/// later requests folded into one more, at most one start per interval.
@Suite(.serialized)
struct ReloadStormTests {
    final class Starts { var causes: [String] = [] }

    @Test func requestsFoldIntoOneMoreReloadAfterTheOneInFlight() {
        let loop = TestLoop()
        let starts = Starts()
        let queue = ReloadQueue(loop: loop.loop, minimumInterval: 50) { cause in starts.causes.append(cause) }
        queue.request(cause: "first")
        #expect(starts.causes == ["first"], "an idle queue starts at once")
        for _ in 0..<10_000 { queue.request(cause: "storm") }
        loop.run(milliseconds: 120)
        #expect(starts.causes == ["first"], "nothing starts while one is in flight")
        queue.finished()
        #expect(loop.run(until: { starts.causes.count == 2 }, limit: 2000))
        #expect(starts.causes.last == "storm, and 9999 more requests folded into this one")
        queue.finished()
        loop.run(milliseconds: 120)
        #expect(starts.causes.count == 2, "no request, no reload")
        queue.close()
        #expect(loop.close())
    }

    @Test func reloadsStartAtMostOncePerInterval() {
        let loop = TestLoop()
        let starts = Starts()
        var startedAt: [UInt64] = []
        let queue = ReloadQueue(loop: loop.loop, minimumInterval: 100) { cause in
            starts.causes.append(cause)
            startedAt.append(uv_now(loop.loop))
        }
        // A reload that finishes at once, requested again and again.
        for _ in 0..<3 {
            queue.request(cause: "again")
            queue.finished()
        }
        #expect(starts.causes.count == 1, "the second waits out the interval")
        #expect(loop.run(until: { starts.causes.count == 2 }, limit: 2000))
        // The loop's own clock: the start came no earlier than the interval allows.
        #expect(startedAt[1] - startedAt[0] >= 100)
        queue.finished()
        queue.request(cause: "late")
        queue.close()   // a pending request is dropped with the queue
        loop.run(milliseconds: 150)
        #expect(starts.causes.count == 2)
        #expect(loop.close())
    }

    /// A SIGHUP storm from a bounded sender while a client does relayed round
    /// trips: before, nothing was accepted and round trips stalled until the
    /// storm ended. The progress is asserted while the sender still sends, and
    /// the config written during the storm is in force after it.
    @Test func aSIGHUPStormLeavesTheLoopServing() throws {
        let upstream = try TestServer(behaviour: Behaviour.echo)
        defer { upstream.stop() }
        let config = try ConfigFileFixture(["bind-interface": "127.0.0.1", "direct-access-port": "0"])
        let daemon = try Daemon(["--config", config.path, "--forward", "127.0.0.1:\(upstream.port)"])
        defer { daemon.stop() }
        let port = daemon.port
        let client = try TCPClient(host: "127.0.0.1", port: port)
        #expect(client.send([1]) && client.receive(exactly: 1) == [1])

        let storming = Observed(true), stop = Observed(false)
        let sent = Observed(0)
        let sender = DispatchGroup()
        sender.enter()
        let pid = daemon.pid
        Thread.detachNewThread {
            defer { storming.update { $0 = false }; sender.leave() }
            // Bounded in count and in time; stopped early once the client is done.
            let deadline = Date().addingTimeInterval(10)
            var count = 0
            while count < 5_000_000, Date() < deadline, !stop.get() {
                for _ in 0..<1000 { kill(pid, SIGHUP) }
                count += 1000
                sent.update { $0 = count }
            }
        }
        defer { stop.update { $0 = true }; _ = sender.wait(timeout: .now() + 30) }
        // The storm first: before, the loop was behind on signals within milliseconds.
        let stormDeadline = Date().addingTimeInterval(10)
        while sent.get() < 50_000, storming.get(), Date() < stormDeadline { usleep(1000) }
        var roundTrips = 0, accepted = 0, changed = false
        while storming.get(), roundTrips < 1000 {
            let byte = UInt8(truncatingIfNeeded: roundTrips)
            guard client.send([byte, 2]), client.receive(exactly: 2) == [byte, 2] else { break }
            guard storming.get() else { break }
            roundTrips += 1
            if roundTrips % 20 == 0 {
                let fresh = try TCPClient(host: "127.0.0.1", port: port)
                guard fresh.send([3]), fresh.receive(exactly: 1) == [3], storming.get() else { break }
                accepted += 1
            }
            if roundTrips == 100 {
                try config.write(["bind-interface": "127.0.0.1", "direct-access-port": "0", "max-connections": "77"])
                changed = true
            }
        }
        let sentDuring = sent.get()
        stop.update { $0 = true }
        #expect(sender.wait(timeout: .now() + 30) == .success)
        // The sender may reach its count before the client is done: what
        // matters is that the loop kept serving while it sent (before, it
        // answered a handful in the whole storm).
        #expect(roundTrips >= 300 && accepted >= 15,
                "during the storm (\(sentDuring) signals): \(roundTrips) of 1000 round trips, \(accepted) of 50 new connections")
        #expect(sentDuring >= 50_000, "the sender sent only \(sentDuring) signals")
        try #require(changed)
        #expect(daemon.waitForLog("max-connections: \"10000\" → \"77\"", timeout: 10), "\(daemon.logText.suffix(600))")
        #expect(client.send([4]) && client.receive(exactly: 1) == [4])
        #expect(daemon.process.isRunning)
        let reloads = daemon.logText.components(separatedBy: "reloading (").count - 1
        #expect(reloads >= 1 && reloads <= sentDuring / 100, "\(reloads) reloads for \(sentDuring) signals")
    }
}
