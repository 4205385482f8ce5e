/// A strict TOML 1.0 reader, for RustDesk's RustDesk2.toml, in the standard library only.
///
/// It replaced TOMLKit (toml++), which overflowed the stack on a dotted key 150,000
/// levels deep (issue 18) and brought Foundation and ICU's data into the binary.
///
/// What TOML 1.0 does not allow is refused with its line and column: a key or table
/// defined twice, a table extended where the spec forbids it, raw control characters,
/// invalid UTF-8, malformed numbers and dates. One rule is directd's own: an escaped
/// control character (`\u0000`, `\u001B`, ... other than `\b \t \n \f \r`) is refused,
/// since no option value has a use for one and a NUL or a line break in a value is an
/// attack, not a setting.
///
/// One pass, linear in the file: each byte is looked at a bounded number of times,
/// tables are hash maps, and keys, tables, arrays and inline tables together nest at
/// most `maximumDepth` levels, so recursion (only into arrays and inline tables) and
/// any key path are bounded before anything is built.
struct TOMLReader {
    /// Like `JSONReader`'s cap: RustDesk's file nests two levels; 64 is plenty for
    /// any hand-written file, and keeps recursion and key paths far from the stack's limit.
    static let maximumDepth = 64

    let bytes: [UInt8]
    var offset = 0
    /// The line being read and where it starts, for positions without a rescan.
    var line = 1
    var lineStart = 0

    private let root = TOMLTable(origin: .header)
    /// The table that the current section's key/value pairs go to, and its depth.
    private var section: TOMLTable
    private var sectionDepth = 0

    private init(_ bytes: [UInt8]) {
        self.bytes = bytes
        section = root
        // A UTF-8 byte order mark, as some Windows editors write it, is not content.
        if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { offset = 3; lineStart = 3 }
    }

    /// The document's root table, or where and why the text is not TOML.
    static func parse(_ bytes: [UInt8]) throws(TOMLSyntaxError) -> TOMLTable {
        var reader = TOMLReader(bytes)
        try reader.document()
        return reader.root
    }

    // MARK: structure

    private mutating func document() throws(TOMLSyntaxError) {
        while true {
            skipSpaces()
            guard let byte = peek() else { return }
            switch byte {
            case UInt8(ascii: "#"), 0x0A, 0x0D:
                break
            case UInt8(ascii: "["):
                try header()
            default:
                try keyValue(into: section, depth: sectionDepth)
            }
            try endOfLine()
        }
    }

    /// After a pair or a header: spaces, perhaps a comment, then a newline or the end.
    private mutating func endOfLine() throws(TOMLSyntaxError) {
        skipSpaces()
        if peek() == UInt8(ascii: "#") { try comment() }
        guard peek() != nil else { return }
        if try newline() { return }
        throw failure("unexpected \(describeNext()); expected the end of the line")
    }

    /// `[a.b]` or `[[a.b]]`.
    private mutating func header() throws(TOMLSyntaxError) {
        let start = offset
        offset += 1
        let isArray = peek() == UInt8(ascii: "[")
        if isArray { offset += 1 }
        skipSpaces()
        let path = try key(depth: 0)
        skipSpaces()
        guard peek() == UInt8(ascii: "]") else { throw failure("unexpected \(describeNext()); expected \"]\" to end the table header") }
        offset += 1
        if isArray {
            guard peek() == UInt8(ascii: "]") else { throw failure("unexpected \(describeNext()); expected \"]]\" to end the array of tables header") }
            offset += 1
        }
        var table = root
        for segment in path.dropLast() {
            switch table[segment.name] {
            case .table(let next)? where next.origin != .inline:
                table = next
            case .tableArray(let tables)?:
                table = tables.tables[tables.tables.count - 1]
            case nil:
                let next = TOMLTable(origin: .implicit)
                _ = table.insert(segment.name, .table(next))
                table = next
            case let other?:
                throw failure("the key \(ConfigText.quoted(segment.name)) holds \(other.typeName) (\(other.isInline ? "an inline table, closed" : "not a table")), so no table can be defined under it", at: segment.offset)
            }
        }
        let last = path[path.count - 1]
        let defined: TOMLTable
        if isArray {
            defined = TOMLTable(origin: .header)
            switch table[last.name] {
            case nil: _ = table.insert(last.name, .tableArray(TOMLTableArray(defined)))
            case .tableArray(let tables)?: tables.append(defined)
            case let other?:
                throw failure("the key \(ConfigText.quoted(last.name)) already holds \(other.typeName) defined otherwise; [[...]] needs an array of tables", at: start)
            }
        } else {
            switch table[last.name] {
            case nil:
                defined = TOMLTable(origin: .header)
                _ = table.insert(last.name, .table(defined))
            case .table(let existing)? where existing.origin == .implicit:
                existing.origin = .header
                defined = existing
            case .table(let existing)?:
                let how = existing.origin == .dotted ? "by dotted keys" : existing.origin == .inline ? "as an inline table" : "by an earlier header"
                throw failure("the table \(ConfigText.quoted(last.name)) is defined twice (already \(how)); TOML allows each table once", at: start)
            case let other?:
                throw failure("the key \(ConfigText.quoted(last.name)) already holds \(other.typeName); it cannot also be a table", at: start)
            }
        }
        section = defined
        sectionDepth = path.count
    }

