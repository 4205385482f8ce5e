// Fuzz target: the direct-forward value, through its pure syntax step (no DNS).
//
// The entry point is `Upstream.Spec(parsing:)`, the syntax step with no DNS.
// (It was written before the entry point existed; `parse` adapts it.) Also
// `upstream` to FUZZ_TARGETS in the Makefile.
//
// Whatever is accepted must be what was written: no control character anywhere (a
// NUL once cut "localhost\0.attacker.example:19001" to localhost), the port exactly
// the decimal digits after the last colon, an IPv6 host only in brackets.
@testable import directd
import UVBind

/// The host as written in the value (inside the brackets for IPv6), after
/// checking that what the parser read is what that text says.
private func parse(_ text: String) throws -> (host: String, port: UInt16) {
    let spec = try Upstream.Spec(parsing: text)
    let value = trimmed(text)
    let written: String
    if value.hasPrefix("["), let close = value.firstIndex(of: "]") {
        written = String(value[value.index(after: value.startIndex)..<close])
    } else {
        written = value.lastIndex(of: ":").map { String(value[..<$0]) } ?? value
    }
    switch spec.host {
    case .ipv4(let address):
        invariant(ReferenceAddress(ipv4: written) == ReferenceAddress(ipv4: address.description),
                  "\(text.debugDescription) read as \(address)")
    case .ipv6(let address, let zone):
        let parts = written.split(separator: "%", maxSplits: 1, omittingEmptySubsequences: false)
        invariant(ReferenceAddress(ipv6: parts[0]) == ReferenceAddress(ipv6: address.description),
                  "\(text.debugDescription) read as \(address)")
        invariant(zone == (parts.count == 2 ? String(parts[1]) : nil), "\(text.debugDescription): zone \(zone ?? "none")")
    case .name(let name):
        invariant(name == written, "\(text.debugDescription) read as the name \(name.debugDescription)")
        invariant(ReferenceAddress(ipv4: name) == nil && ReferenceAddress(ipv6: name) == nil,
                  "\(text.debugDescription): an address read as a host name")
    }
    return (written, spec.port)
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzUpstream(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = fuzzText(data, size)
    let spec: (host: String, port: UInt16)
    do {
        spec = try parse(text)
    } catch {
        #if CHECK_ESCAPED_MESSAGES
        invariant(!containsControlCharacter("\(error)"), "a raw control character in \("\(error)".debugDescription)")
        #endif
        return 0
    }
    let value = trimmed(text), context = "\(text.debugDescription) read as host \(spec.host.debugDescription) port \(spec.port)"
    invariant(!containsControlCharacter(value), "accepted a control character: \(context)")
    invariant(!spec.host.isEmpty && spec.port != 0, "an empty host or port 0: \(context)")
    let digits = value.split(separator: ":", omittingEmptySubsequences: false).last.map(String.init) ?? ""
    invariant(digits.utf8.allSatisfy { $0 >= 0x30 && $0 <= 0x39 } && UInt16(digits) == spec.port,
              "the port is not the decimal number after the last colon: \(context)")
    if value.hasPrefix("[") {
        let inside = spec.host.split(separator: "%", maxSplits: 1).first.map(String.init) ?? ""
        invariant(ReferenceAddress(ipv6: inside) != nil, "a bracketed host that is not an IPv6 address: \(context)")
        invariant(value.hasPrefix("[\(spec.host)]:"), "the host is not what the brackets hold: \(context)")
    } else {
        invariant(!spec.host.contains(":"), "an IPv6 host without brackets: \(context)")
        invariant(value == "\(spec.host):\(digits)", "host and port are not the whole value: \(context)")
    }
    return 0
}
