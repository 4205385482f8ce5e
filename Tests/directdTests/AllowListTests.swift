import Testing
import UVBind
@testable import directd

struct AllowListTests {
    func ip(_ text: String) -> IPAddress {
        IPv4Address(text).map(IPAddress.v4) ?? .v6(IPv6Address(text)!)
    }

    @Test func matchesAddressesAndPrefixes() throws {
        let list = try AllowList(parsing: "192.0.2.7, 198.51.100.0/24, 2001:db8::/32")
        #expect(list.allows(ip("192.0.2.7")))
        #expect(!list.allows(ip("192.0.2.8")))
        #expect(list.allows(ip("198.51.100.255")))
        #expect(!list.allows(ip("198.51.101.0")))
        #expect(list.allows(ip("2001:db8:ffff::1")))
        #expect(!list.allows(ip("2001:db9::1")))
    }

    @Test func ipv4MappedPeersAreMatchedAsIPv4() throws {
        let list = try AllowList(parsing: "203.0.113.0/24")
        #expect(list.allows(ip("::ffff:203.0.113.9")))
        #expect(!list.allows(ip("::ffff:198.51.100.9")))
        let mappedEntry = try AllowList(parsing: "::ffff:203.0.113.0/120")
        #expect(mappedEntry.allows(ip("203.0.113.200")))
    }

    @Test func zeroLengthPrefixAllowsItsWholeFamilyOnly() throws {
        let list = try AllowList(parsing: "0.0.0.0/0")
        #expect(list.allows(ip("198.51.100.1")))
        #expect(!list.allows(ip("2001:db8::1")))
    }

    @Test(arguments: ["", " ", "192.0.2.1,", "192.0.2.0/24/1", "192.0.2.0/-1", "fe80::1%eth0", "10.1.2.3/8"])
    func rejectsInvalidEntries(_ text: String) {
        #expect(throws: ConfigError.self) { try AllowList(parsing: text) }
    }

    @Test func upstreamForms() throws {
        #expect(try Upstream(parsing: "127.0.0.1:8080").address.description == "127.0.0.1:8080")
        #expect(try Upstream(parsing: "[::1]:8080").address.description == "[::1]:8080")
        #expect(try Upstream(parsing: "localhost:80").address.port == 80)
        for bad in ["127.0.0.1", "::1:80", "[::1]", "127.0.0.1:0", "127.0.0.1:65536", "[fe80::1%nosuch0]:80", ":80"] {
            #expect(throws: ConfigError.self, "\(bad)") { try Upstream(parsing: bad) }
        }
    }
}
