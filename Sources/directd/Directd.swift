import ArgumentParser
import CUV
import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif
import UVBind

@main
struct Directd: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "directd",
        abstract: "A TCP front door that listens exactly where its bind-interface says, and nowhere else.",
        discussion: """
            Exit codes: 0 ok; 64 usage; 69 address not available, port in use or \
            address family unavailable; 70 internal error; 77 permission denied; \
            78 configuration or bind value invalid.
            """,
        subcommands: [Serve.self, Check.self, Interfaces.self],
        defaultSubcommand: Serve.self
    )
}

/// The flags every command that reads a configuration shares. Each one overrides
/// the config file option of the same name, and is checked the same way.
struct ConfigOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("JSON config file: {\"options\": {\"bind-interface\": ..., ...}}.", valueName: "file"))
    var config: String?

    @Option(name: .long, help: ArgumentHelp("Where to listen: empty for all interfaces; an IPv4 or IPv6 address; an interface name; or a comma-separated list.", valueName: "value"))
    var bindInterface: String?

    @Option(name: .long, help: ArgumentHelp("TCP port, 0 to 65535 (0: the kernel chooses). Default 21118. (direct-access-port)", valueName: "n"))
    var port: String?

    @Option(name: .long, help: ArgumentHelp("Relay every connection to HOST:PORT ([v6]:PORT for IPv6); without it, directd serves echo. (direct-forward)", valueName: "host:port"))
    var forward: String?

    @Option(name: .long, help: ArgumentHelp("Allow only these clients: comma-separated addresses and prefixes (192.0.2.7, 198.51.100.0/24, 2001:db8::/32).", valueName: "list"))
    var whitelist: String?

    @Option(name: .long, help: ArgumentHelp("Connections open at once; past it new ones are accepted and closed. Default 10000.", valueName: "n"))
    var maxConnections: String?

    @Option(name: .long, help: ArgumentHelp("Connections open at once from one client address; 0 is no limit.", valueName: "n"))
    var maxConnectionsPerClient: String?

    @Option(name: .long, help: ArgumentHelp("Bytes of relay buffers across all connections (32MiB).", valueName: "bytes"))
    var memoryLimit: String?

    @Option(name: .long, help: ArgumentHelp("Close a connection idle this many seconds. Default 0 (off).", valueName: "seconds"))
    var idleTimeout: String?

    @Option(name: .long, help: ArgumentHelp("Seconds the upstream has to accept a relayed connection. Default 5.", valueName: "seconds"))
    var connectTimeout: String?

    @Option(name: .long, help: ArgumentHelp("Bytes queued for one side before reading the other stops (1MiB, 256K, ...). Default 1MiB.", valueName: "bytes"))
    var writeQueueLimit: String?

    @Option(name: .long, help: ArgumentHelp("Seconds open connections get to finish after SIGINT/SIGTERM. Default 10.", valueName: "seconds"))
    var grace: String?

    @Option(name: .long, help: ArgumentHelp("error, warning, info (the default) or debug.", valueName: "level"))
    var logLevel: String?

    @Option(name: .long, help: ArgumentHelp("How relayed bytes move: auto (the default: splice(2) where the kernel can, else copying), splice or copy.", valueName: "mode"))
    var relayMode: String?

    @Option(name: .long, help: ArgumentHelp("Listen backlog.", valueName: "n"))
    var backlog: Int32 = 511

    func validate() throws {
        guard backlog > 0 else { throw ValidationError("--backlog must be a positive number") }
    }

    /// The embedded default, then the file, then the flags.
    func settings() throws -> Settings {
        var settings = Settings()
        if let config { try ConfigFile.load(config, into: &settings) }
        let flags: [(String, String?)] = [
            ("bind-interface", bindInterface), ("direct-access-port", port), ("direct-forward", forward),
            ("whitelist", whitelist), ("max-connections", maxConnections), ("idle-timeout", idleTimeout),
            ("connect-timeout", connectTimeout), ("write-queue-limit", writeQueueLimit), ("grace", grace),
            ("log-level", logLevel),
            ("max-connections-per-client", maxConnectionsPerClient), ("memory-limit", memoryLimit),
            ("relay-mode", relayMode),
        ]
        for case let (key, value?) in flags { try settings.set(key, value) }
        settings.backlog = backlog
        return settings
    }

    /// Reads the settings and resolves the bind value; any failure is reported and
    /// becomes the process's exit status.
    func plan() throws -> (Settings, BindPlan) {
        do {
            let settings = try settings()
            Log.level = settings.logLevel
            settings.warnings.forEach { Log.warning($0) }
            return (settings, try BindPlan(value: settings.bindInterface, port: settings.port))
        } catch {
            throw ExitStatus.report(error)
        }
    }
}

/// Serves on the configured listeners until SIGINT or SIGTERM.
struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Open the listeners and serve (the default command).")

    @OptionGroup var options: ConfigOptions

    func run() throws {
        let (settings, plan) = try options.plan()
        // A peer that disappears must not kill the process with SIGPIPE; the write
        // then fails with EPIPE and that connection closes.
        signal(SIGPIPE, SIG_IGN)
        // A parent may have started us with these signals blocked (some test
        // runners and supervisors do); unblock them or a stop request never arrives.
        var handled = sigset_t()
        sigemptyset(&handled)
        for signal in [SIGINT, SIGTERM, SIGUSR1] { sigaddset(&handled, signal) }
        sigprocmask(SIG_UNBLOCK, &handled, nil)

        let server = Server(loop: uv_default_loop(), settings: settings)
        do {
            try server.listen(plan)
            server.measureDescriptors()
            try server.start()
        } catch {
            server.stop()
            server.run()   // lets libuv finish closing what did open
            throw ExitStatus.report(error)
        }
        server.run()
        uv_loop_close(server.loop)
    }
}

/// Validates and resolves without opening any socket.
struct Check: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Validate the configuration and print the listeners it would open; open nothing.")

    @OptionGroup var options: ConfigOptions

    func run() throws {
        let (settings, plan) = try options.plan()
        plan.notes.forEach { Log.info($0) }
        for target in plan.targets {
            print("listen \(target.address)")
        }
        if let forward = settings.forward {
            Log.info("relay to \(forward)")
            Log.info(settings.relayMode.explanation)
        }
    }
}

/// Lists the interfaces and addresses a bind value can name.
struct Interfaces: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List the network interfaces and the addresses a bind value can use.")

    func run() throws {
        let table: InterfaceTable
        do {
            table = try InterfaceTable.current()
        } catch {
            throw ExitStatus.report(error)
        }
        for (name, index) in table.interfaces {
            let held = table.addresses(of: name)
            print("\(index): \(name)\(held.isEmpty ? " (no address, or down)" : "")")
            for address in held {
                print("    \(address.description)")
            }
        }
    }
}
