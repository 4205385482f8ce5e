// Fuzz target: the config file, read from bytes in memory (no file system), both
// formats: every input is read as directd's JSON and as RustDesk's RustDesk2.toml.
//
// TOML (directd's own TOMLReader): no crash and no hang at any depth (nesting is capped),
// errors escaped and placed inside the input, the same document on a second read,
// nothing accepted nested past the cap, and an accepted file has direct access on and
// the bind value its [options] table holds.
//
// A strict RFC 8259 reader here (independent of Foundation's JSONDecoder) reads the
// same bytes. Whenever directd accepts a file that this reader can read, it must have:
// no duplicate key at any level, an "options" object, no control character in the
// string value of any option, and the same bind value and whitelist as the reader sees
// (a second "bind-interface" or "whitelist" must never be the one ignored).
@testable import directd
import UVBind

/// The entry point under test: the same checks as `ConfigFile.load`, on bytes.
private func load(_ bytes: [UInt8], into settings: inout Settings) throws {
    _ = try ConfigFile.loadJSON(bytes, path: "fuzz.json", into: &settings)
}

/// A JSON value as RFC 8259 reads it; objects keep every key in order, duplicates too.
private indirect enum JSON {
    case null, bool(Bool), number(String), string(String)
    case array([JSON]), object([(key: String, value: JSON)])
}

/// A strict reader: nil for anything RFC 8259 does not allow (or nesting past 512).
private struct StrictReader {
    let bytes: [UInt8]
    var at = 0
    var duplicateKey: String?

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    mutating func document() -> JSON? {
        skipSpace()
        guard let value = value(depth: 0) else { return nil }
        skipSpace()
        return at == bytes.count ? value : nil
    }

    private var next: UInt8? { at < bytes.count ? bytes[at] : nil }

    private mutating func skipSpace() {
        while let byte = next, byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D { at += 1 }
    }

    private mutating func literal(_ word: String, _ value: JSON) -> JSON? {
        let word = Array(word.utf8)
        guard bytes.count - at >= word.count, Array(bytes[at..<at + word.count]) == word else { return nil }
        at += word.count
        return value
    }

    private mutating func value(depth: Int) -> JSON? {
        guard depth < 512, let byte = next else { return nil }
        switch byte {
        case UInt8(ascii: "{"): return object(depth: depth)
        case UInt8(ascii: "["): return array(depth: depth)
        case UInt8(ascii: "\""): return string().map(JSON.string)
        case UInt8(ascii: "t"): return literal("true", .bool(true))
        case UInt8(ascii: "f"): return literal("false", .bool(false))
        case UInt8(ascii: "n"): return literal("null", .null)
        default: return number()
        }
    }

    private mutating func object(depth: Int) -> JSON? {
        at += 1
        var members: [(key: String, value: JSON)] = []
        skipSpace()
        if next == UInt8(ascii: "}") { at += 1; return .object(members) }
        while true {
            skipSpace()
            guard next == UInt8(ascii: "\""), let key = string() else { return nil }
            skipSpace()
            guard next == UInt8(ascii: ":") else { return nil }
            at += 1
            skipSpace()
            guard let value = value(depth: depth + 1) else { return nil }
            if duplicateKey == nil, members.contains(where: { $0.key == key }) { duplicateKey = key }
            members.append((key, value))
            skipSpace()
            if next == UInt8(ascii: ",") { at += 1; continue }
            guard next == UInt8(ascii: "}") else { return nil }
            at += 1
            return .object(members)
        }
    }

    private mutating func array(depth: Int) -> JSON? {
        at += 1
        var elements: [JSON] = []
        skipSpace()
        if next == UInt8(ascii: "]") { at += 1; return .array(elements) }
        while true {
            skipSpace()
            guard let value = value(depth: depth + 1) else { return nil }
            elements.append(value)
            skipSpace()
            if next == UInt8(ascii: ",") { at += 1; continue }
            guard next == UInt8(ascii: "]") else { return nil }
            at += 1
            return .array(elements)
        }
    }

