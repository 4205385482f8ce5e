import Testing
import UVBind
@testable import directd

private func address(_ text: String, _ port: UInt16) -> SocketAddress {
    let ip = IPv4Address(text).map(IPAddress.v4) ?? .v6(IPv6Address(text)!)
    return SocketAddress(ip: ip, port: port)
}

private func text(_ version: ProxyHeader.Version, _ client: SocketAddress, _ destination: SocketAddress) -> String {
    String(decoding: ProxyHeader(version: version, client: client, destination: destination).bytes, as: UTF8.self)
}

private func bytes(_ hex: String) -> [UInt8] {
    let digits = hex.filter(\.isHexDigit)
    return stride(from: 0, to: digits.count, by: 2).map {
        let start = digits.index(digits.startIndex, offsetBy: $0)
        return UInt8(digits[start..<digits.index(start, offsetBy: 2)], radix: 16)!
    }
}

struct ProxyHeaderTests {
    // The specification's own example, section 2.1.
    @Test func v1IPv4() {
        #expect(text(.v1, address("192.168.0.1", 56324), address("192.168.0.11", 443))
                == "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n")
        #expect(text(.v1, address("198.51.100.7", 0), address("0.0.0.0", 9))
                == "PROXY TCP4 198.51.100.7 0.0.0.0 0 9\r\n")
    }

    // The specification's longest lines: 56 bytes for TCP4, 104 for TCP6.
    @Test func v1LongestLines() {
        let v4 = text(.v1, address("255.255.255.255", 65535), address("255.255.255.255", 65535))
        #expect(v4 == "PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n")
        #expect(v4.utf8.count == 56)
        let full = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
        let v6 = text(.v1, address(full, 65535), address(full, 65535))
        #expect(v6 == "PROXY TCP6 \(full) \(full) 65535 65535\r\n")
        #expect(v6.utf8.count == ProxyHeader.maximumSize)
    }

    @Test func v1IPv6() {
        #expect(text(.v1, address("2001:db8::7", 50123), address("2001:db8:0:0:1:0:0:1", 21118))
                == "PROXY TCP6 2001:db8::7 2001:db8::1:0:0:1 50123 21118\r\n")
        #expect(text(.v1, address("::1", 1), address("::", 65535)) == "PROXY TCP6 ::1 :: 1 65535\r\n")
        #expect(text(.v1, address("1:0:2:0:3:0:4:0", 80), address("1::", 8080))
                == "PROXY TCP6 1:0:2:0:3:0:4:0 1:: 80 8080\r\n")
    }

    /// The IPv6 text is RFC 5952's, as UVBind prints non-mapped addresses, and reads back.
    @Test func v1IPv6TextMatchesRFC5952() {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<2_000 {
            // Sparse groups, so that zero runs of every length and position occur.
            let groups = (0..<8).map { _ in UInt16.random(in: 0...3, using: &generator) == 0 ? UInt16.random(in: 0...UInt16.max, using: &generator) : 0 }
            let ip = IPv6Address(groups: groups)
            guard ip.ipv4Mapped == nil else { continue }
            let line = text(.v1, SocketAddress(ip: .v6(ip), port: 1), address("2001:db8::1", 2))
            #expect(line == "PROXY TCP6 \(ip) 2001:db8::1 1 2\r\n")
            let written = line.split(separator: " ")[2]
            #expect(IPv6Address(written) == ip)
        }
    }

    @Test func v2IPv4() {
        let header = ProxyHeader(version: .v2, client: address("198.51.100.7", 50123), destination: address("203.0.113.1", 21118))
        #expect(header.bytes == bytes("0D0A0D0A 000D0A51 5549540A 21 11 000C C6336407 CB007101 C3CB 527E"))
    }

    @Test func v2IPv6() {
        let header = ProxyHeader(version: .v2, client: address("2001:db8::7", 1), destination: address("2001:db8::1", 65535))
        #expect(header.bytes == bytes("""
            0D0A0D0A 000D0A51 5549540A 21 21 0024
            20010DB8 00000000 00000000 00000007
            20010DB8 00000000 00000000 00000001
            0001 FFFF
            """))
        #expect(header.bytes.count == 16 + 36)
    }

    // An IPv4 client of a dual-stack socket: sent as IPv4.
    @Test func mappedClientIsSentAsIPv4() {
        let client = address("::ffff:198.51.100.7", 50123)
        #expect(text(.v1, client, address("::ffff:127.0.0.1", 21118)) == "PROXY TCP4 198.51.100.7 127.0.0.1 50123 21118\r\n")
        #expect(text(.v1, client, address("::", 21118)) == "PROXY TCP4 198.51.100.7 0.0.0.0 50123 21118\r\n")
        #expect(ProxyHeader(version: .v2, client: client, destination: address("::", 21118)).bytes
                == bytes("0D0A0D0A 000D0A51 5549540A 21 11 000C C6336407 00000000 C3CB 527E"))
    }

    // Families that still differ: lossless, never UNKNOWN or LOCAL.
    @Test func mixedFamiliesStayLossless() {
        // An IPv4 client against a real IPv6 destination: both as IPv6, the client mapped, in hex.
        #expect(text(.v1, address("198.51.100.7", 5), address("2001:db8::1", 6))
                == "PROXY TCP6 ::ffff:c633:6407 2001:db8::1 5 6\r\n")
        #expect(ProxyHeader(version: .v2, client: address("198.51.100.7", 5), destination: address("2001:db8::1", 6)).bytes
                == bytes("0D0A0D0A 000D0A51 5549540A 21 21 0024 00000000 00000000 0000FFFF C6336407 20010DB8 00000000 00000000 00000001 0005 0006"))
        // An IPv6 client against an IPv4 wildcard: the wildcard becomes "::".
        #expect(text(.v1, address("2001:db8::7", 5), address("0.0.0.0", 6)) == "PROXY TCP6 2001:db8::7 :: 5 6\r\n")
        // An IPv6 client against a real IPv4 destination: the destination mapped.
        #expect(text(.v1, address("2001:db8::7", 5), address("192.0.2.1", 6)) == "PROXY TCP6 2001:db8::7 ::ffff:c000:201 5 6\r\n")
    }

    @Test func zoneIsNotCarried() {
        let client = SocketAddress(ip: .v6(IPv6Address("fe80::1")!), port: 7, scopeID: 2, zone: "eth0")
        #expect(text(.v1, client, address("fe80::2", 8)) == "PROXY TCP6 fe80::1 fe80::2 7 8\r\n")
    }

    @Test func writesOnlyItsOwnBytesIntoTheCallersBuffer() {
        let header = ProxyHeader(version: .v1, client: address("198.51.100.7", 1), destination: address("203.0.113.1", 2))
        var buffer = [UInt8](repeating: 0xEE, count: 200)
        let count = buffer.withUnsafeMutableBytes { header.write(into: $0) }
        #expect(Array(buffer[..<count]) == Array("PROXY TCP4 198.51.100.7 203.0.113.1 1 2\r\n".utf8))
        #expect(buffer[count...].allSatisfy { $0 == 0xEE })
    }

    @Test func option() throws {
        #expect(try ProxyHeader.version(parsing: "off") == nil)
        #expect(try ProxyHeader.version(parsing: "v1") == .v1)
        #expect(try ProxyHeader.version(parsing: " v2 ") == .v2)
        for bad in ["", "on", "V1", "1", "v3", "v1,v2", "off\u{0}"] {
            #expect(throws: ConfigError.self, "\(bad)") { try ProxyHeader.version(parsing: bad) }
        }
    }
}
