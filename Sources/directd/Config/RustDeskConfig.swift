/// RustDesk's own config file, `~/.config/rustdesk/RustDesk2.toml`: top-level keys
/// (`rendezvous_server`, `nat_type`, `serial`, ...) and an `[options]` table of
/// strings, among them the options directd shares with it. Read by directd's own
/// `TOMLReader` (strict TOML 1.0, nesting capped).
///
/// RustDesk writes dozens of options directd does not use, so unknown keys are
/// ignored without a word; a near miss of one of directd's keys still fails. Direct
/// access must be on in the file, as RustDesk itself requires: `direct-server =
/// 'Y'`, and not `stop-service = 'Y'`.
enum RustDeskConfig {
    static func load(_ bytes: [UInt8], path: String, into settings: inout Settings) throws(ConfigError) -> Set<String> {
        let root: TOMLTable
        do {
            root = try TOMLReader.parse(bytes)
        } catch {
            switch error.kind {
            case .syntax:
                throw ConfigError(description: "Config file \(path) is not valid TOML: \(error)")
            case .refused:
                throw ConfigError(description: "Config file \(path): line \(error.line): \(error.reason)")
            }
        }

        for key in root.keys where key != "options" {
            try ConfigFile.rejectNearMiss(key, of: ["options"], path: path)
        }
        var given: Set<String> = []
        var stopService = false
        if let value = root["options"] {
            guard case .table(let options) = value else {
                throw ConfigError(description: "Config file \(path): \"options\" must be a table ([options]), found \(value.typeName)")
            }
            for key in options.keys {
                guard let value = options[key] else { continue }
                if key == "stop-service" {
                    stopService = value.string?.trimmedOfWhitespace == "Y"
                    continue
                }
                guard let option = OptionTable.byKey[key] else {
                    try ConfigFile.rejectNearMiss(key, of: OptionTable.keys, path: path)
                    continue
                }
                switch value {
                case .string(let text):
                    try option.set(&settings, text)
                case .integer(let literal) where option.acceptsNumbers, .float(let literal) where option.acceptsNumbers:
                    // From its literal text, through the flag's parser: 0x5000, +21118 and
                    // 2_1118 are TOML integers but not port numbers, and grace = 0.5 is
                    // --grace 0.5.
                    try option.set(&settings, literal)
                default:
                    throw ConfigError(description: "Config file \(path): option \(ConfigText.quoted(key)) must be a string, as RustDesk writes it (\(key) = '...'), found \(value.typeName)")
                }
                given.insert(option.name)
            }
        }
        try ConfigFile.requireDirectServer(settings, path: path, required: true)
        if stopService {
            throw ConfigError(description: "Config file \(path): direct access is off in that file: stop-service = 'Y' stops RustDesk's direct access (refusing to start)")
        }
        return given
    }
}
