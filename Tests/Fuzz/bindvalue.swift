// Fuzz target: a bind value, read by BindValue(parsing:) and resolved by BindPlan
// against made-up interface tables (never this machine's).
//
// Besides "no crash", every plan is checked for widening: a listener on an address
// or wildcard that the value did not ask for. The reference reads the value
// independently (glibc's inet_pton for addresses) and traps on any target that is
// not justified by one of the value's elements.
import UVBind

// `Fixtures` (the resolver tests' made-up machine, Tests/UVBindTests/Fixtures.swift)
// is compiled into this target by the Makefile: the same tables, not a copy.
private let machine = Fixtures.machine
private let ipv4Only = Fixtures.ipv4Only
private func v6(_ text: String) -> IPAddress { Fixtures.v6(text) }
private func entry(_ name: String, _ index: UInt32, _ ip: IPAddress, _ prefix: Int,
                   loopback: Bool = false) -> InterfaceAddress {
    Fixtures.entry(name, index, ip, prefix, loopback: loopback)
}

/// No IPv4 at all; a numeric-looking interface name.
private let ipv6Only = InterfaceTable(
    interfaces: [("lo", 1), ("eth0", 2), ("10", 7)],
    addresses: [
        entry("lo", 1, v6("::1"), 128, loopback: true),
        entry("eth0", 2, v6("2001:db8::10"), 64),
        entry("eth0", 2, v6("fe80::2"), 64),
        entry("10", 7, v6("2001:db8:a::1"), 64),
    ])

/// Every interface down: no address at all.
private let allDown = InterfaceTable(interfaces: [("lo", 1), ("eth0", 2)], addresses: [])

private let tables = [("machine", machine), ("ipv4Only", ipv4Only), ("ipv6Only", ipv6Only), ("allDown", allDown)]
private let port: UInt16 = 21118

/// An address with the interface index it is bound on (0 unless link-local).
private struct Scoped: Hashable {
    var ip: ReferenceAddress
    var scope: UInt32
}

/// What the value asks for, read independently of UVBind.
private struct Request {
    /// Only white space: both wildcards, each optional.
    var everything = false
    var anyIPv4 = false
    var anyIPv6 = false
    /// Addresses named by an element, or held by an interface an element names.
    var addresses: Set<Scoped> = []

    init(_ text: String, table: InterfaceTable) {
        let value = trimmed(text)
        guard !value.isEmpty else { everything = true; return }
        for piece in value.split(separator: ",", omittingEmptySubsequences: false) {
            var token = Substring(trimmed(piece))
            let bracketed = token.hasPrefix("[") && token.hasSuffix("]") && token.count >= 2
            if bracketed { token = token.dropFirst().dropLast() }
            let parts = token.split(separator: "%", maxSplits: 1, omittingEmptySubsequences: false)
            let address = parts[0], zone = parts.count == 2 ? String(parts[1]) : nil
            if !bracketed, zone == nil, let ip = ReferenceAddress(ipv4: address) {
                if ip.isAny { anyIPv4 = true } else { addresses.insert(Scoped(ip: ip, scope: 0)) }
            } else if let ip = ReferenceAddress(ipv6: address) {
                if let mapped = ip.ipv4Mapped {
                    // ::ffff:0.0.0.0 asks for no wildcard: it must be refused.
                    if !mapped.isAny { addresses.insert(Scoped(ip: mapped, scope: 0)) }
                } else if ip.isAny {
                    if zone == nil { anyIPv6 = true }
                } else if !ip.isLinkLocal {
                    addresses.insert(Scoped(ip: ip, scope: 0))
                } else if let zone {
                    // The zone as written: an index, or an interface name.
                    if let index = UInt32(zone), zone.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) {
                        addresses.insert(Scoped(ip: ip, scope: index))
                    } else if let index = table.interfaces.first(where: { $0.name == zone })?.index {
                        addresses.insert(Scoped(ip: ip, scope: index))
                    }
                } else {
                    // No zone: allowed only when exactly one interface holds it.
                    let holders = table.addresses.filter { reference($0.ip) == ip }
                    if holders.count == 1 { addresses.insert(Scoped(ip: ip, scope: holders[0].index)) }
                }
            } else {
                for held in table.addresses where held.interface == String(token) {
                    let ip = reference(held.ip)
                    addresses.insert(Scoped(ip: ip, scope: ip.isLinkLocal ? held.index : 0))
                }
            }
        }
    }
}

