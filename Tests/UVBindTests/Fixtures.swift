@testable import UVBind

/// A machine made up for the resolver tests, so that they do not depend on the
/// interfaces of whatever host runs them. Only documentation addresses.
enum Fixtures {
    static func v4(_ text: String) -> IPAddress { .v4(IPv4Address(text)!) }
    static func v6(_ text: String) -> IPAddress { .v6(IPv6Address(text)!) }

    static func entry(_ name: String, _ index: UInt32, _ ip: IPAddress, _ prefix: Int,
                      loopback: Bool = false) -> InterfaceAddress {
        InterfaceAddress(interface: name, index: index, ip: ip, prefixLength: prefix, isInternal: loopback)
    }

    /// lo, eth0 and wg0 share the link-local fe80::1 (ambiguous without a zone);
    /// eth1 alone holds fe80::abcd; down0 exists with no address.
    static let machine = InterfaceTable(
        interfaces: [("lo", 1), ("eth0", 2), ("wg0", 3), ("eth1", 4), ("down0", 5)],
        addresses: [
            entry("lo", 1, v4("127.0.0.1"), 8, loopback: true),
            entry("lo", 1, v6("::1"), 128, loopback: true),
            entry("eth0", 2, v4("192.0.2.10"), 24),
            entry("eth0", 2, v6("2001:db8::10"), 64),
            entry("eth0", 2, v6("fe80::1"), 64),
            entry("wg0", 3, v4("203.0.113.7"), 24),
            entry("wg0", 3, v6("fe80::1"), 64),
            entry("eth1", 4, v4("198.51.100.4"), 24),
            entry("eth1", 4, v6("fe80::abcd"), 64),
        ])

    /// A host with IPv6 disabled: no IPv6 address anywhere.
    static let ipv4Only = InterfaceTable(
        interfaces: [("lo", 1), ("eth0", 2)],
        addresses: [
            entry("lo", 1, v4("127.0.0.1"), 8, loopback: true),
            entry("eth0", 2, v4("192.0.2.10"), 24),
        ])
}
