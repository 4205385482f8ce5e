import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Synchronization
import Testing

/// A SIGUSR1 storm from one sender (issue 18, item 10): each signal used to
/// log a summary, and the loop did nothing else until the storm ended.
@Suite(.serialized)
struct SignalStormTests {
    @Test func aSummaryStormDoesNotStarveTheLoop() throws {
        let daemon = try Daemon(["--bind-interface", "127.0.0.1", "--port", "0"])
        let port = daemon.port
        let pid = daemon.pid
        let flags = StormFlags()
        // Bounded in count and time: the fixed code logs at most one summary a
        // second, so at most `seconds` + 1 lines, whatever the machine's speed.
        let limit = 1_000_000, seconds = 30.0
        let storm = Thread { [flags] in
            let deadline = Date().addingTimeInterval(seconds)
            var count = 0
            while !flags.stop.load(ordering: .relaxed), count < limit, Date() < deadline {
                for _ in 0..<1000 { kill(pid, SIGUSR1) }
                count += 1000
                flags.sent.store(count, ordering: .relaxed)
            }
            flags.ended.store(true, ordering: .releasing)
        }
        storm.start()
        defer {
            flags.stop.store(true, ordering: .relaxed)
            _ = eventually(within: 10) { flags.ended.load(ordering: .acquiring) }
        }
        _ = eventually(within: 5) { flags.sent.load(ordering: .relaxed) >= 20_000 }

        // New connections (accepts) and round trips while the storm lasts.
        var during = 0, attempts = 0
        while attempts < 5000, !flags.ended.load(ordering: .acquiring) {
            attempts += 1
            if echoRoundTrip(port: port) { during += 1 }
        }
        #expect(during >= 10 && during * 2 >= attempts,
                "\(during) round trips of \(attempts) during the storm of \(flags.sent.load(ordering: .relaxed)) signals")
        try #require(eventually(within: seconds + 10) { flags.ended.load(ordering: .acquiring) })
        #expect(daemon.process.isRunning)

        // The requests were folded, and the last ones still answered.
        #expect(daemon.waitForLog("summary: "))
        #expect(echoRoundTrip(port: port))
        let summaries = daemon.logText.split(separator: "\n").filter { withoutTimestamp($0).hasPrefix("summary: ") }.count
        #expect(summaries >= 1 && summaries <= Int(seconds) + 2,
                "\(summaries) summary lines for \(flags.sent.load(ordering: .relaxed)) signals")
        #expect(daemon.stop() == 0)
    }
}

/// The storm thread's flags, shared with the test.
final class StormFlags: Sendable {
    let stop = Atomic<Bool>(false)
    let sent = Atomic<Int>(0)
    let ended = Atomic<Bool>(false)
}
