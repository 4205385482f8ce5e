/// Makes any text safe to put on one log line. `Log` applies it to every line,
/// so that no call site can forget: a config key, a bind value, an interface
/// name or an upstream's error text cannot start a new line (and so cannot forge
/// one such as `listening on 0.0.0.0:22`), move the cursor, or reorder what a
/// reader sees.
///
/// Escaped: C0 (U+0000 to U+001F), DEL (U+007F) and C1 (U+0080 to U+009F, with
/// U+0085 NEXT LINE, which some readers break lines at), U+2028 LINE SEPARATOR
/// and U+2029 PARAGRAPH SEPARATOR (line breaks to Unicode-aware readers), and
/// the bidirectional controls (U+200E, U+200F, U+202A to U+202E, U+2066 to
/// U+2069), which can make a line display as something else.
///
/// The notation is UVBind's (`escapingControlCharacters`, C0 and DEL only):
/// `\n`, `\r`, `\t`, otherwise `\u{85}`. Backslashes stay as they are, so text
/// that UVBind already escaped is not escaped twice.
enum LogEscaping {
    static func needsEscaping(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.value {
        case 0x00...0x1F, 0x7F...0x9F: true
        case 0x2028, 0x2029: true
        case 0x200E, 0x200F, 0x202A...0x202E, 0x2066...0x2069: true
        default: false
        }
    }

    static func escaped(_ text: String) -> String {
        guard text.unicodeScalars.contains(where: needsEscaping) else { return text }
        var result = String.UnicodeScalarView()
        for scalar in text.unicodeScalars {
            guard needsEscaping(scalar) else {
                result.append(scalar)
                continue
            }
            let replacement = switch scalar {
            case "\n": "\\n"
            case "\r": "\\r"
            case "\t": "\\t"
            default: "\\u{\(String(scalar.value, radix: 16))}"
            }
            result.append(contentsOf: replacement.unicodeScalars)
        }
        return String(result)
    }
}
