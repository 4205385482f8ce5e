import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Testing

/// Interface names with control characters reach stdout too (issue 18):
/// `interfaces` printed the inet6 lines' zones raw, and `check` a zone given
/// by number, so a terminal acted on an ESC or a bidi override. Checked in a
/// network namespace of the test's own, whose veth pair it renames.
@Suite(.serialized, .enabled(if: getuid() == 0, "creating a network namespace needs root"))
struct EscapedOutputTests {
    static let escapeName = "a\u{1b}b"
    static let bidiName = "c\u{202e}d"

    /// Runs `ip` with `arguments`; throws with its output when it fails.
    static func ip(_ arguments: [String]) throws {
        let finished = try runDirectd(arguments, executable: "/usr/sbin/ip", timeout: 10)
        guard finished.status == 0 else { throw TestFailure("ip \(arguments): \(finished.stderr)") }
    }

    /// Runs the body with a namespace holding the two renamed interfaces, each
    /// up with a link-local address; removes the namespace on every exit path.
    func withNamespace(_ body: (String) throws -> Void) throws {
        let name = "directd-esc-\(getpid())"
        try? Self.ip(["netns", "del", name])
        try Self.ip(["netns", "add", name])
        defer { try? Self.ip(["netns", "del", name]) }
        try Self.ip(["-n", name, "link", "add", "e0", "type", "veth", "peer", "name", "e1"])
        try Self.ip(["-n", name, "link", "set", "e0", "name", Self.escapeName])
        try Self.ip(["-n", name, "link", "set", "e1", "name", Self.bidiName])
        for (device, address) in [(Self.escapeName, "fe80::1/64"), (Self.bidiName, "fe80::2/64")] {
            try Self.ip(["-n", name, "link", "set", device, "up"])
            try Self.ip(["-n", name, "-6", "addr", "add", address, "dev", device, "nodad"])
        }
        try body(name)
    }

    func inNamespace(_ namespace: String, _ arguments: [String]) throws -> Finished {
        try runDirectd(arguments, prefix: ["/usr/sbin/ip", "netns", "exec", namespace], timeout: 20)
    }

    static func isRaw(_ text: String) -> Bool {
        text.unicodeScalars.contains { $0 == "\u{1b}" || $0 == "\u{202e}" }
    }

    @Test func interfacesPrintsEveryLineEscaped() throws {
        try withNamespace { namespace in
            let listed = try inNamespace(namespace, ["interfaces"])
            #expect(listed.status == 0, "\(listed.stderr)")
            #expect(!Self.isRaw(listed.stdout), "raw control characters on stdout: \(listed.stdout.debugDescription)")
            #expect(listed.stdout.contains("fe80::1%a\\u{1b}b/64"), "\(listed.stdout)")
            #expect(listed.stdout.contains("fe80::2%c\\u{202e}d/64"), "\(listed.stdout)")
        }
    }

    @Test func checkPrintsAZoneGivenByNumberEscaped() throws {
        try withNamespace { namespace in
            let listed = try inNamespace(namespace, ["interfaces"])
            // "3: a\u{1b}b": the index of the interface with ESC in its name.
            let line = try #require(listed.stdout.split(separator: "\n").first { $0.hasSuffix(": a\\u{1b}b") })
            let index = try #require(line.split(separator: ":").first)
            let checked = try inNamespace(namespace, ["check", "--port", "21118", "--bind-interface", "fe80::1%\(index)"])
            #expect(checked.status == 0, "\(checked.stderr)")
            #expect(!Self.isRaw(checked.stdout), "raw control characters on stdout: \(checked.stdout.debugDescription)")
            #expect(checked.stdout == "listen [fe80::1%a\\u{1b}b]:21118\n", "\(checked.stdout.debugDescription)")
        }
    }
}
