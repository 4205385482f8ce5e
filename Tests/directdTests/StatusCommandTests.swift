import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Testing

/// `directd status` against a running directd in a known state.
@Suite(.serialized)
struct StatusCommandTests {
    static func socketPath() -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("directd-ctl-\(getpid())-\(UUID().uuidString.prefix(8)).sock").path
    }

    /// Echo, a whitelist of 127.0.0.1: one client refused from 127.0.0.2, two
    /// open from 127.0.0.1 with 5 and 7 bytes echoed.
    @Test func textAndJSONShowTheKnownState() throws {
        let path = Self.socketPath()
        defer { unlink(path) }
        let daemon = try Daemon(["--bind-interface", "127.0.0.1", "--port", "0", "--whitelist", "127.0.0.1",
                                 "--control-socket", path])
        var info = stat()
        #expect(lstat(path, &info) == 0 && info.st_mode & 0o777 == 0o600)
        let port = daemon.port
        let stranger = try TCPClient(host: "127.0.0.1", port: port, source: "127.0.0.2")
        _ = stranger.receiveUntilEnd()
        let clients = try [5, 7].map { count in
            let client = try TCPClient(host: "127.0.0.1", port: port)
            _ = client.send([UInt8](repeating: 1, count: count))
            #expect(client.receive(exactly: count) != nil)
            return client
        }
        let text = try runDirectd(["status", "--control-socket", path])
        #expect(text.status == 0)
        let lines = text.stdout.split(separator: "\n").map(String.init)
        #expect(lines.first?.hasPrefix("directd ") == true && lines.first?.contains(", pid \(daemon.pid), up ") == true)
        #expect(lines.contains("relay mode auto; serving echo"))
        #expect(lines.contains("listening on \(daemon.listening[0])"))
        #expect(lines.contains("connections: 2 open, 2 total"))
        #expect(lines.contains("  127.0.0.1: 2 open, 12 / 12 bytes"))
        #expect(lines.contains("refusals: whitelist 1, max_connections 0, max_connections_per_client 0, rate_limit 0, banned 0, unknown_peer 0"))
        #expect(lines.contains { $0.contains("127.0.0.2:") && $0.hasSuffix("on \(daemon.listening[0]): whitelist") })

        let json = try runDirectd(["status", "--control-socket", path, "--json"])
        #expect(json.status == 0)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
        #expect(object["pid"] as? Int == Int(daemon.pid))
        #expect(object["relay_mode"] as? String == "auto")
        #expect(object["forward"] is NSNull)
        #expect(object["listeners"] as? [String] == daemon.listening)
        let connections = try #require(object["connections"] as? [String: Int])
        #expect(connections == ["open": 2, "total": 2])
        let top = try #require(object["top_clients"] as? [[String: Any]])
        #expect(top.count == 1)
        #expect(top.first?["address"] as? String == "127.0.0.1")
        #expect(top.first?["open"] as? Int == 2)
        #expect(top.first?["bytes_from_client"] as? Int == 12)
        let refusals = try #require(object["refusals"] as? [String: Int])
        #expect(refusals["whitelist"] == 1 && refusals["rate_limit"] == 0)
        let recent = try #require(object["recent_refusals"] as? [[String: Any]])
        #expect(recent.count == 1 && recent.first?["reason"] as? String == "whitelist")
        clients.forEach { $0.finishSending(); _ = $0.receiveAll() }
        #expect(daemon.stop() == 0)
    }

    @Test func nothingRunningIsExit69() throws {
        let path = Self.socketPath()
        let finished = try runDirectd(["status", "--control-socket", path])
        #expect(finished.status == 69)
        #expect(finished.stderr.contains("no directd answers at \(path)"))
        #expect(finished.stdout.isEmpty)
    }

    /// Under systemd (RUNTIME_DIRECTORY set) the socket goes there by default,
    /// and `control-socket` off keeps it closed.
    @Test func runtimeDirectoryIsTheDefault() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("directd-rt-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let daemon = try Daemon(["--bind-interface", "127.0.0.1", "--port", "0"], environment: ["RUNTIME_DIRECTORY": directory])
        #expect(try runDirectd(["status", "--control-socket", "\(directory)/control.sock"]).status == 0)
        #expect(daemon.stop() == 0)
        let off = try Daemon(["--bind-interface", "127.0.0.1", "--port", "0", "--control-socket", "off"],
                             environment: ["RUNTIME_DIRECTORY": directory])
        #expect(!FileManager.default.fileExists(atPath: "\(directory)/control.sock"))
        #expect(off.stop() == 0)
    }

    @Test func aLiveSocketIsNotTakenOver() throws {
        let path = Self.socketPath()
        defer { unlink(path) }
        let first = try Daemon(["--bind-interface", "127.0.0.1", "--port", "0", "--control-socket", path])
        let second = try runDirectd(["--bind-interface", "127.0.0.1", "--port", "0", "--control-socket", path])
        #expect(second.status == 69)
        #expect(second.stderr.contains("in use by another process"))
        #expect(try runDirectd(["status", "--control-socket", path]).status == 0)
        #expect(first.stop() == 0)
    }
}
