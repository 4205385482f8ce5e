import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Testing

/// A config file in a private directory, rewritten atomically (as an editor does).
final class ConfigFileFixture {
    let directory: URL
    let path: String

    init(_ options: [String: String]) throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("directd-config-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        path = directory.appendingPathComponent("directd.json").path
        try write(options)
    }

    func write(_ options: [String: String]) throws {
        let body = options.sorted { $0.key < $1.key }.map { "\"\($0.key)\": \"\($0.value)\"" }.joined(separator: ", ")
        try write(text: "{\"options\": {\(body)}}\n")
    }

    func write(text: String) throws {
        let temporary = directory.appendingPathComponent("directd.json.tmp")
        try text.write(to: temporary, atomically: false, encoding: .utf8)
        guard rename(temporary.path, path) == 0 else { throw TestFailure("rename: \(errno)") }
    }

    deinit { try? FileManager.default.removeItem(at: directory) }
}

/// A payload's fingerprint (FNV-1a, 64 bits): enough to tell two streams apart.
func fingerprint(_ bytes: [UInt8]) -> UInt64 {
    bytes.reduce(0xcbf2_9ce4_8422_2325) { ($0 ^ UInt64($1)) &* 0x100_0000_01b3 }
}

/// directd as a service manager runs it: reloads (SIGHUP, a watched config
/// file) without a gap or a dropped session, a bad config that changes nothing,
/// socket activation, and the sd_notify conversation.
@Suite(.serialized)
struct ServiceManagerTests {
    /// 50 reloads between two values that share 127.0.0.1, while a client
    /// connects in a loop (bounded): not one connection to the shared address is
    /// refused, and relayed transfers open across the reloads arrive intact.
    @Test func reloadsUnderLoadRefuseNothingAndKeepSessions() throws {
        let upstream = try Daemon(["--bind-interface", "127.0.0.1", "--port", "0", "--log-level", "warning"])
        defer { upstream.stop() }
        let port = try freePort()
        let base = ["direct-access-port": "\(port)", "direct-forward": "127.0.0.1:\(upstream.port)",
                    "log-level": "warning"]
        let narrow = base.merging(["bind-interface": "127.0.0.1"]) { $1 }
        let wide = base.merging(["bind-interface": "127.0.0.1,127.0.0.2", "max-connections": "5000"]) { $1 }
        let config = try ConfigFileFixture(narrow)
        let daemon = try Daemon(["--config", config.path])
        defer { daemon.stop() }

        // Transfers that stay open across every reload.
        let transfers = Observed<[Bool]>([])
        let transfersDone = DispatchGroup()
        for index in 0..<4 {
            transfersDone.enter()
            Thread.detachNewThread {
                defer { transfersDone.leave() }
                let payload = randomBytes(4 << 20)
                guard let client = try? TCPClient(host: "127.0.0.1", port: port) else {
                    return transfers.update { $0.append(false) }
                }
                let received = Observed<[UInt8]?>(nil)
                Thread.detachNewThread { received.update { $0 = client.receiveAll() } }
                // Slowly: 64 pieces over about 3 s, so the transfer spans the reloads.
                for piece in 0..<64 {
                    _ = client.send(Array(payload[(piece * 65536)..<((piece + 1) * 65536)]))
                    usleep(UInt32(45_000 + index * 1000))
                }
                client.finishSending()
                let deadline = Date().addingTimeInterval(20)
                while received.get() == nil, Date() < deadline { usleep(10_000) }
                transfers.update { $0.append(received.get().map(fingerprint) == fingerprint(payload)) }
            }
        }
        // Connections in a loop, bounded in count and time.
        let attempts = Observed((made: 0, refused: 0))
        let stopConnecting = Observed(false)
        let connecting = DispatchGroup()
        connecting.enter()
        Thread.detachNewThread {
            defer { connecting.leave() }
            let deadline = Date().addingTimeInterval(60)
            for _ in 0..<20_000 where !stopConnecting.get() && Date() < deadline {
                // Refused means the kernel answered with a reset (no listener at
                // that moment). A connect that only waits (a loaded machine, a
                // full backlog) is given time: it is not what this test is about.
                var refused = false
                do { _ = try TCPClient(host: "127.0.0.1", port: port, connectTimeout: 10) } catch {
                    refused = "\(error)".contains("refused")
                }
                attempts.update { $0.made += 1; if refused { $0.refused += 1 } }
            }
        }
        for round in 0..<50 {
            try config.write(round % 2 == 0 ? wide : narrow)
            kill(daemon.pid, SIGHUP)
            // Each reload is logged once it is done: wait for this one (bounded).
            let deadline = Date().addingTimeInterval(5)
            while daemon.logText.components(separatedBy: "reloaded: ").count - 1 < round + 1, Date() < deadline {
                usleep(5_000)
            }
        }
        stopConnecting.update { $0 = true }
        #expect(connecting.wait(timeout: .now() + 70) == .success)
        #expect(transfersDone.wait(timeout: .now() + 60) == .success)
        let made = attempts.get()
        #expect(made.made > 500, "only \(made.made) connection attempts during the reloads")
        #expect(made.refused == 0, "\(made.refused) of \(made.made) connections to the shared address were refused")
        #expect(transfers.get() == [true, true, true, true], "relayed transfers open across the reloads")
        #expect(daemon.logText.components(separatedBy: "reloaded: ").count - 1 == 50)
        #expect(!daemon.logText.contains("reload rejected"))
        #expect(daemon.process.isRunning)
    }

