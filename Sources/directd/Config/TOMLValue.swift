/// A TOML document as `TOMLReader` reads it: tables of values in file order.
///
/// Numbers and dates keep their literal text: directd reads an option's number
/// through the same parser as the flag (`OptionValue`), so the number grammar is
/// the flag grammar, whatever TOML would also allow (`0x5000`, `2_1118`, `+5`).
enum TOMLValue {
    case string(String)
    /// Checked against TOML's integer grammar and 64-bit range; the text as written.
    case integer(literal: String)
    /// Checked against TOML's float grammar (inf and nan included); the text as written.
    case float(literal: String)
    case boolean(Bool)
    /// An offset or local date-time, a local date or a local time, as written.
    case dateTime(literal: String)
    case array([TOMLValue])
    case table(TOMLTable)
    /// `[[name]]`: one table per header, in order.
    case tableArray(TOMLTableArray)

    /// For messages: "a string", "a number", ...
    var typeName: String {
        switch self {
        case .string: "a string"
        case .integer, .float: "a number"
        case .boolean: "a boolean"
        case .dateTime: "a date or time"
        case .array, .tableArray: "an array"
        case .table: "a table"
        }
    }

    var string: String? {
        if case .string(let text) = self { text } else { nil }
    }
}

/// One table. A reference, because headers, dotted keys and `[[...]]` reach back
/// into tables made earlier in the file while it is read.
final class TOMLTable {
    /// How the table came to be, which decides what may still add to it (TOML 1.0):
    /// a header may define an `implicit` table once; dotted keys may extend only a
    /// table that dotted keys made or that a header only implied (which then counts as
    /// made by dotted keys); nothing may add to an inline table.
    enum Origin {
        case implicit, header, dotted, inline
    }

    var origin: Origin
    /// Keys in file order, for readers that walk the table.
    private(set) var keys: [String] = []
    private var entries: [String: TOMLValue] = [:]

    init(origin: Origin) { self.origin = origin }

    subscript(key: String) -> TOMLValue? { entries[key] }

    /// Adds `value` under a new `key`; false if the key is already there.
    func insert(_ key: String, _ value: TOMLValue) -> Bool {
        guard entries[key] == nil else { return false }
        entries[key] = value
        keys.append(key)
        return true
    }
}

/// The tables of one `[[name]]` array, appended to as headers come.
final class TOMLTableArray {
    private(set) var tables: [TOMLTable]

    init(_ first: TOMLTable) { tables = [first] }

    func append(_ table: TOMLTable) { tables.append(table) }
}

/// Invalid TOML, where it was found: the line, and the column in characters.
struct TOMLSyntaxError: Error, CustomStringConvertible {
    enum Kind {
        /// Not TOML, as TOML 1.0 says (a repeated key included).
        case syntax
        /// Valid TOML that directd refuses: an escaped control character.
        case refused
    }

    let line: Int
    let column: Int
    let reason: String
    var kind: Kind = .syntax

    var description: String { "line \(line), column \(column): \(reason)" }
}
