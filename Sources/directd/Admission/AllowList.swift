import UVBind

/// The `whitelist` option: the client addresses and prefixes allowed to connect,
/// with RustDesk's meaning for the same option.
///
/// - The text is split on commas. Each entry is trimmed of white space, and empty
///   entries are skipped (RustDesk writes `,` for "no whitelist").
/// - An entry of exactly `0.0.0.0` allows every client, IPv4 and IPv6 alike.
/// - No entry at all allows every client too.
/// - Every other entry is an IPv4 or IPv6 address or CIDR prefix. One that does not
///   parse is a configuration error, never an entry that is quietly left out:
///   RustDesk skips such entries, directd refuses to start, on purpose.
///
/// IPv4-mapped IPv6 peers (`::ffff:192.0.2.1`) and entries are compared as the
/// IPv4 addresses they are. Lookup is a binary search over merged ranges, so its
/// cost does not grow with the length of the list in any way that matters
/// (O(log n): 10,000 entries take 14 steps).
struct AllowList: CustomStringConvertible, Sendable {
    /// One entry as written, normalised: IPv4-mapped prefixes as IPv4.
    struct Prefix: CustomStringConvertible, Hashable, Sendable {
        let ip: IPAddress
        let length: Int

        var description: String { "\(ip)/\(length)" }
    }

    /// Why the list allows every client, when it does.
    enum Openness: Sendable, Equatable {
        /// The list restricts clients to its prefixes.
        case restricted
        /// No entries: the option is unset, empty, or only commas and white space.
        case empty
        /// An entry is `0.0.0.0`, RustDesk's "everyone".
        case allowEveryoneEntry
    }

    /// The entries, in the order written, without the `0.0.0.0` marker.
    let prefixes: [Prefix]
    let openness: Openness
    /// The prefixes of each family, merged into ranges: what `allows` searches.
    let ipv4Ranges: AddressRangeTable<UInt32>
    let ipv6Ranges: AddressRangeTable<UInt128>

    /// True if every client is allowed (no entries, or a `0.0.0.0` entry).
    var allowsEveryone: Bool { openness != .restricted }

    /// What to log at start when the list does not restrict anyone, so that an open
    /// door is never silent; nil when it restricts.
    var startupNote: String? {
        switch openness {
        case .restricted: nil
        case .empty: "whitelist is empty: all clients allowed"
        case .allowEveryoneEntry: "whitelist 0.0.0.0: all clients allowed"
        }
    }

    var description: String {
        switch openness {
        case .restricted: prefixes.map(\.description).joined(separator: ", ")
        case .empty: "all clients (empty whitelist)"
        case .allowEveryoneEntry: "all clients (whitelist 0.0.0.0)"
        }
    }

    /// `description`, cut after `limit` entries for a log line: a list of 10,000
    /// entries should not make a 200 KB line.
    func summary(limit: Int = 8) -> String {
        guard openness == .restricted, prefixes.count > limit else { return description }
        return prefixes.prefix(limit).map(\.description).joined(separator: ", ")
            + " and \(prefixes.count - limit) more"
    }

    /// A list that allows every client, as an unset option does.
    static let everyone = AllowList(prefixes: [], openness: .empty)

    private init(prefixes: [Prefix], openness: Openness) {
        self.prefixes = prefixes
        self.openness = openness
        var v4: [ClosedRange<UInt32>] = [], v6: [ClosedRange<UInt128>] = []
        for prefix in prefixes {
            switch prefix.ip {
            case .v4(let a): v4.append(AddressRangeTable.range(of: a.value, length: prefix.length))
            case .v6(let a): v6.append(AddressRangeTable.range(of: a.wideValue, length: prefix.length))
            }
        }
        ipv4Ranges = AddressRangeTable(ranges: v4)
        ipv6Ranges = AddressRangeTable(ranges: v6)
    }

    /// `option` names the option in messages (`whitelist`, `rate-limit-exempt`).
    init(parsing text: String, option: String = "whitelist") throws(ConfigError) {
        var prefixes: [Prefix] = []
        var allowEveryoneEntry = false
        var position = 0
        for piece in text.split(separator: ",", omittingEmptySubsequences: false) {
            position += 1
            let entry = piece.trimmedOfWhitespace
            if entry.isEmpty { continue }
            if entry == "0.0.0.0" {
                allowEveryoneEntry = true
                continue
            }
            do {
                prefixes.append(try Self.prefix(parsing: entry))
            } catch {
                throw ConfigError(description: "Invalid \(option) entry \(position) \"\(entry)\": \(error.reason). Expected IPv4 or IPv6 addresses or prefixes, such as 192.0.2.7, 198.51.100.0/24, 2001:db8::/32, separated by commas (0.0.0.0 alone allows every client)")
            }
        }
        self.init(prefixes: prefixes,
                  openness: allowEveryoneEntry ? .allowEveryoneEntry : prefixes.isEmpty ? .empty : .restricted)
    }

    private struct EntryError: Error { let reason: String }

    /// One address or CIDR prefix, strictly: no host names, no shorthand, no host bits.
    private static func prefix(parsing entry: String) throws(EntryError) -> Prefix {
        let parts = entry.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        var ip: IPAddress
        if let v4 = IPv4Address(parts[0]) {
            ip = .v4(v4)
        } else if let v6 = IPv6Address(parts[0]) {
            ip = .v6(v6)
        } else {
            throw EntryError(reason: "\"\(parts[0])\" is not an IP address (host names are not resolved)")
        }
        let maximum = ip.family == .ipv4 ? 32 : 128
        var length = maximum
        if parts.count == 2 {
            guard parts[1].utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }),
                  parts[1].count <= 3, let value = Int(parts[1]), value <= maximum else {
                throw EntryError(reason: "\"/\(parts[1])\" is not a prefix length from 0 to \(maximum)")
            }
            length = value
        }
        if case .v6(let v6) = ip, let mapped = v6.ipv4Mapped {
            guard length >= 96 else { throw EntryError(reason: "an IPv4-mapped prefix must be /96 or longer") }
            ip = .v4(mapped)
            length -= 96
        }
        // 192.0.2.1/24 is ambiguous (a typo in the address or in the length?): say
        // which network was meant rather than guess, as RustDesk silently does.
        let network = Self.network(of: ip, length: length)
        guard network == ip else {
            throw EntryError(reason: "host bits are set after /\(length); write the network address (\(network)/\(length))")
        }
        return Prefix(ip: ip, length: length)
    }

    private static func network(of ip: IPAddress, length: Int) -> IPAddress {
        switch ip {
        case .v4(let a): .v4(IPv4Address(AddressRangeTable.range(of: a.value, length: length).lowerBound))
        case .v6(let a): .v6(IPv6Address(wideValue: AddressRangeTable.range(of: a.wideValue, length: length).lowerBound))
        }
    }

    func allows(_ peer: IPAddress) -> Bool {
        if allowsEveryone { return true }
        switch peer {
        case .v4(let a):
            return ipv4Ranges.contains(a.value)
        case .v6(let a):
            if let mapped = a.ipv4Mapped { return ipv4Ranges.contains(mapped.value) }
            return ipv6Ranges.contains(a.wideValue)
        }
    }
}

extension IPv6Address {
    /// The address as one 128-bit number, first bit highest.
    var wideValue: UInt128 { UInt128(high) << 64 | UInt128(low) }

    init(wideValue: UInt128) {
        self.init(high: UInt64(truncatingIfNeeded: wideValue >> 64), low: UInt64(truncatingIfNeeded: wideValue))
    }
}
