import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif
import CUV
import UVBind

/// Where relayed connections go: `HOST:PORT`, IPv6 as `[2001:db8::1]:8080`.
/// A host name is resolved once, at start.
struct Upstream: CustomStringConvertible {
    let text: String
    let address: SocketAddress

    var description: String { address.description }

    init(parsing text: String) throws(ConfigError) {
        self.text = text
        let value = text.trimmedOfWhitespace
        func fail(_ why: String) -> ConfigError {
            ConfigError(description: "Invalid direct-forward \"\(text)\": \(why). Expected HOST:PORT, for example 127.0.0.1:8080 or [2001:db8::1]:8080")
        }
        let host: Substring, portText: Substring
        if value.hasPrefix("[") {
            guard let close = value.firstIndex(of: "]") else { throw fail("\"[\" without \"]\"") }
            host = value[value.index(after: value.startIndex)..<close]
            let rest = value[value.index(after: close)...]
            guard rest.hasPrefix(":") else { throw fail("no \":PORT\" after the address") }
            portText = rest.dropFirst()
        } else {
            guard let colon = value.lastIndex(of: ":") else { throw fail("no port") }
            host = value[..<colon]
            portText = value[value.index(after: colon)...]
            if host.contains(":") { throw fail("an IPv6 address goes in brackets, as in [\(host)]:\(portText)") }
        }
        guard let port = UInt16(portText), port != 0, portText.allSatisfy(\.isNumber) else {
            throw fail("\"\(portText)\" is not a port from 1 to 65535")
        }
        guard !host.isEmpty else { throw fail("no host") }

        if let v4 = IPv4Address(host) {
            address = SocketAddress(ip: .v4(v4), port: port)
        } else if value.hasPrefix("[") {
            var address = host, zone: Substring?
            if let percent = host.firstIndex(of: "%") {
                address = host[..<percent]
                zone = host[host.index(after: percent)...]
            }
            guard let v6 = IPv6Address(address) else { throw fail("\"\(address)\" is not an IPv6 address") }
            var scope: UInt32 = 0
            if let zone {
                scope = UInt32(zone) ?? if_nametoindex(String(zone))
                guard scope != 0 else { throw fail("no interface is named \"\(zone)\"") }
            }
            self.address = SocketAddress(ip: .v6(v6), port: port, scopeID: scope, zone: zone.map(String.init))
        } else {
            address = try Self.resolve(String(host), port: port, fail: fail)
        }
    }

    /// The first address `getaddrinfo` gives for a host name.
    private static func resolve(_ host: String, port: UInt16,
                                fail: (String) -> ConfigError) throws(ConfigError) -> SocketAddress {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, nil, &hints, &list)
        guard status == 0, let list else {
            throw fail("cannot resolve \"\(host)\": \(String(cString: gai_strerror(status)))")
        }
        defer { freeaddrinfo(list) }
        var entry: UnsafeMutablePointer<addrinfo>? = list
        while let current = entry {
            if let address = current.pointee.ai_addr.flatMap({ SocketAddress(UnsafePointer($0)) }) {
                var resolved = address
                resolved.port = port
                return resolved
            }
            entry = current.pointee.ai_next
        }
        throw fail("\"\(host)\" has no IPv4 or IPv6 address")
    }
}
