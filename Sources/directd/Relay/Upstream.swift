#if canImport(Glibc)
import Glibc
#endif
import CUV
import UVBind

/// Where relayed connections go: `HOST:PORT`, IPv6 as `[2001:db8::1]:8080`.
///
/// Read in two steps: `Spec` is the syntax alone (no DNS, no interface table,
/// so a fuzzer can call it), and resolving turns it into one socket address,
/// once, at start. Address literals are read by UVBind's bind-value parser and
/// zones are matched against the same interface table, so an address means the
/// same thing in `bind-interface` and in `direct-forward`.
struct Upstream: CustomStringConvertible {
    let address: SocketAddress

    var description: String { address.description }

    /// `HOST:PORT` as written: an address literal or a host name, and a port.
    struct Spec: Equatable, Sendable {
        enum Host: Equatable, Sendable {
            case ipv4(IPv4Address)
            /// The zone as written (a name or an index), resolved later.
            case ipv6(IPv6Address, zone: String?)
            /// Resolved with getaddrinfo.
            case name(String)

            /// An address literal (nothing to look up).
            var isAddress: Bool { if case .name = self { false } else { true } }
        }

        /// The text as configured, for messages.
        let text: String
        let host: Host
        let port: UInt16

        init(parsing text: String) throws(ConfigError) {
            self.text = text
            let value = text.trimmedOfWhitespace
            let fail = { (why: String) in Upstream.error(text, why) }
            let hostText: Substring, portText: Substring, bracketed: Bool
            if value.hasPrefix("[") {
                guard let close = value.firstIndex(of: "]") else { throw fail("\"[\" without \"]\"") }
                hostText = value[value.index(after: value.startIndex)..<close]
                let rest = value[value.index(after: close)...]
                guard rest.hasPrefix(":") else { throw fail("no \":PORT\" after the address") }
                portText = rest.dropFirst()
                bracketed = true
            } else {
                guard let colon = value.lastIndex(of: ":") else { throw fail("no port") }
                hostText = value[..<colon]
                portText = value[value.index(after: colon)...]
                if hostText.contains(":") {
                    throw fail("an IPv6 address goes in brackets, as in [\(hostText)]:\(portText)")
                }
                bracketed = false
            }
            guard !portText.isEmpty, portText.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
                  let port = UInt16(portText), port != 0 else {
                throw fail("\"\(portText)\" is not a port from 1 to 65535")
            }
            guard !hostText.isEmpty else { throw fail("no host") }
            self.port = port

            let literal: BindValue.Element?
            do throws(AddressSyntaxError) {
                literal = try BindValue.addressLiteral(hostText)
            } catch {
                throw fail("\"\(hostText)\": \(error.detail)")
            }
            switch literal {
            case .ipv4(let address)?:
                guard !bracketed else { throw fail("brackets are for IPv6 addresses; write \(address):\(port)") }
                host = .ipv4(address)
            case .ipv6(let address, let zone)?:
                host = .ipv6(address, zone: zone)
            case .allInterfaces?, .interface?, nil:
                guard !bracketed else { throw fail("\"\(hostText)\" is not an IPv6 address") }
                try Self.checkHostName(hostText, fail: fail)
                host = .name(String(hostText))
            }
        }

        /// Letters, digits, "-", "_" and dots, at most 253 bytes: what DNS and
        /// /etc/hosts names are made of. Anything else (white space, control
        /// characters, "%", "/") is refused before getaddrinfo sees it.
        private static func checkHostName(_ name: Substring, fail: (String) -> ConfigError) throws(ConfigError) {
            guard name.utf8.count <= 253 else { throw fail("the host name is longer than 253 characters") }
            let allowed = name.utf8.allSatisfy { byte in
                (byte >= 0x30 && byte <= 0x39) || (byte | 0x20 >= 0x61 && byte | 0x20 <= 0x7A)
                    || byte == UInt8(ascii: "-") || byte == UInt8(ascii: "_") || byte == UInt8(ascii: ".")
            }
            guard allowed else { throw fail("\"\(name)\" is neither an IP address nor a host name") }
        }
    }

    /// Reads and resolves `HOST:PORT`.
    init(parsing text: String) throws(ConfigError) {
        try self.init(resolving: Spec(parsing: text))
    }

    /// Resolves a spec: a zone against the machine's interfaces (or `interfaces`),
    /// a host name with getaddrinfo (its first address).
    init(resolving spec: Spec, interfaces: InterfaceTable? = nil) throws(ConfigError) {
        switch spec.host {
        case .ipv4(let address):
            self.address = SocketAddress(ip: .v4(address), port: spec.port)
        case .ipv6(let address, nil):
            self.address = SocketAddress(ip: .v6(address), port: spec.port)
        case .ipv6(let address, let zone?):
            let table: InterfaceTable
            if let interfaces {
                table = interfaces
            } else {
                do throws(BindError) { table = try InterfaceTable.current() } catch {
                    throw Self.error(spec.text, "the network interfaces could not be read to resolve %\(zone)")
                }
            }
            guard let index = table.index(ofZone: zone) else {
                throw Self.error(spec.text, "no interface \(zone.utf8.allSatisfy { $0 >= 0x30 && $0 <= 0x39 } ? "has index" : "is named") \(zone)")
            }
            self.address = SocketAddress(ip: .v6(address), port: spec.port, scopeID: index,
                                         zone: table.name(ofIndex: index))
        case .name(let name):
            self.address = try Self.resolve(name, port: spec.port, text: spec.text)
        }
    }

    static func error(_ text: String, _ why: String) -> ConfigError {
        ConfigError(description: "Invalid direct-forward \"\(text)\": \(why). Expected HOST:PORT, for example 127.0.0.1:8080 or [2001:db8::1]:8080")
    }

    /// The first address `getaddrinfo` gives for a host name.
    private static func resolve(_ host: String, port: UInt16, text: String) throws(ConfigError) -> SocketAddress {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, nil, &hints, &list)
        guard status == 0, let list else {
            throw error(text, "cannot resolve \"\(host)\": \(String(cString: gai_strerror(status)))")
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
        throw error(text, "\"\(host)\" has no IPv4 or IPv6 address")
    }
}
