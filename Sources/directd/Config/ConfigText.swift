import UVBind

/// How configuration text is checked and shown in messages.
enum ConfigText {
    /// C0 controls, DEL and C1 controls (U+0080 to U+009F, such as NEL, U+0085).
    static func isControl(_ scalar: Unicode.Scalar) -> Bool {
        scalar.value < 0x20 || (0x7F...0x9F).contains(scalar.value)
    }

    /// `text` in double quotes, with control characters, quotes and backslashes
    /// escaped, so that a value can never forge a line or a quote in a message.
    static func quoted(_ text: String) -> String {
        var result = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": result += "\\\""
            case "\\": result += "\\\\"
            case _ where isControl(scalar): result += escapedScalar(scalar)
            default: result.unicodeScalars.append(scalar)
            }
        }
        return result + "\""
    }

    /// `text` with its control characters escaped, unquoted.
    static func escapedText(_ text: String) -> String {
        String(quoted(text).dropFirst().dropLast())
    }

    /// `\n`, `\t`, `\r`, or `\u{85}` for any other control character.
    static func escapedScalar(_ scalar: Unicode.Scalar) -> String {
        switch scalar {
        case "\n": "\\n"
        case "\r": "\\r"
        case "\t": "\\t"
        default: "\\u{\(String(scalar.value, radix: 16, uppercase: true))}"
        }
    }

    /// Refuses a value that holds a control character once the white space around
    /// it (space, tab, CR, LF: a value pasted with its line ending) is trimmed.
    ///
    /// A NUL cuts a C string short ("localhost\0.attacker.example:19001" reached
    /// getaddrinfo as "localhost"), and a line break or a C1 control such as NEL
    /// inside a value forges log lines; no option has a use for either.
    static func checkNoControlCharacters(_ key: String, _ text: String) throws(ConfigError) {
        let inner = text.trimmedOfWhitespace
        guard let bad = inner.unicodeScalars.first(where: isControl) else { return }
        throw ConfigError(description: "Invalid \(key) \(quoted(text)): it holds the control character \(escapedScalar(bad)), which no option value may contain (white space around a value is trimmed; inside it, control characters are refused)")
    }
}
