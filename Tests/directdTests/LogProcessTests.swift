import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Testing

/// The log of the real binary: a stalled standard error, the journal, injection.
@Suite(.serialized)
struct LogProcessTests {
    static var timestamp: Regex<AnyRegexOutput> { try! Regex(#"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z "#) }

    @Test func aStalledStandardErrorDoesNotStopServiceAndTheDropsAreReported() throws {
        // Standard error is a one-page pipe that the test does not read, and its
        // description is blocking and shared with the test: directd must neither
        // block on it nor set O_NONBLOCK on it.
        let pipe = try StalledPipe(nonBlocking: false)
        let port = try freePort()
        let noisy = try NoisyConfig()
        let process = try spawnDirectd(["--config", noisy.path, "--bind-interface", "127.0.0.1", "--port", "\(port)"],
                                       standardError: pipe.writeEnd, environment: ["DIRECTD_LOG_BUFFER": "4096"])
        defer { if process.isRunning { kill(process.processIdentifier, SIGKILL); process.waitUntilExit() } }

        func echo() -> Bool {
            guard let client = try? TCPClient(host: "127.0.0.1", port: port) else { return false }
            return client.send(Array("ping".utf8)) && client.receive(exactly: 4) == Array("ping".utf8)
        }
        let started = Date().addingTimeInterval(10)
        while !echo(), Date() < started, process.isRunning { usleep(20_000) }

        // The config's warnings at start, then two lines for every connection
        // and the summaries (at most one a second): far more than the pipe
        // (4 KiB) and the log's buffer (4 KiB) hold.
        for round in 0..<150 {
            guard echo() else {
                Issue.record("echo failed at round \(round): the log blocked the loop")
                return
            }
            kill(process.processIdentifier, SIGUSR1)
        }
        for _ in 0..<100 {
            kill(process.processIdentifier, SIGUSR1)
            usleep(1000)
        }
        usleep(200_000)
        #expect(pipe.unread >= pipe.size - 512, "standard error should be stalled: \(pipe.unread) bytes in the pipe")
        #expect(fcntl(pipe.writeEnd, F_GETFL) & O_NONBLOCK == 0, "directd set O_NONBLOCK on the shared description")

        // Stalled, and still serving: a loop blocked on the pipe would answer none.
        for round in 0..<20 {
            guard echo() else {
                Issue.record("echo failed at round \(round) while standard error is stalled")
                return
            }
        }

        // The reader comes back: the count of what was lost arrives.
        var text = ""
        let recovery = Date().addingTimeInterval(10)
        while !text.contains("log lines dropped"), Date() < recovery {
            text += pipe.readAvailable()
            usleep(10_000)
        }
        kill(process.processIdentifier, SIGTERM)
        let stopping = Date().addingTimeInterval(15)
        while process.isRunning, Date() < stopping {
            text += pipe.readAvailable()
            usleep(10_000)
        }
        text += pipe.readAvailable()
        #expect(!process.isRunning)
        if !process.isRunning { #expect(process.terminationStatus == 0) }

        let lines = text.split(separator: "\n")
        let dropped = lines.compactMap { line in
            line.firstMatch(of: try! Regex(#"warning: (\d+) log lines dropped"#)).flatMap { Int($0.output[1].substring ?? "") }
        }
        #expect(dropped.first.map { $0 > 0 } ?? false, "no 'log lines dropped' line in:\n\(text)")
        #expect(lines.allSatisfy { $0.firstMatch(of: Self.timestamp) != nil }, "a line without a timestamp in:\n\(text)")
        #expect(lines.last.map { withoutTimestamp($0).hasPrefix("summary: 0 open, ") } ?? false, "\(lines.last ?? "")")
    }

    @Test func aStopRequestEndsTheProcessPromptlyWhileStandardErrorIsStalled() throws {
        let pipe = try StalledPipe(nonBlocking: false)
        let port = try freePort()
        let noisy = try NoisyConfig()
        let process = try spawnDirectd(["--config", noisy.path, "--bind-interface", "127.0.0.1", "--port", "\(port)"],
                                       standardError: pipe.writeEnd, environment: ["DIRECTD_LOG_BUFFER": "4096"])
        defer { if process.isRunning { kill(process.processIdentifier, SIGKILL); process.waitUntilExit() } }
        let started = Date().addingTimeInterval(10)
        while (try? TCPClient(host: "127.0.0.1", port: port)) == nil, Date() < started, process.isRunning { usleep(20_000) }
        for _ in 0..<150 {
            kill(process.processIdentifier, SIGUSR1)
            usleep(1000)
        }
        usleep(100_000)
        #expect(pipe.unread >= pipe.size - 512, "standard error should be stalled")

        // The exit flush waits for room at most 1 s, then gives up.
        let stop = Date()
        kill(process.processIdentifier, SIGTERM)
        while process.isRunning, Date().timeIntervalSince(stop) < 10 { usleep(10_000) }
        #expect(!process.isRunning, "directd did not exit while its standard error was stalled")
        if !process.isRunning {
            #expect(process.terminationStatus == 0)
            #expect(Date().timeIntervalSince(stop) < 5)
        }
        // The pipe holds the first lines written (the config's first warning).
        #expect(pipe.readAvailable().contains("ignoring unknown option \"no-such-option-0-"))
    }

    @Test func onTheJournalLinesCarryAPriorityAndNoTimestamp() throws {
        var ends: [Int32] = [0, 0]
        #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &ends) == 0)
        defer { close(ends[0]) }
        var status = stat()
        #expect(fstat(ends[1], &status) == 0)
        let stream = "\(status.st_dev):\(status.st_ino)"
        let other = "\(status.st_dev):\(status.st_ino + 1)"
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(ends[0], SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))

        for (variable, onJournal) in [(stream, true), (other, false)] {
            let process = try spawnDirectd(["check", "--bind-interface", "999.1"], standardError: ends[1],
                                           environment: ["JOURNAL_STREAM": variable])
            let deadline = Date().addingTimeInterval(20)
            while process.isRunning, Date() < deadline { usleep(10_000) }
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            process.waitUntilExit()
            #expect(process.terminationStatus == 78)
            var buffer = [UInt8](repeating: 0, count: 65536)
            let got = buffer.withUnsafeMutableBytes { recv(ends[0], $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            let text = String(decoding: buffer.prefix(max(0, got)), as: UTF8.self)
            if onJournal {
                #expect(text.hasPrefix("<3>error: Invalid bind interface address \"999.1\""), "\(text)")
            } else {
                #expect(text.firstMatch(of: Self.timestamp) != nil, "\(text)")
                #expect(withoutTimestamp(text).hasPrefix("error: Invalid bind interface address \"999.1\""), "\(text)")
            }
        }
        close(ends[1])
    }

    @Test func aNewlineInAValueCannotForgeALogLine() throws {
        for separator in ["\n", "\r\n", "\u{85}", "\u{2028}"] {
            let forged = "1\(separator)listening on 0.0.0.0:22"
            let result = try runDirectd(["check", "--bind-interface", "127.0.0.1", "--max-connections", forged])
            #expect(result.status == 78, "\(result.stderr)")
            let lines = result.stderr.split(separator: "\n")
            #expect(lines.count == 1, "\(result.stderr)")
            #expect(!lines.contains { withoutTimestamp($0).hasPrefix("listening on") }, "\(result.stderr)")
            #expect(!result.stderr.unicodeScalars.contains { $0 == "\r" || $0 == "\u{85}" || $0 == "\u{2028}" })
            #expect(result.stderr.contains("listening on 0.0.0.0:22"), "the value is still shown, escaped")
        }
    }

    @Test func aNewlineInAConfigKeyCannotForgeALogLine() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("directd-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let config = directory.appendingPathComponent("config.json")
        try #"{"options": {"bind-interface": "127.0.0.1", "x\nlistening on 0.0.0.0:22": "1"}}"#
            .write(to: config, atomically: true, encoding: .utf8)
        let result = try runDirectd(["check", "--config", config.path])
        let lines = result.stderr.split(separator: "\n")
        #expect(!lines.isEmpty)
        #expect(!lines.contains { withoutTimestamp($0).hasPrefix("listening on") }, "\(result.stderr)")
        #expect(lines.allSatisfy { $0.firstMatch(of: Self.timestamp) != nil }, "\(result.stderr)")
    }
}

/// Starts directd with standard error on `standardError` (a descriptor the test
/// keeps), and JOURNAL_STREAM unset unless `environment` sets it.
func spawnDirectd(_ arguments: [String], standardError: Int32, environment: [String: String] = [:]) throws -> Process {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: directdPath)
    process.arguments = arguments
    var variables = ProcessInfo.processInfo.environment
    variables["JOURNAL_STREAM"] = nil
    variables.merge(environment) { $1 }
    process.environment = variables
    process.standardError = FileHandle(fileDescriptor: standardError, closeOnDealloc: false)
    process.standardOutput = FileHandle.nullDevice
    process.standardInput = FileHandle.nullDevice
    try process.run()
    return process
}

/// A config file whose unknown options make some 16 KiB of warnings at start:
/// a log filler that does not depend on how often directd logs anything else
/// (SIGUSR1's summary is coalesced to one a second).
final class NoisyConfig {
    let path: String
    private let directory: URL

    init(options: Int = 64) throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("directd-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        path = directory.appendingPathComponent("directd.json").path
        let unknown = (0..<options).map { "\"no-such-option-\($0)-\(String(repeating: "x", count: 200))\": 1" }
        try "{\"options\": {\(unknown.joined(separator: ", "))}}".write(toFile: path, atomically: true, encoding: .utf8)
    }

    deinit { try? FileManager.default.removeItem(at: directory) }
}
