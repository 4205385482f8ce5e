/// TOML's strings, numbers and dates, as `TOMLReader` reads them (TOML 1.0).
extension TOMLReader {
    // MARK: strings

    /// `"..."` or `"""..."""`, at `offset`; escapes decoded.
    mutating func basicString(multiline: Bool) throws(TOMLSyntaxError) -> String {
        offset += multiline ? 3 : 1
        if multiline { _ = try newline() }  // a line break right after """ is not content
        var result: [UInt8] = []
        var runStart = offset
        while true {
            guard let byte = peek() else { throw failure("unexpected end of the file inside a string") }
            switch byte {
            case UInt8(ascii: "\""):
                try appendRun(from: runStart, into: &result)
                guard multiline else {
                    offset += 1
                    return String(decoding: result, as: UTF8.self)
                }
                if try closesMultiline(UInt8(ascii: "\""), into: &result) { return String(decoding: result, as: UTF8.self) }
                runStart = offset
            case UInt8(ascii: "\\"):
                try appendRun(from: runStart, into: &result)
                if multiline, try lineEndingBackslash() {
                    runStart = offset
                    continue
                }
                try escape(into: &result)
                runStart = offset
            case 0x0A where multiline, 0x0D where multiline:
                try appendRun(from: runStart, into: &result)
                _ = try newline()
                result.append(0x0A)
                runStart = offset
            case 0x0A, 0x0D:
                throw failure("a line break inside a string; only \"\"\"...\"\"\" strings span lines")
            case 0x09:
                offset += 1
            case 0..<0x20, 0x7F:
                throw controlCharacter(byte, "inside a string")
            default:
                offset += 1
            }
        }
    }

    /// The bytes of a string from `start` up to `offset`, refused unless they are UTF-8.
    private func appendRun(from start: Int, into result: inout [UInt8]) throws(TOMLSyntaxError) {
        guard offset > start else { return }
        let run = bytes[start..<offset]
        guard String(validating: run, as: UTF8.self) != nil else { throw failure("invalid UTF-8 in a string", at: start) }
        result.append(contentsOf: run)
    }

    /// `'...'` or `'''...'''`, at `offset`: no escapes.
    mutating func literalString(multiline: Bool) throws(TOMLSyntaxError) -> String {
        offset += multiline ? 3 : 1
        if multiline { _ = try newline() }
        var result: [UInt8] = []
        var runStart = offset
        while true {
            guard let byte = peek() else { throw failure("unexpected end of the file inside a string") }
            switch byte {
            case UInt8(ascii: "'"):
                try appendRun(from: runStart, into: &result)
                guard multiline else {
                    offset += 1
                    return String(decoding: result, as: UTF8.self)
                }
                if try closesMultiline(UInt8(ascii: "'"), into: &result) { return String(decoding: result, as: UTF8.self) }
                runStart = offset
            case 0x0A where multiline, 0x0D where multiline:
                try appendRun(from: runStart, into: &result)
                _ = try newline()
                result.append(0x0A)  // CRLF is read as LF, as in """"" strings
                runStart = offset
            case 0x0A, 0x0D:
                throw failure("a line break inside a string; only '''...''' strings span lines")
            case 0x09:
                offset += 1
            case 0..<0x20, 0x7F:
                throw controlCharacter(byte, "inside a string")
            default:
                offset += 1
            }
        }
    }

    /// At a quote inside a multi-line string: three end it, and up to two more
    /// before them are content (`"""a""""` is `a"`). Fewer than three are content.
    private mutating func closesMultiline(_ quote: UInt8, into result: inout [UInt8]) throws(TOMLSyntaxError) -> Bool {
        var count = 0
        while peek() == quote { count += 1; offset += 1 }
        guard count >= 3 else {
            result.append(contentsOf: repeatElement(quote, count: count))
            return false
        }
        guard count <= 5 else { throw failure("too many quotes at the end of a multi-line string") }
        result.append(contentsOf: repeatElement(quote, count: count - 3))
        return true
    }

    /// In `"""`: a backslash, then only spaces to the line's end, drops the line
    /// break and the white space after it. False (nothing read) for an escape.
    private mutating func lineEndingBackslash() throws(TOMLSyntaxError) -> Bool {
        var index = offset + 1
        while index < bytes.count, bytes[index] == 0x20 || bytes[index] == 0x09 { index += 1 }
        guard index < bytes.count, bytes[index] == 0x0A || bytes[index] == 0x0D else { return false }
        offset = index
        while true {
            skipSpaces()
            guard try newline() else { return true }
        }
    }

