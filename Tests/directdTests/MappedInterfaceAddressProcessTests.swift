import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Testing

/// An interface holding ::ffff:0.0.0.0 (the kernel allows adding it):
/// `--bind-interface IFACE` exited 70 with an unexpected EINVAL. Now the
/// mapped address is skipped with a warning, and an interface with nothing
/// else is the usual "no usable address" error (78). Never wider.
@Suite(.serialized, .enabled(if: getuid() == 0, "creating a network namespace needs root"))
struct MappedInterfaceAddressProcessTests {
    func withNamespace(_ body: (String) throws -> Void) throws {
        try TestNamespace.with("mapped", setup: [
            ["link", "add", "m0", "type", "veth", "peer", "name", "m1"],
            // No automatic link-local address: each interface holds only what the test gives it.
            ["link", "set", "m0", "addrgenmode", "none"],
            ["link", "set", "m1", "addrgenmode", "none"],
            ["link", "set", "m0", "up"],
            ["link", "set", "m1", "up"],
            ["addr", "add", "198.51.100.1/24", "dev", "m0"],
            ["-6", "addr", "add", "::ffff:0.0.0.0/128", "dev", "m0", "nodad"],
            ["-6", "addr", "add", "::ffff:0.0.0.0/128", "dev", "m1", "nodad"],
        ], body)
    }

    @Test func theMappedAddressIsSkippedAndTheOthersServed() throws {
        try withNamespace { namespace in
            let checked = try TestNamespace.directd(in: namespace, ["check", "--port", "21118", "--bind-interface", "m0"])
            #expect(checked.status == 0, "\(checked.stderr)")
            let lines = checked.stdout.split(separator: "\n")
            #expect(lines == ["listen 198.51.100.1:21118"], "\(checked.stdout)")
            #expect(!checked.stdout.contains("ffff"), "\(checked.stdout)")
            #expect(checked.stderr.contains("warning: interface m0 holds ::ffff:0.0.0.0, an IPv4-mapped address, which is not an address to listen on: skipped"),
                    "\(checked.stderr)")

            // Serving, too: it listens (and --port 0 with a bad listener would have exited 70).
            let served = try runDirectd(["--port", "0", "--bind-interface", "m0"],
                                        prefix: ["/usr/bin/timeout", "--preserve-status", "-s", "TERM", "2", "/usr/sbin/ip", "netns", "exec", namespace],
                                        timeout: 20)
            #expect(served.status == 0, "exit \(served.status): \(served.stderr)")
            #expect(served.stderr.contains("listening on 198.51.100.1:"), "\(served.stderr)")
            #expect(!served.stderr.contains("EINVAL"), "\(served.stderr)")
        }
    }

    @Test func anInterfaceWithOnlyAMappedAddressIsAClearError() throws {
        try withNamespace { namespace in
            let checked = try TestNamespace.directd(in: namespace, ["check", "--bind-interface", "m1"])
            #expect(checked.status == 78, "exit \(checked.status): \(checked.stderr)")
            #expect(checked.stderr.contains("it holds no usable address: only IPv4-mapped ones (::ffff:0.0.0.0)"), "\(checked.stderr)")
            #expect(checked.stdout.isEmpty)
        }
    }
}
