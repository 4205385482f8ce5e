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
            Exit codes: 0 ok; 64 usage (an unknown or repeated flag, a missing value); 69 address not available, port in use or \
            address family unavailable; 70 internal error; 77 permission denied; \
            78 configuration invalid (the config file, any option value, the bind value).
            """,
        version: "directd \(uvbindVersion)",
        subcommands: [Serve.self, Check.self, Interfaces.self, Status.self, Upgrade.self],
        defaultSubcommand: Serve.self
    )

    /// Checks the command line in one pass (a repeated flag is a usage error;
    /// `--flag=` is the empty value), then parses it as usual.
    static func main() {
        ProcessSetup.prepare()
        let arguments: [String]
        do {
            arguments = try ArgumentCheck.normalise(Array(CommandLine.arguments.dropFirst()))
        } catch {
            exit(withError: error)
        }
        main(arguments)
    }
}

/// The flags every command that reads a configuration shares. Each one overrides
/// the config file option of the same name, and is checked the same way: name,
/// help and reader come from `OptionTable`, where the flag is the property's name
/// in kebab case (`maxConnections` is `--max-connections`).
struct ConfigOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("Config file: JSON {\"options\": {\"bind-interface\": ..., ...}}, or RustDesk's RustDesk2.toml.", valueName: "file"),
            completion: .file(extensions: ["json", "toml"]))
    var config: String?

    @Option(help: OptionTable.all[flag: "bind-interface"]) var bindInterface: String?
    @Option(help: OptionTable.all[flag: "bind-dynamic"]) var bindDynamic: String?
    @Option(help: OptionTable.all[flag: "bind-to-device"]) var bindToDevice: String?
    @Option(help: OptionTable.all[flag: "port"]) var port: String?
    @Option(help: OptionTable.all[flag: "forward"]) var forward: String?
    @Option(help: OptionTable.all[flag: "whitelist"]) var whitelist: String?
    @Option(help: OptionTable.all[flag: "max-connections"]) var maxConnections: String?
    @Option(help: OptionTable.all[flag: "max-connections-per-client"]) var maxConnectionsPerClient: String?
    @Option(help: OptionTable.all[flag: "idle-timeout"]) var idleTimeout: String?
    @Option(help: OptionTable.all[flag: "connect-timeout"]) var connectTimeout: String?
    @Option(help: OptionTable.all[flag: "write-queue-limit"]) var writeQueueLimit: String?
    @Option(help: OptionTable.all[flag: "memory-limit"]) var memoryLimit: String?
    @Option(help: OptionTable.all[flag: "proxy-protocol"]) var proxyProtocol: String?
    @Option(help: OptionTable.all[flag: "relay-mode"]) var relayMode: String?
    @Option(help: OptionTable.all[flag: "grace"]) var grace: String?
    @Option(help: OptionTable.all[flag: "log-level"], completion: .list(LogLevel.allCases.map { "\($0)" }))
    var logLevel: String?
    @Option(help: OptionTable.all[flag: "backlog"]) var backlog: String?
    @Option(help: OptionTable.all[flag: "rate-limit"]) var rateLimit: String?
    @Option(help: OptionTable.all[flag: "ban-time"]) var banTime: String?
    @Option(help: OptionTable.all[flag: "rate-limit-ipv6-prefix"]) var rateLimitIpv6Prefix: String?
    @Option(help: OptionTable.all[flag: "rate-limit-exempt"]) var rateLimitExempt: String?
    @Option(help: OptionTable.all[flag: "user"]) var user: String?
    @Option(help: OptionTable.all[flag: "group"]) var group: String?
    @Option(help: OptionTable.all[flag: "metrics-listen"]) var metricsListen: String?
    @Option(help: OptionTable.all[flag: "control-socket"]) var controlSocket: String?
    @Option(help: OptionTable.all[flag: "pid-file"], completion: .file()) var pidFile: String?

    /// The flags given, by flag name, read off the `@Option` properties above.
    var flags: [String: String] {
        var flags: [String: String] = [:]
        for child in Mirror(reflecting: self).children {
            guard let label = child.label, label.hasPrefix("_"), label != "_config",
                  let value = (child.value as? Option<String?>)?.wrappedValue else { continue }
            flags[Self.kebabCase(label.dropFirst())] = value
        }
        return flags
    }

    /// `maxConnections` → `max-connections`, as swift-argument-parser names flags.
    static func kebabCase(_ name: Substring) -> String {
        var result = ""
        for character in name {
            if character.isUppercase {
                result += "-"
                result += character.lowercased()
            } else {
                result.append(character)
            }
        }
        return result
    }

    /// The embedded default, then the file, then the flags.
    func settings() throws(ConfigError) -> Settings {
        try Settings.resolve(file: config, flags: flags)
    }

    /// Reads the settings and resolves the bind value; any failure is reported and
    /// becomes the process's exit status. With bind-dynamic, an element that
    /// names nothing yet is waited for instead (a malformed value still fails).
    /// `failed` hears the message first (an upgrade's new process tells the old one).
    func plan(failed: (String) -> Void = { _ in }) throws -> (Settings, BindPlan) {
        do {
            let settings = try settings()
            Log.level = settings.logLevel
            settings.warnings.forEach { Log.warning($0) }
            settings.notes.forEach { Log.info($0) }
            let plan: BindPlan
            if settings.bindDynamic {
                plan = try BindPlan(BindValue(parsing: settings.bindInterface), port: settings.port,
                                    interfaces: InterfaceTable.current(resolving: settings.bindInterface),
                                    bindToDevice: settings.bindToDevice, waiting: true)
            } else {
                plan = try BindPlan(value: settings.bindInterface, port: settings.port,
                                    bindToDevice: settings.bindToDevice)
            }
            return (settings, plan)
        } catch {
            failed("\(error)")
            throw ExitStatus.report(error)
        }
    }

    /// What `user` and `group` mean for this process (warned about when it
    /// will serve as root, or when `user` cannot apply); an unknown user or
    /// group is a configuration error.
    func privilegePlan(_ settings: Settings) throws -> PrivilegePlan {
        do {
            let plan = try PrivilegePlan(settings)
            plan.warning.map { Log.warning($0) }
            return plan
        } catch {
            throw ExitStatus.report(error)
        }
    }

    /// The sockets the service manager handed over, checked against the bind
    /// value (exactly its listeners, never wider); nil when not socket-activated.
    ///
    /// Descriptors under directd's own fdstore names (`tcp-127.0.0.1-21118`) are
    /// not socket activation: they go to the returned store, checked, to be
    /// taken over by the listeners that want them. With sockets from a socket
    /// unit as well, the unit's decide and the stored ones are closed.
    func inheritedSockets(_ settings: Settings, plan: BindPlan) throws -> (sockets: [InheritedSocket]?, store: FileDescriptorStore) {
        do {
            let passed = try SocketActivation.passedDescriptors(
                ServiceEnvironment.current(SocketActivation.environmentKeys), processID: getpid()) ?? []
            let (stored, others) = FileDescriptorStore.split(passed)
            let store = FileDescriptorStore(stored: stored, fromSocketUnit: !others.isEmpty)
            guard !others.isEmpty else { return (nil, store) }
            var sockets: [InheritedSocket] = []
            for (fd, name) in others {
                sockets.append(try SocketActivation.inspect(fd: fd, name: name))
            }
            let configured = settings.given.contains(OptionTable.bindInterface.key!)
            return (try SocketActivation.adopt(sockets, plan: configured ? plan : nil), store)
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

    @Flag(help: "Reload when the config file changes (as on SIGHUP).")
    var watchConfig = false

    func validate() throws {
        if watchConfig, options.config == nil {
            throw ValidationError("--watch-config needs --config FILE")
        }
    }

    func run() throws {
        // Held until the lifecycle's watchers exist (it releases them).
        ProcessSetup.holdSignals()
        // What an upgrade later needs of this start: the path, and the version.
        InstalledExecutable.record()
        _ = BuildIdentity.version
        // Started by an upgrade: the running directd waits for this one's answer.
        let upgrade = UpgradeReceiver.fromEnvironment()
        let (settings, plan) = try options.plan { upgrade?.refuse("the config is invalid: \($0)") }
        let privilegePlan: PrivilegePlan
        do {
            privilegePlan = try options.privilegePlan(settings)
        } catch {
            upgrade?.refuse("the config is invalid: \(error)")
            throw error
        }
        let (inherited, store): ([InheritedSocket]?, FileDescriptorStore)
        var handed: UpgradeReceiver.Handover?
        do {
            (inherited, store) = try options.inheritedSockets(settings, plan: plan)
            handed = try upgrade?.receive(memoryLimit: settings.memoryLimit)
        } catch {
            upgrade?.refuse("\(error)")
            if error is HandoverRefusal {
                Log.error("refusing the upgrade: \(error)")
                throw ExitCode(ExitStatus.software.rawValue)
            }
            throw error
        }

        let server = Server(loop: uv_default_loop(), settings: settings)
        // The log drains on the loop from here on (it never keeps the loop alive).
        Log.attach(to: server.loop)
        // Read again at each reload, off the loop: the same file and flags.
        let (file, flags) = (options.config, options.flags)
        server.readSettings = { try Settings.resolve(file: file, flags: flags) }
        server.descriptorStore = store
        server.handedListeners = handed?.listeners
        server.isUpgrade = upgrade != nil
        let pidFile = settings.pidFile.isEmpty ? nil : PIDFile(path: settings.pidFile)
        server.pidFile = pidFile
        do {
            if let listeners = handed?.listeners, listeners.fromSocketUnit {
                let configured = settings.given.contains(OptionTable.bindInterface.key!)
                try server.adopt(SocketActivation.adopt(listeners.socketUnitSockets(), plan: configured ? plan : nil))
            } else if let inherited {
                try server.adopt(inherited)
            } else if settings.bindDynamic {
                try server.follow(plan)
            } else {
                try server.listen(plan)
            }
            handed?.listeners.closeRest()
            // In an upgrade the old process still holds them: opened once it lets go.
            if upgrade == nil { try server.serveEndpoints(settings) }
            // Sockets handed over (socket activation, or an upgrade) are never bound again here.
            try server.dropPrivileges(inherited == nil && handed == nil ? privilegePlan : privilegePlan.forInheritedSockets)
            server.measureDescriptors(handedOver: handed?.sessionDescriptors ?? 0)
            if let sessions = handed?.sessions { try server.restore(sessions) }
            if watchConfig, let path = options.config { try server.watchConfig(at: path) }
            try server.start()
            server.serveHandedConnections()
            // Before the old process hears it may exit: the file names this one first.
            try pidFile?.write()
            // Read from only now: before this, a refusal leaves every byte to the old process.
            server.resumeRestoredSessions()
            upgrade?.serving()
            if upgrade != nil { server.serveEndpointsOnceReleased(settings) }
        } catch {
            upgrade?.refuse("\(error)")
            server.abandonRestoredSessions()
            server.stop()
            server.run()   // lets libuv finish closing what did open
            Log.detach()
            throw ExitStatus.report(error)
        }
        server.run()
        pidFile?.remove(ifItNames: getpid())
        Log.detach()   // closes the log's loop handles; the rest is flushed at exit
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
        if let summary = try options.privilegePlan(settings).summary { Log.info(summary) }
        plan.notes.forEach { $0.severity == .warning ? Log.warning($0.text) : Log.info($0.text) }
        if let inherited = try options.inheritedSockets(settings, plan: plan).sockets {
            SocketActivation.describe(inherited).forEach(StandardOutput.line)
        } else {
            for target in plan.targets {
                StandardOutput.line("listen \(target.address)\(target.device.map { " on device \($0)" } ?? "")")
            }
            for waiting in plan.waiting {
                StandardOutput.line("waiting for \(waiting.element ?? waiting.value) (bind-dynamic): \(waiting.summary)")
            }
        }
        if let rateLimit = RateLimitPolicy(settings) { Log.info(rateLimit.description) }
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
            // Linux allows control characters in interface names (and so in
            // zones): every line is printed escaped.
            StandardOutput.line("\(index): \(name)\(held.isEmpty ? " (no address, or down)" : "")")
            for address in held {
                StandardOutput.line("    \(address.description)")
            }
        }
    }
}
