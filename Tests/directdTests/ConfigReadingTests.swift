import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Testing

/// Reading the config is bounded and never blocks the loop (issue 18 item 5):
/// only a regular file of at most 1 MiB is read, and a reload reads, validates
/// and resolves on libuv's thread pool. Through the real binary.
@Suite(.serialized)
struct ConfigReadingTests {
    func temporaryPath(_ name: String) throws -> (directory: URL, path: String) {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("directd-read-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        return (directory, directory.appendingPathComponent(name).path)
    }

    @Test func checkRefusesWhatIsNotARegularFileAtOnce() throws {
        let (directory, fifo) = try temporaryPath("directd.json")
        defer { try? FileManager.default.removeItem(at: directory) }
        #expect(mkfifo(fifo, 0o600) == 0)
        // Before, `check` on a FIFO waited for a writer for ever (runDirectd's bound then fails the test).
        for (path, kind) in [(fifo, "a FIFO"), ("/dev/zero", "a character device"), (directory.path, "a directory")] {
            let result = try runDirectd(["check", "--config", path], timeout: 20)
            #expect(result.status == 78, "\(path): \(result.stderr)")
            #expect(result.stderr.contains("Config file \(path) is \(kind)"), "\(result.stderr)")
            #expect(result.stderr.contains("not a regular file"), "\(result.stderr)")
            #expect(result.stdout.isEmpty)
        }
    }

    @Test func aFileOverOneMiBIsRefusedNamingTheCap() throws {
        let (directory, path) = try temporaryPath("directd.json")
        defer { try? FileManager.default.removeItem(at: directory) }
        let body = #"{"options": {"bind-interface": "127.0.0.1", "direct-access-port": "4321"}}"#
        // Valid JSON padded with white space to exactly the cap: read.
        try Data((body + String(repeating: " ", count: (1 << 20) - body.utf8.count)).utf8).write(to: URL(fileURLWithPath: path))
        let atCap = try runDirectd(["check", "--config", path])
        #expect(atCap.status == 0, "\(atCap.stderr)")
        #expect(atCap.stdout == "listen 127.0.0.1:4321\n")
        // One byte more: refused, before any of it is parsed.
        try Data((body + String(repeating: " ", count: (1 << 20) + 1 - body.utf8.count)).utf8).write(to: URL(fileURLWithPath: path))
        let over = try runDirectd(["check", "--config", path])
        #expect(over.status == 78, "\(over.stderr)")
        #expect(over.stderr.contains("Config file \(path) is 1048577 bytes, more than the 1048576 bytes (1 MiB) a config file may hold"), "\(over.stderr)")
        #expect(over.stdout.isEmpty)
    }

    /// A file as full of unknown keys as the cap allows: one warning line per
    /// key was 90,000 lines (and 10 s); now 20 are named and the rest counted.
    @Test func unknownKeysAreWarnedAboutInBoundedLines() throws {
        let (directory, path) = try temporaryPath("directd.json")
        defer { try? FileManager.default.removeItem(at: directory) }
        let keys = (0..<80_000).map { "\"k\($0)\": 0" }.joined(separator: ",")
        let text = #"{"options": {"bind-interface": "127.0.0.1", "direct-access-port": "4321", "# + keys + "}}"
        #expect(text.utf8.count <= 1 << 20)
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
        let result = try runDirectd(["check", "--config", path], timeout: 60)
        #expect(result.status == 0, "\(result.stderr.prefix(500))")
        // As root, check also says that directd would serve as root: not about the keys.
        let warnings = result.stderr.split(separator: "\n").filter { $0.contains("warning:") && !$0.contains("will serve as root") }
        #expect(warnings.count == 21, "\(warnings.count) warning lines")
        #expect(result.stderr.contains("ignoring unknown option \"k19\""))
        #expect(!result.stderr.contains("ignoring unknown option \"k20\""))
        #expect(result.stderr.contains("ignoring 79980 more unknown keys (only the first 20 are named)"), "\(result.stderr.suffix(300))")
    }

    /// Before, a FIFO at the config path froze the loop for good on SIGHUP.
    @Test func aFIFOAtReloadIsRejectedAndServiceGoesOn() throws {
        let config = try ConfigFileFixture(["bind-interface": "127.0.0.1", "direct-access-port": "0"])
        let daemon = try Daemon(["--config", config.path])
        defer { daemon.stop() }
        #expect(unlink(config.path) == 0 && mkfifo(config.path, 0o600) == 0)
        kill(daemon.pid, SIGHUP)
        #expect(daemon.waitForLog("reload rejected"), "\(daemon.logText)")
        #expect(daemon.logText.contains("Config file \(config.path) is a FIFO (named pipe), not a regular file"))
        let client = try TCPClient(host: "127.0.0.1", port: daemon.port)
        #expect(client.send([5]) && client.receive(exactly: 1) == [5], "the loop still serves")
    }

    /// A reload whose direct-forward host name meets a resolver that does not
    /// answer: service goes on while it waits (before, the loop waited inside
    /// getaddrinfo), then the reload is rejected. directd runs in a mount
    /// namespace whose resolv.conf names a loopback UDP socket that the test
    /// holds and never answers.
    @Test func aReloadWaitingForTheResolverKeepsServing() throws {
        let (directory, resolvConf) = try temporaryPath("resolv.conf")
        defer { try? FileManager.default.removeItem(at: directory) }
        let nameserver = "127.\(Int.random(in: 1...250)).\(Int.random(in: 1...250)).\(Int.random(in: 1...250))"
        let silent = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        defer { close(silent) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(53).bigEndian
        inet_pton(AF_INET, nameserver, &address.sin_addr)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(silent, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        try #require(bound == 0, "bind \(nameserver):53: \(String(cString: strerror(errno)))")
        // 12 s per query, one attempt: longer than any client's wait below.
        try "nameserver \(nameserver)\noptions timeout:12 attempts:1\n".write(toFile: resolvConf, atomically: true, encoding: .utf8)
        let unshare = ["/usr/bin/unshare", "--mount", "--propagation", "private", "/bin/sh", "-c",
                       "mount --bind \"$1\" /etc/resolv.conf && shift && exec \"$0\" \"$@\""]
        let config = try ConfigFileFixture(["bind-interface": "127.0.0.1", "direct-access-port": "0"])
        // $0 is directd, $1 the resolv.conf, then directd's arguments.
        let daemon = try Daemon([resolvConf, "--config", config.path], prefix: unshare)
        defer { daemon.stop(timeout: 30) }
        let port = daemon.port
        try config.write(["bind-interface": "127.0.0.1", "direct-access-port": "\(port)",
                          "direct-forward": "upstream-\(UUID().uuidString.prefix(8)).invalid:9"])
        kill(daemon.pid, SIGHUP)
        #expect(daemon.waitForLog("reloading (SIGHUP)"))
        // While the resolver is silent: established and new connections are served.
        let established = try TCPClient(host: "127.0.0.1", port: port)
        for round in 0..<5 {
            let fresh = try TCPClient(host: "127.0.0.1", port: port)
            #expect(fresh.send([UInt8(round)]) && fresh.receive(exactly: 1) == [UInt8(round)], "new connection \(round)")
            #expect(established.send([UInt8(round), 1]) && established.receive(exactly: 2) == [UInt8(round), 1])
        }
        #expect(!daemon.logText.contains("reload rejected") && !daemon.logText.contains("reloaded:"),
                "the resolver answered before the connections were served; the test proves nothing: \(daemon.logText)")
        // Then the resolver gives up, and the reload is rejected with nothing changed.
        #expect(daemon.waitForLog("reload rejected", timeout: 40), "\(daemon.logText)")
        #expect(daemon.logText.contains("cannot resolve"), "\(daemon.logText)")
        #expect(established.send([9]) && established.receive(exactly: 1) == [9], "still echo, as before")
    }
}
