import CUV

/// An address and port to listen on, with the IPv6 scope (zone) where it has one.
public struct SocketAddress: Hashable, Sendable, CustomStringConvertible {
    public var ip: IPAddress
    public var port: UInt16
    /// The interface index of a link-local IPv6 address; 0 otherwise.
    public var scopeID: UInt32
    /// The interface name the scope stands for, kept for messages (`fe80::1%eth0`).
    public var zone: String?

    public init(ip: IPAddress, port: UInt16, scopeID: UInt32 = 0, zone: String? = nil) {
        self.ip = ip
        self.port = port
        self.scopeID = scopeID
        self.zone = zone
    }

    public var family: AddressFamily { ip.family }

    /// The address without the port: `192.0.2.1`, `fe80::1%eth0`.
    public var host: String {
        guard case .v6 = ip, scopeID != 0 else { return ip.description }
        return "\(ip)%\(zone ?? String(scopeID))"
    }

    /// `192.0.2.1:21118`, or `[fe80::1%eth0]:21118` with the zone inside the brackets.
    public var description: String {
        switch ip {
        case .v4: "\(host):\(port)"
        case .v6: "[\(host)]:\(port)"
        }
    }

    /// Calls `body` with this address as a C `sockaddr` (`sockaddr_in` or `sockaddr_in6`).
    public func withSockaddr<R>(_ body: (UnsafePointer<sockaddr>) throws -> R) rethrows -> R {
        var storage = sockaddr_storage()
        switch ip {
        case .v4(let address):
            withUnsafeMutableBytes(of: &storage) { raw in
                let sin = raw.baseAddress!.assumingMemoryBound(to: sockaddr_in.self)
                sin.pointee.sin_family = sa_family_t(AF_INET)
                sin.pointee.sin_port = port.bigEndian
                sin.pointee.sin_addr.s_addr = address.value.bigEndian
            }
        case .v6(let address):
            withUnsafeMutableBytes(of: &storage) { raw in
                let sin6 = raw.baseAddress!.assumingMemoryBound(to: sockaddr_in6.self)
                sin6.pointee.sin6_family = sa_family_t(AF_INET6)
                sin6.pointee.sin6_port = port.bigEndian
                sin6.pointee.sin6_scope_id = scopeID
                withUnsafeMutableBytes(of: &sin6.pointee.sin6_addr) { bytes in
                    bytes.copyBytes(from: address.bytes)
                }
            }
        }
        return try withUnsafePointer(to: &storage) { pointer in
            try pointer.withMemoryRebound(to: sockaddr.self, capacity: 1, body)
        }
    }

    /// Reads a C `sockaddr`; nil for families other than IPv4 and IPv6.
    /// The zone of a scoped IPv6 address is the interface name of its index.
    public init?(_ address: UnsafePointer<sockaddr>) {
        switch Int32(address.pointee.sa_family) {
        case AF_INET:
            let sin = UnsafeRawPointer(address).loadUnaligned(as: sockaddr_in.self)
            self.init(ip: .v4(IPv4Address(UInt32(bigEndian: sin.sin_addr.s_addr))),
                      port: UInt16(bigEndian: sin.sin_port))
        case AF_INET6:
            let sin6 = UnsafeRawPointer(address).loadUnaligned(as: sockaddr_in6.self)
            let bytes = withUnsafeBytes(of: sin6.sin6_addr) { Array($0) }
            self.init(ip: .v6(IPv6Address(bytes: bytes)),
                      port: UInt16(bigEndian: sin6.sin6_port),
                      scopeID: sin6.sin6_scope_id,
                      zone: sin6.sin6_scope_id == 0 ? nil : InterfaceTable.name(ofIndex: sin6.sin6_scope_id))
        default:
            return nil
        }
    }
}