private func reference(_ ip: IPAddress) -> ReferenceAddress {
    switch ip {
    case .v4(let a): ReferenceAddress(a.value)
    case .v6(let a): ReferenceAddress(high: a.high, low: a.low)
    }
}

private func check(_ plan: BindPlan, for text: String, on tableName: String, _ table: InterfaceTable) {
    let request = Request(text, table: table)
    let context = "value \(text.debugDescription) on table \(tableName), targets \(plan.targets.map(\.address))"
    invariant(!plan.targets.isEmpty, "a plan without targets: \(context)")
    invariant(Set(plan.targets.map(\.address)).count == plan.targets.count, "duplicate targets: \(context)")
    let exactWildcards = Set(plan.targets.filter { $0.address.ip.isAny && !$0.optional }.map(\.address.family))
    for target in plan.targets {
        let address = target.address, ip = reference(address.ip)
        invariant(address.port == port, "port \(address.port) instead of \(port): \(context)")
        invariant(target.ipv6Only == (address.family == .ipv6), "an IPv6 target that is not IPv6-only: \(context)")
        invariant(target.optional == request.everything,
                  "optional is \(target.optional) for \(address) but the value is\(request.everything ? "" : " not") empty: \(context)")
        if address.ip.isAny {
            let asked = request.everything || (address.family == .ipv4 ? request.anyIPv4 : request.anyIPv6)
            invariant(asked, "WIDENING: wildcard \(address) that the value did not ask for: \(context)")
            continue
        }
        invariant(request.addresses.contains(Scoped(ip: ip, scope: address.scopeID)),
                  "WIDENING: \(address) (scope \(address.scopeID)) is not named by the value: \(context)")
        let held = table.addresses.contains { $0.ip == address.ip }
        let loopbackPrefix = ip.isIPv4 && ip.bytes[0] == 127
            && table.addresses.contains { $0.isInternal && $0.ip == .v4(.loopback) }
        invariant(held || loopbackPrefix, "\(address) is not an address of the table: \(context)")
        invariant(!exactWildcards.contains(address.family), "\(address) is listed beside its family's wildcard: \(context)")
        if ip.isLinkLocal {
            invariant(address.scopeID != 0, "link-local \(address) without a scope: \(context)")
            invariant(table.addresses.contains { $0.ip == address.ip && $0.index == address.scopeID },
                      "link-local \(address) on an interface that does not hold it: \(context)")
            invariant(address.zone == table.name(ofIndex: address.scopeID), "zone and scope disagree for \(address): \(context)")
        } else {
            invariant(address.scopeID == 0 && address.zone == nil, "a scope on \(address), which is not link-local: \(context)")
        }
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzBindValue(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = fuzzText(data, size)
    let value: BindValue
    do {
        value = try BindValue(parsing: text)
    } catch {
        #if CHECK_ESCAPED_MESSAGES
        invariant(!containsControlCharacter(error.description), "a raw control character in \(error.description.debugDescription)")
        #endif
        return 0
    }
    for (name, table) in tables {
        do {
            let plan = try BindPlan(value, port: port, interfaces: table)
            check(plan, for: text, on: name, table)
        } catch {
            #if CHECK_ESCAPED_MESSAGES
            invariant(!containsControlCharacter(error.description), "a raw control character in \(error.description.debugDescription)")
            #endif
            #if CHECK_SYNTAX_BEFORE_MACHINE
            // uvbind.h: every syntax check runs on every element before the machine is consulted.
            invariant(error.kind != .invalidFormat && error.step != .parse,
                      "a format error from the resolver, after BindValue(parsing:) accepted \(text.debugDescription) (table \(name)): \(error)")
            #endif
        }
    }
    return 0
}
