/// One socket to open: an address and port, and whether failing to open it is fatal.
public struct ListenTarget: Hashable, Sendable {
    public let address: SocketAddress
    /// Only for the empty value: a family the host cannot open is skipped with a
    /// warning, as long as the other family opens.
    public let optional: Bool
    /// The interface the socket is bound to with `SO_BINDTODEVICE` (before the
    /// bind), so that packets for the address arriving on any other interface are
    /// refused; nil binds to no device (the weak host model).
    public let device: String?

    public init(address: SocketAddress, optional: Bool = false, device: String? = nil) {
        self.address = address
        self.optional = optional
        self.device = device
    }

    /// IPv6 listeners never accept IPv4 (`UV_TCP_IPV6ONLY`): `::` means IPv6 only.
    public var ipv6Only: Bool { address.family == .ipv6 }

    /// The same target on another port.
    func with(port: UInt16) -> ListenTarget {
        var address = self.address
        address.port = port
        return ListenTarget(address: address, optional: optional, device: device)
    }
}

/// A bind value matched to this machine: the exact sockets to open, or an error.
public struct BindPlan: Sendable {
    /// The bind value as configured.
    public let value: String
    public let port: UInt16
    public let targets: [ListenTarget]
    /// What the resolver decided on the operator's behalf (a zone it inferred,
    /// a family it left out, a mapped address it bound as IPv4), for the log.
    public let notes: [BindNote]
    /// Only when resolving with `waiting: true`: the elements that name nothing
    /// on the machine yet (an interface not there, an address not assigned), each
    /// as the error it would be otherwise. Their targets are simply absent.
    public let waiting: [BindError]

    /// Reads `value` and resolves it against `interfaces` (the machine's by default).
    public init(value: String, port: UInt16, interfaces: InterfaceTable? = nil,
                bindToDevice: Bool = false) throws(BindError) {
        let parsed = try BindValue(parsing: value)
        let table = if let interfaces { interfaces } else { try InterfaceTable.current(resolving: value) }
        try self.init(parsed, port: port, interfaces: table, bindToDevice: bindToDevice)
    }

    /// A plan with targets given as they are (tests use it to open what the
    /// resolver would refuse).
    init(value: String, port: UInt16, targets: [ListenTarget], notes: [BindNote] = [], waiting: [BindError] = []) {
        self.value = value
        self.port = port
        self.targets = targets
        self.notes = notes
        self.waiting = waiting
    }

    /// Resolves a value that has been read.
    ///
    /// - `bindToDevice`: every target is bound (`SO_BINDTODEVICE`) to the
    ///   interface that holds its address, or to the named interface for an
    ///   interface-name element. A wildcard names no interface, so the empty
    ///   value, `0.0.0.0` and `::` are then refused as a format error.
    /// - `waiting`: for following the network. An element that names nothing
    ///   here yet is listed in `waiting` instead of failing the whole value. A
    ///   malformed value still throws.
    public init(_ value: BindValue, port: UInt16, interfaces: InterfaceTable,
                bindToDevice: Bool = false, waiting waitForMissing: Bool = false) throws(BindError) {
        if bindToDevice {
            for (text, element) in value.elements where element.isWildcard {
                throw BindError(kind: .invalidFormat, value: value.text, element: text, step: .parse,
                                detail: "\(text.isEmpty ? "the empty value (every interface)" : text) names no interface, so bind-to-device has no interface to bind it to",
                                remedy: "Name the addresses or interfaces to listen on, or turn bind-to-device off")
            }
        }
        var resolver = Resolver(value: value.text, port: port, table: interfaces, bindToDevice: bindToDevice)
        var waiting: [BindError] = []
        for (text, element) in value.elements {
            do throws(BindError) {
                try resolver.add(element, text: text)
            } catch {
                guard waitForMissing, error.mayAppearLater else { throw error }
                waiting.append(error.naming(element: text))
            }
        }
        self.value = value.text
        self.port = port
        self.targets = resolver.deduplicated()
        self.notes = resolver.notes
        self.waiting = waiting
    }
}

extension BindValue.Element {
    /// The empty value, `0.0.0.0` or `::`.
    var isWildcard: Bool {
        switch self {
        case .allInterfaces: true
        case .ipv4(let address): address.isAny
        case .ipv6(let address, _): address.isAny
        case .interface: false
        }
    }
}

extension BindError {
    /// Whether the machine may come to match this later: an interface or address
    /// that is not there yet, rather than a value that can never be right.
    var mayAppearLater: Bool {
        switch kind {
        case .unknownInterface, .unknownZone, .interfaceWithoutAddresses, .addressNotAvailable,
             .linkLocalWithoutZone, .familyNotSupported: true
        case .invalidFormat, .invalidPort, .addressInUse, .permissionDenied, .system: false
        }
    }

