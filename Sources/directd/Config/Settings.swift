import UVBind

/// What directd serves: the defaults from `OptionTable`, then a config file, then flags.
struct Settings: Sendable {
    var bindInterface: String = OptionTable.bindInterface.defaultValue
    var port: UInt16 = OptionTable.port.defaultValue
    var backlog: Int32 = OptionTable.backlog.defaultValue
    /// Relay every connection here; nil serves echo.
    var forward: Upstream? = OptionTable.forward.defaultValue
    /// Only these clients may connect; nil allows every client.
    var allowList: AllowList? = OptionTable.whitelist.defaultValue
    var maxConnections: Int = OptionTable.maxConnections.defaultValue
    /// Connections open at once from one client address; 0 is off.
    var maxConnectionsPerClient: Int = OptionTable.maxConnectionsPerClient.defaultValue
    /// Seconds without a byte in either direction before a connection closes; 0 is off.
    var idleTimeout: Double = OptionTable.idleTimeout.defaultValue
    /// Seconds an upstream has to accept a connection.
    var connectTimeout: Double = OptionTable.connectTimeout.defaultValue
    /// Bytes queued for one side before reading from the other side stops.
    var writeQueueLimit: Int = OptionTable.writeQueueLimit.defaultValue
    /// Bytes of relay buffers across all connections before reading stops.
    var memoryLimit: Int = OptionTable.memoryLimit.defaultValue
    /// The PROXY protocol header sent upstream first; nil is off.
    var proxyProtocol: ProxyHeader.Version? = OptionTable.proxyProtocol.defaultValue
    /// How relayed bytes move: splice(2), copying, or both (auto).
    var relayMode: RelayMode = OptionTable.relayMode.defaultValue
    /// Seconds open connections get to finish after SIGINT or SIGTERM.
    var grace: Double = OptionTable.grace.defaultValue
    var logLevel: LogLevel = OptionTable.logLevel.defaultValue
    /// Where the process ID is written; empty: nowhere.
    var pidFile: String = OptionTable.pidFile.defaultValue
    /// RustDesk's `direct-server` as a config file states it; nil when none does.
    var directServer: Bool? = OptionTable.directServer.defaultValue
    /// Follow the bind value as interfaces and addresses come and go.
    var bindDynamic: Bool = OptionTable.bindDynamic.defaultValue
    /// Bind each listener to its interface (SO_BINDTODEVICE).
    var bindToDevice: Bool = OptionTable.bindToDevice.defaultValue
    /// New connections per client per period; nil is off.
    var rateLimit: RateLimit? = OptionTable.rateLimit.defaultValue
    /// Milliseconds a client past the limit again and again is banned; 0 is off.
    var banTime: UInt64 = OptionTable.banTime.defaultValue
    /// IPv6 clients share a bucket per prefix of this length.
    var rateLimitIPv6Prefix: Int = OptionTable.rateLimitIPv6Prefix.defaultValue
    /// Clients never rate-limited; nil is nobody.
    var rateLimitExempt: AllowList? = OptionTable.rateLimitExempt.defaultValue
    /// When started as root, the user and group to run as once listening; empty: as started.
    var user: String = OptionTable.user.defaultValue
    var group: String = OptionTable.group.defaultValue
    /// The options the file or a flag set (by name), as opposed to defaults.
    var given: Set<String> = []
    /// Things worth telling the operator that do not stop the start (unknown keys, say).
    var warnings: [String] = []
    /// Facts about the configuration worth a line at info level at start, such as
    /// an empty whitelist letting every client in.
    var notes: [String] = []

    /// Sets one option from its text, as the config file or a flag gives it, by
    /// its config key (or its flag, for a flag-only option).
    mutating func set(_ name: String, _ text: String) throws(ConfigError) {
        guard let option = OptionTable.byKey[name] ?? OptionTable.byFlag[name] else {
            throw ConfigError(description: "Unknown option \(ConfigText.quoted(name))")
        }
        try option.set(&self, text)
    }
}

extension Settings {
    /// The settings from scratch: the defaults, then the config file at `file` (if
    /// any), then `flags` (flag name without dashes → text). `serve` and `check`
    /// call it at start; a reload calls it again with the same file and flags.
    static func resolve(file: String?, flags: [String: String]) throws(ConfigError) -> Settings {
        var settings = Settings()
        var given: Set<String> = []
        if let file { given = try ConfigFile.load(file, into: &settings) }
        // In table order, so that the first failure is the same on every run.
        for option in OptionTable.all {
            guard let flag = option.flag, let text = flags[flag] else { continue }
            try option.set(&settings, text)
            given.insert(option.name)
        }
        settings.given = given
        if given.contains(OptionTable.whitelist.key!), settings.allowList == nil {
            settings.notes.append("whitelist is empty: every client is allowed (as in RustDesk)")
        }
        if settings.rateLimit == nil {
            let idle = [OptionTable.banTime.key!, OptionTable.rateLimitExempt.key!, OptionTable.rateLimitIPv6Prefix.key!]
                .filter(given.contains)
            if !idle.isEmpty { settings.warnings.append("\(idle.joined(separator: ", ")) without rate-limit: no effect") }
        }
        return settings
    }

    /// One option whose value differs between two settings.
    struct Change: Equatable, Sendable, CustomStringConvertible {
        let key: String
        let old: String
        let new: String
        /// A reload may apply it; otherwise it needs a restart.
        let reloadable: Bool

        var description: String {
            "\(key): \(ConfigText.quoted(old)) → \(ConfigText.quoted(new))\(reloadable ? "" : " (needs a restart)")"
        }
    }

    /// The options whose values differ from `old`, in table order.
    /// The same settings with the options a reload may not change put back to
    /// `old`'s values, and the changes that were refused.
    func keepingUnreloadable(from old: Settings) -> (Settings, refused: [Change]) {
        var kept = self
        var refused: [Change] = []
        for change in changes(from: old) where !change.reloadable {
            OptionTable.byKey[change.key].map { option in try? option.set(&kept, change.old) }
            OptionTable.byFlag[change.key].map { option in try? option.set(&kept, change.old) }
            refused.append(change)
        }
        return (kept, refused)
    }

    func changes(from old: Settings) -> [Change] {
        OptionTable.all.compactMap { option in
            let before = option.show(old), after = option.show(self)
            return before == after ? nil : Change(key: option.name, old: before, new: after, reloadable: option.reloadable)
        }
    }
}
