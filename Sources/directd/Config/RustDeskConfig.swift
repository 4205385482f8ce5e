import TOMLKit

/// RustDesk's own config file, `~/.config/rustdesk/RustDesk2.toml`: top-level keys
/// (`rendezvous_server`, `nat_type`, `serial`, ...) and an `[options]` table of
/// strings, among them the options directd shares with it.
///
/// RustDesk writes dozens of options directd does not use, so unknown keys are
/// ignored without a word; a near miss of one of directd's keys still fails. Direct
/// access must be on in the file, as RustDesk itself requires: `direct-server =
/// 'Y'`, and not `stop-service = 'Y'`.
enum RustDeskConfig {
    static func load(_ bytes: [UInt8], path: String, into settings: inout Settings) throws(ConfigError) -> Set<String> {
        var body = bytes[...]
        if body.starts(with: [0xEF, 0xBB, 0xBF]) { body = body.dropFirst(3) }
        // The parser takes a C string: a NUL would silently end the file there.
        if let nul = body.firstIndex(of: 0) {
            let line = body[..<nul].count(where: { $0 == 0x0A }) + 1
            throw ConfigError(description: "Config file \(path) is not valid TOML: line \(line): a NUL character")
        }
        guard let text = String(validating: body, as: UTF8.self) else {
            throw ConfigError(description: "Config file \(path) is not valid TOML: it is not UTF-8 text")
        }
        try rejectEscapedControlCharacters(body, path: path)
        let root: TOMLTable
        do {
            root = try TOMLTable(string: text)
        } catch let error as TOMLParseError {
            throw ConfigError(description: "Config file \(path) is not valid TOML: line \(error.source.begin.line), column \(error.source.begin.column): \(ConfigText.escapedText(error.description))")
        } catch {
            throw ConfigError(description: "Config file \(path) is not valid TOML: \(error)")
        }

        for key in root.keys where key != "options" {
            try ConfigFile.rejectNearMiss(key, of: ["options"], path: path)
        }
        var given: Set<String> = []
        var stopService = false
        if let value = root["options"] {
            guard let options = value.table else {
                throw ConfigError(description: "Config file \(path): \"options\" must be a table ([options]), found \(typeName(value))")
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
                if let text = value.string {
                    try option.set(&settings, text)
                } else if option.acceptsNumbers, let number = value.int {
                    try option.set(&settings, String(number))
                } else {
                    throw ConfigError(description: "Config file \(path): option \(ConfigText.quoted(key)) must be a string, as RustDesk writes it (\(key) = '...'), found \(typeName(value))")
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

    /// TOMLKit hands strings over as C strings, so "localhost\\u0000.example"
    /// would arrive as "localhost", the rest silently gone, and no check after
    /// parsing could see it. So escapes of control characters (\\u0000 to \\u001F,
    /// \\u007F to \\u009F, and their \\U forms) are refused in the raw text, by line.
    /// Read textually, this also refuses them inside literal strings, where they
    /// are not escapes: failing closed on text no RustDesk file holds.
    static func rejectEscapedControlCharacters(_ body: ArraySlice<UInt8>, path: String) throws(ConfigError) {
        var line = 1, backslashes = 0
        var index = body.startIndex
        while index < body.endIndex {
            let byte = body[index]
            defer { index += 1 }
            if byte == 0x0A { line += 1 }
            if byte == UInt8(ascii: "\\") { backslashes += 1; continue }
            let escaped = backslashes % 2 == 1
            backslashes = 0
            guard escaped, byte == UInt8(ascii: "u") || byte == UInt8(ascii: "U") else { continue }
            let digits = byte == UInt8(ascii: "u") ? 4 : 8
            guard body.endIndex - index > digits,
                  let value = UInt32(String(decoding: body[(index + 1)...(index + digits)], as: UTF8.self), radix: 16),
                  let scalar = Unicode.Scalar(value), ConfigText.isControl(scalar) else { continue }
            throw ConfigError(description: "Config file \(path): line \(line): an escaped control character (\(ConfigText.escapedScalar(scalar))) in a string; no option value may contain one")
        }
    }

    private static func typeName(_ value: any TOMLValueConvertible) -> String {
        switch value.type {
        case .string: "a string"
        case .int, .double: "a number"
        case .bool: "a boolean"
        case .table: "a table"
        case .array: "an array"
        default: "a date or time"
        }
    }
}
