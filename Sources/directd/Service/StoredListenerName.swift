import UVBind

/// A listener's name in systemd's file descriptor store (`FDNAME=`), from
/// which a restarted directd knows, without guessing, where the socket it is
/// handed back was meant to listen: `tcp-127.0.0.1-21118`,
/// `tcp-[__1]-21118`, `tcp-[fe80__1%2]-21118`, `tcp-192.0.2.1-21118-dev-eth0`.
///
/// systemd accepts printable ASCII without `:` (its separator in
/// `LISTEN_FDNAMES`), at most 255 bytes (`fdname_is_valid`): an IPv6
/// address's colons are written `_`, its scope as the interface index, and a
/// device name's bytes outside `!`...`~` (and `%`) as `%XX`. Only a name that
/// reads back to itself is directd's; any other is a socket unit's.
struct StoredListenerName: Hashable, CustomStringConvertible {
    /// The address and port the socket listens on (the zone's name is not kept).
    let address: SocketAddress
    /// The interface it is bound to (`SO_BINDTODEVICE`), if any.
    let device: String?

    static let prefix = "tcp-"

    init(address: SocketAddress, device: String?) {
        self.address = SocketAddress(ip: address.ip, port: address.port, scopeID: address.scopeID)
        self.device = device
    }

    /// The `FDNAME=` value.
    var description: String {
        let host: String
        switch address.ip {
        case .v4(let ip):
            host = ip.description
        case .v6(let ip):
            let text = ip.description.replacingColons()
            host = "[\(text)\(address.scopeID != 0 ? "%\(address.scopeID)" : "")]"
        }
        return Self.prefix + host + "-\(address.port)" + (device.map { "-dev-" + Self.escaped($0) } ?? "")
    }

    /// Reads a name back; nil for any name that is not exactly one of directd's.
    init?(parsing name: String) {
        guard name.hasPrefix(Self.prefix), name.utf8.count <= 255 else { return nil }
        var rest = Substring(name.dropFirst(Self.prefix.count))
        let ip: IPAddress
        var scopeID: UInt32 = 0
        if rest.hasPrefix("[") {
            guard let close = rest.firstIndex(of: "]") else { return nil }
            var inside = rest[rest.index(after: rest.startIndex)..<close]
            if let percent = inside.firstIndex(of: "%") {
                guard let scope = UInt32(inside[inside.index(after: percent)...]), scope != 0 else { return nil }
                scopeID = scope
                inside = inside[..<percent]
            }
            guard let v6 = IPv6Address(String(inside.map { $0 == "_" ? ":" : $0 })) else { return nil }
            ip = .v6(v6)
            rest = rest[rest.index(after: close)...]
        } else {
            guard let dash = rest.firstIndex(of: "-"), let v4 = IPv4Address(rest[..<dash]) else { return nil }
            ip = .v4(v4)
            rest = rest[dash...]
        }
        guard rest.hasPrefix("-") else { return nil }
        rest = rest.dropFirst()
        let portText = rest.prefix { $0 != "-" }
        guard let port = UInt16(portText) else { return nil }
        rest = rest.dropFirst(portText.count)
        var device: String?
        if !rest.isEmpty {
            guard rest.hasPrefix("-dev-"), let unescaped = Self.unescaped(rest.dropFirst(5)), !unescaped.isEmpty else { return nil }
            device = unescaped
        }
        self.init(address: SocketAddress(ip: ip, port: port, scopeID: scopeID), device: device)
        // One spelling per listener: anything else (leading zeros, another
        // form of the address) is not a name directd gave.
        guard description == name else { return nil }
    }

    /// Whether a socket for `target` may be this one: the same address, scope
    /// and device, and the same port unless the target lets the kernel choose.
    func names(_ target: ListenTarget) -> Bool {
        address.ip == target.address.ip && address.scopeID == target.address.scopeID
            && (target.address.port == 0 || address.port == target.address.port)
            && device == target.device
    }

    private static func isPlain(_ byte: UInt8) -> Bool {
        byte > 0x20 && byte < 0x7F && byte != UInt8(ascii: ":") && byte != UInt8(ascii: "%")
    }

    private static func escaped(_ device: String) -> String {
        var text = ""
        for byte in device.utf8 {
            if isPlain(byte) {
                text.append(Character(Unicode.Scalar(byte)))
            } else {
                let hex = String(byte, radix: 16, uppercase: true)
                text += "%" + (hex.count == 1 ? "0" : "") + hex
            }
        }
        return text
    }

    private static func unescaped(_ text: Substring) -> String? {
        var bytes: [UInt8] = []
        var index = text.utf8.startIndex
        let utf8 = text.utf8
        while index != utf8.endIndex {
            let byte = utf8[index]
            if byte == UInt8(ascii: "%") {
                let start = utf8.index(after: index)
                guard let end = utf8.index(start, offsetBy: 2, limitedBy: utf8.endIndex),
                      let value = UInt8(String(decoding: utf8[start..<end], as: UTF8.self), radix: 16) else { return nil }
                bytes.append(value)
                index = end
            } else {
                bytes.append(byte)
                index = utf8.index(after: index)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

private extension String {
    func replacingColons() -> String { String(map { $0 == ":" ? "_" : $0 }) }
}
