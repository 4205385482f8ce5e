/// An IPv6 address, parsed from any RFC 4291 text form and printed in RFC 5952's.
public struct IPv6Address: Hashable, Sendable, CustomStringConvertible {
    /// The first and last 64 bits, each in host byte order.
    public let high: UInt64
    public let low: UInt64

    public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    /// Builds an address from its eight 16-bit groups, first group first.
    public init(groups: [UInt16]) {
        precondition(groups.count == 8, "an IPv6 address has eight groups")
        var high: UInt64 = 0, low: UInt64 = 0
        for group in groups[0..<4] { high = high << 16 | UInt64(group) }
        for group in groups[4..<8] { low = low << 16 | UInt64(group) }
        self.init(high: high, low: low)
    }

    /// `::`: every IPv6 address of the host.
    public static let any = IPv6Address(high: 0, low: 0)
    public static let loopback = IPv6Address(high: 0, low: 1)

    public var groups: [UInt16] {
        (0..<8).map { index in
            let word = index < 4 ? high : low
            return UInt16(truncatingIfNeeded: word >> UInt64(48 - 16 * (index % 4)))
        }
    }

    /// The 16 bytes in network order, as `in6_addr` holds them.
    public var bytes: [UInt8] {
        (0..<16).map { index in
            let word = index < 8 ? high : low
            return UInt8(truncatingIfNeeded: word >> UInt64(56 - 8 * (index % 8)))
        }
    }

    public init(bytes: some Collection<UInt8>) {
        precondition(bytes.count == 16, "an IPv6 address has 16 bytes")
        var high: UInt64 = 0, low: UInt64 = 0
        for (index, byte) in bytes.enumerated() {
            if index < 8 { high = high << 8 | UInt64(byte) } else { low = low << 8 | UInt64(byte) }
        }
        self.init(high: high, low: low)
    }

    public var isAny: Bool { high == 0 && low == 0 }
    /// fe80::/10, valid on every link and so meaningful only with a zone.
    public var isLinkLocal: Bool { high >> 54 == 0x3FA }

    /// The IPv4 address of an IPv4-mapped address (`::ffff:192.0.2.1`), else nil.
    public var ipv4Mapped: IPv4Address? {
        high == 0 && low >> 32 == 0xFFFF ? IPv4Address(UInt32(truncatingIfNeeded: low)) : nil
    }

    public init?(_ text: some StringProtocol) {
        guard case .success(let address) = Self.parse(text) else { return nil }
        self = address
    }

    /// Parses an RFC 4291 text form (no brackets, no zone), or says what is wrong.
    static func parse(_ text: some StringProtocol) -> Result<IPv6Address, AddressSyntaxError> {
        let text = String(text)
        let halves = text.splitAtDoubleColons()
        guard halves.count <= 2 else {
            return .failure(AddressSyntaxError("\"::\" appears more than once"))
        }
        var head: [UInt16] = [], tail: [UInt16] = []
        let compressed = halves.count == 2
        for (index, half) in halves.enumerated() where !half.isEmpty {
            let isLast = index == halves.count - 1
            switch parseGroups(half, mayEndWithIPv4: isLast) {
            case .failure(let error): return .failure(error)
            case .success(let groups): if index == 0 { head = groups } else { tail = groups }
            }
        }
        let count = head.count + tail.count
        if compressed {
            guard count <= 7 else {
                return .failure(AddressSyntaxError("more than eight groups of hex digits"))
            }
            return .success(IPv6Address(groups: head + Array(repeating: 0, count: 8 - count) + tail))
        }
        guard count == 8 else {
            return .failure(AddressSyntaxError(
                "\(count) group\(count == 1 ? "" : "s") of hex digits where an IPv6 address has eight (or \"::\" for a run of zeros)"))
        }
        return .success(IPv6Address(groups: head))
    }

    /// Parses colon-separated hex groups; the last may be a dotted IPv4 address (two groups).
    private static func parseGroups(_ text: Substring, mayEndWithIPv4: Bool) -> Result<[UInt16], AddressSyntaxError> {
        let pieces = text.split(separator: ":", omittingEmptySubsequences: false)
        var groups: [UInt16] = []
        for (index, piece) in pieces.enumerated() {
            if piece.contains(".") {
                guard mayEndWithIPv4, index == pieces.count - 1 else {
                    return .failure(AddressSyntaxError(
                        "an embedded IPv4 address (\"\(piece)\") may only end the address"))
                }
                switch IPv4Address.parse(piece) {
                case .failure(let error):
                    return .failure(AddressSyntaxError("embedded IPv4 \"\(piece)\": \(error.detail)"))
                case .success(let v4):
                    groups.append(UInt16(v4.value >> 16))
                    groups.append(UInt16(v4.value & 0xFFFF))
                }
                continue
            }
            guard !piece.isEmpty else {
                return .failure(AddressSyntaxError("a single \":\" at the start or end, or an empty group"))
            }
            guard piece.count <= 4, let group = UInt16(piece, radix: 16),
                  piece.utf8.allSatisfy({ $0.isHexDigit }) else {
                return .failure(AddressSyntaxError("\"\(piece)\" is not a group of one to four hex digits"))
            }
            groups.append(group)
        }
        return .success(groups)
    }

    /// RFC 5952: lower-case hex, no leading zeros, the longest run of two or more
    /// zero groups (the first on a tie) as `::`, IPv4-mapped addresses in dotted form.
    public var description: String {
        if let v4 = ipv4Mapped { return "::ffff:\(v4)" }
        let groups = self.groups
        var bestStart = -1, bestLength = 1
        var runStart = -1
        for index in 0...8 {
            if index < 8, groups[index] == 0 {
                if runStart < 0 { runStart = index }
            } else if runStart >= 0 {
                if index - runStart > bestLength { bestStart = runStart; bestLength = index - runStart }
                runStart = -1
            }
        }
        func hex(_ range: Range<Int>) -> String {
            groups[range].map { String($0, radix: 16) }.joined(separator: ":")
        }
        guard bestStart >= 0 else { return hex(0..<8) }
        return hex(0..<bestStart) + "::" + hex((bestStart + bestLength)..<8)
    }
}

extension UInt8 {
    fileprivate var isHexDigit: Bool {
        (self >= UInt8(ascii: "0") && self <= UInt8(ascii: "9"))
            || (self >= UInt8(ascii: "a") && self <= UInt8(ascii: "f"))
            || (self >= UInt8(ascii: "A") && self <= UInt8(ascii: "F"))
    }
}

extension String {
    /// Splits at each "::" (no Foundation here). ":::" splits as "::" then ":".
    fileprivate func splitAtDoubleColons() -> [Substring] {
        var parts: [Substring] = []
        var start = startIndex, index = startIndex
        while index < endIndex {
            let next = self.index(after: index)
            if self[index] == ":", next < endIndex, self[next] == ":" {
                parts.append(self[start..<index])
                index = self.index(after: next)
                start = index
            } else {
                index = next
            }
        }
        parts.append(self[start..<endIndex])
        return parts
    }
}
