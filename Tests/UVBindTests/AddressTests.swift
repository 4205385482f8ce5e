import Testing
@testable import UVBind

struct AddressTests {
    @Test(arguments: [
        ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),      // first of two equal runs
        ("2001:0:0:1:0:0:0:1", "2001:0:0:1::1"),            // the longest run
        ("2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"),   // one zero group stays
        ("0:0:0:0:0:0:0:0", "::"),
        ("1:0:0:0:0:0:0:0", "1::"),
        ("0:0:0:0:0:0:0:1", "::1"),
        ("FE80:0:0:0:0:0:0:ABCD", "fe80::abcd"),
        ("::ffff:c000:0201", "::ffff:192.0.2.1"),
        ("64:ff9b::192.0.2.33", "64:ff9b::c000:221"),
    ])
    func ipv6PrintsInRFC5952Form(_ text: String, _ expected: String) throws {
        let address = try #require(IPv6Address(text))
        #expect(address.description == expected)
        #expect(IPv6Address(expected) == address, "the printed form reads back")
    }

    @Test func ipv6ClassifiesAddresses() throws {
        #expect(try #require(IPv6Address("fe80::1")).isLinkLocal)
        #expect(try #require(IPv6Address("febf::1")).isLinkLocal)
        #expect(!(try #require(IPv6Address("fec0::1")).isLinkLocal))
        #expect(try #require(IPv6Address("::ffff:10.1.2.3")).ipv4Mapped == IPv4Address(10, 1, 2, 3))
        #expect(try #require(IPv6Address("::10.1.2.3")).ipv4Mapped == nil)
    }

    @Test func ipv6BytesRoundTrip() throws {
        let address = try #require(IPv6Address("2001:db8:1:2:3:4:5:6"))
        #expect(address.bytes == [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6])
        #expect(IPv6Address(bytes: address.bytes) == address)
    }

    @Test func ipv4ParsesStrictly() {
        #expect(IPv4Address("192.0.2.1")?.value == 0xC000_0201)
        #expect(IPv4Address("0.0.0.0") == .any)
        #expect(IPv4Address("255.255.255.255")?.value == .max)
        for bad in ["", "1", "1.2.3.", ".1.2.3", "01.2.3.4", "1.2.3.04", "1.2.3.0400", "+1.2.3.4", "1.2.3.-4", "1.2.3.4 "] {
            #expect(IPv4Address(bad) == nil, "\(bad)")
        }
    }

    @Test func socketAddressRoundTripsThroughSockaddr() throws {
        let addresses = [
            SocketAddress(ip: Fixtures.v4("192.0.2.1"), port: 21118),
            SocketAddress(ip: Fixtures.v6("2001:db8::1"), port: 1),
            SocketAddress(ip: Fixtures.v6("fe80::1"), port: 65535, scopeID: 1, zone: "lo"),
        ]
        for address in addresses {
            let back = address.withSockaddr { SocketAddress($0) }
            #expect(back?.ip == address.ip)
            #expect(back?.port == address.port)
            #expect(back?.scopeID == address.scopeID)
        }
    }

    @Test func socketAddressPrintsZoneInsideBrackets() {
        let address = SocketAddress(ip: Fixtures.v6("fe80::1"), port: 80, scopeID: 2, zone: "eth0")
        #expect(address.description == "[fe80::1%eth0]:80")
        #expect(SocketAddress(ip: Fixtures.v4("192.0.2.10"), port: 21118).description == "192.0.2.10:21118")
    }

    @Test(arguments: [("0", 0), ("21118", 21118), ("65535", 65535), (" 80 ", 80)] as [(String, UInt16)])
    func portsParse(_ text: String, _ expected: UInt16) throws {
        #expect(try ListenPort.parse(text) == expected)
    }

    @Test(arguments: ["65536", "-1", "abc", "", "80x", "+80", "1e3", "99999999999999999999"])
    func badPortsAreRejected(_ text: String) {
        #expect(throws: BindError.self) { try ListenPort.parse(text) }
        do {
            _ = try ListenPort.parse(text)
        } catch {
            #expect(error.kind == .invalidPort)
            #expect(error.description.hasPrefix("Invalid direct access port \"\(text)\""))
        }
    }

    @Test func numericPortsAreRangeChecked() {
        #expect(throws: BindError.self) { try ListenPort.validate(70000) }
        #expect(throws: BindError.self) { try ListenPort.validate(-1) }
        #expect((try? ListenPort.validate(443)) == 443)
    }
}
