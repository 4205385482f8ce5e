import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The rate limit on the real binary, over loopback, each client bound to its
/// own 127.0.0.x source address.
@Suite(.serialized)
struct RateLimitProcessTests {
    /// One echo round trip from `source`: true if served, false if closed at accept.
    static func served(from source: String, port: UInt16) throws -> Bool {
        let client = try TCPClient(host: "127.0.0.1", port: port, source: source)
        guard client.send([42]) else { return false }
        return client.receive(exactly: 1) == [42]
    }

    @Test func atMostTheLimitIsServedPerClientAndItRefills() throws {
        let daemon = try Daemon(["--bind-interface", "127.0.0.1", "--port", "0",
                                 "--rate-limit", "3/2s", "--rate-limit-exempt", "127.0.0.10"])
        defer { daemon.stop() }
        let port = daemon.port
        let started = Date()
        var results: [Bool] = []
        for _ in 0..<8 { results.append(try Self.served(from: "127.0.0.9", port: port)) }
        // A token comes back every 2/3 s: what may have refilled while the
        // attempts ran bounds what may have been served (a bound, not a timing).
        let refilled = Int(Date().timeIntervalSince(started) * 1.5)
        #expect(results.prefix(3).allSatisfy { $0 }, "a new client has its whole allowance: \(results)")
        #expect(results.filter { $0 }.count <= 3 + refilled, "at most the limit served: \(results)")
        #expect(results.contains(false), "the rest refused: \(results)")
        let check = try runDirectd(["check", "--bind-interface", "127.0.0.1", "--rate-limit", "3/2s", "--rate-limit-exempt", "127.0.0.10"])
        #expect(check.stderr.contains("rate-limit 3/2s per client (IPv4 per address, IPv6 per /64), no bans; exempt: 127.0.0.10/32"),
                "\(check.stderr)")
        #expect(daemon.waitForLog("rate-limit (3/2s) exceeded by 127.0.0.9"), "\(daemon.logText)")
        #expect(try (0..<3).allSatisfy { _ in try Self.served(from: "127.0.0.2", port: port) },
                "a second address is unaffected")
        #expect(try (0..<10).allSatisfy { _ in try Self.served(from: "127.0.0.10", port: port) },
                "an exempt address is never limited")
        // The period passes: served again (polled, bounded).
        #expect(eventually(within: 10) { (try? Self.served(from: "127.0.0.9", port: port)) == true })
        #expect(!daemon.logText.contains("127.0.0.10 exceeded"))
    }

    @Test func aClientThatKeepsComingIsBanned() throws {
        let daemon = try Daemon(["--bind-interface", "127.0.0.1", "--port", "0",
                                 "--rate-limit", "2/1h", "--ban-time", "1h", "--metrics-listen", "127.0.0.1:\(try freePort())"])
        defer { daemon.stop() }
        let results = try (0..<6).map { _ in try Self.served(from: "127.0.0.9", port: daemon.port) }
        // The metrics count them by reason: past the limit (the second starts the ban), then banned.
        let samples = metricSamples(try httpGet(try #require(daemon.metricsPort)).body)
        let listener = "listener=\"127.0.0.1:\(daemon.port)\""
        #expect(samples["directd_connections_refused_total{\(listener),reason=\"rate_limit\"}"] == 2, "\(samples)")
        #expect(samples["directd_connections_refused_total{\(listener),reason=\"banned\"}"] == 2, "\(samples)")
        #expect(results == [true, true, false, false, false, false])
        #expect(daemon.waitForLog("rate-limit (2/1h) exceeded again by 127.0.0.9: banned for 1h"), "\(daemon.logText)")
        #expect(daemon.waitForLog("127.0.0.9 is banned (rate-limit) for"), "\(daemon.logText)")
        #expect(try Self.served(from: "127.0.0.2", port: daemon.port))
        #expect(daemon.logText.contains("rate-limit 2/1h per client (IPv4 per address, IPv6 per /64), bans of 1h doubling up to 64x"))
        kill(daemon.pid, SIGUSR1)
        #expect(daemon.waitForLog("rate-limit: 2 of 65536 clients tracked, 1 banned, 2 refused past the limit, 2 while banned, 1 bans, 0 untracked"),
                "\(daemon.logText)")
    }

    @Test func aReloadKeepsTheTable() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("directd-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let config = directory.appendingPathComponent("directd.json")
        func write(_ limit: String) throws {
            try #"{"options": {"bind-interface": "127.0.0.1", "direct-access-port": "0", "rate-limit": "\#(limit)"}}"#
                .write(to: config, atomically: true, encoding: .utf8)
        }
        try write("2/1h")
        let daemon = try Daemon(["--config", config.path])
        defer { daemon.stop() }
        let port = daemon.port
        #expect(try (0..<3).map { _ in try Self.served(from: "127.0.0.9", port: port) } == [true, true, false])
        try write("3/1h")
        kill(daemon.pid, SIGHUP)
        #expect(daemon.waitForLog("rate-limit: \"2/1h\" → \"3/1h\""), "\(daemon.logText)")
        #expect(!(try Self.served(from: "127.0.0.9", port: port)), "the client's empty bucket survived the reload")
        #expect(try (0..<3).allSatisfy { _ in try Self.served(from: "127.0.0.2", port: port) }, "the new limit applies")
        #expect(!(try Self.served(from: "127.0.0.2", port: port)))
        // Off: nobody is limited; on again: the table is as it was.
        try write("")
        kill(daemon.pid, SIGHUP)
        #expect(daemon.waitForLog("rate-limit: \"3/1h\" → \"\""), "\(daemon.logText)")
        #expect(try (0..<4).allSatisfy { _ in try Self.served(from: "127.0.0.9", port: port) })
        try write("3/1h")
        kill(daemon.pid, SIGHUP)
        #expect(daemon.waitForLog("rate-limit: \"\" → \"3/1h\""), "\(daemon.logText)")
        #expect(!(try Self.served(from: "127.0.0.9", port: port)), "the bucket emptied before is still empty")
        #expect(try Self.served(from: "127.0.0.3", port: port))
    }

    @Test func bansWithoutALimitAreWarnedAbout() throws {
        let result = try runDirectd(["check", "--bind-interface", "127.0.0.1", "--ban-time", "10m", "--rate-limit-exempt", "127.0.0.10"])
        #expect(result.status == 0)
        #expect(result.stderr.contains("warning: ban-time, rate-limit-exempt without rate-limit: no effect"), "\(result.stderr)")
        let limited = try runDirectd(["check", "--bind-interface", "127.0.0.1", "--ban-time", "10m", "--rate-limit", "1/1s"])
        #expect(!limited.stderr.contains("without rate-limit"))
    }

    @Test(arguments: [["--rate-limit", "10"], ["--rate-limit", "0/1m"], ["--rate-limit", "5/1d"],
                      ["--ban-time", "10d"], ["--ban-time", "-1"], ["--rate-limit-ipv6-prefix", "129"],
                      ["--rate-limit-ipv6-prefix", "16"], ["--rate-limit-exempt", "127.0.0.1/8"]])
    func invalidValuesAreConfigurationErrors(_ flags: [String]) throws {
        let result = try runDirectd(["check"] + flags)
        #expect(result.status == 78, "\(result.stderr)")
        #expect(result.stderr.contains("Invalid \(flags[0].dropFirst(2))"), "\(result.stderr)")
    }
}
