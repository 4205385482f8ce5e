// Fuzz target: the whitelist option, read by AllowList(parsing:) and matched with
// allows(_:).
//
// A naive reference reads the same text with glibc's inet_pton and matches a peer by
// comparing prefix bits one at a time. The two must agree on every peer tried: the
// entries' own addresses, the addresses just inside and just outside each prefix,
// their IPv4-mapped forms, fixed edge cases and addresses made of the input's bytes.
@testable import directd
import UVBind

/// One entry as the reference reads it: IPv4-mapped prefixes become IPv4, as the
/// README says peers and entries are compared.
private struct Entry {
    var ip: ReferenceAddress
    var length: Int
}

/// nil where the text is not a valid list (the reference refuses what it cannot read).
/// RustDesk's reading: entries split on commas, white space around them and
/// empty ones ignored; an entry of exactly `0.0.0.0`, or no entry at all, lets
/// every client in (`everyone`).
private func referenceEntries(_ text: String) -> (entries: [Entry], everyone: Bool)? {
    var entries: [Entry] = []
    var everyone = false
    for piece in text.split(separator: ",", omittingEmptySubsequences: false) {
        let entry = trimmed(piece)
        if entry.isEmpty { continue }
        if entry == "0.0.0.0" {
            everyone = true
            continue
        }
        let parts = entry.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard var ip = ReferenceAddress(ipv4: parts[0]) ?? ReferenceAddress(ipv6: parts[0]) else { return nil }
        let bits = ip.bytes.count * 8
        var length = bits
        if parts.count == 2 {
            let digits = parts[1].utf8.drop { $0 == UInt8(ascii: "0") }
            guard !parts[1].isEmpty, parts[1].utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), digits.count <= 3
            else { return nil }
            length = digits.reduce(0) { $0 * 10 + Int($1 - 0x30) }
            guard length <= bits else { return nil }
        }
        if let mapped = ip.ipv4Mapped {
            guard length >= 96 else { return nil }
            ip = mapped
            length -= 96
        }
        // Host bits set after the prefix are refused, not silently cleared.
        guard !(length..<(ip.bytes.count * 8)).contains(where: ip.isSet) else { return nil }
        entries.append(Entry(ip: ip, length: length))
    }
    return (entries, everyone || entries.isEmpty)
}

private func referenceAllows(_ entries: [Entry], _ peer: ReferenceAddress) -> Bool {
    let peer = peer.ipv4Mapped ?? peer
    return entries.contains { $0.ip.isIPv4 == peer.isIPv4 && $0.ip.sharesPrefix(with: peer, length: $0.length) }
}

private func ipAddress(_ address: ReferenceAddress) -> IPAddress {
    if address.isIPv4 {
        return .v4(IPv4Address(address.bytes.reduce(UInt32(0)) { $0 << 8 | UInt32($1) }))
    }
    return .v6(IPv6Address(bytes: address.bytes))
}

private let fixedPeers = ["0.0.0.0", "255.255.255.255", "127.0.0.1", "192.0.2.7", "::", "::1",
                          "::ffff:127.0.0.1", "::ffff:0.0.0.0", "fe80::1", "2001:db8::1",
                          "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"]
    .map { ReferenceAddress(ipv4: $0) ?? ReferenceAddress(ipv6: $0)! }

/// Addresses near the edges of the entries (the first 16 entries; the rest are
/// matched by the fixed and input-derived peers only, to bound the time per input).
private func peers(near entries: [Entry], input: UnsafeBufferPointer<UInt8>) -> [ReferenceAddress] {
    var peers = fixedPeers
    for entry in entries.prefix(16) {
        let bits = entry.ip.bytes.count * 8
        var near = [entry.ip]
        if entry.length > 0 { near.append(entry.ip.flipping(bit: entry.length - 1)) }
        if entry.length < bits { near.append(entry.ip.flipping(bit: bits - 1)) }
        peers += near
        // The same addresses as IPv4-mapped IPv6 peers.
        peers += near.filter(\.isIPv4).map { ReferenceAddress(bytes: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF] + $0.bytes) }
    }
    let raw = Array(input.prefix(16))
    peers.append(ReferenceAddress(bytes: Array((raw + [0, 0, 0, 0]).prefix(4))))
    peers.append(ReferenceAddress(bytes: Array((raw + [UInt8](repeating: 0, count: 16)).prefix(16))))
    return peers
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzAllowList(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = fuzzText(data, size)
    let list: AllowList
    do {
        list = try AllowList(parsing: text)
    } catch {
        #if CHECK_ESCAPED_MESSAGES
        invariant(!containsControlCharacter(error.description), "a raw control character in \(error.description.debugDescription)")
        #endif
        return 0
    }
    guard let (entries, everyone) = referenceEntries(text) else {
        invariant(false, "AllowList accepted \(text.debugDescription), which glibc's inet_pton does not read as a list of prefixes: \(list)")
        return 0
    }
    for peer in peers(near: entries, input: UnsafeBufferPointer(start: data, count: size)) {
        let expected = everyone || referenceAllows(entries, peer)
        invariant(list.allows(ipAddress(peer)) == expected,
                  "allows(\(peer)) is \(!expected), the reference says \(expected), for \(text.debugDescription) read as \(list)")
    }
    return 0
}
