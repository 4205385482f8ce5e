import CUV
#if canImport(Glibc)
import Glibc
#endif
import Testing
@_spi(Daemon) @testable import UVBind

/// Listeners opened for real on this machine's loopback, checked against the
/// kernel's own socket table and with real client connects.
@Suite(.serialized)
struct ListenerTests {
    /// Opens a plan on a fresh loop, runs `body`, closes everything and checks that
    /// the loop has no handle left (every listener's memory went through uv_close).
    func withListeners(_ value: String, port: UInt16 = 0,
                       _ body: (ListenerGroup, TestLoop) throws -> Void) throws {
        let loop = TestLoop()
        let plan = try BindPlan(value: value, port: port)
        let group = try ListenerGroup.open(plan, loop: loop.loop) { _, _ in }
        defer {
            group.close()
            #expect(loop.close() == 0, "a handle was left open")
        }
        try body(group, loop)
    }

    /// The socket table must hold exactly these listeners on the port.
    func expectListening(_ port: UInt16, _ expected: [String], sourceLocation: SourceLocation = #_sourceLocation) {
        let seen = ListeningSockets.on(port: port).map(\.description).sorted()
        #expect(seen == expected.sorted(), sourceLocation: sourceLocation)
    }

    @Test func ipv4LoopbackListensThereOnly() throws {
        try withListeners("127.0.0.1") { group, _ in
            let port = group.port
            #expect(port != 0, "the kernel's port is reported")
            #expect(group.listeners.map(\.address.description) == ["127.0.0.1:\(port)"])
            expectListening(port, ["127.0.0.1:\(port)"])
            #expect(connectResult(to: addr("127.0.0.1", port)) == 0)
            #expect(connectResult(to: addr("127.0.0.2", port)) == ECONNREFUSED)
        }
    }

    @Test func secondLoopbackAddressDoesNotAnswerOnTheFirst() throws {
        try withListeners("127.0.0.2") { group, _ in
            let port = group.port
            expectListening(port, ["127.0.0.2:\(port)"])
            #expect(connectResult(to: addr("127.0.0.2", port)) == 0)
            #expect(connectResult(to: addr("127.0.0.1", port)) == ECONNREFUSED)
        }
    }

    @Test(.enabled(if: hostHasIPv6Loopback, "needs ::1"))
    func ipv6LoopbackIsIPv6Only() throws {
        try withListeners("::1") { group, _ in
            let port = group.port
            expectListening(port, ["[::1]:\(port)"])
            #expect(connectResult(to: addr("::1", port)) == 0)
            #expect(connectResult(to: addr("127.0.0.1", port)) == ECONNREFUSED)
        }
    }

    @Test(.enabled(if: hostHasIPv6Loopback, "needs IPv6"))
    func ipv6WildcardDoesNotAcceptIPv4() throws {
        try withListeners("::") { group, _ in
            let port = group.port
            expectListening(port, ["[::]:\(port)"])
            #expect(connectResult(to: addr("::1", port)) == 0)
            // Without UV_TCP_IPV6ONLY, :: would take this connection as ::ffff:127.0.0.1.
            #expect(connectResult(to: addr("127.0.0.1", port)) == ECONNREFUSED)
        }
    }

    @Test(.enabled(if: hostHasIPv6Loopback, "needs IPv6"))
    func emptyValueListensOnBothWildcardsOnOnePort() throws {
        try withListeners("") { group, _ in
            let port = group.port
            expectListening(port, ["0.0.0.0:\(port)", "[::]:\(port)"])
            #expect(connectResult(to: addr("127.0.0.1", port)) == 0)
            #expect(connectResult(to: addr("::1", port)) == 0)
        }
    }