    /// A config that does not validate changes nothing: the old listeners serve,
    /// the log says why and that the reload was rejected, and directd still
    /// exits 0 when stopped.
    @Test func aBadConfigOnReloadKeepsServing() throws {
        let config = try ConfigFileFixture(["bind-interface": "127.0.0.1", "direct-access-port": "0"])
        let daemon = try Daemon(["--config", config.path])
        let port = daemon.port
        try config.write(["bind-interface": "999.1.1.1", "direct-access-port": "0"])
        kill(daemon.pid, SIGHUP)
        #expect(daemon.waitForLog("reload rejected"))
        #expect(daemon.logText.contains("Invalid bind interface address \"999.1.1.1\""))
        try config.write(text: "{\"options\": {\"bind-interface\": \"127.0.0.1\", \"bind-interface\": \"\"}}")
        kill(daemon.pid, SIGHUP)
        #expect(daemon.waitForLog("duplicate key \"bind-interface\"", timeout: 5))
        let client = try TCPClient(host: "127.0.0.1", port: port)
        #expect(client.send([7]) && client.receive(exactly: 1) == [7], "the old listener still serves")
        #expect(daemon.logText.components(separatedBy: "reload rejected").count - 1 == 2)
        #expect(daemon.stop() == 0)
    }

    /// A reload whose new listener cannot open (the port is taken on the new
    /// address): rolled back, the old listener keeps serving, and the log says why.
    @Test func aReloadWhoseNewListenerIsInUseRollsBack() throws {
        let port = try freePort()
        let config = try ConfigFileFixture(["bind-interface": "127.0.0.1", "direct-access-port": "\(port)"])
        let daemon = try Daemon(["--config", config.path])
        defer { daemon.stop() }
        let squatter = try TestServer(address: "127.0.0.2", port: port)
        defer { squatter.stop() }
        try config.write(["bind-interface": "127.0.0.1,127.0.0.2", "direct-access-port": "\(port)"])
        kill(daemon.pid, SIGHUP)
        #expect(daemon.waitForLog("reload rejected"))
        #expect(daemon.logText.contains("Cannot listen on 127.0.0.2:\(port)"), "\(daemon.logText)")
        #expect(!daemon.logText.contains("reloaded: "))
        let client = try TCPClient(host: "127.0.0.1", port: port)
        #expect(client.send([3]) && client.receive(exactly: 1) == [3], "the old listener still serves")
    }

    /// --watch-config: an editor's atomic rename reloads, a burst of writes
    /// reloads once.
    @Test func aWatchedConfigFileReloadsOnceAfterABurst() throws {
        let config = try ConfigFileFixture(["bind-interface": "127.0.0.1", "direct-access-port": "0"])
        let daemon = try Daemon(["--config", config.path, "--watch-config"])
        defer { daemon.stop() }
        for count in 1...10 {
            try config.write(["bind-interface": "127.0.0.1", "direct-access-port": "0", "max-connections": "\(count)"])
        }
        #expect(daemon.waitForLog("reloaded: max-connections: \"10000\" → \"10\""))
        usleep(600_000)
        #expect(daemon.logText.components(separatedBy: "reloading (config file changed)").count - 1 == 1)
    }