    private mutating func hex4() -> UInt32? {
        guard bytes.count - at >= 4 else { return nil }
        var value: UInt32 = 0
        for byte in bytes[at..<at + 4] {
            guard let digit = Character(Unicode.Scalar(byte)).hexDigitValue else { return nil }
            value = value << 4 | UInt32(digit)
        }
        at += 4
        return value
    }

    /// A string's value; raw control characters and lone surrogates are invalid.
    private mutating func string() -> String? {
        at += 1
        var scalars = String.UnicodeScalarView()
        var raw: [UInt8] = []
        func flush() -> Bool {
            guard !raw.isEmpty else { return true }
            guard let text = String(validating: raw, as: UTF8.self) else { return false }
            scalars.append(contentsOf: text.unicodeScalars)
            raw.removeAll()
            return true
        }
        while let byte = next {
            at += 1
            switch byte {
            case UInt8(ascii: "\""):
                return flush() ? String(scalars) : nil
            case UInt8(ascii: "\\"):
                guard flush(), let escape = next else { return nil }
                at += 1
                let simple: [UInt8: Unicode.Scalar] = [0x22: "\"", 0x5C: "\\", 0x2F: "/", 0x62: "\u{08}",
                                                       0x66: "\u{0C}", 0x6E: "\n", 0x72: "\r", 0x74: "\t"]
                if let scalar = simple[escape] { scalars.append(scalar); continue }
                guard escape == UInt8(ascii: "u"), var code = hex4() else { return nil }
                if (0xD800..<0xDC00).contains(code) {
                    guard next == UInt8(ascii: "\\") else { return nil }
                    at += 1
                    guard next == UInt8(ascii: "u") else { return nil }
                    at += 1
                    guard let low = hex4(), (0xDC00..<0xE000).contains(low) else { return nil }
                    code = 0x10000 + (code - 0xD800) << 10 + (low - 0xDC00)
                }
                guard let scalar = Unicode.Scalar(code) else { return nil }
                scalars.append(scalar)
            case 0x00..<0x20:
                return nil
            default:
                raw.append(byte)
            }
        }
        return nil
    }

    private mutating func number() -> JSON? {
        let start = at
        func digits() -> Int {
            let from = at
            while let byte = next, byte >= 0x30, byte <= 0x39 { at += 1 }
            return at - from
        }
        if next == UInt8(ascii: "-") { at += 1 }
        if next == UInt8(ascii: "0") { at += 1 } else if digits() == 0 { return nil }
        if next == UInt8(ascii: ".") { at += 1; guard digits() > 0 else { return nil } }
        if next == UInt8(ascii: "e") || next == UInt8(ascii: "E") {
            at += 1
            if next == UInt8(ascii: "+") || next == UInt8(ascii: "-") { at += 1 }
            guard digits() > 0 else { return nil }
        }
        return .number(String(decoding: bytes[start..<at], as: UTF8.self))
    }
}

private func member(_ object: [(key: String, value: JSON)], _ key: String) -> JSON? {
    object.first { $0.key == key }?.value
}

/// Control characters that must never reach a value (C0 and DEL; C1 are text).
private func hasControl(_ text: String) -> Bool {
    text.unicodeScalars.contains { $0.value < 0x20 || $0.value == 0x7F }
}

/// How deep a document nests (a table or array counts one level per key and bracket),
/// stopping at `limit`: past the cap, the reader should have refused it.
private func depth(of value: TOMLValue, limit: Int) -> Int {
    guard limit > 0 else { return 1 }
    switch value {
    case .table(let table):
        return table.keys.map { 1 + depth(of: table[$0]!, limit: limit - 1) }.max() ?? 0
    case .tableArray(let tables):
        return tables.tables.map { depth(of: .table($0), limit: limit) }.max() ?? 0
    case .array(let elements):
        return elements.map { 1 + depth(of: $0, limit: limit - 1) }.max() ?? 0
    default:
        return 0
    }
}

