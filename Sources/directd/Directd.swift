import ArgumentParser
import CUV
import Foundation
import UVBind

@main
struct Directd: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "directd",
        abstract: "A TCP server that listens exactly where its bind-interface says, and nowhere else.",
        discussion: """
            Exit codes: 0 ok; 64 usage; 69 address not available, port in use or \
            address family unavailable; 70 internal error; 77 permission denied; \
            78 configuration or bind value invalid.
            """,
        subcommands: [Serve.self, Check.self, Interfaces.self],
        defaultSubcommand: Serve.self
    )
}

/// The flags every command that reads a configuration shares.
struct ConfigOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("JSON config file: {\"options\": {\"bind-interface\": ..., \"direct-access-port\": ...}}.", valueName: "file"))
    var config: String?

    @Option(name: .long, help: ArgumentHelp("Where to listen: empty for all interfaces; an IPv4 or IPv6 address; an interface name; or a comma-separated list. Overrides the config file.", valueName: "value"))
    var bindInterface: String?

    @Option(name: .long, help: ArgumentHelp("TCP port, 0 to 65535 (0: the kernel chooses). Default 21118. Overrides the config file.", valueName: "n"))
    var port: String?

    @Option(name: .long, help: ArgumentHelp("Listen backlog.", valueName: "n"))
    var backlog: Int32 = 511

    func validate() throws {
        guard backlog > 0 else { throw ValidationError("--backlog must be a positive number") }
    }

    /// The embedded default, then the file, then the flags.
    func settings() throws -> Settings {
        var settings = Settings()
        if let config { try ConfigFile.load(config, into: &settings) }
        if let bindInterface { settings.bindInterface = bindInterface }
        if let port { settings.port = try ListenPort.parse(port) }
        settings.backlog = backlog
        return settings
    }

    /// Reads the settings and resolves the bind value; any failure is reported and
    /// becomes the process's exit status.
    func plan() throws -> (Settings, BindPlan) {
        do {
            let settings = try settings()
            settings.warnings.forEach { Log.warning($0) }
            return (settings, try BindPlan(value: settings.bindInterface, port: settings.port))
        } catch {
            throw ExitStatus.report(error)
        }
    }
}

/// Serves echo on the configured listeners until SIGINT or SIGTERM.
struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Open the listeners and serve (the default command).")

    @OptionGroup var options: ConfigOptions

    func run() throws {
        let (settings, plan) = try options.plan()
        // A peer that disappears must not kill the process with SIGPIPE; the write
        // then fails with EPIPE and that connection closes.
        signal(SIGPIPE, SIG_IGN)
        // A parent may have started us with SIGINT/SIGTERM blocked (some test
        // runners and supervisors do); unblock them or a stop request never arrives.
        var stopSignals = sigset_t()
        sigemptyset(&stopSignals)
        sigaddset(&stopSignals, SIGINT)
        sigaddset(&stopSignals, SIGTERM)
        sigprocmask(SIG_UNBLOCK, &stopSignals, nil)
        let server = Server(loop: uv_default_loop())
        do {
            try server.listen(plan, backlog: settings.backlog)
            try server.watchSignals()
        } catch {
            server.stop()
            server.run()   // lets libuv finish closing what did open
            throw ExitStatus.report(error)
        }
        Log.info("serving echo")
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
        let (_, plan) = try options.plan()
        plan.notes.forEach { Log.info($0) }
        for target in plan.targets {
            print("listen \(target.address)")
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