    /// The same error, naming the element it is about.
    func naming(element text: String) -> BindError {
        BindError(kind: kind, value: value, element: element ?? text, address: address, step: step,
                  code: code, detail: detail, remedy: remedy)
    }
}

/// Turns elements into targets, one at a time, collecting notes.
private struct Resolver {
    let value: String
    let port: UInt16
    let table: InterfaceTable
    var targets: [ListenTarget] = []
    var notes: [BindNote] = []
    let bindToDevice: Bool

    init(value: String, port: UInt16, table: InterfaceTable, bindToDevice: Bool) {
        self.value = value
        self.port = port
        self.table = table
        self.bindToDevice = bindToDevice
    }

    /// The interface a target is bound to with bind-to-device: the one that holds
    /// the address (for 127.0.0.2, the loopback whose prefix covers it).
    private func device(for address: SocketAddress) -> String? {
        guard bindToDevice else { return nil }
        if address.scopeID != 0 { return table.name(ofIndex: address.scopeID) ?? address.zone }
        if let holder = table.addresses.first(where: { $0.ip == address.ip }) { return holder.interface }
        return table.addresses.first { entry in
            guard entry.isInternal, case .v4(let held) = entry.ip, case .v4(let wanted) = address.ip else { return false }
            return held.sameNetwork(as: wanted, prefixLength: entry.prefixLength)
        }?.interface
    }

    mutating func add(_ element: BindValue.Element, text: String) throws(BindError) {
        switch element {
        case .allInterfaces:
            addAllInterfaces()
        case .ipv4(let address):
            try addIPv4(address, text: text)
        case .ipv6(let address, let zone):
            try addIPv6(address, zone: zone, text: text)
        case .interface(let name):
            try addInterface(name, text: text)
        }
    }

    /// `0.0.0.0` and `::`, leaving out a family the host has no address of at all
    /// (IPv6 disabled, say) when the other family has addresses.
    private mutating func addAllInterfaces() {
        let v4 = table.hasFamily(.ipv4), v6 = table.hasFamily(.ipv6)
        if v4 || !v6 {
            targets.append(ListenTarget(address: SocketAddress(ip: .v4(.any), port: port), optional: true))
        } else {
            notes.append(.warning("IPv4 is not available on this host (no interface has an IPv4 address); listening on IPv6 only"))
        }
        if v6 || !v4 {
            targets.append(ListenTarget(address: SocketAddress(ip: .v6(.any), port: port), optional: true))
        } else {
            notes.append(.warning("IPv6 is not available on this host (no interface has an IPv6 address); listening on IPv4 only"))
        }
    }

    private mutating func addIPv4(_ address: IPv4Address, text: String) throws(BindError) {
        let target = SocketAddress(ip: .v4(address), port: port)
        try requireFamily(of: target)
        if !address.isAny, !table.isLocal(.v4(address), scopeID: 0) {
            throw notAvailable(target)
        }
        targets.append(ListenTarget(address: target, device: device(for: target)))
    }

    private mutating func addIPv6(_ address: IPv6Address, zone: String?, text: String) throws(BindError) {
        // BindValue has refused ::ffff:0.0.0.0, zones on mapped addresses and
        // zones on anything but link-local, whatever the order of the elements.
        if let mapped = address.ipv4Mapped {
            notes.append(.info("\(address) is an IPv4-mapped address: listening on \(mapped) (IPv4)"))
            return try addIPv4(mapped, text: text)
        }
        var target = SocketAddress(ip: .v6(address), port: port)
        try requireFamily(of: target)
        if let zone {
            guard let index = table.index(ofZone: zone) else {
                throw BindError(kind: .unknownZone, value: value, element: text, step: .resolve,
                                detail: "no interface \(zone.allDecimal ? "has index" : "is named") \(zone)",
                                remedy: "Interfaces here: \(table.interfaceIndexSummary). Write the zone as fe80::1%eth0")
            }
            target.scopeID = index
            target.zone = table.name(ofIndex: index)
        } else if address.isLinkLocal {
            let holders = table.addresses.filter { $0.ip == .v6(address) }
            // No interface holds it: no zone would help.
            guard !holders.isEmpty else { throw notAvailable(target) }
            guard holders.count == 1, let holder = holders.first else {
                throw linkLocalWithoutZone(address, text: text, holders: holders)
            }
            target.scopeID = holder.index
            target.zone = holder.interface
            notes.append(.info("\(address) is held by \(holder.interface) only: listening on \(target.host)"))
        }
        if !address.isAny, !table.isLocal(target.ip, scopeID: target.scopeID) {
            throw notAvailable(target)
        }
        targets.append(ListenTarget(address: target, device: device(for: target)))
    }

