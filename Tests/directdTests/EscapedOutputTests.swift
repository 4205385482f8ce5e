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

    /// A namespace holding the two renamed interfaces, each up with a link-local address.
    func withNamespace(_ body: (String) throws -> Void) throws {
        try TestNamespace.with("esc", setup: [
            ["link", "add", "e0", "type", "veth", "peer", "name", "e1"],
            ["link", "set", "e0", "name", Self.escapeName],
            ["link", "set", "e1", "name", Self.bidiName],
            ["link", "set", Self.escapeName, "up"],
            ["link", "set", Self.bidiName, "up"],
            ["-6", "addr", "add", "fe80::1/64", "dev", Self.escapeName, "nodad"],
            ["-6", "addr", "add", "fe80::2/64", "dev", Self.bidiName, "nodad"],
        ], body)
    }

    func inNamespace(_ namespace: String, _ arguments: [String]) throws -> Finished {
        try TestNamespace.directd(in: namespace, arguments)
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
