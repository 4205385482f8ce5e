import ArgumentParser

/// One option, declared once: its config key, its flag, how its value is read into
/// a typed `Settings` property, its default, its help and whether a reload may
/// change it. The flags, the config readers, the near-miss check, `--help` and the
/// change report all come from `OptionTable`.
struct OptionSpec<Value: Sendable>: Sendable {
    /// The key in the config file; nil for a flag-only option.
    let key: String?
    /// The long flag without its dashes; nil for a file-only option.
    let flag: String?
    let property: WritableKeyPath<Settings, Value> & Sendable
    let value: OptionValue<Value>
    let defaultValue: Value
    /// The value's placeholder in `--help`: `--port <n>`.
    let valueName: String
    let help: String
    /// A reload may apply a new value without a restart.
    let reloadable: Bool
}

/// An option with its value type erased, as the readers walk the table.
struct AnyOptionSpec: Sendable {
    let key: String?
    let flag: String?
    let valueName: String
    let help: String
    let reloadable: Bool
    let acceptsNumbers: Bool
    /// What a valid value looks like, for messages.
    let expected: String
    /// The default as it could be written: "21118", "64KiB", "" (none).
    let defaultText: String
    private let apply: @Sendable (inout Settings, String, String) throws(ConfigError) -> Void
    private let read: @Sendable (Settings) -> String

    init<Value>(_ spec: OptionSpec<Value>) {
        key = spec.key
        flag = spec.flag
        valueName = spec.valueName
        help = spec.help
        reloadable = spec.reloadable
        acceptsNumbers = spec.value.acceptsNumbers
        expected = spec.value.expected
        defaultText = spec.value.show(spec.defaultValue)
        let property = spec.property, value = spec.value
        apply = { settings, name, text throws(ConfigError) in
            try ConfigText.checkNoControlCharacters(name, text)
            settings[keyPath: property] = try value.parse(name, text)
        }
        read = { value.show($0[keyPath: property]) }
    }

    /// How messages name it: the config key, or the flag for a flag-only option.
    var name: String { key ?? flag! }

    /// Reads `text` (from the file or a flag: the same checks either way) into `settings`.
    func set(_ settings: inout Settings, _ text: String) throws(ConfigError) {
        try apply(&settings, name, text)
    }

    /// The current value in `settings`, as it could be written.
    func show(_ settings: Settings) -> String { read(settings) }

    /// The flag's help: its words, the default and the config key it shares.
    var argumentHelp: ArgumentHelp {
        var text = help
        if !defaultText.isEmpty { text += " Default \(defaultText)." }
        if let key, key != flag { text += " (config: \(key))" }
        return ArgumentHelp(text, valueName: valueName)
    }
}

