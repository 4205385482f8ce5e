import CUV

/// One address held by a local network interface.
public struct InterfaceAddress: Hashable, Sendable {
    public var interface: String
    public var index: UInt32
    public var ip: IPAddress
    public var prefixLength: Int
    /// Loopback (libuv's `is_internal`).
    public var isInternal: Bool

    public init(interface: String, index: UInt32, ip: IPAddress, prefixLength: Int, isInternal: Bool) {
        self.interface = interface
        self.index = index
        self.ip = ip
        self.prefixLength = prefixLength
        self.isInternal = isInternal
    }

    /// `inet 192.0.2.1/24` or `inet6 fe80::1%eth0/64`, as `ip addr show` words it.
    public var description: String {
        switch ip {
        case .v4: "inet \(ip)/\(prefixLength)"
        case .v6: "inet6 \(ip)\(ip.isLinkLocal ? "%\(interface)" : "")/\(prefixLength)"
        }
    }

    /// The address as a bind value would name it (`fe80::1%eth0` for link-local).
    public var bindForm: String {
        ip.isLinkLocal ? "\(ip)%\(interface)" : ip.description
    }
}

/// The machine's interfaces, as the resolver sees them at one moment.
///
/// `addresses` comes from `uv_interface_addresses`, which lists only interfaces
/// that are up and running; `interfaces` lists every interface the kernel has
/// (from `if_nameindex`), so that an existing interface without a usable address
/// is told apart from a name that does not exist. Tests build tables by hand.
public struct InterfaceTable: Sendable {
    public var interfaces: [(name: String, index: UInt32)]
    public var addresses: [InterfaceAddress]
    /// Addresses assigned but not usable yet (IPv6 duplicate address detection
    /// under way, or failed). Only the netlink reader fills it; they are not in
    /// `addresses`, so nothing is bound to them.
    package var tentative: [InterfaceAddress] = []

    public init(interfaces: [(name: String, index: UInt32)], addresses: [InterfaceAddress]) {
        self.interfaces = interfaces
        self.addresses = addresses
    }

    /// Reads the table from the kernel.
    /// `value` is the bind value being resolved, for the error message.
    public static func current(resolving value: String = "") throws(BindError) -> InterfaceTable {
        var list: UnsafeMutablePointer<uv_interface_address_t>?
        var count: Int32 = 0
        if let error = UVError.check(uv_interface_addresses(&list, &count)) {
            throw BindError(kind: .system, value: value, step: .interfaces, code: error,
                            detail: "the list of network interfaces could not be read",
                            remedy: "check that /proc and /sys are mounted")
        }
        defer { uv_free_interface_addresses(list, count) }

        var interfaces: [(name: String, index: UInt32)] = []
        if let names = if_nameindex() {
            defer { if_freenameindex(names) }
            var entry = names
            while entry.pointee.if_index != 0, let name = entry.pointee.if_name {
                interfaces.append((String(cString: name), entry.pointee.if_index))
                entry += 1
            }
        }

        var addresses: [InterfaceAddress] = []
        for entry in UnsafeBufferPointer(start: list, count: Int(count)) {
            // glibc names a labelled IPv4 address after its label ("eth0:1"); it
            // belongs to the interface before the colon.
            let name = String(String(cString: entry.name).prefix { $0 != ":" })
            let parsed: (ip: IPAddress, prefix: Int)? = withUnsafePointer(to: entry.address) { address in
                withUnsafePointer(to: entry.netmask) { mask in
                    address.withMemoryRebound(to: sockaddr.self, capacity: 1) { address in
                        mask.withMemoryRebound(to: sockaddr.self, capacity: 1) { mask in
                            guard let ip = SocketAddress(address)?.ip else { return nil }
                            return (ip, SocketAddress(mask).map(Self.prefixLength) ?? 0)
                        }
                    }
                }
            }
            guard let parsed else { continue }
            let index = interfaces.first { $0.name == name }?.index ?? if_nametoindex(name)
            addresses.append(InterfaceAddress(interface: name, index: index, ip: parsed.ip,
                                              prefixLength: parsed.prefix, isInternal: entry.is_internal != 0))
        }
        return InterfaceTable(interfaces: interfaces, addresses: addresses)
    }

    private static func prefixLength(of mask: SocketAddress) -> Int {
        switch mask.ip {
        case .v4(let a): a.value.nonzeroBitCount
        case .v6(let a): a.high.nonzeroBitCount + a.low.nonzeroBitCount
        }
    }

    /// The interface name of an index, from the kernel (nil if there is none).
    public static func name(ofIndex index: UInt32) -> String? {
        var buffer = [CChar](repeating: 0, count: Int(UV_IF_NAMESIZE))
        var size = buffer.count
        guard uv_if_indextoname(index, &buffer, &size) == 0 else { return nil }
        return String(decoding: buffer.prefix(size).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    public func index(ofInterface name: String) -> UInt32? {
        interfaces.first { $0.name == name }?.index
    }

    /// The interface index an IPv6 zone stands for: an interface name, or a
    /// decimal index that some interface has. nil when no interface matches.
    /// The resolver and directd's upstream parser share it, so that a zone means
    /// the same thing in a bind value and in a forward address.
    package func index(ofZone zone: String) -> UInt32? {
        zone.allDecimal ? UInt32(zone).flatMap { name(ofIndex: $0) == nil ? nil : $0 }
                        : index(ofInterface: zone)
    }

    public func name(ofIndex index: UInt32) -> String? {
        interfaces.first { $0.index == index }?.name
    }

    public func addresses(of interface: String) -> [InterfaceAddress] {
        addresses.filter { $0.interface == interface }
    }

    public func hasFamily(_ family: AddressFamily) -> Bool {
        addresses.contains { $0.ip.family == family }
    }

    /// Whether binding `ip` (with `scopeID` for link-local) can succeed: the address is
    /// held by an interface, or lies in the prefix of a loopback address, for which the
    /// kernel routes the whole prefix locally (127.0.0.2 is local because of 127.0.0.1/8).
    func isLocal(_ ip: IPAddress, scopeID: UInt32) -> Bool {
        addresses.contains { entry in
            if entry.ip == ip { return !ip.isLinkLocal || entry.index == scopeID }
            guard entry.isInternal, case .v4(let held) = entry.ip, case .v4(let wanted) = ip else { return false }
            return held.sameNetwork(as: wanted, prefixLength: entry.prefixLength)
        }
    }

    /// Every address, one per line in the bind-value form, for error messages.
    var addressSummary: String {
        guard !addresses.isEmpty else { return "none (no interface is up)" }
        return addresses.map { "\($0.bindForm) (\($0.interface))" }.joined(separator: ", ")
    }

    /// Interface names, for error messages.
    var nameSummary: String {
        interfaces.isEmpty ? "none" : interfaces.map(\.name).joined(separator: ", ")
    }
}
