/// An IPv4 or IPv6 address.
public enum IPAddress: Hashable, Sendable, CustomStringConvertible {
    case v4(IPv4Address)
    case v6(IPv6Address)

    public var family: AddressFamily {
        switch self {
        case .v4: .ipv4
        case .v6: .ipv6
        }
    }

    /// `0.0.0.0` or `::`.
    public var isAny: Bool {
        switch self {
        case .v4(let a): a.isAny
        case .v6(let a): a.isAny
        }
    }

    public var isLinkLocal: Bool {
        if case .v6(let a) = self { return a.isLinkLocal }
        return false
    }

    public var description: String {
        switch self {
        case .v4(let a): a.description
        case .v6(let a): a.description
        }
    }
}

public enum AddressFamily: Hashable, Sendable, CustomStringConvertible {
    case ipv4, ipv6

    public var description: String {
        switch self {
        case .ipv4: "IPv4"
        case .ipv6: "IPv6"
        }
    }
}
