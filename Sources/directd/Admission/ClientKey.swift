import UVBind

/// Whom a rate limit counts: an IPv4 address, or the IPv6 prefix an address
/// falls in (a /64 by default: one subscriber's LAN, where any host can pick
/// any of 2^64 addresses). IPv4-mapped IPv6 peers count as the IPv4 address.
struct ClientKey: Hashable, Sendable, CustomStringConvertible {
    /// The address or the prefix's network address, first bit highest.
    let value: UInt128
    /// 32 for IPv4, the prefix length for IPv6.
    let length: UInt8
    let isIPv4: Bool

    init(_ ip: IPAddress, ipv6PrefixLength: Int) {
        switch ip {
        case .v4(let a):
            self.init(ipv4: a)
        case .v6(let a):
            if let mapped = a.ipv4Mapped {
                self.init(ipv4: mapped)
            } else {
                let length = min(max(ipv6PrefixLength, 0), 128)
                let mask: UInt128 = length == 0 ? 0 : ~UInt128(0) << (128 - length)
                self.init(aggregate: a.wideValue & mask, length: UInt8(length), isIPv4: false)
            }
        }
    }

    /// A prefix given by its parts (the table's wider keys).
    init(aggregate value: UInt128, length: UInt8, isIPv4: Bool) {
        self.value = value
        self.length = length
        self.isIPv4 = isIPv4
    }

    private init(ipv4: IPv4Address) {
        self.init(aggregate: UInt128(ipv4.value), length: 32, isIPv4: true)
    }

    /// `192.0.2.7` or `2001:db8:1::/64`.
    var description: String {
        if isIPv4 {
            let address = "\(IPv4Address(UInt32(truncatingIfNeeded: value)))"
            return length == 32 ? address : "\(address)/\(length)"
        }
        let network = IPv6Address(wideValue: value)
        return length == 128 ? "\(network)" : "\(network)/\(length)"
    }
}
