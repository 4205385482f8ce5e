import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif

/// The config file: the spec's JSON, `{"options": {"bind-interface": "...", ...}}`,
/// or RustDesk's own RustDesk2.toml (`RustDeskConfig`).
enum ConfigFile {
    enum Format: Equatable {
        case json, toml
    }

    /// Reads `path` into `settings`; returns the names of the options it set.
    @discardableResult
    static func load(_ path: String, into settings: inout Settings) throws(ConfigError) -> Set<String> {
        let bytes = try read(path)
        switch format(of: path, bytes) {
        case .json: return try loadJSON(bytes, path: path, into: &settings)
        case .toml: return try RustDeskConfig.load(bytes, path: path, into: &settings)
        }
    }

    /// By the extension (.json, .toml), else by the content: JSON starts with "{"
    /// (or "[" and then no table name), anything else is read as TOML.
    static func format(of path: String, _ bytes: [UInt8]) -> Format {
        let name = path.split(separator: "/").last.map { $0.lowercased() } ?? ""
        if name.hasSuffix(".json") { return .json }
        if name.hasSuffix(".toml") { return .toml }
        var content = bytes[...]
        if content.starts(with: [0xEF, 0xBB, 0xBF]) { content = content.dropFirst(3) }
        let isSpace: (UInt8) -> Bool = { $0 == 0x20 || $0 == 0x09 || $0 == 0x0A || $0 == 0x0D }
        guard let first = content.firstIndex(where: { !isSpace($0) }) else { return .json }
        switch content[first] {
        case UInt8(ascii: "{"):
            return .json
        case UInt8(ascii: "["):
            // "[options]" is a TOML table header; "[" then a value is a JSON array.
            let next = content[(first + 1)...].first(where: { !isSpace($0) })
            let tableName = next.map { ($0 | 0x20) >= UInt8(ascii: "a") && ($0 | 0x20) <= UInt8(ascii: "z") || $0 == UInt8(ascii: "_") } ?? false
            return tableName ? .toml : .json
        default:
            return .toml
        }
    }

    // MARK: JSON

    @discardableResult
    static func loadJSON(_ bytes: [UInt8], path: String, into settings: inout Settings) throws(ConfigError) -> Set<String> {
        let root: JSONValue
        do {
            root = try JSONReader.parse(bytes)
        } catch {
            throw ConfigError(description: "Config file \(path)\(error.isDuplicateKey ? ":" : " is not valid JSON:") \(error)")
        }
        guard case .object(let top) = root else {
            throw ConfigError(description: "Config file \(path): expected a JSON object such as {\"options\": {\"bind-interface\": \"\"}}, found \(root.typeName)")
        }
        var options: [JSONMember]?
        var ignored = IgnoredKeys()
        for member in top {
            if member.key == "options" {
                switch member.value {
                case .object(let members): options = members
                // The README promised null is an error; read as "no options" it
                // listened on every interface.
                default:
                    throw ConfigError(description: "Config file \(path): \"options\" must be an object such as {\"bind-interface\": \"\"}, found \(member.value.typeName)")
                }
            } else {
                try rejectNearMiss(member.key, of: .topLevel, path: path)
                try rejectControlCharacters(in: member.value, key: member.key, path: path)
                ignored.add("config file \(path): ignoring unknown top-level key \(ConfigText.quoted(member.key))")
            }
        }
        // A file that configures nothing is a mistake ({"settings": {...}}, say):
        // served anyway, it would listen on every interface.
        guard let options else {
            throw ConfigError(description: "Config file \(path) has no \"options\" object, so it configures nothing; expected {\"options\": {\"bind-interface\": \"...\", ...}} (refusing to start with the defaults, which listen on every interface)")
        }
        var given: Set<String> = []
        for member in options {
            guard let option = OptionTable.byKey[member.key] else {
                // The spec's tool keeps many other options in the same object, so
                // unknown keys are only warned about; but a misspelling of one of
                // ours would silently widen the bind ("bind_interface" → all
                // interfaces), so that fails.
                try rejectNearMiss(member.key, of: .options, path: path)
                try rejectControlCharacters(in: member.value, key: member.key, path: path)
                ignored.add("config file \(path): ignoring unknown option \(ConfigText.quoted(member.key))")
                continue
            }
            switch member.value {
            case .string(let text):
                try option.set(&settings, text)
            case .number(let literal) where option.acceptsNumbers:
                // Read from its literal text, like the same value as a string:
                // 2.1118e4 and 21118.0 are refused either way.
                if option.expected.hasPrefix("a whole number"), !literal.utf8.allSatisfy({ (0x30...0x39).contains($0) }) {
                    throw ConfigError(description: "Config file \(path): option \(ConfigText.quoted(member.key)) must be \(option.expected), found \(literal)")
                }
                try option.set(&settings, literal)
            default:
                throw ConfigError(description: "Config file \(path): option \(ConfigText.quoted(member.key)) must be \(option.acceptsNumbers ? "a string or a number" : "a string"), found \(member.value.typeName)")
            }
            given.insert(option.name)
        }
        settings.warnings += ignored.lines(path: path)
        try requireDirectServer(settings, path: path, required: false)
        return given
    }

    /// Control characters are refused in every string of directd's own file, even
    /// under keys it ignores: nothing in it has a use for them.
    private static func rejectControlCharacters(in value: JSONValue, key: String, path: String) throws(ConfigError) {
        if let bad = key.unicodeScalars.first(where: ConfigText.isControl) {
            throw ConfigError(description: "Config file \(path): the key \(ConfigText.quoted(key)) holds the control character \(ConfigText.escapedScalar(bad))")
        }
        switch value {
        case .string(let text):
            try ConfigText.checkNoControlCharacters("value of \(ConfigText.quoted(key)) in config file \(path)", text)
        case .array(let elements):
            for element in elements { try rejectControlCharacters(in: element, key: key, path: path) }
        case .object(let members):
            for member in members { try rejectControlCharacters(in: member.value, key: member.key, path: path) }
        case .null, .bool, .number:
            break
        }
    }

    /// RustDesk turns direct access on only with `direct-server = 'Y'`. A file that
    /// says otherwise (or, for RustDesk's own file, says nothing) has it off.
    static func requireDirectServer(_ settings: Settings, path: String, required: Bool) throws(ConfigError) {
        switch settings.directServer {
        case true?: return
        case nil where !required: return
        case nil:
            throw ConfigError(description: "Config file \(path): direct access is off in that file: it does not set direct-server, and RustDesk turns direct access on only with direct-server = 'Y'", turnsDirectAccessOff: true)
        case false?:
            throw ConfigError(description: "Config file \(path): direct access is off in that file: direct-server is not \"Y\", and RustDesk turns direct access on only with direct-server = 'Y'", turnsDirectAccessOff: true)
        }
    }
}
