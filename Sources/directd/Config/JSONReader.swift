/// A JSON value as the config file holds it.
///
/// Objects keep their members in file order, and numbers keep their literal text,
/// so that the config reader can check them the way it checks the same value
/// written as a string ("21118" and 21118 mean one thing; 21118.0 is refused in
/// both forms).
enum JSONValue {
    case null, bool(Bool), number(String), string(String)
    case array([JSONValue])
    case object([JSONMember])

    var typeName: String {
        switch self {
        case .null: "null"
        case .bool: "a boolean"
        case .number: "a number"
        case .string: "a string"
        case .array: "an array"
        case .object: "an object"
        }
    }
}

struct JSONMember {
    let key: String
    let value: JSONValue
    /// 1-based line of the key in the file, for messages.
    let line: Int
}

/// Why a text is not the JSON a config file may hold, and where.
struct JSONSyntaxError: Error, CustomStringConvertible {
    let line: Int
    let column: Int
    let reason: String
    /// The text is JSON, but repeats a key (RFC 8259 leaves the meaning to the reader).
    var isDuplicateKey = false
    var description: String { "line \(line), column \(column): \(reason)" }
}

/// A strict RFC 8259 reader for config files.
///
/// Foundation's decoder keeps the first of two equal keys and says nothing, while
/// Python's json and jq keep the last: `{"bind-interface": "", "bind-interface":
/// "127.0.0.1"}` then means "all interfaces" to directd and loopback to every tool
/// the operator checks it with. So this reader refuses a key repeated in any object,
/// after escapes are decoded (`"bind\u002dinterface"` is `"bind-interface"`). It
/// also refuses what RFC 8259 does not allow (trailing commas, comments, raw control
/// characters in strings, invalid UTF-8, lone surrogates) and nesting deeper than
/// a config file needs, so hostile input cannot exhaust the stack.
struct JSONReader {
    static let maximumDepth = 64

    private let bytes: [UInt8]
    private var offset = 0
    /// The line being read and where it starts. Line breaks can only occur in
    /// white space (a raw one inside a string is refused), so only
    /// `skipWhitespace` moves them, and every position is found without a rescan.
    private var line = 1
    private var lineStart = 0

    private init(_ bytes: [UInt8]) {
        self.bytes = bytes
        // A UTF-8 byte order mark, as some Windows editors write it, is not content.
        if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { offset = 3; lineStart = 3 }
    }

    static func parse(_ bytes: [UInt8]) throws(JSONSyntaxError) -> JSONValue {
        var reader = JSONReader(bytes)
        reader.skipWhitespace()
        let value = try reader.value(depth: 0)
        reader.skipWhitespace()
        guard reader.offset == reader.bytes.count else {
            throw reader.failure("unexpected \(reader.describeNext()) after the end of the JSON value")
        }
        return value
    }

    // MARK: values

    private mutating func value(depth: Int) throws(JSONSyntaxError) -> JSONValue {
        guard depth < Self.maximumDepth else {
            throw failure("nested more than \(Self.maximumDepth) levels deep")
        }
        guard let byte = peek() else { throw failure("unexpected end of the file; expected a value") }
        switch byte {
        case UInt8(ascii: "{"): return try object(depth: depth)
        case UInt8(ascii: "["): return try array(depth: depth)
        case UInt8(ascii: "\""): return .string(try string())
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return .number(try number())
        case UInt8(ascii: "t"): try literal("true"); return .bool(true)
        case UInt8(ascii: "f"): try literal("false"); return .bool(false)
        case UInt8(ascii: "n"): try literal("null"); return .null
        default: throw failure("unexpected \(describeNext()); expected a value")
        }
    }