    @Test func interfaceNameListensOnEveryAddressItHolds() throws {
        let held = try InterfaceTable.current().addresses(of: "lo").map(\.ip)
        try withListeners("lo") { group, _ in
            let port = group.port
            #expect(Set(group.listeners.map(\.address.ip)) == Set(held))
            expectListening(port, held.map { SocketAddress(ip: $0, port: port).description })
            #expect(connectResult(to: addr("127.0.0.1", port)) == 0)
            #expect(connectResult(to: addr("127.0.0.2", port)) == ECONNREFUSED, "lo means 127.0.0.1, not 127/8")
        }
    }

    @Test func acceptedConnectionReachesTheHandler() throws {
        let loop = TestLoop()
        let plan = try BindPlan(value: "127.0.0.1", port: 0)
        var accepted: [SocketAddress] = []
        let client = HandleStorage.allocate(uv_tcp_t.self)
        #expect(uv_tcp_init(loop.loop, client) == 0)
        let group = try ListenerGroup.open(plan, loop: loop.loop) { listener, error in
            #expect(error == nil)
            #expect(listener.accept(into: HandleStorage.stream(client)) == nil)
            var storage = sockaddr_storage()
            var length = Int32(MemoryLayout<sockaddr_storage>.size)
            withUnsafeMutablePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                    _ = uv_tcp_getpeername(client, sa, &length)
                    if let peer = SocketAddress(sa) { accepted.append(peer) }
                }
            }
        }
        #expect(connectResult(to: addr("127.0.0.1", group.port)) == 0)
        loop.run(until: { !accepted.isEmpty })
        #expect(accepted.map(\.ip) == [.v4(.loopback)])
        HandleStorage.close(client)
        group.close()
        #expect(loop.close() == 0)
    }

    @Test func portInUseIsReportedFromListenAndNothingStaysOpen() throws {
        try withListeners("127.0.0.1") { first, loop in
            let port = first.port
            let plan = try BindPlan(value: "127.0.0.1", port: port)
            let error = #expect(throws: BindError.self) {
                try ListenerGroup.open(plan, loop: loop.loop) { _, _ in }.close()
            }
            #expect(error?.kind == .addressInUse)
            #expect(error?.step == .listen, "libuv defers EADDRINUSE to uv_listen")
            #expect(error?.code == .addressInUse)
            #expect(error?.description.contains("already listening on port \(port)") == true)
            expectListening(port, ["127.0.0.1:\(port)"])
        }
    }

    @Test func allOrNothingClosesWhatAlreadyOpened() throws {
        try withListeners("127.0.0.2") { blocker, loop in
            let port = blocker.port
            // 127.0.0.1 opens first, then 127.0.0.2 is taken: 127.0.0.1 must close again.
            let plan = try BindPlan(value: "127.0.0.1,127.0.0.2", port: port)
            let error = #expect(throws: BindError.self) {
                try ListenerGroup.open(plan, loop: loop.loop) { _, _ in }.close()
            }
            #expect(error?.kind == .addressInUse)
            #expect(error?.address?.description == "127.0.0.2:\(port)")
            expectListening(port, ["127.0.0.2:\(port)"])
            #expect(connectResult(to: addr("127.0.0.1", port)) == ECONNREFUSED)
        }
    }

    @Test func addressNotOnThisMachineFailsAtBindToo() throws {
        // The resolver refuses it first; the listener itself must refuse it as well,
        // and never fall back to a wider address.
        let loop = TestLoop()
        let target = ListenTarget(address: addr("203.0.113.77", 0))
        let failure = #expect(throws: Listener.OpenError.self) {
            try Listener.open(target, loop: loop.loop, backlog: 16) { _, _ in }.close()
        }
        // The listener says only the step and the code; the group words it.
        #expect(failure == Listener.OpenError(.bind, .addressNotAvailable))
        let error = failure.map { BindError.opening(target, failed: $0, value: "203.0.113.77", interfaces: nil) }
        #expect(error?.kind == .addressNotAvailable)
        #expect(error?.step == .bind)
        #expect(error?.description.contains("Addresses here: ") == true)
        #expect(ListeningSockets.all().allSatisfy { $0.ip != .v4(IPv4Address(203, 0, 113, 77)) })
        #expect(loop.close() == 0)
    }

    @Test func anUnavailableAddressInAListClosesTheOthers() throws {
        // Past the resolver (which would refuse it first): the kernel's EADDRNOTAVAIL
        // for the second target must close the first, while the loop still runs.
        let loop = TestLoop()
        let plan = BindPlan(value: "127.0.0.1,203.0.113.77", port: 0, targets: [
            ListenTarget(address: addr("127.0.0.1", 0)),
            ListenTarget(address: addr("203.0.113.77", 0)),
        ])
        let error = #expect(throws: BindError.self) {
            try ListenerGroup.open(plan, loop: loop.loop) { _, _ in }.close()
        }
        #expect(error?.kind == .addressNotAvailable)
        #expect(error?.address?.host == "203.0.113.77")
        // Both targets share the first one's kernel-chosen port.
        #expect(!ListeningSockets.all().contains { $0.ip == .v4(.loopback) && $0.port == error?.address?.port })
        #expect(ListeningSockets.all().allSatisfy { $0.ip != .v4(IPv4Address(203, 0, 113, 77)) })
        #expect(loop.close() == 0, "the first listener was closed")
    }

    @Test func aFailedDeferredAcceptDoesNotStopTheListener() throws {
        // A callback that does not accept pauses the listener; the accept made
        // later fails here, and libuv would then never watch the listener again
        // unless it is re-armed. The next client must still reach the handler.
        let loop = TestLoop()
        var pending: Listener?
        var accepted = 0
        let good = HandleStorage.allocate(uv_tcp_t.self)
        #expect(uv_tcp_init(loop.loop, good) == 0)
        let bad = HandleStorage.allocate(uv_tcp_t.self)
        #expect(uv_tcp_init(loop.loop, bad) == 0)
        // A handle that already has a socket cannot take an accepted one (EBUSY).
        #expect(addr("127.0.0.1", 0).withSockaddr { uv_tcp_bind(bad, $0, 0) } == 0)
        let group = try ListenerGroup.open(BindPlan(value: "127.0.0.1", port: 0), loop: loop.loop) { listener, _ in
            if pending == nil {
                pending = listener   // hold it
            } else if listener.accept(into: HandleStorage.stream(good)) == nil {
                accepted += 1
            }
        }
        let port = group.port
        #expect(connectResult(to: addr("127.0.0.1", port)) == 0)
        loop.run(until: { pending != nil })
        #expect(pending?.accept(into: HandleStorage.stream(bad)) != nil)
        #expect(connectResult(to: addr("127.0.0.1", port)) == 0)
        loop.run(until: { accepted == 1 }, iterations: 100)
        #expect(accepted == 1)
        HandleStorage.close(good)
        HandleStorage.close(bad)
        group.close()
        #expect(loop.close() == 0)
    }

    @Test func explicitPortIsUsedOnEveryAddress() throws {
        // Find a free port, then ask for it explicitly on two addresses.
        let probe = TestLoop()
        let free = try ListenerGroup.open(BindPlan(value: "127.0.0.1", port: 0), loop: probe.loop) { _, _ in }
        let port = free.port
        free.close()
        #expect(probe.close() == 0)
        try withListeners("127.0.0.1,127.0.0.2", port: port) { group, _ in
            #expect(group.listeners.map(\.address.description) == ["127.0.0.1:\(port)", "127.0.0.2:\(port)"])
            expectListening(port, ["127.0.0.1:\(port)", "127.0.0.2:\(port)"])
        }
    }

    @Test func closingTwiceIsHarmless() throws {
        let loop = TestLoop()
        let group = try ListenerGroup.open(BindPlan(value: "127.0.0.1", port: 0), loop: loop.loop) { _, _ in }
        let port = group.port
        group.close()
        group.close()
        #expect(ListeningSockets.on(port: port).isEmpty, "the socket closes at once, before the loop runs")
        #expect(loop.close() == 0)
    }
}
