import Testing
@testable import directd
@testable import UVBind

/// The forward target: syntax first (no DNS, no interfaces), then resolving.
struct UpstreamTests {
    /// A made-up machine: eth0 is index 2, wg0 index 3.
    static let machine = InterfaceTable(
        interfaces: [("lo", 1), ("eth0", 2), ("wg0", 3)], addresses: [])

    @Test func specReadsLiteralsAndNamesWithoutResolving() throws {
        #expect(try Upstream.Spec(parsing: "192.0.2.1:80").host == .ipv4(IPv4Address(192, 0, 2, 1)))
        #expect(try Upstream.Spec(parsing: "[2001:db8::1]:443").host == .ipv6(IPv6Address("2001:db8::1")!, zone: nil))
        #expect(try Upstream.Spec(parsing: "[fe80::1%wg0]:80").host == .ipv6(IPv6Address("fe80::1")!, zone: "wg0"))
        // A name that does not exist is fine at this step: nothing is looked up.
        let name = try Upstream.Spec(parsing: " relay.invalid:19001 ")
        #expect(name.host == .name("relay.invalid"))
        #expect(name.port == 19001)
    }

    @Test(arguments: [
        "127.0.0.1", ":80", "[::1]", "::1:80", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:+80",
        "127.1:80",              // shorthand is not an address, and not a host name either
        "999.1.1.1:80", "[127.0.0.1]:80", "[relay.example]:80",
        "[2001:db8::1%eth0]:80", // a zone only on link-local, as in bind values
        "[::ffff:192.0.2.1%eth0]:80", "[fe80::1%]:80",
        "relay example:80", "relay\u{0}.example:80", "relay/x:80", "host%eth0:80",
    ])
    func specRefusesMalformedTargets(_ text: String) {
        #expect(throws: ConfigError.self, "\(text)") { try Upstream.Spec(parsing: text) }
    }

    @Test func zonesResolveAgainstTheInterfaceTableAsInBindValues() throws {
        let byName = try Upstream(resolving: Upstream.Spec(parsing: "[fe80::1%wg0]:80"), interfaces: Self.machine)
        #expect(byName.address.scopeID == 3)
        #expect(byName.address.description == "[fe80::1%wg0]:80")
        let byIndex = try Upstream(resolving: Upstream.Spec(parsing: "[fe80::1%2]:80"), interfaces: Self.machine)
        #expect(byIndex.address.scopeID == 2)
        #expect(byIndex.address.zone == "eth0")
        // An index no interface has is refused, as the bind-value resolver does.
        #expect(throws: ConfigError.self) {
            try Upstream(resolving: Upstream.Spec(parsing: "[fe80::1%9]:80"), interfaces: Self.machine)
        }
        #expect(throws: ConfigError.self) {
            try Upstream(resolving: Upstream.Spec(parsing: "[fe80::1%nosuch0]:80"), interfaces: Self.machine)
        }
    }

    @Test func errorNamesTheTextAndTheReason() {
        do throws(ConfigError) {
            _ = try Upstream.Spec(parsing: "[2001:db8::1%eth0]:80")
            Issue.record("accepted")
        } catch {
            #expect(error.description.hasPrefix("Invalid direct-forward \"[2001:db8::1%eth0]:80\""))
            #expect(error.description.contains("link-local"))
        }
    }
}
