// Fuzz target: the direct-forward value, through its pure syntax step (no DNS).
//
// NOT BUILT YET: it needs `Upstream.Spec(parsing:)` in directd, with `host` and
// `port` (see `parse` below, the one line to adapt). Switch it on by adding
// `upstream` to FUZZ_TARGETS in the Makefile.
//
// Whatever is accepted must be what was written: no control character anywhere (a
// NUL once cut "localhost\0.attacker.example:19001" to localhost), the port exactly
// the decimal digits after the last colon, an IPv6 host only in brackets.
@testable import directd
import UVBind

private func parse(_ text: String) throws -> (host: String, port: UInt16) {
    let spec = try Upstream.Spec(parsing: text)
    return (spec.host, spec.port)
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