    private mutating func addInterface(_ name: String, text: String) throws(BindError) {
        let held = table.addresses(of: name)
        guard table.index(ofInterface: name) != nil || !held.isEmpty else {
            throw BindError(kind: .unknownInterface, value: value, element: name, step: .resolve,
                            detail: "no local interface has that name, and host names are not resolved",
                            remedy: "Expected an IP address of this machine or one of its interfaces: \(table.nameSummary) (ip addr show lists their addresses)")
        }
        guard !held.isEmpty else {
            throw BindError(kind: .interfaceWithoutAddresses, value: value, element: name, step: .resolve,
                            detail: "it holds no IP address, or it is down, so there is nothing to listen on",
                            remedy: "Bring it up and give it an address (ip link set \(name) up; ip addr add ... dev \(name)), or choose another interface")
        }
        // An IPv4-mapped IPv6 address on an interface (the kernel lets one add
        // ::ffff:0.0.0.0) is not an IPv6 address to listen on, and the IPv4 it
        // stands for is not one the interface holds (for ::ffff:0.0.0.0 it would
        // be every IPv4 address): skipped with a warning, never widened.
        let mapped = held.filter { if case .v6(let ip) = $0.ip { ip.ipv4Mapped != nil } else { false } }
        for entry in mapped {
            notes.append(.warning("interface \(name) holds \(entry.ip), an IPv4-mapped address, which is not an address to listen on: skipped"))
        }
        let usable = held.filter { entry in !mapped.contains { $0.ip == entry.ip } }
        guard !usable.isEmpty else {
            throw BindError(kind: .interfaceWithoutAddresses, value: value, element: name, step: .resolve,
                            detail: "it holds no usable address: only IPv4-mapped ones (\(mapped.map { "\($0.ip)" }.joined(separator: ", "))), which are not addresses to listen on",
                            remedy: "Give it an IPv4 or IPv6 address (ip addr add ... dev \(name)), or choose another interface")
        }
        for entry in usable {
            let scope = entry.ip.isLinkLocal ? entry.index : 0
            targets.append(ListenTarget(address: SocketAddress(
                ip: entry.ip, port: port, scopeID: scope, zone: scope == 0 ? nil : name),
                device: bindToDevice ? name : nil))
        }
    }

    /// The union of the targets, in order: exact duplicates dropped, and addresses
    /// of a family whose wildcard is also listed dropped too (`0.0.0.0` covers them,
    /// and the kernel would refuse the second bind with EADDRINUSE).
    mutating func deduplicated() -> [ListenTarget] {
        let wildcards = Set(targets.filter { $0.address.ip.isAny && !$0.optional }.map(\.address.family))
        var seen = Set<SocketAddress>(), result: [ListenTarget] = []
        for target in targets {
            let address = target.address
            if !address.ip.isAny, wildcards.contains(address.family) {
                notes.append(.info("\(address.host) is already covered by \(address.family == .ipv4 ? "0.0.0.0" : "::")"))
                continue
            }
            if seen.insert(address).inserted { result.append(target) }
        }
        return result
    }

    private func requireFamily(of target: SocketAddress) throws(BindError) {
        // A table with no address at all (every interface down) proves nothing; let
        // the kernel decide then.
        guard table.addresses.isEmpty || table.hasFamily(target.family) else {
            throw BindError.call(.resolve, failedWith: .familyNotSupported, value: value,
                                 address: target, interfaces: table)
        }
    }

    private func notAvailable(_ target: SocketAddress) -> BindError {
        BindError.call(.resolve, failedWith: .addressNotAvailable, value: value, address: target, interfaces: table)
    }

    private func linkLocalWithoutZone(_ address: IPv6Address, text: String,
                                      holders: [InterfaceAddress]) -> BindError {
        let candidates = holders.map(\.interface)
        return BindError(kind: .linkLocalWithoutZone, value: value, element: text, step: .resolve,
                         detail: "\(address) is held by \(candidates.count) interfaces (\(candidates.joined(separator: ", "))), so it is ambiguous",
                         remedy: "Name the interface after a \"%\", as in \(address)%\(candidates[0])")
    }
}

extension InterfaceTable {
    /// `lo (1), eth0 (2)`, for zone errors.
    var interfaceIndexSummary: String {
        interfaces.isEmpty ? "none" : interfaces.map { "\($0.name) (\($0.index))" }.joined(separator: ", ")
    }
}
