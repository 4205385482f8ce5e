/// A JSON object written field by field, for `directd status --json`. Strings
/// are escaped as RFC 8259 asks: the quote, the backslash and every control
/// character (as `\uXXXX`, with what the log escapes: C1, line separators,
/// bidi controls), so any listener name or address gives valid, inert JSON.
struct JSONWriter {
    private var fields: [String] = []

    mutating func field(_ name: String, string: String) { field(name, raw: Self.quoted(string)) }
    mutating func field(_ name: String, number: Double) { field(name, raw: Exposition.number(number)) }
    mutating func field(_ name: String, raw: String) { fields.append("\(Self.quoted(name)):\(raw)") }

    var text: String { "{" + fields.joined(separator: ",") + "}" }

    static func array(_ elements: [String]) -> String { "[" + elements.joined(separator: ",") + "]" }

    static func quoted(_ text: String) -> String {
        var result = "\""
        for scalar in text.unicodeScalars {
            if scalar == "\"" || scalar == "\\" {
                result += "\\"
                result.unicodeScalars.append(scalar)
            } else if LogEscaping.needsEscaping(scalar) {
                // Every such scalar is below U+10000: one \uXXXX, zero-padded.
                let hex = String(scalar.value, radix: 16)
                result += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            } else {
                result.unicodeScalars.append(scalar)
            }
        }
        return result + "\""
    }
}
