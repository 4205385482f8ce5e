import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif
import UVBind

/// What directd serves, from the embedded default, a JSON file and flags, in that order.
struct Settings {
    var bindInterface = ""
    var port = ListenPort.default
    var backlog: Int32 = 511
    /// Relay every connection here; nil serves echo.
    var forward: Upstream?
    /// Only these clients may connect; nil allows every client.
    var allowList: AllowList?
    var maxConnections = 10_000
    /// Connections open at once from one client address; 0 is no limit.
    var maxConnectionsPerClient = 0
    /// Bytes of relay buffers across all connections.
    var memoryLimit = 32 << 20
    /// Seconds without a byte in either direction before a connection closes; 0 is off.
    var idleTimeout = 0.0
    /// Seconds an upstream has to accept a connection.
    var connectTimeout = 5.0
    /// Bytes queued for one side before reading from the other side stops.
    var writeQueueLimit = 64 << 10
    /// Seconds open connections get to finish after SIGINT or SIGTERM.
    var grace = 10.0
    var logLevel = LogLevel.info
    /// How relayed bytes move: splice(2) where it can (auto), always, or copying.
    var relayMode = RelayMode.auto
    /// Things worth telling the operator that do not stop the start (unknown keys, say).
    var warnings: [String] = []

    /// Sets one option from its text, as the config file or a flag gives it.
    /// Every option is checked the same way whichever way it came.
    mutating func set(_ key: String, _ text: String) throws {
        switch key {
        case "bind-interface": bindInterface = text
        case "direct-access-port": port = try ListenPort.parse(text)
        case "direct-forward":
            let trimmed = text.trimmedOfWhitespace
            forward = trimmed.isEmpty ? nil : try Upstream(parsing: trimmed)
        case "whitelist":
            let trimmed = text.trimmedOfWhitespace
            allowList = trimmed.isEmpty ? nil : try AllowList(parsing: trimmed)
        case "max-connections": maxConnections = try Self.count(key, text)
        case "idle-timeout": idleTimeout = try Self.seconds(key, text)
        case "connect-timeout":
            connectTimeout = try Self.seconds(key, text)
            guard connectTimeout > 0 else { throw ConfigError(description: "Invalid connect-timeout \"\(text)\": it must be above 0 seconds") }
        case "write-queue-limit": writeQueueLimit = try Self.bytes(key, text)
        case "grace": grace = try Self.seconds(key, text)
        case "max-connections-per-client":
            maxConnectionsPerClient = text.trimmedOfWhitespace == "0" ? 0 : try Self.count(key, text)
        case "memory-limit": memoryLimit = try Self.bytes(key, text)
        case "relay-mode":
            guard let mode = RelayMode(rawValue: text.trimmedOfWhitespace) else {
                throw ConfigError(description: "Invalid relay-mode \"\(text)\": expected one of \(RelayMode.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            relayMode = mode
        case "log-level":
            guard let level = LogLevel(argument: text.trimmedOfWhitespace) else {
                throw ConfigError(description: "Invalid log-level \"\(text)\": expected one of \(LogLevel.allCases.map { "\($0)" }.joined(separator: ", "))")
            }
            logLevel = level
        default:
            preconditionFailure("unknown option \(key)")
        }
    }

    static let options = [
        "bind-interface", "direct-access-port", "direct-forward", "whitelist", "max-connections",
        "idle-timeout", "connect-timeout", "write-queue-limit", "grace", "log-level",
        "max-connections-per-client", "memory-limit", "relay-mode",
    ]

    private static func count(_ key: String, _ text: String) throws(ConfigError) -> Int {
        let trimmed = text.trimmedOfWhitespace
        guard let value = Int(trimmed), value > 0, trimmed.allSatisfy(\.isNumber) else {
            throw ConfigError(description: "Invalid \(key) \"\(text)\": expected a whole number above 0")
        }
        return value
    }

    private static func seconds(_ key: String, _ text: String) throws(ConfigError) -> Double {
        let trimmed = text.trimmedOfWhitespace
        let number = trimmed.hasSuffix("s") ? String(trimmed.dropLast()) : trimmed
        guard let value = Double(number), value.isFinite, value >= 0, value <= 86_400 * 365,
              number.allSatisfy({ $0.isNumber || $0 == "." }) else {
            throw ConfigError(description: "Invalid \(key) \"\(text)\": expected seconds, such as 5 or 0.5")
        }
        return value
    }

    private static func bytes(_ key: String, _ text: String) throws(ConfigError) -> Int {
        let trimmed = text.trimmedOfWhitespace
        let units: [(String, Int)] = [("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30),
                                      ("K", 1 << 10), ("M", 1 << 20), ("G", 1 << 30), ("", 1)]
        for (suffix, scale) in units where trimmed.hasSuffix(suffix) {
            let number = trimmed.dropLast(suffix.count)
            if let value = Int(number), value > 0, number.allSatisfy(\.isNumber),
               value <= Int(Int32.max) / scale {
                return value * scale
            }
            break
        }
        throw ConfigError(description: "Invalid \(key) \"\(text)\": expected a size in bytes above 0, such as 1048576 or 1MiB")
    }
}

/// A config file or option that cannot be used: unreadable, not JSON, a wrong type or value.
struct ConfigError: Error, CustomStringConvertible {
    let description: String
}

/// The spec's config file: `{"options": {"bind-interface": "...", "direct-access-port": "..."}}`.
/// Values may be strings, as the spec's tool stores them, or numbers.
enum ConfigFile {
    static func load(_ path: String, into settings: inout Settings) throws {
        let data = try read(path)
        let root: JSONValue
        do {
            root = try JSONDecoder().decode(JSONValue.self, from: data)
        } catch {
            throw ConfigError(description: "Config file \(path) is not valid JSON: \(decodingFailure(error))")
        }
        guard case .object(let top) = root else {
            throw ConfigError(description: "Config file \(path): expected a JSON object such as {\"options\": {\"bind-interface\": \"\"}}, found \(root.typeName)")
        }
        for key in top.keys.sorted() where key != "options" {
            try rejectNearMiss(key, of: ["options"], path: path)
            settings.warnings.append("config file \(path): ignoring unknown top-level key \"\(key)\"")
        }
        guard let optionsValue = top["options"], optionsValue != .null else { return }
        guard case .object(let options) = optionsValue else {
            throw ConfigError(description: "Config file \(path): \"options\" must be an object, found \(optionsValue.typeName)")
        }
        // The spec's tool keeps many other options in the same object, so unknown
        // keys are only warned about; but a misspelling of one of ours would
        // silently widen the bind ("bind_interface" → all interfaces), so that fails.
        for key in options.keys.sorted() where !Settings.options.contains(key) {
            try rejectNearMiss(key, of: Settings.options, path: path)
            settings.warnings.append("config file \(path): ignoring unknown option \"\(key)\"")
        }
        for key in Settings.options {
            switch options[key] {
            case nil:
                continue
            case .string(let text):
                try settings.set(key, text)
            case .integer(let number) where key != "bind-interface":
                if key == "direct-access-port" {
                    settings.port = try ListenPort.validate(number)
                } else {
                    try settings.set(key, String(number))
                }
            case .number(let number) where ["idle-timeout", "connect-timeout", "grace"].contains(key):
                try settings.set(key, String(number))
            case .number(let number) where key == "direct-access-port":
                throw ConfigError(description: "Config file \(path): option \"direct-access-port\" must be a whole number from 0 to 65535, found \(number)")
            case let other?:
                throw ConfigError(description: "Config file \(path): option \"\(key)\" must be \(key == "bind-interface" ? "a string" : "a string or a number"), found \(other.typeName)")
            }
        }
    }

    /// Fails for an unknown key that is one of `known` in another spelling:
    /// other case, "_" for "-", or one or two letters off.
    private static func rejectNearMiss(_ key: String, of known: [String], path: String) throws(ConfigError) {
        let normalised = String(key.lowercased().map { $0 == "_" ? "-" : $0 })
        guard let meant = known.first(where: { $0 == normalised || editDistance($0, normalised) <= 2 }) else { return }
        throw ConfigError(description: "Config file \(path): unknown key \"\(key)\"; did you mean \"\(meant)\"? (refusing to start rather than ignore it)")
    }

    private static func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        guard !a.isEmpty, !b.isEmpty else { return max(a.count, b.count) }
        var previous = Array(0...b.count)
        for i in 1...a.count {
            var current = [i] + Array(repeating: 0, count: b.count)
            for j in 1...b.count {
                current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            previous = current
        }
        return previous[b.count]
    }

    /// The file's bytes, or why they cannot be had (the system's words).
    private static func read(_ path: String) throws(ConfigError) -> Data {
        guard let file = fopen(path, "r") else {
            throw ConfigError(description: "Cannot read config file \(path): \(String(cString: strerror(errno)))")
        }
        defer { fclose(file) }
        var data = Data()
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = fread(&buffer, 1, buffer.count, file)
            if count > 0 { data.append(contentsOf: buffer[0..<count]) }
            if count < buffer.count {
                if ferror(file) != 0 {
                    throw ConfigError(description: "Cannot read config file \(path): \(String(cString: strerror(errno)))")
                }
                return data
            }
        }
    }

    private static func decodingFailure(_ error: Error) -> String {
        if case DecodingError.dataCorrupted(let context) = error {
            return context.underlyingError.map { "\(context.debugDescription) (\($0))" } ?? context.debugDescription
        }
        return "\(error)"
    }
}

/// Any JSON value, so that types are checked key by key with precise errors.
enum JSONValue: Decodable, Equatable {
    case null, bool(Bool), integer(Int), number(Double), string(String)
    case array([JSONValue]), object([String: JSONValue])

    init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() { self = .null }
        else if let value = try? container.decode(Bool.self) { self = .bool(value) }
        else if let value = try? container.decode(Int.self) { self = .integer(value) }
        else if let value = try? container.decode(Double.self) { self = .number(value) }
        else if let value = try? container.decode(String.self) { self = .string(value) }
        else if let value = try? container.decode([JSONValue].self) { self = .array(value) }
        else { self = .object(try container.decode([String: JSONValue].self)) }
    }

    var typeName: String {
        switch self {
        case .null: "null"
        case .bool: "a boolean"
        case .integer, .number: "a number"
        case .string: "a string"
        case .array: "an array"
        case .object: "an object"
        }
    }
}
