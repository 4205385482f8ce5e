import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// directd started as root with `--user nobody`, checked from outside through
/// /proc/PID/status. Root only.
@Suite(.serialized, .enabled(if: getuid() == 0 && getpwnam("nobody") != nil, "needs root and the user nobody"))
struct PrivilegeDropProcessTests {
    /// The fields of /proc/PID/status that say who a process is.
    static func status(of pid: Int32) throws -> [String: String] {
        let text = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
        var fields: [String: String] = [:]
        for line in text.split(separator: "\n") {
            guard let colon = line.firstIndex(of: ":") else { continue }
            fields[String(line[..<colon])] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        return fields
    }

    static let nobody = getpwnam("nobody").map { (uid: $0.pointee.pw_uid, gid: $0.pointee.pw_gid) }!

    /// A port below 1024 on 127.0.0.1 nothing listens on now (bound and released).
    static func freeLowPort() throws -> UInt16 {
        for port in UInt16(900)..<1024 where (try? TestServer(port: port, accepting: false)).map({ $0.stop(); return true }) == true {
            return port
        }
        throw TestFailure("no free port below 1024")
    }

    static func expectDropped(_ pid: Int32, capabilities: String) throws {
        let fields = try status(of: pid)
        let uid = "\(nobody.uid)", gid = "\(nobody.gid)"
        #expect(fields["Uid"]?.split(whereSeparator: \.isWhitespace).map(String.init) == [uid, uid, uid, uid], "\(fields)")
        #expect(fields["Gid"]?.split(whereSeparator: \.isWhitespace).map(String.init) == [gid, gid, gid, gid], "\(fields)")
        #expect(fields["Groups"] == gid, "only the group: \(fields["Groups"] ?? "?")")
        #expect(fields["CapEff"] == capabilities, "\(fields)")
        #expect(fields["CapPrm"] == capabilities, "\(fields)")
        #expect(fields["CapInh"] == "0000000000000000")
        #expect(fields["NoNewPrivs"] == "1")
    }

    /// An in-place upgrade after the drop: the new process starts as nobody
    /// (NO_NEW_PRIVS kept, no capability), takes the listener and the open
    /// session over, and serves them.
    @Test func anUpgradeAfterTheDropMovesListenersAndSessions() throws {
        let copy = try InstalledCopy()
        let daemon = try UpgradingDaemon(["--config", copy.config, "--user", "nobody"], copy: copy)
        try Self.expectDropped(daemon.pid, capabilities: "0000000000000000")
        let session = try TCPClient(host: "127.0.0.1", port: daemon.port)
        #expect(roundTrip(session, "before"))
        kill(daemon.pid, SIGUSR2)
        #expect(eventually(within: 20) { daemon.upgradedPIDs.count == 1 }, "\(daemon.logText)")
        let pid = try #require(daemon.upgradedPIDs.last, "\(daemon.logText)")
        #expect(pid != daemon.pid)
        try Self.expectDropped(pid, capabilities: "0000000000000000")
        #expect(roundTrip(session, "after"), "the open session moved")
        #expect(try roundTrip(TCPClient(host: "127.0.0.1", port: daemon.port), "new"))
        session.finishSending()
        #expect(session.receiveAll() == [])
        kill(pid, SIGTERM)
        #expect(eventually(within: 15) { !processIsAlive(pid) })
    }

    @Test func droppedToNobodyWithNoCapabilityItStillServesAndRelays() throws {
        let upstream = try TestServer(behaviour: Behaviour.echo)
        defer { upstream.stop() }
        let echo = try Daemon(["--bind-interface", "127.0.0.1", "--port", "0", "--user", "nobody"])
        defer { echo.stop() }
        try Self.expectDropped(echo.pid, capabilities: "0000000000000000")
        #expect(echo.logText.contains("dropped root: running as user nobody (uid \(Self.nobody.uid))"), "\(echo.logText)")
        #expect(echo.logText.contains("capabilities: none; no_new_privs: on"))
        #expect(echoRoundTrip(port: echo.port))

        let relay = try Daemon(["--bind-interface", "127.0.0.1", "--port", "0", "--user", "nobody",
                                "--forward", "127.0.0.1:\(upstream.port)"])
        defer { relay.stop() }
        try Self.expectDropped(relay.pid, capabilities: "0000000000000000")
        let client = try TCPClient(host: "127.0.0.1", port: relay.port)
        let payload = randomBytes(100_000)
        #expect(client.send(payload))
        #expect(client.receive(exactly: payload.count) == payload, "relayed after the drop")
    }

    @Test func aLowPortKeepsOnlyBindService() throws {
        let port = try Self.freeLowPort()
        let daemon = try Daemon(["--bind-interface", "127.0.0.1", "--port", "\(port)", "--user", "nobody"])
        defer { daemon.stop() }
        try Self.expectDropped(daemon.pid, capabilities: "0000000000000400")
        #expect(daemon.logText.contains("capabilities: cap_net_bind_service"), "\(daemon.logText)")
        #expect(echoRoundTrip(port: port))
    }

    @Test func aReloadToANewLowPortIsRejectedAndTheOldListenerServes() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("directd-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o755])
        defer { try? FileManager.default.removeItem(at: directory) }
        let config = directory.appendingPathComponent("directd.json")
        let high = try freePort(), low = try Self.freeLowPort()
        func write(_ port: UInt16, bind: String = "127.0.0.1") throws {
            try #"{"options": {"bind-interface": "\#(bind)", "direct-access-port": "\#(port)", "user": "nobody"}}"#
                .write(to: config, atomically: true, encoding: .utf8)
            try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: config.path)
        }
        try write(high)
        let daemon = try Daemon(["--config", config.path])
        defer { daemon.stop() }
        try Self.expectDropped(daemon.pid, capabilities: "0000000000000000")
        try write(low)
        kill(daemon.pid, SIGHUP)
        #expect(daemon.waitForLog("reload rejected"), "\(daemon.logText)")
        #expect(daemon.logText.contains("direct-access-port \(low) is below 1024 and needs CAP_NET_BIND_SERVICE"),
                "\(daemon.logText)")
        #expect(echoRoundTrip(port: high), "the old listener serves")
        #expect((try? TCPClient(host: "127.0.0.1", port: low, connectTimeout: 1)) == nil, "nothing on the low port")
        // A reload that needs nothing dropped still works after the drop.
        try write(high, bind: "127.0.0.1,127.0.0.2")
        kill(daemon.pid, SIGHUP)
        #expect(daemon.waitForLog("reloaded: bind-interface"), "\(daemon.logText)")
        #expect(try TCPClient(host: "127.0.0.2", port: high).send([1]))
    }

    @Test func checkAndTheStartWarnWhenItWillServeAsRoot() throws {
        let check = try runDirectd(["check", "--bind-interface", "127.0.0.1", "--port", "0"])
        #expect(check.status == 0)
        #expect(check.stderr.contains("directd will serve as root"), "\(check.stderr)")
        let dropping = try runDirectd(["check", "--bind-interface", "127.0.0.1", "--port", "0", "--user", "nobody"])
        #expect(!dropping.stderr.contains("will serve as root"))
        #expect(dropping.stderr.contains("would drop root to user nobody"), "\(dropping.stderr)")
        let daemon = try Daemon(["--bind-interface", "127.0.0.1", "--port", "0"])
        defer { daemon.stop() }
        #expect(daemon.logText.contains("directd will serve as root"))
        #expect(try Self.status(of: daemon.pid)["Uid"]?.hasPrefix("0") == true)
    }

    /// As under systemd's DynamicUser= or User=: not root at start, so `user`
    /// changes nothing; directd says so and serves.
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv"), "needs setpriv"))
    func notStartedAsRootAUserChangesNothing() throws {
        // A copy in /tmp, so that the unprivileged user can reach it.
        let copy = FileManager.default.temporaryDirectory.appendingPathComponent("directd-\(UUID().uuidString)")
        try FileManager.default.copyItem(atPath: directdPath, toPath: copy.path)
        defer { try? FileManager.default.removeItem(at: copy) }
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: copy.path)
        let result = try runDirectd(["check", "--bind-interface", "127.0.0.1", "--port", "0", "--user", "nobody"],
                                    executable: copy.path,
                                    prefix: ["/usr/bin/setpriv", "--reuid=\(Self.nobody.uid)", "--regid=\(Self.nobody.gid)",
                                             "--clear-groups"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stderr.contains("user \"nobody\" applies only when directd starts as root; it runs as uid \(Self.nobody.uid), unchanged"),
                "\(result.stderr)")
        #expect(!result.stderr.contains("will serve as root"))
    }

    @Test func anUnknownUserOrGroupExits78NamingIt() throws {
        let user = try runDirectd(["--bind-interface", "127.0.0.1", "--port", "0", "--user", "no-such-user-directd"])
        #expect(user.status == 78)
        #expect(user.stderr.contains("Invalid user \"no-such-user-directd\": no such user"), "\(user.stderr)")
        let group = try runDirectd(["check", "--user", "nobody", "--group", "no-such-group-directd"])
        #expect(group.status == 78)
        #expect(group.stderr.contains("Invalid group \"no-such-group-directd\""), "\(group.stderr)")
    }
}
