import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Testing
import UVBind
@testable import directd

/// A socket the test creates, as a service manager would pass it. Made
/// without close-on-exec, as systemd passes them, so the test can see
/// `inspect` set it.
final class PassedSocket {
    let fd: Int32
    var port: UInt16 = 0

    init(family: Int32, type: Int32, address: String? = nil, port: UInt16 = 0, listen: Bool = true,
         v6Only: Bool? = nil, reusePort: Bool = false) throws {
        fd = socket(family, type, 0)
        guard fd >= 0 else { throw TestFailure("socket: \(String(cString: strerror(errno)))") }
        if let v6Only {
            var flag: Int32 = v6Only ? 1 : 0
            setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, &flag, socklen_t(MemoryLayout<Int32>.size))
        }
        if reusePort {
            var flag: Int32 = 1
            setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &flag, socklen_t(MemoryLayout<Int32>.size))
        }
        if let address {
            var hints = addrinfo()
            hints.ai_flags = AI_NUMERICHOST
            hints.ai_family = family
            var info: UnsafeMutablePointer<addrinfo>?
            guard getaddrinfo(address, String(port), &hints, &info) == 0, let info else {
                throw TestFailure("not a numeric address: \(address)")
            }
            defer { freeaddrinfo(info) }
            guard bind(fd, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0 else {
                throw TestFailure("bind \(address): \(String(cString: strerror(errno)))")
            }
            var storage = sockaddr_storage()
            var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
            _ = withUnsafeMutablePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
            }
            self.port = withUnsafePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { SocketAddress($0)?.port ?? 0 }
            }
        }
        if listen { guard Glibc.listen(fd, 4) == 0 else { throw TestFailure("listen: \(String(cString: strerror(errno)))") } }
    }

    static func tcp(_ address: String, port: UInt16 = 0, listen: Bool = true, v6Only: Bool? = nil,
                    reusePort: Bool = false) throws -> PassedSocket {
        try PassedSocket(family: address.contains(":") ? AF_INET6 : AF_INET, type: Int32(SOCK_STREAM.rawValue),
                         address: address, port: port, listen: listen, v6Only: v6Only, reusePort: reusePort)
    }

    deinit { Glibc.close(fd) }
}

struct SocketActivationTests {
    let pid = getpid()

    // MARK: The environment

