/// A `bind-interface` value, read into its elements but not yet matched to the machine.
///
/// Reading is pure: it needs no interface table, so every syntax error is found
/// before anything about the host is looked at.
public struct BindValue: Sendable {
    /// One element of the value, as written.
    public enum Element: Hashable, Sendable {
        /// The empty value: every interface, IPv4 and IPv6.
        case allInterfaces
        case ipv4(IPv4Address)
        /// An IPv6 address with its zone as written (`eth0` or a numeric index), if any.
        case ipv6(IPv6Address, zone: String?)
        /// An interface name: every address it holds.
        case interface(String)
    }

    /// The value as configured.
    public let text: String
    /// Each element with the text it was read from.
    public let elements: [(text: String, element: Element)]

    public init(parsing text: String) throws(BindError) {
        self.text = text
        let trimmed = text.trimmedOfWhitespace
        guard !trimmed.isEmpty else {
            elements = [("", .allInterfaces)]
            return
        }
        var elements: [(text: String, element: Element)] = []
        for piece in trimmed.split(separator: ",", omittingEmptySubsequences: false) {
            let token = piece.trimmedOfWhitespace
            do throws(AddressSyntaxError) {
                elements.append((token, try Self.element(token)))
            } catch {
                throw BindError(kind: .invalidFormat, value: text, element: token, step: .parse,
                                detail: error.detail, remedy: Self.expected)
            }
        }
        self.elements = elements
    }

    /// What a value may be, for every format error.
    static let expected = "Expected an IPv4 address (192.0.2.10), an IPv6 address (2001:db8::1, fe80::1%eth0), an interface name (eth0), or a comma-separated list of them; leave it empty to listen on all interfaces"

    private static func element(_ token: String) throws(AddressSyntaxError) -> Element {
        if token.isEmpty {
            throw AddressSyntaxError("an empty element (a stray comma)")
        }
        if token.hasPrefix("[") {
            guard let close = token.firstIndex(of: "]") else {
                throw AddressSyntaxError("\"[\" without a closing \"]\"")
            }
            let rest = token[token.index(after: close)...]
            if !rest.isEmpty {
                if rest.hasPrefix(":") {
                    throw AddressSyntaxError(
                        "\"\(token)\" includes a port; set the port with direct-access-port, not in the address")
                }
                throw AddressSyntaxError("unexpected \"\(rest)\" after \"]\"")
            }
            return try ipv6(token[token.index(after: token.startIndex)..<close])
        }
        if token.contains(":") {
            // "192.0.2.1:80", "localhost:80": one colon, digits after it.
            if let colon = token.firstIndex(of: ":"), colon == token.lastIndex(of: ":"),
               token[token.index(after: colon)...].allDecimal {
                throw AddressSyntaxError(
                    "\"\(token)\" includes a port; set the port with direct-access-port, not in the address")
            }
            return try ipv6(token[...])
        }
        if token.contains("%") {
            throw AddressSyntaxError("a zone (\"%...\") may only follow an IPv6 address")
        }
        if let first = token.utf8.first, first.isDecimal,
           token.contains(".") || token.allDecimal {
            switch IPv4Address.parse(token) {
            case .success(let address): return .ipv4(address)
            case .failure(let error): throw error
            }
        }
        try checkInterfaceName(token[...])
        return .interface(token)
    }

    private static func ipv6(_ text: Substring) throws(AddressSyntaxError) -> Element {
        var address = text, zone: String?
        if let percent = text.firstIndex(of: "%") {
            address = text[..<percent]
            let name = text[text.index(after: percent)...]
            guard !name.isEmpty else { throw AddressSyntaxError("an empty zone after \"%\"") }
            if !name.allDecimal { try checkInterfaceName(name) }
            zone = String(name)
        }
        let parsed: IPv6Address
        switch IPv6Address.parse(address) {
        case .success(let value): parsed = value
        case .failure(let error): throw error
        }
        // These depend on the text alone, so they are checked here, on every
        // element, before any interface table is looked at: the error for a list
        // must not depend on the order of its elements.
        if let mapped = parsed.ipv4Mapped {
            // ::ffff:0.0.0.0 is not an IPv4 host: mapped addresses stand for IPv4
            // nodes (RFC 4291 2.5.5.2), and binding it would mean the IPv4 wildcard,
            // far wider than an address-shaped value suggests. Refused, not guessed.
            guard !mapped.isAny else {
                throw AddressSyntaxError("\(parsed) is the IPv4-mapped form of 0.0.0.0; write 0.0.0.0 if you mean every IPv4 address (a mapped address names one IPv4 host, and this one would mean all of them)")
            }
            guard zone == nil else {
                throw AddressSyntaxError("a zone does not apply to an IPv4-mapped address")
            }
        } else if let zone, !parsed.isLinkLocal {
            throw AddressSyntaxError("a zone (%\(zone)) applies only to link-local addresses (fe80::/10)")
        }
        return .ipv6(parsed, zone: zone)
    }

    /// An IP address literal, read exactly as an element of a bind value reads
    /// it: a strict dotted quad, or any RFC 4291 form with a zone only on a
    /// link-local address and never on a mapped one. For the rest of the package
    /// (directd's forward target), so that an address means one thing everywhere.
    /// nil when the text is not shaped like an address (a host name): no colon,
    /// and not made of digits and dots only.
    package static func addressLiteral(_ text: Substring) throws(AddressSyntaxError) -> Element? {
        if text.contains(":") { return try ipv6(text) }
        guard !text.isEmpty, text.utf8.allSatisfy({ $0.isDecimal || $0 == UInt8(ascii: ".") }) else {
            return nil
        }
        switch IPv4Address.parse(text) {
        case .success(let address): return .ipv4(address)
        case .failure(let error): throw error
        }
    }

    /// Linux interface names: 1 to 15 bytes, no white space, "/", ":", "%", ",", brackets.
    private static func checkInterfaceName(_ name: Substring) throws(AddressSyntaxError) {
        guard name.utf8.count <= 15 else {
            throw AddressSyntaxError("\"\(name)\" is too long for an interface name (15 characters at most)")
        }
        let allowed = name.utf8.allSatisfy { byte in
            byte > 0x20 && byte < 0x7F && !"/:%,[]\"'\\".utf8.contains(byte)
        }
        guard allowed, name != ".", name != ".." else {
            throw AddressSyntaxError("\"\(name)\" is neither an IP address nor an interface name")
        }
    }
}

extension UInt8 {
    var isDecimal: Bool { self >= UInt8(ascii: "0") && self <= UInt8(ascii: "9") }
}

extension StringProtocol {
    var allDecimal: Bool { !isEmpty && utf8.allSatisfy(\.isDecimal) }

    /// Drops leading and trailing spaces, tabs and line breaks, as the bind value
    /// and the other options are read (no Foundation here). Works on Unicode
    /// scalars, so that "\r\n" (one Character) is trimmed too.
    package var trimmedOfWhitespace: String {
        let isSpace: (Unicode.Scalar) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\n" || $0 == "\r" }
        let scalars = unicodeScalars
        guard let first = scalars.firstIndex(where: { !isSpace($0) }),
              let last = scalars.lastIndex(where: { !isSpace($0) }) else { return "" }
        var result = String.UnicodeScalarView()
        result.append(contentsOf: scalars[first...last])
        return String(result)
    }
}
