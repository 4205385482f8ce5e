import UVBind

/// haproxy's PROXY protocol header, which tells an upstream who the client really is
/// (https://www.haproxy.org/download/2.8/doc/proxy-protocol.txt).
///
/// directd sends it to the upstream before any client byte when `proxy-protocol` is
/// `v1` (one line of text, `PROXY TCP4 198.51.100.7 203.0.113.1 50123 21118\r\n`)
/// or `v2` (binary: signature, version and command, family, length, addresses).
///
/// Addresses. The source is the client, the destination the address the client
/// connected to: pass the accepted socket's own address (`getsockname`), which
/// the specification asks for, or else the listener's.
/// - An IPv4-mapped address (`::ffff:192.0.2.1`, an IPv4 client of a dual-stack
///   socket) is sent as the IPv4 address it is.
/// - Both addresses must then be of one family (v1 has a single family word, v2 a
///   single family byte). When they are not, which only a wildcard or a listener
///   address can cause, the header is still filled, never `UNKNOWN` or `LOCAL`
///   (those tell the upstream to use directd's own address, the very thing the
///   header is there to replace):
///   - an unspecified destination (`::`, `0.0.0.0`) becomes the unspecified
///     address of the client's family, so the client stays as it is;
///   - otherwise the IPv4 address is written IPv4-mapped in a TCP6 header.
/// - A zone (`%eth0`) is not carried: the protocol has no room for it.
///
/// Encoding allocates nothing: `write(into:)` fills a caller's buffer of at least
/// `maximumSize` bytes, such as the start of a relay chunk.
struct ProxyHeader: Sendable, Equatable {
    enum Version: String, CaseIterable, Sendable {
        case v1, v2
    }

    /// The two addresses as the header carries them, in one family.
    enum Endpoints: Sendable, Equatable {
        case ipv4(source: UInt32, destination: UInt32)
        case ipv6(source: UInt128, destination: UInt128)
    }

    let version: Version
    let endpoints: Endpoints
    let sourcePort: UInt16
    let destinationPort: UInt16

    /// The longest header: v1 with two full-length IPv6 addresses and ports of five
    /// digits (104 bytes with the CRLF). v2 needs at most 16 + 36 = 52.
    static let maximumSize = 104

    /// The 12 bytes that open every v2 header.
    static let v2Signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]

    /// A header for a connection from `client` to `destination`.
    init(version: Version, client: SocketAddress, destination: SocketAddress) {
        self.version = version
        sourcePort = client.port
        destinationPort = destination.port
        switch (Self.unmapped(client.ip), Self.unmapped(destination.ip)) {
        case (.v4(let source), .v4(let target)):
            endpoints = .ipv4(source: source.value, destination: target.value)
        case (.v6(let source), .v6(let target)):
            endpoints = .ipv6(source: source.wideValue, destination: target.wideValue)
        case (.v4(let source), .v6(let target)):
            endpoints = target.isAny
                ? .ipv4(source: source.value, destination: 0)
                : .ipv6(source: Self.mapped(source), destination: target.wideValue)
        case (.v6(let source), .v4(let target)):
            endpoints = target.isAny
                ? .ipv6(source: source.wideValue, destination: 0)
                : .ipv6(source: source.wideValue, destination: Self.mapped(target))
        }
    }

    /// Reads the `proxy-protocol` option: `off` (nil), `v1` or `v2`.
    static func version(parsing text: String) throws(ConfigError) -> Version? {
        let value = text.trimmedOfWhitespace
        if value == "off" { return nil }
        guard let version = Version(rawValue: value) else {
            throw ConfigError(description: "Invalid proxy-protocol \"\(text)\": expected off, v1 or v2")
        }
        return version
    }

    /// The header's bytes. One allocation; the relay should prefer `write(into:)`.
    var bytes: [UInt8] {
        [UInt8](unsafeUninitializedCapacity: Self.maximumSize) { buffer, count in
            count = write(into: UnsafeMutableRawBufferPointer(buffer))
        }
    }

    /// Writes the header at the start of `buffer`, which must hold at least
    /// `maximumSize` bytes, and returns how many bytes it wrote.
    func write(into buffer: UnsafeMutableRawBufferPointer) -> Int {
        precondition(buffer.count >= Self.maximumSize, "a PROXY header needs \(Self.maximumSize) bytes")
        var writer = Writer(buffer: buffer)
        switch version {
        case .v1: writeText(&writer)
        case .v2: writeBinary(&writer)
        }
        return writer.offset
    }

    private func writeText(_ writer: inout Writer) {
        writer.ascii("PROXY ")
        switch endpoints {
        case .ipv4(let source, let destination):
            writer.ascii("TCP4 ")
            writer.dottedQuad(source)
            writer.ascii(" ")
            writer.dottedQuad(destination)
        case .ipv6(let source, let destination):
            writer.ascii("TCP6 ")
            writer.hexGroups(source)
            writer.ascii(" ")
            writer.hexGroups(destination)
        }
        writer.ascii(" ")
        writer.decimal(sourcePort)
        writer.ascii(" ")
        writer.decimal(destinationPort)
        writer.ascii("\r\n")
    }

    private func writeBinary(_ writer: inout Writer) {
        for byte in Self.v2Signature { writer.byte(byte) }
        writer.byte(0x21)  // version 2, command PROXY
        switch endpoints {
        case .ipv4(let source, let destination):
            writer.byte(0x11)  // AF_INET, STREAM
            writer.bigEndian(UInt16(12), byteCount: 2)
            writer.bigEndian(source, byteCount: 4)
            writer.bigEndian(destination, byteCount: 4)
        case .ipv6(let source, let destination):
            writer.byte(0x21)  // AF_INET6, STREAM
            writer.bigEndian(UInt16(36), byteCount: 2)
            writer.bigEndian(source, byteCount: 16)
            writer.bigEndian(destination, byteCount: 16)
        }
        writer.bigEndian(sourcePort, byteCount: 2)
        writer.bigEndian(destinationPort, byteCount: 2)
    }

    private static func unmapped(_ ip: IPAddress) -> IPAddress {
        if case .v6(let v6) = ip, let v4 = v6.ipv4Mapped { return .v4(v4) }
        return ip
    }

    /// `::ffff:a.b.c.d` as a number.
    private static func mapped(_ v4: IPv4Address) -> UInt128 {
        UInt128(0xFFFF) << 32 | UInt128(v4.value)
    }
}