    /// The sd_notify conversation on a datagram socket the test owns: READY,
    /// then WATCHDOG at half of WATCHDOG_USEC; RELOADING with MONOTONIC_USEC and
    /// READY again on SIGHUP; STOPPING on SIGTERM.
    @Test func theServiceManagerHearsEveryStateInOrder() throws {
        let receiver = try NotifyReceiver(abstract: false)
        let daemon = try Daemon(["--bind-interface", "127.0.0.1", "--port", "0"],
                                environment: ["NOTIFY_SOCKET": receiver.name, "WATCHDOG_USEC": "400000"])
        var messages: [String] = []
        func collect(until done: () -> Bool) -> Bool {
            let deadline = Date().addingTimeInterval(5)
            while Date() < deadline {
                messages += receiver.drain()
                if done() { return true }
                usleep(20_000)
            }
            return false
        }
        #expect(collect { messages.contains("READY=1") && messages.filter { $0 == "WATCHDOG=1" }.count >= 2 })
        kill(daemon.pid, SIGHUP)
        #expect(collect { messages.filter { $0 == "READY=1" }.count == 2 })
        #expect(daemon.stop() == 0)
        messages += receiver.drain()
        // The listener goes to the fdstore before READY=1 (FileDescriptorStoreTests covers it).
        #expect(messages.first?.hasPrefix("FDSTORE=1\nFDNAME=tcp-127.0.0.1-") == true, "\(messages)")
        let states = messages.filter { !$0.hasPrefix("STATUS=") && $0 != "WATCHDOG=1" && !$0.hasPrefix("FDSTORE=1") }
        #expect(states.count == 4, "\(states)")
        #expect(states.first == "READY=1")
        #expect(states.dropFirst().first?.hasPrefix("RELOADING=1\nMONOTONIC_USEC=") == true, "\(states)")
        #expect(states.dropFirst(2).first == "READY=1")
        #expect(states.last == "STOPPING=1")
        #expect(messages.contains { $0.hasPrefix("STATUS=") && $0.contains("127.0.0.1") }, "\(messages)")
        // The watchdog at half of 400 ms: several in the time it ran.
        #expect(messages.filter { $0 == "WATCHDOG=1" }.count >= 2)
    }

    /// Connects once the activator listens (it starts in the background).
    func connectOnceListening(_ port: UInt16) throws -> TCPClient {
        let deadline = Date().addingTimeInterval(10)
        while true {
            do {
                return try TCPClient(host: "127.0.0.1", port: port)
            } catch {
                if Date() > deadline { throw error }
                usleep(20_000)
            }
        }
    }

    static let socketActivate = "/usr/bin/systemd-socket-activate"
    static let canActivate = FileManager.default.isExecutableFile(atPath: socketActivate)

