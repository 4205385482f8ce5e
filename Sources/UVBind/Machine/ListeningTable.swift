#if canImport(Glibc)
import Glibc
#endif

/// The kernel's listening TCP sockets (`/proc/thread-self/net/tcp{,6}`, the
/// calling thread's network namespace), to foresee that a bind would fail
/// with EADDRINUSE before anything is closed to make room for it.
///
/// Only listening sockets are seen: a socket bound and not listening is not in
/// these tables, so a conflict with one is found by the bind itself (the
/// caller must still handle that). Whether an IPv6 wildcard also takes IPv4
/// (IPV6_V6ONLY off) is not shown either: it is assumed to, so that a
/// foreseen conflict may be one the kernel would have allowed, never the
/// other way round.
struct ListeningTable {
    struct Entry: Equatable {
        let ip: IPAddress
        let port: UInt16
        /// The socket's inode, as `fstat` gives it for a descriptor.
        let inode: UInt64
    }

    let entries: [Entry]

    /// Reads both tables now; a table that cannot be read adds nothing.
    static func current() -> ListeningTable {
        let root = access("/proc/thread-self/net/tcp", R_OK) == 0 ? "/proc/thread-self/net" : "/proc/net"
        return ListeningTable(entries: read("\(root)/tcp", v6: false) + read("\(root)/tcp6", v6: true))
    }

    init(entries: [Entry]) {
        self.entries = entries
    }

    /// The first listening socket, other than those with an inode in
    /// `excluding`, that would make binding `address` fail.
    func holder(of address: SocketAddress, excluding: Set<UInt64>) -> Entry? {
        guard address.port != 0 else { return nil }
        return entries.first { entry in
            entry.port == address.port && !excluding.contains(entry.inode) && Self.overlaps(entry.ip, address.ip)
        }
    }

    /// Whether a listener on `held` stands in the way of binding `wanted` (an
    /// IPv6 `wanted` is IPv6 only, as UVBind opens it).
    static func overlaps(_ held: IPAddress, _ wanted: IPAddress) -> Bool {
        switch (held, wanted) {
        case (.v4(let a), .v4(let b)):
            return a == b || a.isAny || b.isAny
        case (.v6(let a), .v6(let b)):
            return a == b || a.isAny || b.isAny
        case (.v6(let a), .v4(let b)):
            // A dual-stack IPv6 socket takes IPv4 too: on `::`, or on a mapped address.
            if a.isAny { return true }
            return a.ipv4Mapped.map { $0 == b || $0.isAny || b.isAny } ?? false
        case (.v4, .v6):
            return false
        }
    }

    /// Lines of `sl local_address rem_address st tx_queue:rx_queue tr:tm->when
    /// retrnsmt uid timeout inode ...`; state 0A is LISTEN. The address is
    /// printed as 32-bit words in host (little-endian) order.
    static func read(_ path: String, v6: Bool) -> [Entry] {
        guard let file = fopen(path, "r") else { return [] }
        defer { fclose(file) }
        var entries: [Entry] = []
        var line: UnsafeMutablePointer<CChar>?
        var capacity = 0
        defer { free(line) }
        while getline(&line, &capacity, file) > 0 {
            if let entry = parse(String(cString: line!), v6: v6) { entries.append(entry) }
        }
        return entries
    }

    static func parse(_ line: String, v6: Bool) -> Entry? {
        let fields = line.split(separator: " ")
        guard fields.count > 9, fields[3] == "0A", let inode = UInt64(fields[9]) else { return nil }
        let local = fields[1].split(separator: ":")
        guard local.count == 2, let port = UInt16(local[1], radix: 16), local[0].count == (v6 ? 32 : 8) else {
            return nil
        }
        var bytes: [UInt8] = []
        var hex = local[0][...]
        while !hex.isEmpty {
            guard let word = UInt32(hex.prefix(8), radix: 16) else { return nil }
            bytes += [UInt8(word & 0xFF), UInt8(word >> 8 & 0xFF), UInt8(word >> 16 & 0xFF), UInt8(word >> 24)]
            hex = hex.dropFirst(8)
        }
        let ip: IPAddress = v6 ? .v6(IPv6Address(bytes: bytes)) : .v4(IPv4Address(bytes[0], bytes[1], bytes[2], bytes[3]))
        return Entry(ip: ip, port: port, inode: inode)
    }
}