/// Every option directd reads. Adding one: a declaration here, its line in `all`,
/// its `Settings` property, and, if it has a flag, its `@Option` line in
/// `ConfigOptions` (named as the flag in camel case).
enum OptionTable {
    static let bindInterface = OptionSpec(
        key: "bind-interface", flag: "bind-interface", property: \.bindInterface, value: .text, defaultValue: "",
        valueName: "value",
        help: "Where to listen: empty for all interfaces; an IPv4 or IPv6 address; an interface name; or a comma-separated list.",
        reloadable: true)
    static let bindDynamic = OptionSpec(
        key: "bind-dynamic", flag: "bind-dynamic", property: \.bindDynamic, value: .onOff, defaultValue: false,
        valueName: "Y|N",
        help: "Follow the bind value as interfaces and addresses come and go (a VPN that comes up later): an element not present yet is waited for, never widened.",
        reloadable: false)
    static let bindToDevice = OptionSpec(
        key: "bind-to-device", flag: "bind-to-device", property: \.bindToDevice, value: .onOff, defaultValue: false,
        valueName: "Y|N",
        help: "Bind each listener to the interface that holds its address (SO_BINDTODEVICE): packets for it that arrive on another interface are refused.",
        reloadable: false)
    static let port = OptionSpec(
        key: "direct-access-port", flag: "port", property: \.port, value: .port, defaultValue: 21118,
        valueName: "n", help: "TCP port, 0 to 65535 (0: the kernel chooses).", reloadable: true)
    static let forward = OptionSpec(
        key: "direct-forward", flag: "forward", property: \.forward, value: .upstream, defaultValue: nil,
        valueName: "host:port",
        help: "Relay every connection to HOST:PORT ([v6]:PORT for IPv6); without it, directd serves echo.",
        reloadable: true)
    static let whitelist = OptionSpec(
        key: "whitelist", flag: "whitelist", property: \.allowList, value: .allowList, defaultValue: nil,
        valueName: "list",
        help: "Allow only these clients: comma-separated addresses and prefixes (192.0.2.7, 198.51.100.0/24, 2001:db8::/32). Empty: every client.",
        reloadable: true)
    static let maxConnections = OptionSpec(
        key: "max-connections", flag: "max-connections", property: \.maxConnections, value: .count(minimum: 1),
        defaultValue: 10_000, valueName: "n",
        help: "Connections open at once; past it new ones are accepted and closed.", reloadable: true)
    static let maxConnectionsPerClient = OptionSpec(
        key: "max-connections-per-client", flag: "max-connections-per-client", property: \.maxConnectionsPerClient,
        value: .count(minimum: 0), defaultValue: 0, valueName: "n",
        help: "Connections open at once from one client address; 0 is off.", reloadable: true)
    static let idleTimeout = OptionSpec(
        key: "idle-timeout", flag: "idle-timeout", property: \.idleTimeout, value: .seconds(), defaultValue: 0,
        valueName: "seconds", help: "Close a connection idle this many seconds; 0 is off.", reloadable: true)
    static let connectTimeout = OptionSpec(
        key: "connect-timeout", flag: "connect-timeout", property: \.connectTimeout, value: .seconds(aboveZero: true),
        defaultValue: 5, valueName: "seconds", help: "Seconds the upstream has to accept a relayed connection.",
        reloadable: true)
    static let writeQueueLimit = OptionSpec(
        key: "write-queue-limit", flag: "write-queue-limit", property: \.writeQueueLimit, value: .bytes,
        defaultValue: 64 << 10, valueName: "bytes",
        help: "Bytes queued for one side before reading the other stops (64KiB, 1MiB, ...).", reloadable: true)
    static let memoryLimit = OptionSpec(
        key: "memory-limit", flag: "memory-limit", property: \.memoryLimit, value: .bytes,
        defaultValue: 32 << 20, valueName: "bytes",
        help: "Relay buffer bytes across all connections; past it, reading stops until they drain.", reloadable: true)
    static let proxyProtocol = OptionSpec(
        key: "proxy-protocol", flag: "proxy-protocol", property: \.proxyProtocol, value: .proxyProtocol,
        defaultValue: nil, valueName: "version",
        help: "Send the upstream haproxy's PROXY protocol header (v1 text, v2 binary) before any client byte: off, v1 or v2.",
        reloadable: true)
    static let relayMode = OptionSpec(
        key: "relay-mode", flag: "relay-mode", property: \.relayMode, value: .relayMode, defaultValue: .auto,
        valueName: "mode",
        help: "How relayed bytes move: auto (bulk through splice(2), small messages copied, copying where the kernel cannot splice), splice or copy.",
        reloadable: false)
    static let grace = OptionSpec(
        key: "grace", flag: "grace", property: \.grace, value: .seconds(), defaultValue: 10,
        valueName: "seconds", help: "Seconds open connections get to finish after SIGINT/SIGTERM.", reloadable: true)
    static let pidFile = OptionSpec(
        key: "pid-file", flag: "pid-file", property: \.pidFile, value: .text, defaultValue: "",
        valueName: "path",
        help: "Write the process ID here at start (atomically), and again from the new process after an in-place upgrade; empty: none.",
        reloadable: false)
    static let logLevel = OptionSpec(
        key: "log-level", flag: "log-level", property: \.logLevel, value: .logLevel, defaultValue: .info,
        valueName: "level", help: "error, warning, info or debug.", reloadable: true)
    static let backlog = OptionSpec(
        key: "backlog", flag: "backlog", property: \.backlog, value: .backlog, defaultValue: 511,
        valueName: "n", help: "Listen backlog (the kernel caps it at net.core.somaxconn).", reloadable: false)
    /// RustDesk's switch for direct access: only "Y" turns it on. File only: a
    /// RustDesk2.toml must say Y, and any file that says otherwise is refused.
    static let directServer = OptionSpec(
        key: "direct-server", flag: nil, property: \.directServer, value: .yesNo, defaultValue: nil,
        valueName: "Y|N", help: "RustDesk's direct access switch; a RustDesk2.toml must set it to Y.",
        reloadable: false)

