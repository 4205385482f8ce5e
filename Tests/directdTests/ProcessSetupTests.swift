import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Testing

/// What a hostile start-up environment does to the real binary: signals the
/// instant it says it listens, closed standard descriptors, a log that cannot
/// be written (issue 18, items 7, 8 and 9).
@Suite(.serialized)
struct ProcessSetupTests {
    /// A signal sent the instant the first `listening on` line appears used to
    /// meet the default action (the watchers came about 2.5 ms later): SIGHUP
    /// and SIGUSR1 killed directd, SIGTERM ended it with -15 instead of 0.
    @Test(arguments: [SIGHUP, SIGUSR1, SIGTERM])
    func aSignalRightAfterListeningIsAnswered(_ signal: Int32) throws {
        let runs = 50
        for run in 0..<runs {
            let daemon = try Spawned(["--bind-interface", "127.0.0.1", "--port", "0"])
            try #require(daemon.waitForLog("listening on "), "run \(run): \(daemon.logText)")
            daemon.signal(signal)
            switch signal {
            case SIGHUP:
                #expect(daemon.waitForLog("reloaded: "), "run \(run): \(daemon.logText)")
            case SIGUSR1:
                #expect(daemon.waitForLog("summary: "), "run \(run): \(daemon.logText)")
            default:
                break
            }
            if signal != SIGTERM {
                #expect(daemon.isRunning, "run \(run): signal \(signal) ended directd")
                daemon.signal(SIGTERM)
            }
            let status = daemon.waitForExit()
            #expect(status == 0, "run \(run), signal \(signal): exit \(status.map(String.init) ?? "none"): \(daemon.logText)")
            if status != 0 { return }   // one failing run says it; fifty would only repeat it
        }
    }

    /// libuv's epoll descriptor landed on the closed one, and `uv_loop_close`
    /// aborted at SIGTERM (134).
    @Test(arguments: [0, 1, 2])
    func aClosedStandardDescriptorDoesNotAbortTheExit(_ closed: Int32) throws {
        let port = try freePort()
        let daemon = try Spawned(["--bind-interface", "127.0.0.1", "--port", "\(port)"],
                                 stdin: closed == 0 ? .closed : .null,
                                 stdout: closed == 1 ? .closed : .null,
                                 stderr: closed == 2 ? .closed : .pipe)
        try #require(waitUntilAccepting(port: port), "descriptor \(closed) closed: not serving")
        #expect(echoRoundTrip(port: port))
        daemon.signal(SIGTERM)
        #expect(daemon.waitForExit() == 0, "descriptor \(closed) closed")
    }

    /// With SIGXFSZ at its default action, the write past the limit ended the
    /// process (153) after a few hundred connections.
    @Test func aLogFileAtItsSizeLimitDoesNotStopService() throws {
        let port = try freePort()
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("directd-\(UUID().uuidString).log")
        defer { try? FileManager.default.removeItem(at: log) }
        let daemon = try Spawned(["--bind-interface", "127.0.0.1", "--port", "\(port)", "--log-level", "info"],
                                 prefix: ["/usr/bin/prlimit", "--fsize=4096"], stderr: .file(log.path))
        try #require(waitUntilAccepting(port: port))
        func logSize() -> Int {
            ((try? FileManager.default.attributesOfItem(atPath: log.path))?[.size] as? Int) ?? 0
        }
        // Connections until the log has reached its limit, and 200 more.
        var rounds = 0, pastLimit = 0
        let deadline = Date().addingTimeInterval(60)
        while pastLimit < 200, rounds < 100_000, Date() < deadline, daemon.isRunning {
            if !echoRoundTrip(port: port) { break }
            rounds += 1
            if logSize() >= 4096 { pastLimit += 1 }
        }
        #expect(pastLimit == 200, "the log reached its limit and 200 connections followed (\(rounds) in all, log \(logSize()) bytes)")
        #expect(daemon.isRunning, "directd was ended: \(daemon.waitForExit(timeout: 0).map(String.init) ?? "")")
        #expect(echoRoundTrip(port: port))
        daemon.signal(SIGTERM)
        #expect(daemon.waitForExit() == 0)
    }

    /// A warning written before SIGPIPE was ignored ended directd with SIGPIPE
    /// (-13) when stderr was a pipe whose reader is gone.
    @Test func aDeadLogReaderAtStartDoesNotStopService() throws {
        let port = try freePort()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("directd-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let config = directory.appendingPathComponent("directd.json")
        // The unknown option makes a warning, the first line written.
        try #"{"options": {"bind-interface": "127.0.0.1", "no-such-option": "x"}}"#
            .write(to: config, atomically: true, encoding: .utf8)
        let daemon = try Spawned(["--config", config.path, "--port", "\(port)"], stderr: .deadPipe)
        try #require(waitUntilAccepting(port: port), "not serving: exit \(daemon.waitForExit(timeout: 0).map(String.init) ?? "none")")
        #expect(echoRoundTrip(port: port))
        daemon.signal(SIGUSR1)   // more lines to the dead pipe
        #expect(echoRoundTrip(port: port))
        daemon.signal(SIGTERM)
        #expect(daemon.waitForExit() == 0)
    }
}