    /// One escape at `offset` (the backslash), appended as UTF-8.
    private mutating func escape(into result: inout [UInt8]) throws(TOMLSyntaxError) {
        let start = offset
        offset += 1
        guard let kind = peek() else { throw failure("unexpected end of the file inside a string") }
        offset += 1
        let simple: UInt8? = switch kind {
        case UInt8(ascii: "b"): 0x08
        case UInt8(ascii: "t"): 0x09
        case UInt8(ascii: "n"): 0x0A
        case UInt8(ascii: "f"): 0x0C
        case UInt8(ascii: "r"): 0x0D
        case UInt8(ascii: "\""): 0x22
        case UInt8(ascii: "\\"): 0x5C
        default: nil
        }
        if let simple {
            result.append(simple)
            return
        }
        let digits: Int
        switch kind {
        case UInt8(ascii: "u"): digits = 4
        case UInt8(ascii: "U"): digits = 8
        default: throw failure("unknown escape \(ConfigText.quoted("\\" + String(decoding: [kind], as: UTF8.self)))", at: start)
        }
        var value: UInt32 = 0
        for _ in 0..<digits {
            guard let byte = peek(), let digit = hexDigit(byte) else {
                throw failure("\\\(kind == UInt8(ascii: "u") ? "u" : "U") needs \(digits) hexadecimal digits", at: start)
            }
            value = value << 4 | UInt32(digit)
            offset += 1
        }
        guard let scalar = Unicode.Scalar(value) else {
            throw failure("the escape names no Unicode scalar value (a surrogate, or past U+10FFFF)", at: start)
        }
        guard !ConfigText.isControl(scalar) else {
            throw failure("an escaped control character (\(ConfigText.escapedScalar(scalar))) in a string; no option value may contain one", at: start, kind: .refused)
        }
        UTF8.encode(scalar) { result.append($0) }
    }

