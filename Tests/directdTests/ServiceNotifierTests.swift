import CUV
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Testing
import UVBind
@testable import directd

/// sd_notify against a datagram socket the test owns, as systemd's would be.
struct ServiceNotifierTests {
    func monotonicNow() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return UInt64(now.tv_sec) * 1_000_000 + UInt64(now.tv_nsec) / 1000
    }

    @Test(arguments: [false, true])
    func lifecycleInOrder(abstract: Bool) throws {
        let receiver = try NotifyReceiver(abstract: abstract)
        let loop = TestLoop()
        let notifier = ServiceNotifier(loop: loop.loop, environment: ["NOTIFY_SOCKET": receiver.name])
        #expect(notifier.isEnabled)
        #expect(notifier.watchdogInterval == nil, "no WATCHDOG_USEC, no watchdog")

        notifier.ready()
        let before = monotonicNow()
        notifier.reloading()
        let after = monotonicNow()
        notifier.ready()
        notifier.stopping()
        let messages = receiver.drain()

        try #require(messages.count == 4, "\(messages)")
        #expect(messages[0] == "READY=1")
        let reloading = messages[1].split(separator: "\n").map(String.init)
        #expect(reloading.count == 2 && reloading[0] == "RELOADING=1", "\(messages[1])")
        let stamp = try #require(reloading.last.flatMap { $0.hasPrefix("MONOTONIC_USEC=") ? UInt64($0.dropFirst(15)) : nil },
                                 "MONOTONIC_USEC missing: \(messages[1])")
        #expect(stamp >= before && stamp <= after, "MONOTONIC_USEC \(stamp) is CLOCK_MONOTONIC in µs, read between \(before) and \(after)")
        #expect(messages[2] == "READY=1")
        #expect(messages[3] == "STOPPING=1")

        notifier.close()
        notifier.ready()
        #expect(receiver.drain().isEmpty, "silent once closed")
        #expect(loop.close())
    }

    @Test func watchdogAtHalfTheInterval() throws {
        let receiver = try NotifyReceiver(abstract: true)
        let loop = TestLoop()
        // 120 ms: WATCHDOG=1 every 60 ms.
        let notifier = ServiceNotifier(loop: loop.loop, environment: [
            "NOTIFY_SOCKET": receiver.name, "WATCHDOG_USEC": "120000", "WATCHDOG_PID": String(getpid()),
        ])
        #expect(notifier.watchdogInterval == 60_000)
        var arrivals: [UInt64] = []
        let start = uv_hrtime()
        loop.run(until: {
            for message in receiver.drain() {
                #expect(message == "WATCHDOG=1")
                arrivals.append((uv_hrtime() - start) / 1_000_000)
            }
            return arrivals.count >= 6
        }, slice: 5, limit: 2000)
        try #require(arrivals.count >= 6, "watchdog messages at \(arrivals) ms")
        let gaps = zip(arrivals.dropFirst(), arrivals).map { $0 - $1 }.sorted()
        let median = gaps[gaps.count / 2]
        #expect(median >= 45 && median <= 90, "WATCHDOG=1 every 60 ms, gaps \(gaps)")
        #expect(arrivals[0] >= 40, "the first one after half the interval, not at once: \(arrivals)")

        notifier.close()
        #expect(loop.close(), "the watchdog timer is closed")
    }

    @Test func watchdogTimerDoesNotKeepTheLoopAlive() throws {
        let receiver = try NotifyReceiver(abstract: true)
        let loop = TestLoop()
        let notifier = ServiceNotifier(loop: loop.loop, environment: ["NOTIFY_SOCKET": receiver.name, "WATCHDOG_USEC": "1000000"])
        #expect(notifier.watchdogInterval == 500_000)
        let start = uv_hrtime()
        uv_run(loop.loop, UV_RUN_DEFAULT)   // returns at once: only unreferenced handles
        #expect((uv_hrtime() - start) / 1_000_000 < 100)
        notifier.close()
        #expect(loop.close())
    }

    @Test func watchdogOnlyForThisProcess() {
        let pid = getpid()
        #expect(ServiceNotifier.watchdogInterval(["WATCHDOG_USEC": "2000000"], processID: pid) == 1_000_000)
        #expect(ServiceNotifier.watchdogInterval(["WATCHDOG_USEC": "2000000", "WATCHDOG_PID": String(pid)], processID: pid) == 1_000_000)
        #expect(ServiceNotifier.watchdogInterval(["WATCHDOG_USEC": "2000000", "WATCHDOG_PID": String(pid + 1)], processID: pid) == nil)
        #expect(ServiceNotifier.watchdogInterval(["WATCHDOG_USEC": "0"], processID: pid) == nil)
        #expect(ServiceNotifier.watchdogInterval(["WATCHDOG_USEC": "soon"], processID: pid) == nil)
        #expect(ServiceNotifier.watchdogInterval([:], processID: pid) == nil)
    }

    @Test func statusAtMostOnceASecondLatestWins() throws {
        let receiver = try NotifyReceiver(abstract: false)
        let loop = TestLoop()
        let notifier = ServiceNotifier(loop: loop.loop, environment: ["NOTIFY_SOCKET": receiver.name])
        let start = uv_hrtime()
        notifier.status("listening on 127.0.0.1:1; 0 open, 0 total")
        #expect(receiver.drain() == ["STATUS=listening on 127.0.0.1:1; 0 open, 0 total"], "the first status goes out at once")

        for count in 1...20 { notifier.status("listening on 127.0.0.1:1; \(count) open, \(count) total") }
        notifier.status("two\nlines")
        loop.run(milliseconds: 500)
        #expect(receiver.drain().isEmpty, "nothing more within the second")

        var later: [String] = []
        // A loaded machine may deliver it late, never early.
        loop.run(until: { later += receiver.drain(); return !later.isEmpty }, limit: 10_000)
        let elapsed = (uv_hrtime() - start) / 1_000_000
        #expect(later == ["STATUS=two lines"], "only the latest, on one line")
        #expect(elapsed >= 900, "not before a second after the first: \(elapsed) ms")

        // The same value again is not news; after a quiet second the timer goes.
        notifier.status("two\nlines")
        loop.run(milliseconds: 1200)
        #expect(receiver.drain().isEmpty)
        #expect(loop.handleCount == 0, "no timer left while the status is quiet")

        notifier.status("idle again")
        #expect(receiver.drain() == ["STATUS=idle again"], "after a quiet second, at once")
        notifier.close()
        #expect(loop.close())
    }

    @Test func busyManagerNeverBlocksAndLosesNothing() throws {
        // The kernel queues few datagrams for a unix socket (net.unix.max_dgram_qlen,
        // 10 by default): a manager that does not read makes sends fail with EAGAIN.
        let receiver = try NotifyReceiver(abstract: true)
        let loop = TestLoop()
        let notifier = ServiceNotifier(loop: loop.loop, environment: ["NOTIFY_SOCKET": receiver.name])
        let start = uv_hrtime()
        for _ in 0..<7 {
            notifier.reloading()
            notifier.ready()
        }
        #expect((uv_hrtime() - start) / 1_000_000 < 100, "no send blocks")
        var received = receiver.drain()
        #expect(received.count < 14, "the queue filled (\(received.count) sent at once)")
        loop.run(until: { received += receiver.drain(); return received.count >= 14 }, limit: 2500)
        #expect(received.count == 14)
        #expect(received.enumerated().allSatisfy { index, message in
            index % 2 == 0 ? message.hasPrefix("RELOADING=1\nMONOTONIC_USEC=") : message == "READY=1"
        }, "in order: \(received)")
        notifier.close()
        #expect(loop.close())
    }

    @Test func statusChangedAsksTheSourceOnceASecond() throws {
        let receiver = try NotifyReceiver(abstract: true)
        let loop = TestLoop()
        let notifier = ServiceNotifier(loop: loop.loop, environment: ["NOTIFY_SOCKET": receiver.name])
        var open = 0, asked = 0
        notifier.statusSource = { asked += 1; return "\(open) open" }
        for _ in 0..<100 {
            open += 1
            notifier.statusChanged()
        }
        #expect(asked == 1, "asked at once, then not within the second")
        #expect(receiver.drain() == ["STATUS=1 open"])
        var later: [String] = []
        loop.run(until: { later += receiver.drain(); return !later.isEmpty }, limit: 1500)
        #expect(later == ["STATUS=100 open"], "the state when the second is over")
        #expect(asked == 2)
        notifier.close()
        #expect(loop.close())

        let silent = TestLoop()
        let off = ServiceNotifier(loop: silent.loop, environment: [:])
        off.statusSource = { asked += 1; return "" }
        off.statusChanged()
        #expect(asked == 2, "without a manager the source is never asked")
        off.close()
        #expect(silent.close())
    }

    @Test func statusLineNamesListenersAndConnections() {
        let listeners = [SocketAddress(ip: .v4(.loopback), port: 21118), SocketAddress(ip: .v6(.loopback), port: 21118)]
        #expect(ServiceNotifier.statusLine(listeners: listeners, open: 3, total: 120)
                == "listening on 127.0.0.1:21118, [::1]:21118; 3 open, 120 total")
        #expect(ServiceNotifier.statusLine(listeners: [], open: 0, total: 7) == "no listener; 0 open, 7 total")
    }

    @Test func silentWithoutNotifySocket() throws {
        let loop = TestLoop()
        let notifier = ServiceNotifier(loop: loop.loop, environment: ["WATCHDOG_USEC": "100000"])
        #expect(!notifier.isEnabled)
        #expect(notifier.watchdogInterval == nil)
        notifier.ready()
        notifier.reloading()
        notifier.status("x")
        notifier.stopping()
        #expect(loop.handleCount == 0, "no watchdog or status timer without a manager")
        notifier.close()
        #expect(loop.close())
    }

    @Test(arguments: ["relative/notify", "vsock:2:1234", "/" + String(repeating: "x", count: 200)])
    func unusableNotifySocketIsSilent(name: String) {
        let loop = TestLoop()
        let notifier = ServiceNotifier(loop: loop.loop, environment: ["NOTIFY_SOCKET": name, "WATCHDOG_USEC": "100000"])
        #expect(!notifier.isEnabled)
        #expect(loop.handleCount == 0)
        notifier.close()
        #expect(loop.close())
    }

    @Test func managerGoneThenBack() throws {
        var receiver: NotifyReceiver? = try NotifyReceiver(abstract: false)
        let name = receiver!.name
        let loop = TestLoop()
        let notifier = ServiceNotifier(loop: loop.loop, environment: ["NOTIFY_SOCKET": name])
        receiver = nil   // closed and unlinked: sends fail (ENOENT), are dropped, directd goes on
        notifier.ready()
        notifier.status("lost")
        // A manager that comes back at the same path (daemon-reexec) hears the next message,
        // not a queue of stale ones.
        let back = try NotifyReceiver(abstract: false, name: name)
        notifier.stopping()
        #expect(back.drain() == ["STOPPING=1"])
        notifier.close()
        #expect(loop.close())
    }
}
