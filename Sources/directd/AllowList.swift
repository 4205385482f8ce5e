import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif
import UVBind

/// The `whitelist` option: the client addresses and prefixes allowed to connect.
///
/// Every entry must parse; one that does not is a configuration error, never a
/// silently open door. IPv4-mapped IPv6 peers (`::ffff:192.0.2.1`) and entries
/// are compared as the IPv4 addresses they are.
struct AllowList: CustomStringConvertible {
    struct Prefix: CustomStringConvertible {
        let ip: IPAddress
        let length: Int

        /// `address` with every bit after the prefix cleared.
        func masked(_ address: IPAddress) -> IPAddress {
            switch address {
            case .v4(let a):
                let mask: UInt32 = length == 0 ? 0 : ~0 << UInt32(32 - min(length, 32))
                return .v4(IPv4Address(a.value & mask))
            case .v6(let a):
                let highBits = min(length, 64), lowBits = max(length - 64, 0)
                let highMask: UInt64 = highBits == 0 ? 0 : ~0 << UInt64(64 - highBits)
                let lowMask: UInt64 = lowBits == 0 ? 0 : ~0 << UInt64(64 - lowBits)
                return .v6(IPv6Address(high: a.high & highMask, low: a.low & lowMask))
            }
        }

        func contains(_ candidate: IPAddress) -> Bool {
            candidate.family == ip.family && masked(candidate) == masked(ip)
        }

        var description: String { "\(ip)/\(length)" }
    }

    let prefixes: [Prefix]

    var description: String { prefixes.map(\.description).joined(separator: ", ") }

    init(parsing text: String) throws(ConfigError) {
        var prefixes: [Prefix] = []
        for piece in text.split(separator: ",", omittingEmptySubsequences: false) {
            let entry = piece.trimmedOfWhitespace
            func fail(_ why: String) -> ConfigError {
                ConfigError(description: "Invalid whitelist entry \"\(entry)\" in \"\(text)\": \(why). Expected IPv4 or IPv6 addresses or prefixes, such as 192.0.2.7, 198.51.100.0/24, 2001:db8::/32, separated by commas")
            }
            guard !entry.isEmpty else { throw fail("an empty entry (a stray comma)") }
            let parts = entry.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
            var ip: IPAddress
            if let v4 = IPv4Address(parts[0]) {
                ip = .v4(v4)
            } else if let v6 = IPv6Address(parts[0]) {
                ip = .v6(v6)
            } else {
                throw fail("\"\(parts[0])\" is not an IP address (host names are not resolved)")
            }
            let maximum = ip.family == .ipv4 ? 32 : 128
            var length = maximum
            if parts.count == 2 {
                guard let value = Int(parts[1]), parts[1].allSatisfy(\.isNumber), (0...maximum).contains(value) else {
                    throw fail("\"/\(parts[1])\" is not a prefix length from 0 to \(maximum)")
                }
                length = value
            }
            if case .v6(let v6) = ip, let mapped = v6.ipv4Mapped {
                guard length >= 96 else { throw fail("an IPv4-mapped prefix must be /96 or longer") }
                ip = .v4(mapped)
                length -= 96
            }
            let prefix = Prefix(ip: ip, length: length)
            // 192.0.2.1/24 is ambiguous: say which network was meant.
            guard prefix.masked(ip) == ip else {
                throw fail("host bits are set after /\(length); write the network address (\(prefix.masked(ip))/\(length))")
            }
            prefixes.append(prefix)
        }
        self.prefixes = prefixes
    }

    func allows(_ peer: IPAddress) -> Bool {
        var peer = peer
        if case .v6(let v6) = peer, let mapped = v6.ipv4Mapped { peer = .v4(mapped) }
        return prefixes.contains { $0.contains(peer) }
    }
}