    private mutating func object(depth: Int) throws(JSONSyntaxError) -> JSONValue {
        offset += 1  // {
        var members: [JSONMember] = []
        var seen: Set<String> = []
        skipWhitespace()
        if peek() == UInt8(ascii: "}") { offset += 1; return .object(members) }
        while true {
            skipWhitespace()
            guard peek() == UInt8(ascii: "\"") else {
                throw failure("unexpected \(describeNext()); expected a key in double quotes")
            }
            let keyStart = offset
            let key = try string()
            guard seen.insert(key).inserted else {
                var error = failure("duplicate key \(ConfigText.quoted(key)) in the same object; each key may appear once, since JSON readers disagree on which one wins", at: keyStart)
                error.isDuplicateKey = true
                throw error
            }
            let line = self.line
            skipWhitespace()
            guard peek() == UInt8(ascii: ":") else { throw failure("unexpected \(describeNext()); expected \":\" after a key") }
            offset += 1
            skipWhitespace()
            members.append(JSONMember(key: key, value: try value(depth: depth + 1), line: line))
            skipWhitespace()
            switch peek() {
            case UInt8(ascii: ","): offset += 1
            case UInt8(ascii: "}"): offset += 1; return .object(members)
            default: throw failure("unexpected \(describeNext()); expected \",\" or \"}\"")
            }
        }
    }

    private mutating func array(depth: Int) throws(JSONSyntaxError) -> JSONValue {
        offset += 1  // [
        var elements: [JSONValue] = []
        skipWhitespace()
        if peek() == UInt8(ascii: "]") { offset += 1; return .array(elements) }
        while true {
            skipWhitespace()
            elements.append(try value(depth: depth + 1))
            skipWhitespace()
            switch peek() {
            case UInt8(ascii: ","): offset += 1
            case UInt8(ascii: "]"): offset += 1; return .array(elements)
            default: throw failure("unexpected \(describeNext()); expected \",\" or \"]\"")
            }
        }
    }

    /// A number's literal text, checked against RFC 8259's grammar.
    private mutating func number() throws(JSONSyntaxError) -> String {
        let start = offset
        if peek() == UInt8(ascii: "-") { offset += 1 }
        guard let first = peek(), isDigit(first) else { throw failure("a number needs a digit after \"-\"") }
        offset += 1
        if first != UInt8(ascii: "0") { skipDigits() }
        if peek() == UInt8(ascii: ".") {
            offset += 1
            guard let digit = peek(), isDigit(digit) else { throw failure("a number needs a digit after \".\"") }
            skipDigits()
        }
        if peek() == UInt8(ascii: "e") || peek() == UInt8(ascii: "E") {
            offset += 1
            if peek() == UInt8(ascii: "+") || peek() == UInt8(ascii: "-") { offset += 1 }
            guard let digit = peek(), isDigit(digit) else { throw failure("a number needs a digit in its exponent") }
            skipDigits()
        }
        if let next = peek(), isDigit(next) || next == UInt8(ascii: ".") {
            throw failure("a number may not have leading zeros")
        }
        return String(decoding: bytes[start..<offset], as: UTF8.self)
    }

    private mutating func string() throws(JSONSyntaxError) -> String {
        offset += 1  // opening quote
        var result = String.UnicodeScalarView()
        var runStart = offset
        // Appends the raw bytes since the last escape, which must be valid UTF-8.
        func flush(_ reader: JSONReader, upTo end: Int, into result: inout String.UnicodeScalarView) throws(JSONSyntaxError) {
            guard end > runStart else { return }
            guard let text = String(validating: reader.bytes[runStart..<end], as: UTF8.self) else {
                throw reader.failure("invalid UTF-8 in a string", at: runStart)
            }
            result.append(contentsOf: text.unicodeScalars)
        }
        while true {
            guard let byte = peek() else { throw failure("unexpected end of the file inside a string") }
            switch byte {
            case UInt8(ascii: "\""):
                try flush(self, upTo: offset, into: &result)
                offset += 1
                return String(result)
            case UInt8(ascii: "\\"):
                try flush(self, upTo: offset, into: &result)
                result.append(try escape())
                runStart = offset
            case 0..<0x20:
                throw failure("a control character (\(ConfigText.escapedScalar(Unicode.Scalar(byte)))) inside a string; JSON needs it escaped")
            default:
                offset += 1
            }
        }
    }