    // Guarding the service behind: per-client rate limits and bans.
    static let rateLimit = OptionSpec(
        key: "rate-limit", flag: "rate-limit", property: \.rateLimit, value: .rateLimit, defaultValue: nil,
        valueName: "N/duration",
        help: "New connections per client per period, as a token bucket (10/1m, 5/10s; units s, m, h); past it refused at once. Empty: off.",
        reloadable: true)
    static let banTime = OptionSpec(
        key: "ban-time", flag: "ban-time", property: \.banTime, value: .duration, defaultValue: 0,
        valueName: "duration",
        help: "Ban a client that keeps coming past rate-limit for this long (10m), doubling on each repeat up to 64x; 0: no bans.",
        reloadable: true)
    static let rateLimitIPv6Prefix = OptionSpec(
        key: "rate-limit-ipv6-prefix", flag: "rate-limit-ipv6-prefix", property: \.rateLimitIPv6Prefix,
        value: .count(minimum: 32, maximum: 128), defaultValue: 64, valueName: "length",
        help: "IPv6 clients share one rate-limit bucket per prefix of this length (IPv4: per address).", reloadable: true)
    static let rateLimitExempt = OptionSpec(
        key: "rate-limit-exempt", flag: "rate-limit-exempt", property: \.rateLimitExempt, value: .allowList,
        defaultValue: nil, valueName: "list",
        help: "Clients never rate-limited: comma-separated addresses and prefixes.", reloadable: true)
    // Dropping root once the listeners are open.
    static let user = OptionSpec(
        key: "user", flag: "user", property: \.user, value: .accountName("user"), defaultValue: "",
        valueName: "name",
        help: "When started as root, run as this user once the listeners are open (CAP_NET_BIND_SERVICE kept only for a port below 1024). Empty: stay as started.",
        reloadable: false)
    static let group = OptionSpec(
        key: "group", flag: "group", property: \.group, value: .accountName("group"), defaultValue: "",
        valueName: "name", help: "The group to run as with user; empty: the user's primary group.", reloadable: false)
    static let guarding: [AnyOptionSpec] = [
        AnyOptionSpec(rateLimit), AnyOptionSpec(banTime), AnyOptionSpec(rateLimitIPv6Prefix), AnyOptionSpec(rateLimitExempt),
        AnyOptionSpec(user), AnyOptionSpec(group),
    ]

    static let all: [AnyOptionSpec] = [
        AnyOptionSpec(bindInterface), AnyOptionSpec(bindDynamic), AnyOptionSpec(bindToDevice), AnyOptionSpec(port), AnyOptionSpec(forward), AnyOptionSpec(whitelist),
        AnyOptionSpec(maxConnections), AnyOptionSpec(maxConnectionsPerClient), AnyOptionSpec(idleTimeout),
        AnyOptionSpec(connectTimeout), AnyOptionSpec(writeQueueLimit), AnyOptionSpec(memoryLimit),
        AnyOptionSpec(proxyProtocol), AnyOptionSpec(relayMode), AnyOptionSpec(grace), AnyOptionSpec(logLevel), AnyOptionSpec(backlog), AnyOptionSpec(directServer),
        AnyOptionSpec(pidFile),
    ] + guarding

    /// The options a config file may set, by key.
    static let byKey: [String: AnyOptionSpec] = Dictionary(
        uniqueKeysWithValues: all.compactMap { option in option.key.map { ($0, option) } })

    /// The options a flag may set, by flag name (without dashes).
    static let byFlag: [String: AnyOptionSpec] = Dictionary(
        uniqueKeysWithValues: all.compactMap { option in option.flag.map { ($0, option) } })

    /// Every config key, for the near-miss check (made once: the check runs for
    /// every unknown key of a file).
    static let keys: [String] = all.compactMap(\.key)
}

extension [AnyOptionSpec] {
    /// The help of the option with this flag, for its `@Option` line.
    subscript(flag flag: String) -> ArgumentHelp {
        guard let option = first(where: { $0.flag == flag }) else {
            return ArgumentHelp("(no such option in the table: \(flag))")
        }
        return option.argumentHelp
    }
}
