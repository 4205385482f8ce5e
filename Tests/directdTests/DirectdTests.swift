import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Testing

/// directd run as a process, the way operators run it.
@Suite(.serialized)
struct DirectdTests {
    // MARK: check

    @Test(.enabled(if: hostHasIPv6Loopback, "needs ::1"))
    func checkPrintsEachListenerAndOpensNothing() throws {
        let port = try freePort()
        let result = try runDirectd(["check", "--bind-interface", "127.0.0.1, ::1", "--port", "\(port)"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout == "listen 127.0.0.1:\(port)\nlisten [::1]:\(port)\n")
    }

    @Test func checkWithoutConfigShowsTheEmbeddedDefault() throws {
        let result = try runDirectd(["check"])
        #expect(result.status == 0)
        #expect(result.stdout.hasPrefix("listen 0.0.0.0:21118\n"))
    }

    @Test func invalidAddressExits78WithTheSpecsMessageAndNothingListens() throws {
        let port = try freePort()
        for command in [["check"], []] {
            let result = try runDirectd(command + ["--bind-interface", "999.999.999.999", "--port", "\(port)"])
            #expect(result.status == 78)
            #expect(withoutTimestamp(result.stderr).hasPrefix("error: Invalid bind interface address \"999.999.999.999\""))
            #expect(result.stdout.isEmpty)
        }
    }

    @Test(arguments: [
        (["--bind-interface", "localhost"], 78, "Unknown interface \"localhost\""),
        (["--bind-interface", "fe80::1%nosuch0"], 78, "Unknown zone"),
        (["--bind-interface", "127.0.0.1:80"], 78, "includes a port"),
        (["--bind-interface", "203.0.113.77"], 69, "not assigned to any interface"),
        (["--port", "65536"], 78, "Invalid direct access port \"65536\""),
        (["--port", "http"], 78, "Invalid direct access port \"http\""),
    ] as [([String], Int32, String)])
    func badValuesGetTheirExitCodeAndMessage(_ flags: [String], _ status: Int32, _ message: String) throws {
        let result = try runDirectd(["check"] + flags)
        #expect(result.status == status, "\(result.stderr)")
        #expect(result.stderr.contains(message), "\(result.stderr)")
    }

    @Test func usageErrorsExit64() throws {
        let unknown = try runDirectd(["--no-such-flag"])
        #expect(unknown.status == 64)
        let missing = try runDirectd(["check", "--port"])
        #expect(missing.status == 64)
        let repeated = try runDirectd(["check", "--backlog", "1", "--backlog", "2"])
        #expect(repeated.status == 64)
        // An invalid flag value is checked like the config value: 78, not 64.
        let backlog = try runDirectd(["check", "--backlog", "0"])
        #expect(backlog.status == 78)
    }

    @Test func interfacesListsLoopback() throws {
        let result = try runDirectd(["interfaces"])
        #expect(result.status == 0)
        #expect(result.stdout.contains(": lo\n"))
        #expect(result.stdout.contains("    inet 127.0.0.1/8\n"))
    }

    // MARK: config file

    func withConfig(_ json: String, _ body: (String) throws -> Void) throws {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("directd-\(UUID().uuidString).json")
        try json.write(to: url, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: url) }
        try body(url.path)
    }

    @Test func configFileInTheSpecsFormat() throws {
        try withConfig(#"{"options": {"bind-interface": "127.0.0.1", "direct-access-port": "4321"}}"#) { path in
            let result = try runDirectd(["check", "--config", path])
            #expect(result.status == 0, "\(result.stderr)")
            #expect(result.stdout == "listen 127.0.0.1:4321\n")
        }
        try withConfig(#"{"options": {"bind-interface": "::1", "direct-access-port": 4322}}"#) { path in
            let result = try runDirectd(["check", "--config", path])
            #expect(result.stdout == "listen [::1]:4322\n")
        }
        try withConfig(#"{"options": {"bind-interface": ""}}"#) { path in
            let result = try runDirectd(["check", "--config", path])
            #expect(result.stdout.hasPrefix("listen 0.0.0.0:21118\n"))
        }
    }

    @Test func flagsOverrideTheFile() throws {
        try withConfig(#"{"options": {"bind-interface": "0.0.0.0", "direct-access-port": "4321"}}"#) { path in
            let result = try runDirectd(["check", "--config", path, "--bind-interface", "127.0.0.2", "--port", "4000"])
            #expect(result.stdout == "listen 127.0.0.2:4000\n")
        }
    }