    /// One escape sequence, the backslash included; \uD83D\uDE00 pairs become one scalar.
    private mutating func escape() throws(JSONSyntaxError) -> Unicode.Scalar {
        let start = offset
        offset += 1  // backslash
        guard let kind = peek() else { throw failure("unexpected end of the file inside a string") }
        offset += 1
        switch kind {
        case UInt8(ascii: "\""): return "\""
        case UInt8(ascii: "\\"): return "\\"
        case UInt8(ascii: "/"): return "/"
        case UInt8(ascii: "b"): return "\u{08}"
        case UInt8(ascii: "f"): return "\u{0C}"
        case UInt8(ascii: "n"): return "\n"
        case UInt8(ascii: "r"): return "\r"
        case UInt8(ascii: "t"): return "\t"
        case UInt8(ascii: "u"):
            let unit = try hex4()
            if (0xD800..<0xDC00).contains(unit) {
                guard peek() == UInt8(ascii: "\\"), offset + 1 < bytes.count, bytes[offset + 1] == UInt8(ascii: "u") else {
                    throw failure("a lone UTF-16 surrogate in \\u escape", at: start)
                }
                offset += 2
                let low = try hex4()
                guard (0xDC00..<0xE000).contains(low) else { throw failure("a lone UTF-16 surrogate in \\u escape", at: start) }
                return Unicode.Scalar(0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00))!
            }
            guard let scalar = Unicode.Scalar(unit) else { throw failure("a lone UTF-16 surrogate in \\u escape", at: start) }
            return scalar
        default:
            throw failure("unknown escape \"\\\(String(decoding: [kind], as: UTF8.self))\"", at: start)
        }
    }

    private mutating func hex4() throws(JSONSyntaxError) -> UInt32 {
        var value: UInt32 = 0
        for _ in 0..<4 {
            guard let byte = peek() else { throw failure("unexpected end of the file in a \\u escape") }
            let digit: UInt8
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
            default: throw failure("a \\u escape needs four hexadecimal digits")
            }
            value = value << 4 | UInt32(digit)
            offset += 1
        }
        return value
    }

    private mutating func literal(_ word: StaticString) throws(JSONSyntaxError) {
        let expected = UnsafeBufferPointer(start: word.utf8Start, count: word.utf8CodeUnitCount)
        guard bytes.count - offset >= expected.count, bytes[offset..<offset + expected.count].elementsEqual(expected) else {
            throw failure("unexpected \(describeNext()); expected a value")
        }
        offset += expected.count
    }

    // MARK: bytes

    private func peek() -> UInt8? { offset < bytes.count ? bytes[offset] : nil }

    private func isDigit(_ byte: UInt8) -> Bool { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) }

    private mutating func skipDigits() {
        while let byte = peek(), isDigit(byte) { offset += 1 }
    }

    private mutating func skipWhitespace() {
        while let byte = peek(), byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D {
            offset += 1
            if byte == 0x0A {
                line += 1
                lineStart = offset
            }
        }
    }

    /// The next character, quoted and escaped, or "end of the file".
    private func describeNext() -> String {
        guard offset < bytes.count else { return "end of the file" }
        let end = min(offset + 4, bytes.count)
        var scalars = String(decoding: bytes[offset..<end], as: UTF8.self).unicodeScalars.makeIterator()
        guard let scalar = scalars.next() else { return "end of the file" }
        return ConfigText.quoted(String(Character(scalar)))
    }

    /// `offset` is on the current line (strings hold no raw line break).
    private func position(of offset: Int) -> (line: Int, column: Int) {
        // Columns count characters, not bytes: UTF-8 continuation bytes are skipped.
        let start = min(lineStart, offset), end = min(offset, bytes.count)
        let column = bytes[start..<end].filter { $0 & 0xC0 != 0x80 }.count + 1
        return (line, column)
    }

    private func failure(_ reason: String, at offset: Int? = nil) -> JSONSyntaxError {
        let (line, column) = position(of: offset ?? self.offset)
        return JSONSyntaxError(line: line, column: column, reason: reason)
    }
}
