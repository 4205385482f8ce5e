// Shared by every fuzz target (compiled into each one; see the Makefile's fuzz rules).
//
// The references here are deliberately independent of UVBind's own parsers: addresses
// are read with glibc's inet_pton, so a fuzz target compares two implementations
// instead of asking the code under test to agree with itself.
#if canImport(Glibc)
import Glibc
#endif

/// Stops the run so that libFuzzer saves the input: an invariant does not hold.
func invariant(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String,
               file: StaticString = #fileID, line: UInt = #line) {
    if !condition() { fatalError("fuzz invariant violated: \(message())", file: file, line: line) }
}

/// The fuzz input as text. Invalid UTF-8 becomes U+FFFD, as it does when the
/// command line or the config file is read.
func fuzzText(_ data: UnsafePointer<UInt8>, _ size: Int) -> String {
    String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
}

/// The white space that UVBind and directd trim: space, tab, line feed, carriage return.
/// Narrower than Unicode's on purpose: anything else must be read as part of a value.
func isTrimmedSpace(_ scalar: Unicode.Scalar) -> Bool {
    scalar == " " || scalar == "\t" || scalar == "\n" || scalar == "\r"
}

func trimmed(_ text: some StringProtocol) -> String {
    let scalars = Array(text.unicodeScalars)
    guard let first = scalars.firstIndex(where: { !isTrimmedSpace($0) }),
          let last = scalars.lastIndex(where: { !isTrimmedSpace($0) }) else { return "" }
    var result = String.UnicodeScalarView()
    result.append(contentsOf: scalars[first...last])
    return String(result)
}

/// C0 controls, DEL and C1 controls: what must never reach a log line raw.
func containsControlCharacter(_ text: String) -> Bool {
    text.unicodeScalars.contains { $0.value < 0x20 || (0x7F...0x9F).contains($0.value) }
}

/// An address as glibc reads it: 4 bytes for IPv4, 16 for IPv6, network order.
struct ReferenceAddress: Hashable, CustomStringConvertible {
    var bytes: [UInt8]

    var isIPv4: Bool { bytes.count == 4 }
    var isAny: Bool { bytes.allSatisfy { $0 == 0 } }
    var isLinkLocal: Bool { !isIPv4 && bytes[0] == 0xFE && bytes[1] & 0xC0 == 0x80 }

    /// `::ffff:a.b.c.d` as the IPv4 address a.b.c.d.
    var ipv4Mapped: ReferenceAddress? {
        guard !isIPv4, bytes[0..<10].allSatisfy({ $0 == 0 }), bytes[10] == 0xFF, bytes[11] == 0xFF else { return nil }
        return ReferenceAddress(bytes: Array(bytes[12...]))
    }

    /// glibc's strict forms: dotted quad without leading zeros for IPv4, RFC 4291 for IPv6.
    /// Text with a NUL is refused: inet_pton would read only up to it.
    init?(ipv4 text: some StringProtocol) {
        guard let bytes = Self.pton(AF_INET, String(text), count: 4) else { return nil }
        self.bytes = bytes
    }

    init?(ipv6 text: some StringProtocol) {
        guard let bytes = Self.pton(AF_INET6, String(text), count: 16) else { return nil }
        self.bytes = bytes
    }

    init(bytes: [UInt8]) { self.bytes = bytes }

    private static func pton(_ family: Int32, _ text: String, count: Int) -> [UInt8]? {
        guard !text.utf8.contains(0) else { return nil }
        var buffer = [UInt8](repeating: 0, count: 16)
        let status = buffer.withUnsafeMutableBytes { inet_pton(family, text, $0.baseAddress) }
        return status == 1 ? Array(buffer.prefix(count)) : nil
    }

    /// The same bits as UVBind's value types, to compare with what they produced.
    init(_ v4: UInt32) {
        bytes = [UInt8(v4 >> 24), UInt8(v4 >> 16 & 0xFF), UInt8(v4 >> 8 & 0xFF), UInt8(v4 & 0xFF)]
    }

    init(high: UInt64, low: UInt64) {
        bytes = (0..<8).map { UInt8(high >> (56 - 8 * UInt64($0)) & 0xFF) }
              + (0..<8).map { UInt8(low >> (56 - 8 * UInt64($0)) & 0xFF) }
    }

    /// True if the first `length` bits of both are equal (same family assumed).
    func sharesPrefix(with other: ReferenceAddress, length: Int) -> Bool {
        guard bytes.count == other.bytes.count else { return false }
        return (0..<length).allSatisfy { isSet($0) == other.isSet($0) }
    }

    /// Bit `index`, 0 being the most significant.
    func isSet(_ index: Int) -> Bool {
        bytes[index / 8] & (UInt8(0x80) >> UInt8(index % 8)) != 0
    }

    /// This address with one bit flipped (bit 0 is the most significant).
    func flipping(bit: Int) -> ReferenceAddress {
        var copy = self
        copy.bytes[bit / 8] ^= UInt8(0x80) >> UInt8(bit % 8)
        return copy
    }

    var description: String {
        var buffer = [CChar](repeating: 0, count: 64)
        _ = bytes.withUnsafeBytes { inet_ntop(isIPv4 ? AF_INET : AF_INET6, $0.baseAddress, &buffer, 64) }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
