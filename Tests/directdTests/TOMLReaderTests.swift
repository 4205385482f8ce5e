import Testing
@testable import directd

/// directd's own TOML 1.0 reader (issue 18): what it reads, what it refuses and where.
struct TOMLReaderTests {
    func parse(_ text: String) throws(TOMLSyntaxError) -> TOMLTable {
        try TOMLReader.parse(Array(text.utf8))
    }

    func failure(_ text: String) -> TOMLSyntaxError? {
        do { _ = try parse(text); return nil } catch { return error }
    }

    /// The value at a dotted path of table keys (arrays of tables: the last one).
    func value(_ text: String, _ path: String...) throws -> TOMLValue? {
        var table = try parse(text)
        for key in path.dropLast() {
            switch table[key] {
            case .table(let next)?: table = next
            case .tableArray(let tables)?: table = tables.tables.last!
            default: return nil
            }
        }
        return table[path.last!]
    }

    func string(_ text: String, _ path: String...) throws -> String? {
        var table = try parse(text)
        for key in path.dropLast() {
            guard case .table(let next)? = table[key] else { return nil }
            table = next
        }
        return table[path.last!]?.string
    }

    // MARK: strings

    @Test(arguments: [
        (#"a = "tab\tquote\" back\\ \u00E9 \U0001F600""#, "tab\tquote\" back\\ é 😀"),
        (#"a = 'C:\Users\nodes'"#, #"C:\Users\nodes"#),
        ("a = \"\"\"\nline one\nline two\"\"\"", "line one\nline two"),
        ("a = \"\"\"\r\nCRLF\r\nlines\"\"\"", "CRLF\nlines"),
        ("a = \"\"\"one \\\n    two \\\n\n   three\"\"\"", "one two three"),
        ("a = \"\"\"quotes \"\" inside\"\"\"", "quotes \"\" inside"),
        ("a = \"\"\"ends in a quote\"\"\"\"", "ends in a quote\""),
        ("a = \"\"\"ends in two\"\"\"\"\"", "ends in two\"\""),
        ("a = '''\nraw \\n text\n'''", "raw \\n text\n"),
        ("a = ''''one quote' '''", "'one quote' "),
        ("a = '''two'''''", "two''"),
        ("a = \"\"", ""),
        ("a = ''", ""),
        ("a = \"\u{85} and \u{202E} stay text\"", "\u{85} and \u{202E} stay text"),
        ("a = \"with\ttab\"", "with\ttab"),
    ])
    func everyStringFormIsRead(_ text: String, _ expected: String) throws {
        #expect(try string(text, "a") == expected)
    }

    // MARK: numbers, booleans, dates

    @Test(arguments: [
        "0", "+99", "-17", "1_000", "5_349_221", "0xDEADBEEF", "0xdead_beef", "0o755", "0b1101_0110",
        "9223372036854775807", "-9223372036854775808", "0x7FFFFFFFFFFFFFFF",
    ])
    func integersInEveryFormKeepTheirText(_ literal: String) throws {
        guard case .integer(let text)? = try value("a = \(literal)", "a") else {
            Issue.record("\(literal) not read as an integer")
            return
        }
        #expect(text == literal)
    }

    @Test(arguments: [
        "+1.0", "3.1415", "-0.01", "5e+22", "1e06", "-2E-2", "6.626e-34", "224_617.445_991", "0.0",
        "inf", "+inf", "-inf", "nan", "+nan", "-nan", "1e1_0",
    ])
    func floatsInEveryFormKeepTheirText(_ literal: String) throws {
        guard case .float(let text)? = try value("a = \(literal)", "a") else {
            Issue.record("\(literal) not read as a float")
            return
        }
        #expect(text == literal)
    }

    @Test(arguments: [
        "1979-05-27T07:32:00Z", "1979-05-27T00:32:00-07:00", "1979-05-27T00:32:00.999999+05:30",
        "1979-05-27 07:32:00Z", "1979-05-27t07:32:00z", "1979-05-27T07:32:00", "1979-05-27T00:32:00.5",
        "1979-05-27", "07:32:00", "00:32:00.999999", "2024-02-29", "1990-12-31T23:59:60Z",
    ])
    func datesAndTimesAreRead(_ literal: String) throws {
        guard case .dateTime(let text)? = try value("a = \(literal)", "a") else {
            Issue.record("\(literal) not read as a date or time")
            return
        }
        #expect(text == literal)
    }

    @Test func booleansArraysAndInlineTablesAreRead() throws {
        let text = """
            yes = true
            no = false
            mixed = [ 1, 'two', 3.0, [4, [5]], { six = 6 }, ]
            multi = [
              1,   # one
              2,
              # nothing here
            ]
            empty = []
            point = { x = 1, y.z = "deep", 'quoted key' = [] }
            nothing = {}
            """
        #expect(try value(text, "yes").map { if case .boolean(true) = $0 { true } else { false } } == true)
        #expect(try value(text, "no").map { if case .boolean(false) = $0 { true } else { false } } == true)
        guard case .array(let mixed)? = try value(text, "mixed"), case .array(let multi)? = try value(text, "multi") else {
            Issue.record("arrays not read")
            return
        }
        #expect(mixed.count == 5 && multi.count == 2)
        #expect(try string(text, "point", "y", "z") == "deep")
        guard case .table(let point)? = try value(text, "point") else { return }
        #expect(point.keys == ["x", "y", "quoted key"])
    }

    // MARK: tables and keys

    @Test func tablesDottedKeysAndArraysOfTablesAreRead() throws {
        let text = """
            # top-level keys first
            name = "root"
            site."google.com" = true
            3.14159 = "pi"

            [a.b.c]            # implicit a and a.b
            d = 1
            [a]                # a defined later: allowed once
            x = 2
            [ spaced . "quoted" . 'literal' ]
            k = 3
            [fruit]
            apple.color = "red"
            apple.taste.sweet = true
            [fruit.apple.texture]   # a sub-table of a dotted table
            smooth = true
            [x.y.w]                 # implies x.y, which dotted keys may then define
            [x]
            y.z = 1

            [[products]]
            name = "Hammer"
            [[products]]
            [[products]]
            name = "Nail"
            [products.dimensions]
            size = 1
            [[products.parts]]
            part = "head"
            """
        let root = try parse(text)
        #expect(root.keys == ["name", "site", "3", "a", "spaced", "fruit", "x", "products"])
        #expect(try value(text, "x", "y", "z") != nil && value(text, "x", "y", "w") != nil)
        #expect(try string(text, "3", "14159") == "pi")
        #expect(try string(text, "spaced", "quoted", "literal") == nil)
        #expect(try value(text, "spaced", "quoted", "literal", "k") != nil)
        #expect(try value(text, "a", "b", "c", "d") != nil && value(text, "a", "x") != nil)
        #expect(try value(text, "fruit", "apple", "texture", "smooth") != nil)
        guard case .tableArray(let products)? = root["products"] else {
            Issue.record("no array of tables")
            return
        }
        #expect(products.tables.count == 3)
        #expect(products.tables[0]["name"]?.string == "Hammer" && products.tables[1].keys.isEmpty)
        #expect(products.tables[2].keys == ["name", "dimensions", "parts"])
    }

    @Test func emptyFilesCommentsBlankLinesAndAByteOrderMarkAreFine() throws {
        #expect(try parse("").keys.isEmpty)
        #expect(try parse("\n\n# only a comment\n   \t\n").keys.isEmpty)
        #expect(try TOMLReader.parse([0xEF, 0xBB, 0xBF] + Array("a = 1 # é\r\n".utf8)).keys == ["a"])
        #expect(try parse("a = 1").keys == ["a"], "no line break at the end")
        #expect(try parse(#""" = 1"#).keys == [""], "an empty quoted key is a key")
    }

    // MARK: refused

    @Test(arguments: [
        ("a = 1\na = 2", 2, "duplicate key \"a\""),
        ("a = 1\n\"a\" = 2", 2, "duplicate key \"a\""),
        ("a.b = 1\na.b = 2", 2, "duplicate key \"b\""),
        ("a = 1\na.b = 2", 2, "already holds a number"),
        ("[a]\n[a]", 2, "is defined twice"),
        ("[a]\nb = 1\n[a.b]", 3, "already holds a number"),
        ("[a.b]\n[a]\nb.c = 1", 3, "a table defined elsewhere"),
        ("[a.b.c]\n[a]\nb.c.d = 1", 3, "a table defined elsewhere"),
        ("[x.y.w]\n[x]\ny.z = 1\n[x.y]", 4, "already by dotted keys"),
        ("[x.y.w]\n[x.y]\n[x]\ny.z = 1", 4, "a table defined elsewhere"),
        ("[fruit]\napple.color = 'red'\n[fruit.apple]", 3, "already by dotted keys"),
        ("a = {b = 1}\n[a]", 2, "defined twice"),
        ("a = {b = 1}\n[a.c]", 2, "no table can be defined under it"),
        ("a = {b = 1}\na.c = 2", 2, "already holds"),
        ("a = {b = {c = 1}, b.d = 2}", 1, "already holds"),
        ("a = [1]\n[[a]]", 2, "needs an array of tables"),
        ("[[a]]\n[a]", 2, "cannot also be a table"),
        ("[a]\n[[a]]", 2, "needs an array of tables"),
        ("a = {x = 1, x = 2}", 1, "duplicate key \"x\""),
    ])
    func whatTOMLForbidsInTablesIsRefused(_ text: String, _ line: Int, _ reason: String) {
        let error = failure(text)
        #expect(error?.line == line && error?.reason.contains(reason) == true, "\(error.map { "\($0)" } ?? "accepted")")
    }

    @Test(arguments: [
        ("a = 'unterminated", 1, "end of the file inside a string"),
        ("a = \"line\nbreak\"", 1, "a line break inside a string"),
        ("a = \"bad \\x41\"", 1, "unknown escape"),
        ("a = \"bad \\e\"", 1, "unknown escape"),
        ("a = \"\\uD800\"", 1, "no Unicode scalar"),
        ("a = \"\\u12\"", 1, "hexadecimal digits"),
        ("a = \"raw \u{7}\"", 1, "control character"),
        ("a = \"raw \u{7F}\"", 1, "control character"),
        ("# comment \u{0}\na = 1", 1, "control character"),
        ("a = 1\rb = 2", 1, "carriage return"),
        ("a = \"\"\"x\"\"\"\"\"\"", 1, "too many quotes"),
        ("a = bare", 1, "is not a TOML value"),
        ("a =", 1, "expected a value"),
        ("a = 1 b = 2", 1, "expected the end of the line"),
        ("= 1", 1, "expected a key"),
        ("a b = 1", 1, "expected \"=\""),
        ("[a", 1, "expected \"]\""),
        ("[[a]", 1, "\"]]\""),
        ("[]", 1, "expected a key"),
        ("a = [1 2]", 1, "expected \",\" or \"]\""),
        ("a = [,]", 1, "expected a value"),
        ("a = {b = 1,}", 1, "expected a key"),
        ("a = {b = 1\n}", 1, "line break inside an inline table"),
        ("a = tru", 1, "is not a TOML value"),
        ("a = truex", 1, "expected the end of the line"),
        ("\n\na = 'x'\u{0}", 3, "expected the end of the line"),
    ])
    func malformedTextIsRefusedWithItsLine(_ text: String, _ line: Int, _ reason: String) {
        let error = failure(text)
        #expect(error?.line == line && error?.reason.contains(reason) == true, "\(error.map { "\($0)" } ?? "accepted")")
    }

    @Test(arguments: [
        "01", "+0x10", "-0o7", "0x", "0b102", "0o8", "1__000", "_1", "1_", "0x_1", "9223372036854775808",
        "-9223372036854775809", "0xFFFFFFFFFFFFFFFF", "99999999999999999999999", "0X10",
        "1.", ".5", "1.e5", "1e", "1e_5", "00.1", "1._5", "1.5_", "Inf", "NaN", "infinity", "+-1",
        "1979-13-01", "1979-02-30", "2023-02-29", "1979-05-27T24:00:00", "1979-05-27T07:60:00",
        "1979-05-27T07:32", "07:32", "07:32:00Z", "1979-05-27T07:32:00+24:00", "1979-05-27T07:32:00.",
        "1979-05-27X07:32:00", "1979-5-27",
    ])
    func malformedNumbersAndDatesAreRefused(_ literal: String) {
        let error = failure("a = \(literal)")
        #expect(error?.line == 1, "\(literal): \(error.map { "\($0)" } ?? "accepted")")
    }

    @Test(arguments: ["9223372036854775808", "-9223372036854775809", "0x8000000000000000", "0o1777777777777777777777"])
    func integersPast64BitsAreRefusedAsSuch(_ literal: String) {
        #expect(failure("a = \(literal)")?.reason.contains("does not fit a 64-bit integer") == true)
    }

    @Test func columnsCountCharacters() {
        let error = failure("\"é\" = 1\n  \"ü\" = tru")
        #expect(error?.line == 2 && error?.column == 9, "\(error.map { "\($0)" } ?? "accepted")")
        #expect(failure("a = 'é'\nb = \"\"\"\nx\ny\"\"\" junk")?.line == 4, "lines are counted inside multi-line strings")
    }

    @Test func invalidUTF8IsRefusedInStringsAndComments() {
        #expect(throws: TOMLSyntaxError.self) { try TOMLReader.parse(Array("a = '".utf8) + [0xFF] + Array("'".utf8)) }
        #expect(throws: TOMLSyntaxError.self) { try TOMLReader.parse(Array("a = \"".utf8) + [0xC3] + Array("\"".utf8)) }
        #expect(throws: TOMLSyntaxError.self) { try TOMLReader.parse(Array("# ".utf8) + [0xED, 0xA0, 0x80]) }
        #expect(throws: TOMLSyntaxError.self) { try TOMLReader.parse([0xC3, 0xA9] + Array(" = 1".utf8)) }
    }

    /// directd's own rule: an escaped control character is refused, the named escapes kept.
    @Test func escapedControlCharactersAreRefusedByDirectdsRule() {
        for escape in [#"\u0000"#, #"\u001b"#, #"\U0000007F"#, #"\u0085"#] {
            let error = failure("\n\"key\(escape)\" = 1")
            #expect(error?.kind == .refused && error?.line == 2, "\(escape): \(error.map { "\($0)" } ?? "accepted")")
        }
        #expect(failure(#"a = "\b\t\n\f\r""#) == nil)
        #expect(failure(#"a = "\\u0000""#) == nil, "an escaped backslash, then text")
    }

    // MARK: limits

    @Test func nestingPastTheCapIsRefusedWithoutRecursingIntoIt() {
        let cap = TOMLReader.maximumDepth
        let key = { (levels: Int) in Array(repeating: "a", count: levels).joined(separator: ".") }
        #expect(failure("\(key(cap)) = 1") == nil)
        #expect(failure("\(key(cap + 1)) = 1")?.reason.contains("nested more than \(cap) levels") == true)
        #expect(failure("[\(key(cap + 1))]")?.reason.contains("nested more than") == true)
        #expect(failure("[\(key(cap))]\nb = 1")?.reason.contains("nested more than") == true)
        #expect(failure("a = " + String(repeating: "[", count: cap - 1) + String(repeating: "]", count: cap - 1)) == nil)
        #expect(failure("a = " + String(repeating: "[", count: cap))?.reason.contains("nested more than") == true)
        #expect(failure("a = " + String(repeating: "{b = ", count: cap))?.reason.contains("nested more than") == true)
        // Issue 18: 150,000 levels overflowed toml++'s stack. Refused at the 65th.
        let deep = failure("[options]\ndirect-server = 'Y'\n\(key(150_000)) = 1\n")
        #expect(deep?.line == 3 && deep?.reason.contains("nested more than") == true)
        #expect(failure("a = " + String(repeating: "[", count: 1_000_000))?.reason.contains("nested more than") == true)
    }

    @Test func manyKeysAreReadInOnePass() throws {
        // Linear: a hash map per table, no rescans. A million keys take a few seconds
        // in the release build, as with toml++; fewer here, as the debug build is slower.
        var text = "[options]\n"
        for index in 0..<200_000 { text += "k\(index) = '\(index)'\n" }
        let root = try parse(text)
        guard case .table(let options)? = root["options"] else {
            Issue.record("no options")
            return
        }
        #expect(options.keys.count == 200_000 && options["k199999"]?.string == "199999")
    }
}