    /// Under systemd-socket-activate (systemd 252 starts the program on the first
    /// connection): a socket that matches the bind value is served; a wider one
    /// is refused with exit 78, naming both. The activator is spawned and reaped
    /// here directly (posix_spawn, waitpid), with its stderr in a file.
    @Test(.enabled(if: canActivate, "systemd-socket-activate is not installed (Debian: systemd)"))
    func socketActivationServesAMatchAndRefusesAWiderSocket() throws {
        let port = try freePort()
        let matching = try Activated(listen: "127.0.0.1:\(port)",
                                     ["--bind-interface", "127.0.0.1", "--port", "\(port)", "--grace", "0"])
        let client = try connectOnceListening(port)
        #expect(client.send([5, 6]) && client.receive(exactly: 2) == [5, 6], "served on the inherited socket")
        #expect(matching.log.contains("listening on 127.0.0.1:\(port) (from the service manager)"), "\(matching.log)")
        #expect(matching.stop() == 0)

        let widePort = try freePort()
        let wide = try Activated(listen: "0.0.0.0:\(widePort)",
                                 ["--bind-interface", "127.0.0.1", "--port", "\(widePort)"])
        // The first connection starts directd (it execs in the activator's
        // place), and directd refuses the socket: the connection is not served.
        let refused = try connectOnceListening(widePort)
        #expect(refused.receiveAll() == nil)
        #expect(wide.exitStatus(within: 10) == 78, "exit 78 for a socket wider than the bind value")
        #expect(wide.log.contains("fd 3 listens on 0.0.0.0:\(widePort), wider than the bind value \"127.0.0.1\""),
                "\(wide.log)")
    }

    /// With sockets from the service manager, a reload never binds by itself:
    /// no bind value configured, SIGHUP, and still exactly the inherited socket
    /// listens (no wildcard opened beside it).
    @Test(.enabled(if: canActivate, "systemd-socket-activate is not installed (Debian: systemd)"))
    func aReloadUnderSocketActivationNeverBindsItself() throws {
        let port = try freePort()
        let activated = try Activated(listen: "127.0.0.1:\(port)", ["--port", "\(port)", "--grace", "0"])
        let client = try connectOnceListening(port)
        #expect(client.send([1]) && client.receive(exactly: 1) == [1])
        kill(activated.pid, SIGHUP)
        #expect(eventually(within: 5) { activated.log.contains("reloaded: ") }, "\(activated.log)")
        let sockets = try String(contentsOfFile: "/proc/net/tcp", encoding: .utf8)
            + (try String(contentsOfFile: "/proc/net/tcp6", encoding: .utf8))
        let listening = sockets.split(separator: "\n").filter {
            $0.contains(String(format: ":%04X ", Int(port))) && $0.split(separator: " ").dropFirst(3).first == "0A"
        }
        #expect(listening.count == 1 && listening.first?.contains(String(format: "0100007F:%04X", Int(port))) == true,
                "after the reload: \(listening)")
        #expect(activated.stop() == 0)
    }

    /// An IPv6 wildcard socket that also takes IPv4 is wider than it looks: refused
    /// (78) even when no bind value is configured.
    @Test(.enabled(if: canActivate && hostHasIPv6Loopback, "systemd-socket-activate or IPv6 missing"))
    func aDualStackInheritedSocketIsAConfigurationError() throws {
        let bindv6only = (try? String(contentsOfFile: "/proc/sys/net/ipv6/bindv6only", encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines)
        try #require(bindv6only == "0", "the host makes [::] IPv6-only already")
        let port = try freePort()
        let activated = try Activated(listen: "[::]:\(port)", ["--port", "\(port)"])
        _ = try? connectOnceListening(port)
        #expect(activated.exitStatus(within: 10) == 78, "\(activated.log)")
        #expect(activated.log.contains("for IPv4 too (IPV6_V6ONLY is off)"), "\(activated.log)")
    }

    /// RustDesk's switch turned off in a watched RustDesk2.toml: directd stops
    /// serving (as RustDesk does), instead of keeping the old settings.
    @Test func directAccessTurnedOffOnReloadStopsServing() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("rustdesk-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("RustDesk2.toml").path
        func write(_ on: String) throws {
            try "[options]\ndirect-server = '\(on)'\nbind-interface = '127.0.0.1'\ndirect-access-port = '0'\n"
                .write(toFile: path + ".tmp", atomically: false, encoding: .utf8)
            rename(path + ".tmp", path)
        }
        try write("Y")
        let daemon = try Daemon(["--config", path, "--watch-config", "--grace", "0"])
        let port = daemon.port
        let client = try TCPClient(host: "127.0.0.1", port: port)
        #expect(client.send([9]) && client.receive(exactly: 1) == [9])
        try write("N")
        #expect(daemon.waitForLog("direct access is off in that file"))
        #expect(daemon.stop(signal: 0, timeout: 10) == 0, "directd stops by itself")
        #expect(throws: TestFailure.self) { _ = try TCPClient(host: "127.0.0.1", port: port) }
    }
}

/// directd started by systemd-socket-activate, spawned and reaped without
/// Foundation's Process (whose exit monitoring is not needed here).
final class Activated {
    let pid: pid_t
    let logPath: String
    private var status: Int32?

    init(listen address: String, _ arguments: [String]) throws {
        logPath = FileManager.default.temporaryDirectory.appendingPathComponent("activated-\(UUID().uuidString).log").path
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 2, logPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        closeInheritedDescriptors(&actions, from: 3)
        let argv = [ServiceManagerTests.socketActivate, "-l", address, "--", directdPath] + arguments
        var cArguments = argv.map { strdup($0) } + [nil]
        defer { cArguments.forEach { free($0) } }
        var pid: pid_t = 0
        let result = posix_spawn(&pid, argv[0], &actions, nil, &cArguments, environ)
        guard result == 0 else { throw TestFailure("posix_spawn: \(String(cString: strerror(result)))") }
        self.pid = pid
    }

    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// The exit status once it has exited (bounded), else nil.
    func exitStatus(within seconds: Double) -> Int32? {
        let deadline = Date().addingTimeInterval(seconds)
        while status == nil {
            var raw: Int32 = 0
            if waitpid(pid, &raw, WNOHANG) == pid {
                status = (raw & 0x7F) == 0 ? (raw >> 8) & 0xFF : 128 + (raw & 0x7F)
            } else if Date() > deadline {
                return nil
            } else {
                usleep(10_000)
            }
        }
        return status
    }

    /// SIGTERM, then the exit status (SIGKILL after 10 s).
    func stop() -> Int32? {
        if status == nil { kill(pid, SIGTERM) }
        if let status = exitStatus(within: 10) { return status }
        kill(pid, SIGKILL)
        return exitStatus(within: 5)
    }

    deinit {
        if status == nil { _ = stop() }
        unlink(logPath)
    }
}
