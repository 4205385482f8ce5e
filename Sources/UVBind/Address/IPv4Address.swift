/// An IPv4 address, parsed only from strict dotted-quad text.
///
/// Strict means what an operator wrote is what gets bound: exactly four decimal
/// numbers from 0 to 255. Shorthand (`127.1`), leading zeros (`010.0.0.1`, octal
/// to `inet_aton`) and hex are refused rather than reinterpreted.
public struct IPv4Address: Hashable, Sendable, CustomStringConvertible {
    /// The address in host byte order: `192.0.2.1` is `0xC000_0201`.
    public let value: UInt32

    public init(_ value: UInt32) { self.value = value }

    public init(_ a: UInt8, _ b: UInt8, _ c: UInt8, _ d: UInt8) {
        value = UInt32(a) << 24 | UInt32(b) << 16 | UInt32(c) << 8 | UInt32(d)
    }

    /// `0.0.0.0`: every IPv4 address of the host.
    public static let any = IPv4Address(0)
    public static let loopback = IPv4Address(127, 0, 0, 1)

    /// Parses strict dotted-quad text; nil if it is anything else.
    public init?(_ text: some StringProtocol) {
        guard case .success(let address) = Self.parse(text) else { return nil }
        self = address
    }

    /// Parses strict dotted-quad text, or says precisely what is wrong with it.
    static func parse(_ text: some StringProtocol) -> Result<IPv4Address, AddressSyntaxError> {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else {
            return .failure(AddressSyntaxError(
                "\(parts.count) part\(parts.count == 1 ? "" : "s") where an IPv4 address has four numbers separated by dots (shorthand such as 127.1 is not accepted)"))
        }
        var value: UInt32 = 0
        for part in parts {
            guard !part.isEmpty else {
                return .failure(AddressSyntaxError("an empty number between dots"))
            }
            guard part.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }) else {
                return .failure(AddressSyntaxError("\"\(part)\" is not a decimal number"))
            }
            guard part.count == 1 || part.first != "0" else {
                return .failure(AddressSyntaxError(
                    "\"\(part)\" has a leading zero (other parsers read it as octal)"))
            }
            guard part.count <= 3, let octet = UInt32(part), octet <= 255 else {
                return .failure(AddressSyntaxError("\"\(part)\" is out of range (each number is 0 to 255)"))
            }
            value = value << 8 | octet
        }
        return .success(IPv4Address(value))
    }

    public var isAny: Bool { value == 0 }

    /// True if `other` lies in this address's network of the given prefix length.
    func sameNetwork(as other: IPv4Address, prefixLength: Int) -> Bool {
        guard prefixLength > 0 else { return true }
        let mask = prefixLength >= 32 ? UInt32.max : ~(UInt32.max >> UInt32(prefixLength))
        return value & mask == other.value & mask
    }

    public var description: String {
        "\(value >> 24).\(value >> 16 & 0xFF).\(value >> 8 & 0xFF).\(value & 0xFF)"
    }
}

/// Why a piece of text is not an address: the detail that goes after the offending part.
package struct AddressSyntaxError: Error, Sendable {
    package let detail: String
    init(_ detail: String) { self.detail = detail }
}
