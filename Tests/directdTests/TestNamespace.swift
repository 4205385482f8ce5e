import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A network namespace a test creates with `ip netns`, for interfaces it may
/// not add to the host (renamed, with odd addresses); removed on every exit
/// path. Needs root.
enum TestNamespace {
    /// Runs `ip` with `arguments`; throws with its output when it fails.
    static func ip(_ arguments: [String]) throws {
        let finished = try runDirectd(arguments, executable: "/usr/sbin/ip", timeout: 10)
        guard finished.status == 0 else { throw TestFailure("ip \(arguments): \(finished.stderr)") }
    }

    /// Creates the namespace `directd-TAG-PID`, runs each `ip -n NS ...` of
    /// `setup` in it, then the body with its name; deletes it afterwards.
    static func with(_ tag: String, setup: [[String]], _ body: (String) throws -> Void) throws {
        let name = "directd-\(tag)-\(getpid())"
        try? ip(["netns", "del", name])
        try ip(["netns", "add", name])
        defer { try? ip(["netns", "del", name]) }
        for step in setup { try ip(["-n", name] + step) }
        try body(name)
    }

    /// Runs directd with `arguments` inside the namespace, to completion.
    static func directd(in namespace: String, _ arguments: [String]) throws -> Finished {
        try runDirectd(arguments, prefix: ["/usr/sbin/ip", "netns", "exec", namespace], timeout: 20)
    }
}