    /// `key = value` into `table`, whose depth is `depth`.
    mutating func keyValue(into table: TOMLTable, depth: Int) throws(TOMLSyntaxError) {
        let path = try key(depth: depth)
        skipSpaces()
        guard peek() == UInt8(ascii: "=") else { throw failure("unexpected \(describeNext()); expected \"=\" after a key") }
        offset += 1
        skipSpaces()
        var target = table
        for segment in path.dropLast() {
            switch target[segment.name] {
            case .table(let next)? where next.origin == .dotted || next.origin == .implicit:
                // A table a header only implied ([x.y.w] implies x.y) is defined here,
                // by dotted keys: from now on no header may define it.
                next.origin = .dotted
                target = next
            case nil:
                let next = TOMLTable(origin: .dotted)
                _ = target.insert(segment.name, .table(next))
                target = next
            case let other?:
                let why = if case .table = other { "a table defined elsewhere, which dotted keys may not add to" } else { other.typeName }
                throw failure("the key \(ConfigText.quoted(segment.name)) already holds \(why)", at: segment.offset)
            }
        }
        let last = path[path.count - 1]
        guard target[last.name] == nil else { throw duplicate(last) }
        let value = try value(depth: depth + path.count)
        _ = target.insert(last.name, value)
    }

    private func duplicate(_ key: KeySegment) -> TOMLSyntaxError {
        failure("duplicate key \(ConfigText.quoted(key.name)); TOML allows each key once in a table", at: key.offset)
    }

    struct KeySegment {
        let name: String
        let offset: Int
    }

    /// A bare, quoted or dotted key; refused as soon as it would nest past the cap.
    private mutating func key(depth: Int) throws(TOMLSyntaxError) -> [KeySegment] {
        var path: [KeySegment] = []
        while true {
            guard depth + path.count < Self.maximumDepth else {
                throw failure("nested more than \(Self.maximumDepth) levels deep (keys, tables and arrays count alike)")
            }
            let start = offset
            let name: String
            switch peek() {
            case UInt8(ascii: "\"")?:
                name = try basicString(multiline: false)
            case UInt8(ascii: "'")?:
                name = try literalString(multiline: false)
            case let byte? where isBareKeyByte(byte):
                while let byte = peek(), isBareKeyByte(byte) { offset += 1 }
                name = String(decoding: bytes[start..<offset], as: UTF8.self)
            default:
                throw failure("unexpected \(describeNext()); expected a key")
            }
            path.append(KeySegment(name: name, offset: start))
            skipSpaces()
            guard peek() == UInt8(ascii: ".") else { return path }
            offset += 1
            skipSpaces()
        }
    }

    // MARK: values

    /// One value, at nesting level `depth`.
    mutating func value(depth: Int) throws(TOMLSyntaxError) -> TOMLValue {
        guard depth <= Self.maximumDepth else {
            throw failure("nested more than \(Self.maximumDepth) levels deep (keys, tables and arrays count alike)")
        }
        guard let byte = peek() else { throw failure("unexpected end of the file; expected a value") }
        switch byte {
        case UInt8(ascii: "\""):
            return .string(try basicString(multiline: starts(with: "\"\"\"")))
        case UInt8(ascii: "'"):
            return .string(try literalString(multiline: starts(with: "'''")))
        case UInt8(ascii: "t") where starts(with: "true"):
            offset += 4
            return .boolean(true)
        case UInt8(ascii: "f") where starts(with: "false"):
            offset += 5
            return .boolean(false)
        case UInt8(ascii: "["):
            return try array(depth: depth)
        case UInt8(ascii: "{"):
            return try inlineTable(depth: depth)
        default:
            return try numberOrDate()
        }
    }

    private mutating func array(depth: Int) throws(TOMLSyntaxError) -> TOMLValue {
        offset += 1  // [
        var elements: [TOMLValue] = []
        while true {
            try skipBlankAndComments()
            if peek() == UInt8(ascii: "]") { offset += 1; return .array(elements) }
            elements.append(try value(depth: depth + 1))
            try skipBlankAndComments()
            switch peek() {
            case UInt8(ascii: ",")?: offset += 1
            case UInt8(ascii: "]")?: offset += 1; return .array(elements)
            default: throw failure("unexpected \(describeNext()); expected \",\" or \"]\" in an array")
            }
        }
    }