/// A document's shape, to compare two reads of the same bytes.
private func shape(of value: TOMLValue) -> String {
    switch value {
    case .table(let table): "{" + table.keys.map { "\($0.debugDescription)=\(shape(of: table[$0]!))" }.joined(separator: ",") + "}"
    case .tableArray(let tables): "[[" + tables.tables.map { shape(of: .table($0)) }.joined(separator: ",") + "]]"
    case .array(let elements): "[" + elements.map(shape).joined(separator: ",") + "]"
    case .string(let text): text.debugDescription
    case .integer(let text), .float(let text), .dateTime(let text): text
    case .boolean(let flag): "\(flag)"
    }
}

private func fuzzTOML(_ bytes: [UInt8]) {
    let input = String(decoding: bytes, as: UTF8.self).debugDescription
    let document: TOMLTable
    do {
        document = try TOMLReader.parse(bytes)
    } catch {
        let lines = bytes.count(where: { $0 == 0x0A }) + 1
        invariant(error.line >= 1 && error.line <= lines && error.column >= 1, "error outside the input (\(error)): \(input)")
        #if CHECK_ESCAPED_MESSAGES
        var settings = Settings()
        do { _ = try RustDeskConfig.load(bytes, path: "RustDesk2.toml", into: &settings) } catch {
            invariant(!containsControlCharacter(error.description), "a raw control character in \(error.description.debugDescription)")
        }
        #endif
        return
    }
    let again = try? TOMLReader.parse(bytes)
    invariant(again.map { shape(of: .table($0)) == shape(of: .table(document)) } == true, "two reads differ: \(input)")
    let cap = TOMLReader.maximumDepth
    invariant(depth(of: .table(document), limit: cap + 1) <= cap, "accepted a document nested past \(cap): \(input)")
    var settings = Settings()
    do {
        _ = try RustDeskConfig.load(bytes, path: "RustDesk2.toml", into: &settings)
    } catch {
        #if CHECK_ESCAPED_MESSAGES
        invariant(!containsControlCharacter("\(error)"), "a raw control character in \("\(error)".debugDescription)")
        #endif
        return
    }
    invariant(settings.directServer == true, "accepted a RustDesk2.toml without direct-server = 'Y': \(input)")
    guard case .table(let options)? = document["options"] else {
        invariant(false, "accepted a RustDesk2.toml without an [options] table: \(input)")
        return
    }
    let bind = options["bind-interface"]?.string ?? ""
    invariant(settings.bindInterface == bind, "bind value \(settings.bindInterface.debugDescription), but [options] says \(bind.debugDescription): \(input)")
    invariant(!hasControl(trimmed(bind)), "accepted a control character in the bind value: \(input)")
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzConfig(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    fuzzTOML(bytes)
    var settings = Settings()
    do {
        try load(bytes, into: &settings)
    } catch {
        #if CHECK_ESCAPED_MESSAGES
        invariant(!containsControlCharacter("\(error)"), "a raw control character in \("\(error)".debugDescription)")
        #endif
        return 0
    }
    var reader = StrictReader(bytes)
    // Foundation may accept what RFC 8259 does not (a byte-order mark, say): nothing to compare.
    guard let document = reader.document() else { return 0 }
    let input = String(decoding: bytes, as: UTF8.self).debugDescription
    invariant(reader.duplicateKey == nil, "accepted a duplicate key \(reader.duplicateKey!.debugDescription): \(input)")
    guard case .object(let top) = document, case .object(let options)? = member(top, "options") else {
        invariant(false, "accepted a file without an \"options\" object: \(input)")
        return 0
    }
    for key in OptionTable.all.compactMap(\.key) {
        if case .string(let text)? = member(options, key) {
            // White space around a value is trimmed (CRLF files work); inside, no control character.
            invariant(!hasControl(trimmed(text)), "accepted a control character in \(key) \(text.debugDescription): \(input)")
        }
    }
    let bind: String
    if case .string(let text)? = member(options, "bind-interface") { bind = text } else { bind = "" }
    invariant(settings.bindInterface == bind,
              "bind value \(settings.bindInterface.debugDescription), but the file says \(bind.debugDescription): \(input)")
    if case .string(let text)? = member(options, "whitelist"), !text.trimmedOfWhitespace.isEmpty {
        invariant(settings.allowList != nil, "whitelist \(text.debugDescription) in the file, but every client is allowed: \(input)")
    }
    return 0
}