    @Test func notActivated() throws {
        #expect(try SocketActivation.passedDescriptors([:], processID: pid) == nil)
        #expect(try SocketActivation.passedDescriptors(["LISTEN_FDS": "1"], processID: pid) == nil, "LISTEN_FDS alone is not for us")
        #expect(try SocketActivation.passedDescriptors(["LISTEN_PID": String(pid + 1), "LISTEN_FDS": "1"], processID: pid) == nil,
                "another process's sockets")
        #expect(try SocketActivation.passedDescriptors(["LISTEN_PID": String(pid), "LISTEN_FDS": "0"], processID: pid) == nil)
        #expect(try SocketActivation.passedDescriptors(["LISTEN_PID": String(pid)], processID: pid) == nil)
        #expect(try SocketActivation.inherited(environment: [:], processID: pid) == nil)
    }

    @Test func descriptorsFromThreeWithNames() throws {
        let passed = try #require(try SocketActivation.passedDescriptors(
            ["LISTEN_PID": String(pid), "LISTEN_FDS": "3", "LISTEN_FDNAMES": "web::admin"], processID: pid))
        #expect(passed.map(\.fd) == [3, 4, 5])
        #expect(passed.map(\.name) == ["web", nil, "admin"])
        let unnamed = try #require(try SocketActivation.passedDescriptors(["LISTEN_PID": String(pid), "LISTEN_FDS": "2"], processID: pid))
        #expect(unnamed.map(\.fd) == [3, 4] && unnamed.allSatisfy { $0.name == nil })
    }

    @Test(arguments: [
        (["LISTEN_PID": "self", "LISTEN_FDS": "1"], "LISTEN_PID \"self\" is not a process ID"),
        (["LISTEN_PID": "$", "LISTEN_FDS": "two"], "LISTEN_FDS \"two\""),
        (["LISTEN_PID": "$", "LISTEN_FDS": "-1"], "LISTEN_FDS \"-1\""),
        (["LISTEN_PID": "$", "LISTEN_FDS": "99999"], "LISTEN_FDS \"99999\""),
        (["LISTEN_PID": "$", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "a:b:c"], "names 3 descriptors, but LISTEN_FDS is 2"),
        (["LISTEN_PID": "$", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "a\nb:c"], "\"a\\nb:c\""),
    ])
    func brokenEnvironment(_ environment: [String: String], _ message: String) {
        let environment = environment.mapValues { $0 == "$" ? String(pid) : $0 }
        do {
            _ = try SocketActivation.passedDescriptors(environment, processID: pid)
            Issue.record("accepted \(environment)")
        } catch {
            #expect(error.description.contains(message), "\(error)")
        }
    }

    // MARK: Each descriptor

    @Test func listeningTCPPasses() throws {
        let socket = try PassedSocket.tcp("127.0.0.1")
        #expect(fcntl(socket.fd, F_GETFD) & FD_CLOEXEC == 0)
        let inherited = try SocketActivation.inspect(fd: socket.fd, name: "directd")
        #expect(inherited.address == SocketAddress(ip: .v4(.loopback), port: socket.port))
        #expect(!inherited.ipv6Only && !inherited.isDualStack)
        #expect(fcntl(socket.fd, F_GETFD) & FD_CLOEXEC != 0, "close-on-exec is set")
        #expect(SocketActivation.describe([inherited]) == ["would adopt fd \(socket.fd) (directd) 127.0.0.1:\(socket.port)"])
    }

    @Test func ipv6OnlyIsReported() throws {
        let only = try PassedSocket.tcp("::1", v6Only: true)
        let both = try PassedSocket.tcp("::", v6Only: false)
        let inheritedOnly = try SocketActivation.inspect(fd: only.fd, name: nil)
        let inheritedBoth = try SocketActivation.inspect(fd: both.fd, name: nil)
        #expect(inheritedOnly.ipv6Only && !inheritedOnly.isDualStack)
        #expect(inheritedOnly.address.description == "[::1]:\(only.port)")
        #expect(!inheritedBoth.ipv6Only && inheritedBoth.isDualStack)
        #expect(inheritedBoth.description == "fd \(both.fd) [::]:\(both.port) (IPv4 and IPv6)")
    }

    /// An IPv6 socket on an IPv4-mapped address: `check` said `would adopt`
    /// and exited 0, serve failed with 70. Both refuse it now, with 78.
    @Test func anIPv4MappedSocketIsRefusedByInspect() throws {
        let mapped = try PassedSocket.tcp("::ffff:127.0.0.1", v6Only: false)
        let error = #expect(throws: SocketActivationError.self) { try SocketActivation.inspect(fd: mapped.fd, name: nil) }
        #expect(error?.description.contains("listens on [::ffff:127.0.0.1]:\(mapped.port), an IPv4-mapped IPv6 address") == true,
                "\(error?.description ?? "")")
        #expect(error?.description.contains("listen on 127.0.0.1:\(mapped.port) instead") == true)
    }

    @Test(arguments: [["check"], ["serve"], []])
    func anIPv4MappedSocketIsRefusedByCheckAndServeAlike(_ command: [String]) throws {
        // Binds one, puts it on descriptor 3 and execs directd (same pid) with LISTEN_FDS.
        let helper = """
            import os, socket, sys
            s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            s.bind(("::ffff:127.0.0.1", 0))
            s.listen(4)
            os.dup2(s.fileno(), 3)
            os.set_inheritable(3, True)
            env = dict(os.environ, LISTEN_PID=str(os.getpid()), LISTEN_FDS="1", LISTEN_FDNAMES="mapped")
            os.execve(sys.argv[1], sys.argv[1:], env)
            """
        let finished = try runDirectd(command, prefix: ["/usr/bin/python3", "-c", helper], timeout: 20)
        #expect(finished.status == 78, "\(command): exit \(finished.status): \(finished.stderr)")
        #expect(finished.stderr.contains("an IPv4-mapped IPv6 address, which is not an address directd serves"), "\(finished.stderr)")
        #expect(!finished.stdout.contains("would adopt"), "\(finished.stdout)")
    }

    @Test func refusedDescriptors() throws {
        let notListening = try PassedSocket.tcp("127.0.0.1", listen: false)
        let udp = try PassedSocket(family: AF_INET, type: Int32(SOCK_DGRAM.rawValue), address: "127.0.0.1", listen: false)
        let unix = try PassedSocket(family: AF_UNIX, type: Int32(SOCK_STREAM.rawValue), listen: false)
        let file = open("/dev/null", O_RDONLY)
        defer { close(file) }
        let closed = open("/dev/null", O_RDONLY)
        close(closed)
        let cases: [(Int32, String)] = [
            (notListening.fd, "is a TCP socket that is not listening"),
            (udp.fd, "is a datagram (UDP) socket"),
            (unix.fd, "is a unix socket (AF_UNIX)"),
            (file, "is not a socket"),
            (closed, "is not an open descriptor"),
        ]
        for (fd, problem) in cases {
            do {
                let socket = try SocketActivation.inspect(fd: fd, name: "web")
                Issue.record("fd \(fd) accepted as \(socket)")
            } catch {
                #expect(error.description.contains("inherited fd \(fd) (web) \(problem)"), "\(error)")
            }
        }
    }

    // MARK: Against the bind value

    func inspect(_ sockets: PassedSocket...) throws -> [InheritedSocket] {
        try sockets.map { try SocketActivation.inspect(fd: $0.fd, name: "directd") }
    }

    @Test func exactMatchPasses() throws {
        let v4 = try PassedSocket.tcp("127.0.0.1")
        let v6 = try PassedSocket.tcp("::1", port: v4.port, v6Only: true)
        let sockets = try inspect(v4, v6)
        let plan = try BindPlan(value: "127.0.0.1,::1", port: v4.port)
        #expect(try SocketActivation.adopt(sockets, plan: plan) == sockets)
        #expect(try SocketActivation.adopt(sockets, plan: nil) == sockets, "no bind value: exactly the sockets given")
    }

    @Test func wildcardAgainstLoopbackIsRefusedNamingBoth() throws {
        // Listens on every interface for the few milliseconds of the test; no traffic.
        let wildcard = try PassedSocket.tcp("0.0.0.0")
        let plan = try BindPlan(value: "127.0.0.1", port: wildcard.port)
        let error = try #require(throws: SocketActivationError.self) {
            try SocketActivation.adopt(try inspect(wildcard), plan: plan)
        }
        #expect(error.description.contains("fd \(wildcard.fd) (directd) listens on 0.0.0.0:\(wildcard.port), wider than the bind value \"127.0.0.1\" (127.0.0.1:\(wildcard.port))"),
                "\(error)")
    }

    @Test func dualStackAgainstIPv6WildcardIsRefused() throws {
        let both = try PassedSocket.tcp("::", v6Only: false)
        let plan = try BindPlan(value: "::", port: both.port)
        let error = try #require(throws: SocketActivationError.self) {
            try SocketActivation.adopt(try inspect(both), plan: plan)
        }
        #expect(error.description.contains("[::]:\(both.port) (IPv4 and IPv6), wider than the bind value \"::\" ([::]:\(both.port) IPv6 only): set BindIPv6Only=ipv6-only"),
                "\(error)")
        let only = try PassedSocket.tcp("::", v6Only: true)
        let onlyPlan = try BindPlan(value: "::", port: only.port)
        #expect(try SocketActivation.adopt(try inspect(only), plan: onlyPlan).count == 1)
    }

    @Test func elsewhereAnotherPortAndMissingAreRefused() throws {
        let other = try PassedSocket.tcp("127.0.0.2")
        let error = try #require(throws: SocketActivationError.self) {
            try SocketActivation.adopt(try inspect(other), plan: try BindPlan(value: "127.0.0.1", port: other.port))
        }
        #expect(error.description.contains("listens on 127.0.0.2:\(other.port), outside the bind value \"127.0.0.1\""), "\(error)")
        #expect(error.description.contains("no inherited socket listens on 127.0.0.1:\(other.port)"), "\(error)")

        let loopback = try PassedSocket.tcp("127.0.0.1")
        let port = loopback.port == 65535 ? 65534 : loopback.port + 1
        let portError = try #require(throws: SocketActivationError.self) {
            try SocketActivation.adopt(try inspect(loopback), plan: try BindPlan(value: "127.0.0.1", port: port))
        }
        #expect(portError.description.contains("127.0.0.1:\(loopback.port), on another port than the bind value \"127.0.0.1\" (127.0.0.1:\(port))"),
                "\(portError)")

        let missing = try #require(throws: SocketActivationError.self) {
            try SocketActivation.adopt(try inspect(loopback), plan: try BindPlan(value: "127.0.0.1,::1", port: loopback.port))
        }
        #expect(missing.description == "refusing the inherited sockets: no inherited socket listens on [::1]:\(loopback.port), which the bind value \"127.0.0.1,::1\" (127.0.0.1:\(loopback.port), [::1]:\(loopback.port)) includes")
    }

    @Test func twoSocketsOnOneAddressAreRefused() throws {
        let first = try PassedSocket.tcp("127.0.0.1", reusePort: true)
        let second = try PassedSocket.tcp("127.0.0.1", port: first.port, reusePort: true)
        let error = try #require(throws: SocketActivationError.self) {
            try SocketActivation.adopt(try inspect(first, second), plan: try BindPlan(value: "127.0.0.1", port: first.port))
        }
        #expect(error.description.contains("fd \(second.fd) (directd) listens on 127.0.0.1:\(first.port) as fd \(first.fd) (directd) does"), "\(error)")
    }

    @Test func portZeroTakesAnyPortOfItsAddress() throws {
        let loopback = try PassedSocket.tcp("127.0.0.1")
        let sockets = try inspect(loopback)
        #expect(try SocketActivation.adopt(sockets, plan: try BindPlan(value: "127.0.0.1", port: 0)) == sockets)
    }

    @Test func emptyValueTakesEitherWildcard() throws {
        // The empty value's two wildcards are optional, as when directd binds them itself.
        let v4 = try PassedSocket.tcp("0.0.0.0")
        let plan = try BindPlan(value: "", port: v4.port)
        #expect(try SocketActivation.adopt(try inspect(v4), plan: plan).count == 1)
        #expect(throws: SocketActivationError.self) { try SocketActivation.adopt([], plan: plan) }
    }
}