    /// `{ a = 1, b.c = 2 }`: on one line, no trailing comma, closed once read.
    private mutating func inlineTable(depth: Int) throws(TOMLSyntaxError) -> TOMLValue {
        offset += 1  // {
        let table = TOMLTable(origin: .dotted)
        skipSpaces()
        if peek() == UInt8(ascii: "}") {
            offset += 1
            table.origin = .inline
            return .table(table)
        }
        while true {
            skipSpaces()
            try keyValue(into: table, depth: depth)
            skipSpaces()
            switch peek() {
            case UInt8(ascii: ",")?:
                offset += 1
            case UInt8(ascii: "}")?:
                offset += 1
                table.origin = .inline
                return .table(table)
            case 0x0A?, 0x0D?:
                throw failure("a line break inside an inline table; TOML 1.0 keeps { ... } on one line")
            default:
                throw failure("unexpected \(describeNext()); expected \",\" or \"}\" in an inline table")
            }
        }
    }

    // MARK: bytes

    func peek() -> UInt8? { offset < bytes.count ? bytes[offset] : nil }

    func starts(with word: StaticString) -> Bool {
        let count = word.utf8CodeUnitCount
        guard bytes.count - offset >= count else { return false }
        return word.withUTF8Buffer { bytes[offset..<offset + count].elementsEqual($0) }
    }

    private func isBareKeyByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
             UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "_"), UInt8(ascii: "-"): true
        default: false
        }
    }

    mutating func skipSpaces() {
        while let byte = peek(), byte == 0x20 || byte == 0x09 { offset += 1 }
    }

    /// A line ending (LF or CRLF) at `offset`: consumed and counted. A CR alone is refused.
    mutating func newline() throws(TOMLSyntaxError) -> Bool {
        switch peek() {
        case 0x0A?:
            offset += 1
        case 0x0D?:
            guard offset + 1 < bytes.count, bytes[offset + 1] == 0x0A else {
                throw failure("a carriage return not followed by a line feed")
            }
            offset += 2
        default:
            return false
        }
        line += 1
        lineStart = offset
        return true
    }

    /// `# ...` to the end of the line (not the line break): tab allowed, other controls not.
    private mutating func comment() throws(TOMLSyntaxError) {
        let start = offset
        while let byte = peek(), byte != 0x0A {
            if byte == 0x0D, offset + 1 < bytes.count, bytes[offset + 1] == 0x0A { break }
            if (byte < 0x20 && byte != 0x09) || byte == 0x7F { throw controlCharacter(byte, "in a comment") }
            offset += 1
        }
        guard String(validating: bytes[start..<offset], as: UTF8.self) != nil else {
            throw failure("invalid UTF-8 in a comment", at: start)
        }
    }

    /// Inside arrays: spaces, line breaks and comments.
    private mutating func skipBlankAndComments() throws(TOMLSyntaxError) {
        while true {
            skipSpaces()
            if peek() == UInt8(ascii: "#") { try comment() }
            guard try newline() else { return }
        }
    }

    func controlCharacter(_ byte: UInt8, _ place: String) -> TOMLSyntaxError {
        failure("a control character (\(ConfigText.escapedScalar(Unicode.Scalar(byte)))) \(place); TOML does not allow it raw")
    }

    /// The next character, quoted and escaped, or "end of the file".
    func describeNext() -> String {
        guard offset < bytes.count else { return "end of the file" }
        let end = min(offset + 4, bytes.count)
        var scalars = String(decoding: bytes[offset..<end], as: UTF8.self).unicodeScalars.makeIterator()
        guard let scalar = scalars.next() else { return "end of the file" }
        return ConfigText.quoted(String(Character(scalar)))
    }

    /// `offset` is on the current line, or on an earlier one only for a key's start,
    /// which never spans lines, so the column is counted from `lineStart`.
    func failure(_ reason: String, at position: Int? = nil, kind: TOMLSyntaxError.Kind = .syntax) -> TOMLSyntaxError {
        let position = position ?? offset
        // Columns count characters, not bytes: UTF-8 continuation bytes are skipped.
        let start = min(lineStart, position), end = min(position, bytes.count)
        let column = bytes[start..<end].count(where: { $0 & 0xC0 != 0x80 }) + 1
        return TOMLSyntaxError(line: line, column: column, reason: reason, kind: kind)
    }
}

extension TOMLValue {
    fileprivate var isInline: Bool {
        if case .table(let table) = self { table.origin == .inline } else { false }
    }
}