    private func hexDigit(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    // MARK: numbers and dates

    /// An integer, a float or a date/time: the token's text, checked, kept as written.
    mutating func numberOrDate() throws(TOMLSyntaxError) -> TOMLValue {
        let start = offset
        while let byte = peek(), isTokenByte(byte) { offset += 1 }
        // "1979-05-27 07:32:00": a space may separate a date from its time.
        if offset - start == 10, bytes[start + 4] == UInt8(ascii: "-"), peek() == 0x20,
           bytes.count - offset > 3, isDigit(bytes[offset + 1]), isDigit(bytes[offset + 2]), bytes[offset + 3] == UInt8(ascii: ":") {
            offset += 1
            while let byte = peek(), isTokenByte(byte) { offset += 1 }
        }
        let token = bytes[start..<offset]
        guard !token.isEmpty else { throw failure("unexpected \(describeNext()); expected a value") }
        let text = String(decoding: token, as: UTF8.self)
        if token.contains(UInt8(ascii: ":")) || (token.count >= 10 && token[start + 4] == UInt8(ascii: "-") && isDigit(token[start])) {
            guard isDateTime(token) else { throw failure("\(ConfigText.quoted(text)) is not a TOML date or time", at: start) }
            return .dateTime(literal: text)
        }
        switch integer(token) {
        case .valid: return .integer(literal: text)
        case .outOfRange: throw failure("\(ConfigText.quoted(text)) does not fit a 64-bit integer, as TOML requires", at: start)
        case .invalid: break
        }
        if isFloat(token) { return .float(literal: text) }
        throw failure("\(ConfigText.quoted(text)) is not a TOML value (a string needs quotes)", at: start)
    }

    private func isTokenByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
             UInt8(ascii: "_"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: ":"): true
        default: false
        }
    }

    private func isDigit(_ byte: UInt8) -> Bool { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) }

    /// Digits with single underscores between them: `1_000`, not `_1`, `1_`, `1__0`.
    private func isDigitRun(_ run: ArraySlice<UInt8>, radix: UInt8 = 10) -> Bool {
        guard let first = run.first, let last = run.last, first != UInt8(ascii: "_"), last != UInt8(ascii: "_") else { return false }
        var previous: UInt8 = 0
        for byte in run {
            if byte == UInt8(ascii: "_") {
                if previous == UInt8(ascii: "_") { return false }
            } else if !(hexDigit(byte).map { $0 < radix } ?? false) {
                return false
            }
            previous = byte
        }
        return true
    }

    private enum IntegerForm { case valid, outOfRange, invalid }

    /// Decimal (with sign), 0x, 0o or 0b, within a 64-bit signed integer.
    private func integer(_ token: ArraySlice<UInt8>) -> IntegerForm {
        var digits = token
        var radix: UInt8 = 10
        var negative = false
        if token.count > 2, token.first == UInt8(ascii: "0") {
            switch token[token.startIndex + 1] {
            case UInt8(ascii: "x"): radix = 16
            case UInt8(ascii: "o"): radix = 8
            case UInt8(ascii: "b"): radix = 2
            default: break
            }
            if radix != 10 { digits = token.dropFirst(2) }
        }
        if radix == 10 {
            if let sign = digits.first, sign == UInt8(ascii: "+") || sign == UInt8(ascii: "-") {
                negative = sign == UInt8(ascii: "-")
                digits = digits.dropFirst()
            }
            // No leading zeros in decimal: "0" alone, or a digit 1-9 first.
            if digits.count > 1, digits.first == UInt8(ascii: "0") { return .invalid }
        }
        guard isDigitRun(digits, radix: radix) else { return .invalid }
        let limit: UInt64 = negative ? UInt64(Int64.max) + 1 : UInt64(Int64.max)
        var value: UInt64 = 0
        for byte in digits where byte != UInt8(ascii: "_") {
            let (shifted, overflow) = value.multipliedReportingOverflow(by: UInt64(radix))
            guard !overflow else { return .outOfRange }
            let (sum, carry) = shifted.addingReportingOverflow(UInt64(hexDigit(byte)!))
            guard !carry, sum <= limit else { return .outOfRange }
            value = sum
        }
        return .valid
    }

    /// `[+-]` integer part, then a fraction, an exponent or both; or inf, nan.
    private func isFloat(_ token: ArraySlice<UInt8>) -> Bool {
        var rest = token
        if let sign = rest.first, sign == UInt8(ascii: "+") || sign == UInt8(ascii: "-") { rest = rest.dropFirst() }
        if rest.elementsEqual("inf".utf8) || rest.elementsEqual("nan".utf8) { return true }
        let exponentAt = rest.firstIndex(where: { $0 == UInt8(ascii: "e") || $0 == UInt8(ascii: "E") })
        let mantissa = rest[..<(exponentAt ?? rest.endIndex)]
        let dot = mantissa.firstIndex(of: UInt8(ascii: "."))
        let whole = mantissa[..<(dot ?? mantissa.endIndex)]
        guard isDigitRun(whole), whole.count == 1 || whole.first != UInt8(ascii: "0") else { return false }
        if let dot {
            guard isDigitRun(mantissa[(dot + 1)...]) else { return false }
        }
        if let exponentAt {
            var exponent = rest[(exponentAt + 1)...]
            if let sign = exponent.first, sign == UInt8(ascii: "+") || sign == UInt8(ascii: "-") { exponent = exponent.dropFirst() }
            guard isDigitRun(exponent) else { return false }
        }
        return dot != nil || exponentAt != nil
    }

    /// Offset date-time, local date-time, local date or local time, with real ranges.
    private func isDateTime(_ token: ArraySlice<UInt8>) -> Bool {
        let text = Array(token)
        if text.count >= 10, text[4] == UInt8(ascii: "-") {
            guard isDate(text[0..<10]) else { return false }
            guard text.count > 10 else { return true }
            guard [UInt8(ascii: "T"), UInt8(ascii: "t"), 0x20].contains(text[10]) else { return false }
            return isTime(text[11...], withOffset: true)
        }
        return isTime(text[...], withOffset: false)
    }

    private func number(_ text: ArraySlice<UInt8>) -> Int? {
        guard !text.isEmpty, text.allSatisfy(isDigit) else { return nil }
        return text.reduce(0) { $0 * 10 + Int($1 - UInt8(ascii: "0")) }
    }

    private func isDate(_ text: ArraySlice<UInt8>) -> Bool {
        let base = text.startIndex
        guard text[base + 4] == UInt8(ascii: "-"), text[base + 7] == UInt8(ascii: "-"),
              let year = number(text[base..<base + 4]), let month = number(text[base + 5..<base + 7]),
              let day = number(text[base + 8..<base + 10]), (1...12).contains(month) else { return false }
        let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
        let days = [31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month - 1]
        return (1...days).contains(day)
    }

    /// `HH:MM:SS[.fraction]`, then with an offset allowed `Z` or `+HH:MM`.
    private func isTime(_ text: ArraySlice<UInt8>, withOffset: Bool) -> Bool {
        var rest = text
        guard rest.count >= 8, let base = Optional(rest.startIndex),
              rest[base + 2] == UInt8(ascii: ":"), rest[base + 5] == UInt8(ascii: ":"),
              let hour = number(rest[base..<base + 2]), let minute = number(rest[base + 3..<base + 5]),
              let second = number(rest[base + 6..<base + 8]), hour < 24, minute < 60, second <= 60 else { return false }
        rest = rest.dropFirst(8)
        if rest.first == UInt8(ascii: ".") {
            let digits = rest.dropFirst().prefix(while: isDigit)
            guard !digits.isEmpty else { return false }
            rest = rest.dropFirst(1 + digits.count)
        }
        guard withOffset, let first = rest.first else { return rest.isEmpty }
        if first == UInt8(ascii: "Z") || first == UInt8(ascii: "z") { return rest.count == 1 }
        guard rest.count == 6, first == UInt8(ascii: "+") || first == UInt8(ascii: "-"),
              rest[rest.startIndex + 3] == UInt8(ascii: ":"),
              let hours = number(rest[rest.startIndex + 1..<rest.startIndex + 3]),
              let minutes = number(rest[rest.startIndex + 4..<rest.startIndex + 6]) else { return false }
        return hours < 24 && minutes < 60
    }
}