    @Test func unknownKeysAreIgnoredWithAWarning() throws {
        try withConfig(#"{"options": {"bind-interface": "127.0.0.1", "whitelist": "", "relay-server": "x"}, "other": 1}"#) { path in
            let result = try runDirectd(["check", "--config", path])
            #expect(result.status == 0)
            #expect(result.stderr.contains("warning: config file \(path): ignoring unknown option \"relay-server\""))
            #expect(result.stderr.contains("ignoring unknown top-level key \"other\""))
        }
    }

    @Test(arguments: [
        (#"{"options": {"bind-interface": 127}}"#, "option \"bind-interface\" must be a string, found a number"),
        (#"{"options": {"direct-access-port": true}}"#, "option \"direct-access-port\" must be"),
        (#"{"options": {"direct-access-port": 70000}}"#, "Invalid direct access port \"70000\""),
        (#"{"options": {"direct-access-port": "x1"}}"#, "Invalid direct access port \"x1\""),
        (#"{"options": ["bind-interface"]}"#, "\"options\" must be an object"),
        (#"["options"]"#, "expected a JSON object"),
        (#"{"options": {"bind-interface": "127.0.0.1",}"#, "is not valid JSON"),
        (#"{"options": {"bind-interface": "127.0.0.1,,"}}"#, "Invalid bind interface address"),
        (#"{"options": {"bind-interface": null}}"#, "option \"bind-interface\" must be a string, found null"),
        (#"{"options": {"direct-access-port": 80.5}}"#, "must be a whole number from 0 to 65535, found 80.5"),
        (#"{"options": {"direct-forward": "127.0.0.1"}}"#, "Invalid direct-forward \"127.0.0.1\": no port"),
        (#"{"options": {"max-connections": "0"}}"#, "Invalid max-connections \"0\""),
        (#"{"options": {"log-level": "loud"}}"#, "Invalid log-level \"loud\""),
    ])
    func badConfigFilesExit78NamingTheProblem(_ json: String, _ message: String) throws {
        try withConfig(json) { path in
            let result = try runDirectd(["check", "--config", path])
            #expect(result.status == 78)
            #expect(result.stderr.contains(message), "\(result.stderr)")
        }
    }

    @Test(arguments: [
        #"{"options": {"bind_interface": "127.0.0.1"}}"#,
        #"{"options": {"Bind-Interface": "127.0.0.1"}}"#,
        #"{"options": {"bind-interfaces": "127.0.0.1"}}"#,
        #"{"option": {"bind-interface": "127.0.0.1"}}"#,
    ])
    func misspeltKeysFailRatherThanWidenTheBind(_ json: String) throws {
        try withConfig(json) { path in
            let result = try runDirectd(["check", "--config", path])
            #expect(result.status == 78)
            #expect(result.stderr.contains("did you mean"), "\(result.stderr)")
            #expect(result.stdout.isEmpty)
        }
    }

    @Test func missingConfigFileExits78() throws {
        let result = try runDirectd(["check", "--config", "/nonexistent/directd.json"])
        #expect(result.status == 78)
        #expect(result.stderr.contains("Cannot read config file /nonexistent/directd.json"))
    }

    // MARK: serving

    /// Sends `payload`, half-closes, reads everything back.
    func echoRoundTrip(host: String, port: UInt16, payload: [UInt8]) throws -> [UInt8]? {
        let client = try TCPClient(host: host, port: port)
        // Write from another thread: directd echoes while we are still sending.
        let writer = Thread { [payload] in
            _ = client.send(payload)
            client.finishSending()
        }
        writer.start()
        return client.receiveAll()
    }

    @Test(.enabled(if: hostHasIPv6Loopback, "needs ::1"))
    func servesEchoOnAKernelChosenPortAndStopsOnSIGTERM() throws {
        let daemon = try Daemon(["--bind-interface", "127.0.0.1,::1", "--port", "0"])
        let port = daemon.port
        #expect(port != 0)
        #expect(daemon.listening == ["127.0.0.1:\(port)", "[::1]:\(port)"])
        let payload = randomBytes(3 << 20)
        #expect(try echoRoundTrip(host: "127.0.0.1", port: port, payload: payload) == payload)
        #expect(try echoRoundTrip(host: "::1", port: port, payload: payload) == payload)
        #expect(try echoRoundTrip(host: "127.0.0.1", port: port, payload: []) == [], "an immediate EOF is answered with EOF")
        #expect(throws: TestFailure.self) { _ = try TCPClient(host: "127.0.0.2", port: port) }
        #expect(daemon.stop() == 0)
    }

    @Test func sigintClosesConnectionsLeftAfterTheGracePeriod() throws {
        let daemon = try Daemon(["--bind-interface", "127.0.0.1", "--port", "0", "--grace", "0.5"])
        let client = try TCPClient(host: "127.0.0.1", port: daemon.port)
        #expect(client.send([1, 2, 3]))
        #expect(client.receive(exactly: 3) == [1, 2, 3])
        // The client never closes: only the grace period can end the drain.
        #expect(daemon.stop(signal: SIGINT) == 0)
        // The connection was cut once the grace period ended, with a reset: a
        // FIN would tell the client its stream ended complete.
        #expect(client.receiveUntilEnd().failureText == "Connection reset by peer")
        #expect(daemon.logText.contains("signal 2: stopped accepting; 1 connections get 0.5 s to finish"))
        #expect(daemon.logText.contains("grace period over"))
    }

    @Test func aPeerThatDoesNotReadIsHeldBackNotBuffered() throws {
        let daemon = try Daemon(["--bind-interface", "127.0.0.1", "--port", "0"])
        defer { daemon.stop() }
        let before = try #require(residentBytes(of: daemon.pid))
        let client = try TCPClient(host: "127.0.0.1", port: daemon.port)
        let chunk = randomBytes(64 << 10)
        // Send without reading, pausing between bursts so directd has every chance
        // to read more: it must stop once its echo cannot be written, so the
        // total stalls far below the 256 MiB offered, and its memory stays flat.
        var accepted = 0, stalls = 0
        while stalls < 5, accepted < 256 << 20 {
            let sent = client.sendUntilBlocked(chunk, limit: (256 << 20) - accepted)
            accepted += sent
            stalls = sent == 0 ? stalls + 1 : 0
            usleep(20_000)
        }
        #expect(accepted < 32 << 20, "directd kept reading \(accepted) bytes without writing them")
        let during = try #require(residentBytes(of: daemon.pid))
        #expect(during - before < 8 << 20, "directd's memory grew by \(during - before) bytes")
        client.finishSending()
        let echoed = client.receiveAll()
        #expect(echoed?.count == accepted, "every byte accepted comes back")
    }

    @Test func portInUseExits69AndLeavesTheOtherServerAlone() throws {
        let daemon = try Daemon(["--bind-interface", "127.0.0.1", "--port", "0"])
        defer { daemon.stop() }
        let port = daemon.port
        let second = try runDirectd(["--bind-interface", "127.0.0.2,127.0.0.1", "--port", "\(port)"])
        #expect(second.status == 69)
        #expect(second.stderr.contains("Cannot listen on 127.0.0.1:\(port)"))
        #expect(second.stderr.contains("EADDRINUSE"))
        // All or nothing: the second directd's 127.0.0.2 listener is gone too.
        #expect((try? TCPClient(host: "127.0.0.2", port: port)) == nil)
        #expect(try echoRoundTrip(host: "127.0.0.1", port: port, payload: [42]) == [42])
    }

    static let canDropPrivileges: Bool = getuid() == 0
        && FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv")
        && ((try? String(contentsOfFile: "/proc/sys/net/ipv4/ip_unprivileged_port_start", encoding: .utf8))
            .flatMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) } ?? 0) > 80

    @Test(.enabled(if: canDropPrivileges, "needs root, setpriv and ip_unprivileged_port_start above 80"))
    func permissionDeniedExits77() throws {
        // Run a copy from /tmp so the unprivileged user can reach it.
        let copy = FileManager.default.temporaryDirectory.appendingPathComponent("directd-\(UUID().uuidString)")
        try FileManager.default.copyItem(atPath: directdPath, toPath: copy.path)
        defer { try? FileManager.default.removeItem(at: copy) }
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: copy.path)
        let result = try runDirectd(["--bind-interface", "127.0.0.1", "--port", "80"], executable: copy.path,
                                    prefix: ["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"])
        #expect(result.status == 77, "\(result.stderr)")
        #expect(result.stderr.contains("ports below 1024 need root or the CAP_NET_BIND_SERVICE capability"))
    }
}
