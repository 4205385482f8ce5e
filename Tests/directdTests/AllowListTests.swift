import Testing
import UVBind
@testable import directd

private func ip(_ text: String) -> IPAddress {
    IPv4Address(text).map(IPAddress.v4) ?? .v6(IPv6Address(text)!)
}

struct AllowListTests {
    @Test func matchesAddressesAndPrefixes() throws {
        let list = try AllowList(parsing: "192.0.2.7, 198.51.100.0/24, 2001:db8::/32")
        #expect(!list.allowsEveryone)
        #expect(list.startupNote == nil)
        #expect(list.description == "192.0.2.7/32, 198.51.100.0/24, 2001:db8::/32")
        #expect(list.allows(ip("192.0.2.7")))
        #expect(!list.allows(ip("192.0.2.8")))
        #expect(!list.allows(ip("192.0.2.6")))
        #expect(list.allows(ip("198.51.100.0")))
        #expect(list.allows(ip("198.51.100.255")))
        #expect(!list.allows(ip("198.51.99.255")))
        #expect(!list.allows(ip("198.51.101.0")))
        #expect(list.allows(ip("2001:db8::")))
        #expect(list.allows(ip("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff")))
        #expect(!list.allows(ip("2001:db7:ffff:ffff:ffff:ffff:ffff:ffff")))
        #expect(!list.allows(ip("2001:db9::")))
    }

    @Test func ipv4MappedPeersAreMatchedAsIPv4() throws {
        let list = try AllowList(parsing: "203.0.113.0/24")
        #expect(list.allows(ip("::ffff:203.0.113.9")))
        #expect(!list.allows(ip("::ffff:198.51.100.9")))
        let mappedEntry = try AllowList(parsing: "::ffff:203.0.113.0/120")
        #expect(mappedEntry.allows(ip("203.0.113.200")))
        #expect(mappedEntry.allows(ip("::ffff:203.0.113.200")))
        #expect(!mappedEntry.allows(ip("203.0.114.0")))
        // An IPv6 prefix never matches an IPv4 client, mapped or not.
        let v6 = try AllowList(parsing: "::/0")
        #expect(v6.allows(ip("2001:db8::1")))
        #expect(!v6.allows(ip("192.0.2.1")))
        #expect(!v6.allows(ip("::ffff:192.0.2.1")))
    }

    @Test func zeroLengthPrefixAllowsItsWholeFamilyOnly() throws {
        let list = try AllowList(parsing: "0.0.0.0/0")
        #expect(!list.allowsEveryone)
        #expect(list.allows(ip("198.51.100.1")))
        #expect(list.allows(ip("255.255.255.255")))
        #expect(!list.allows(ip("2001:db8::1")))
    }

    // RustDesk: `whitelist` split on commas, empty entries skipped.
    @Test(arguments: ["", ",", ",,", " , ", "\t,\n"])
    func noEntriesAllowEveryoneAndSaySo(_ text: String) throws {
        let list = try AllowList(parsing: text)
        #expect(list.allowsEveryone)
        #expect(list.startupNote == "whitelist is empty: all clients allowed")
        #expect(list.allows(ip("198.51.100.1")))
        #expect(list.allows(ip("2001:db8::1")))
    }

    @Test(arguments: [",192.0.2.1", "192.0.2.1,", "192.0.2.1,,", ", 192.0.2.1 ,,"])
    func emptyEntriesAreSkipped(_ text: String) throws {
        let list = try AllowList(parsing: text)
        #expect(!list.allowsEveryone)
        #expect(list.prefixes == [.init(ip: ip("192.0.2.1"), length: 32)])
        #expect(list.allows(ip("192.0.2.1")))
        #expect(!list.allows(ip("192.0.2.2")))
    }

    // RustDesk: an entry of exactly 0.0.0.0 allows everyone (it was 0.0.0.0/32, which
    // locked every client out).
    @Test(arguments: ["0.0.0.0", " 0.0.0.0 ", "192.0.2.0/24,0.0.0.0", "0.0.0.0,2001:db8::/32", ",0.0.0.0,"])
    func zeroAddressEntryAllowsEveryone(_ text: String) throws {
        let list = try AllowList(parsing: text)
        #expect(list.allowsEveryone)
        #expect(list.startupNote == "whitelist 0.0.0.0: all clients allowed")
        for client in ["198.51.100.1", "192.0.2.1", "2001:db8::1", "2001:db9::1", "::ffff:203.0.113.1", "::1"] {
            #expect(list.allows(ip(client)), "\(client)")
        }
    }

    @Test func otherZeroFormsAreOrdinaryPrefixes() throws {
        for text in ["0.0.0.0/32", "::", "::/128", "::ffff:0.0.0.0"] {
            let list = try AllowList(parsing: text)
            #expect(!list.allowsEveryone, "\(text)")
            #expect(!list.allows(ip("198.51.100.1")), "\(text)")
            #expect(!list.allows(ip("2001:db8::1")), "\(text)")
        }
    }

    @Test(arguments: [" ,x", "192.0.2.0/24/1", "192.0.2.0/-1", "192.0.2.0/", "192.0.2.0/33", "2001:db8::/129",
                      "192.0.2.0/0024", "fe80::1%eth0", "10.1.2.3/8", "2001:db8::1/32", "localhost", "10",
                      "10.1", "192.0.2.0/255.255.255.0", "010.0.0.1", "192.0.2.1 192.0.2.2", "192.0.2.1;192.0.2.2",
                      "::ffff:192.0.2.0/64", "0.0.0.0,nonsense", "0.0.0.0/0/0", "192.0.2.1\u{0}"])
    func rejectsInvalidEntries(_ text: String) {
        #expect(throws: ConfigError.self) { try AllowList(parsing: text) }
    }

    @Test func errorNamesTheEntryAndItsPosition() {
        do {
            _ = try AllowList(parsing: "192.0.2.1, 10.1.2.3/8")
            Issue.record("accepted host bits")
        } catch {
            #expect(error.description.contains("entry 2 \"10.1.2.3/8\""), "\(error)")
            #expect(error.description.contains("10.0.0.0/8"), "\(error)")
        }
    }

    @Test func summaryIsBounded() throws {
        let list = try AllowList(parsing: (1...20).map { "192.0.2.\($0)" }.joined(separator: ","))
        #expect(list.summary(limit: 2) == "192.0.2.1/32, 192.0.2.2/32 and 18 more")
        #expect(list.summary() == list.prefixes.prefix(8).map(\.description).joined(separator: ", ") + " and 12 more")
        #expect(try AllowList(parsing: "192.0.2.1").summary() == "192.0.2.1/32")
        #expect(try AllowList(parsing: "0.0.0.0").summary() == "all clients (whitelist 0.0.0.0)")
    }

    @Test func everyoneConstantAllowsEveryone() {
        #expect(AllowList.everyone.allowsEveryone)
        #expect(AllowList.everyone.allows(ip("2001:db8::1")))
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