/// Appends bytes to a buffer that `ProxyHeader.write(into:)` has checked is large enough.
private struct Writer {
    let buffer: UnsafeMutableRawBufferPointer
    var offset = 0

    mutating func byte(_ value: UInt8) {
        buffer[offset] = value
        offset += 1
    }

    mutating func ascii(_ text: StaticString) {
        text.withUTF8Buffer { for byte in $0 { self.byte(byte) } }
    }

    mutating func bigEndian<T: FixedWidthInteger>(_ value: T, byteCount: Int) {
        for index in stride(from: byteCount - 1, through: 0, by: -1) {
            byte(UInt8(truncatingIfNeeded: value >> (8 * index)))
        }
    }

    /// Decimal without leading zeros, as the specification requires for ports and octets.
    mutating func decimal(_ value: some FixedWidthInteger) {
        var divisor = 1
        while Int(value) / divisor >= 10 { divisor *= 10 }
        while divisor > 0 {
            byte(UInt8(ascii: "0") + UInt8(Int(value) / divisor % 10))
            divisor /= 10
        }
    }

    mutating func dottedQuad(_ value: UInt32) {
        for index in 0..<4 {
            if index > 0 { byte(UInt8(ascii: ".")) }
            decimal(UInt8(truncatingIfNeeded: value >> (24 - 8 * UInt32(index))))
        }
    }

    /// RFC 5952 text: lower-case hex groups without leading zeros, the longest run of
    /// two or more zero groups (the first on a tie) as `::`. Never the dotted form of
    /// an IPv4-mapped address: the PROXY specification allows hex groups only.
    mutating func hexGroups(_ value: UInt128) {
        func group(_ index: Int) -> UInt16 { UInt16(truncatingIfNeeded: value >> (112 - 16 * index)) }
        var bestStart = -1, bestLength = 1, runStart = -1
        for index in 0...8 {
            if index < 8, group(index) == 0 {
                if runStart < 0 { runStart = index }
            } else if runStart >= 0 {
                if index - runStart > bestLength { bestStart = runStart; bestLength = index - runStart }
                runStart = -1
            }
        }
        var index = 0
        while index < 8 {
            if index == bestStart {
                ascii("::")
                index += bestLength
                continue
            }
            if index > 0, index != bestStart + bestLength || bestStart < 0 { byte(UInt8(ascii: ":")) }
            hex(group(index))
            index += 1
        }
    }

    private mutating func hex(_ value: UInt16) {
        let digits: StaticString = "0123456789abcdef"
        var shift = 12
        while shift > 0, value >> UInt16(shift) == 0 { shift -= 4 }
        while shift >= 0 {
            byte(digits.utf8Start[Int(value >> UInt16(shift) & 0xF)])
            shift -= 4
        }
    }
}
