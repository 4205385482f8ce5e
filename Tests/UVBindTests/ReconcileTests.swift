import CUV
#if canImport(Glibc)
import Glibc
#endif
import Testing
@_spi(Daemon) @testable import UVBind

/// `ListenerGroup.reconcile(to:)` on a test loop, checked against the kernel's
/// socket table: what stays is the same socket, what is new opens all or
/// nothing, what left is closed.
@Suite(.serialized)
struct ReconcileTests {
    func expectListening(_ port: UInt16, _ expected: [String], sourceLocation: SourceLocation = #_sourceLocation) {
        let seen = ListeningSockets.on(port: port).map(\.description).sorted()
        #expect(seen == expected.sorted(), sourceLocation: sourceLocation)
    }

    func plan(_ value: String, _ port: UInt16 = 0) throws -> BindPlan {
        try BindPlan(value: value, port: port)
    }

    @Test func unchangedListenersKeepTheirSocketAndPendingClients() throws {
        let loop = TestLoop()
        var accepted = 0
        var clients: [UnsafeMutablePointer<uv_tcp_t>] = []
        let group = try ListenerGroup.open(plan("127.0.0.1"), loop: loop.loop) { listener, error in
            let client = HandleStorage.allocate(uv_tcp_t.self)
            uv_tcp_init(loop.loop, client)
            clients.append(client)
            if error == nil, listener.accept(into: HandleStorage.stream(client)) == nil { accepted += 1 }
        }
        let port = group.port
        let first = try #require(group.listeners.first)
        let fd = first.fileDescriptor

        // A client waits in the backlog while the group changes: it must not be refused.
        #expect(connectResult(to: addr("127.0.0.1", port)) == 0)
        let grow = try group.reconcile(to: plan("127.0.0.1,127.0.0.2"))
        #expect(grow.kept.map { $0 === first } == [true])
        #expect(grow.opened.map(\.address.description) == ["127.0.0.2:\(port)"], "port 0 reuses the group's port")
        #expect(grow.closed.isEmpty)
        #expect(first.fileDescriptor == fd && fd != nil, "the same descriptor")
        #expect(group.listeners.map(\.address.description) == ["127.0.0.1:\(port)", "127.0.0.2:\(port)"])
        expectListening(port, ["127.0.0.1:\(port)", "127.0.0.2:\(port)"])
        loop.run(until: { accepted == 1 }, iterations: 100)
        #expect(accepted == 1, "the client that waited through the change was accepted")

        let same = try group.reconcile(to: plan("127.0.0.1,127.0.0.2"))
        #expect(same.isEmpty && same.kept.count == 2)

        let second = group.listeners[1]
        let shrink = try group.reconcile(to: plan("127.0.0.2"))
        #expect(shrink.kept.map { $0 === second } == [true])
        #expect(shrink.closed.map { $0 === first } == [true])
        #expect(first.isClosed)
        expectListening(port, ["127.0.0.2:\(port)"])
        #expect(connectResult(to: addr("127.0.0.1", port)) == ECONNREFUSED)
        #expect(connectResult(to: addr("127.0.0.2", port)) == 0)
        loop.run(until: { accepted == 2 }, iterations: 100)

        group.close()
        clients.forEach { HandleStorage.close($0) }
        #expect(loop.close() == 0)
    }

    @Test func aFailingNewListenerLeavesTheGroupExactlyAsItWas() throws {
        let loop = TestLoop()
        let group = try ListenerGroup.open(plan("127.0.0.1"), loop: loop.loop) { _, _ in }
        let port = group.port
        let before = group.listeners.map { ($0, $0.fileDescriptor) }
        // Someone else holds 127.0.0.3 on the group's port.
        let blocker = try ListenerGroup.open(plan("127.0.0.3", port), loop: loop.loop) { _, _ in }

        let error = #expect(throws: BindError.self) {
            try group.reconcile(to: plan("127.0.0.1,127.0.0.2,127.0.0.3,127.0.0.4"))
        }
        #expect(error?.kind == .addressInUse)
        #expect(error?.address?.description == "127.0.0.3:\(port)", "the error says which")
        #expect(group.listeners.count == before.count)
        for (listener, (old, fd)) in zip(group.listeners, before) {
            #expect(listener === old && listener.fileDescriptor == fd && !listener.isClosed)
        }
        // 127.0.0.2 opened during the attempt and was closed again; 127.0.0.4 never opened.
        expectListening(port, ["127.0.0.1:\(port)", "127.0.0.3:\(port)"])
        #expect(group.value == "127.0.0.1")

        blocker.close()
        // Once the address is free, the same change goes through.
        let changes = try group.reconcile(to: plan("127.0.0.1,127.0.0.2,127.0.0.3"))
        #expect(changes.opened.count == 2 && changes.kept.count == 1)
        expectListening(port, ["127.0.0.1:\(port)", "127.0.0.2:\(port)", "127.0.0.3:\(port)"])
        group.close()
        #expect(loop.close() == 0)
    }

    @Test func aWildcardGivesWayToAnAddressOfItsFamily() throws {
        let loop = TestLoop()
        let group = try ListenerGroup.open(plan("0.0.0.0"), loop: loop.loop) { _, _ in }
        let port = group.port
        // Opening 127.0.0.1 while 0.0.0.0 holds the port would fail: the wildcard goes first.
        let changes = try group.reconcile(to: plan("127.0.0.1"))
        #expect(changes.closed.map(\.address.description) == ["0.0.0.0:\(port)"])
        expectListening(port, ["127.0.0.1:\(port)"])
        #expect(connectResult(to: addr("127.0.0.2", port)) == ECONNREFUSED)
        group.close()
        #expect(loop.close() == 0)
    }

    @Test func aFailedNarrowingRestoresTheWildcard() throws {
        let loop = TestLoop()
        let group = try ListenerGroup.open(plan("0.0.0.0"), loop: loop.loop) { _, _ in }
        let port = group.port
        // Past the resolver: the second target is not this machine's (EADDRNOTAVAIL).
        let bad = BindPlan(value: "127.0.0.1,203.0.113.77", port: port, targets: [
            ListenTarget(address: addr("127.0.0.1", port)),
            ListenTarget(address: addr("203.0.113.77", port)),
        ])
        let error = #expect(throws: BindError.self) { try group.reconcile(to: bad) }
        #expect(error?.kind == .addressNotAvailable)
        #expect(error?.address?.host == "203.0.113.77")
        #expect(group.listeners.map(\.address.description) == ["0.0.0.0:\(port)"])
        expectListening(port, ["0.0.0.0:\(port)"])
        group.close()
        #expect(loop.close() == 0)
    }

    /// Another program listens on 127.0.0.2 at the group's port, and the group
    /// is asked to widen 127.0.0.1 to 0.0.0.0: the wildcard cannot open, and
    /// the kernel's table says so before 127.0.0.1 is closed to make room for
    /// it. The listener kept is the same socket, with its pending client.
    @Test func aForeseenConflictRefusesTheChangeBeforeClosingAnything() throws {
        let loop = TestLoop()
        var accepted = 0
        var clients: [UnsafeMutablePointer<uv_tcp_t>] = []
        let group = try ListenerGroup.open(plan("127.0.0.1"), loop: loop.loop) { listener, error in
            let client = HandleStorage.allocate(uv_tcp_t.self)
            uv_tcp_init(loop.loop, client)
            clients.append(client)
            if error == nil, listener.accept(into: HandleStorage.stream(client)) == nil { accepted += 1 }
        }
        let port = group.port
        let kept = try #require(group.listeners.first)
        let fd = try #require(kept.fileDescriptor)
        let inode = try #require(Listener.inode(of: fd))
        let other = try PlainListener(addr("127.0.0.2", port))
        defer { other.close() }
        // Waits in the backlog through the attempt.
        #expect(connectResult(to: addr("127.0.0.1", port)) == 0)

        let error = #expect(throws: BindError.self) { try group.reconcile(to: plan("0.0.0.0")) }
        #expect(error?.kind == .addressInUse)
        #expect(error?.address?.description == "0.0.0.0:\(port)")
        #expect(error?.detail.contains("another socket listens on 127.0.0.2:\(port)") == true, "\(error?.detail ?? "")")
        #expect(group.listeners.count == 1 && group.listeners.first === kept && !kept.isClosed)
        #expect(kept.fileDescriptor == fd && Listener.inode(of: fd) == inode, "the same socket")
        expectListening(port, ["127.0.0.1:\(port)", "127.0.0.2:\(port)"])
        loop.run(until: { accepted == 1 }, iterations: 100)
        #expect(accepted == 1, "the client that waited in the backlog was accepted")

        // Without the other socket, the same change goes through.
        other.close()
        let changes = try group.reconcile(to: plan("0.0.0.0"))
        #expect(changes.closed.map { $0 === kept } == [true])
        expectListening(port, ["0.0.0.0:\(port)"])
        group.close()
        clients.forEach { HandleStorage.close($0) }
        #expect(loop.close() == 0)
    }

    /// A socket bound and not listening is not in the kernel's listening
    /// table: the change is tried, 127.0.0.1 stops listening to make room for
    /// 0.0.0.0, the wildcard fails, and the same socket listens again (its
    /// address held all along, so no other process could take it).
    @Test func aConflictTheTableCannotShowStillEndsOnTheSameSocket() throws {
        let loop = TestLoop()
        // An explicit port, as directd's: a port the kernel chose is not kept by a socket that stops listening.
        let probe = try ListenerGroup.open(plan("127.0.0.1"), loop: loop.loop) { _, _ in }
        let port = probe.port
        probe.close()
        loop.run(until: { false }, iterations: 2)
        let group = try ListenerGroup.open(plan("127.0.0.1", port), loop: loop.loop) { _, _ in }
        let inode = try #require(group.listeners.first?.fileDescriptor.flatMap(Listener.inode(of:)))
        let bound = try PlainListener(addr("127.0.0.2", port), listen: false, reuseAddress: false)
        defer { bound.close() }

        let error = #expect(throws: BindError.self) { try group.reconcile(to: plan("0.0.0.0")) }
        #expect(error?.kind == .addressInUse)
        #expect(error?.detail.contains("could not be opened again") == false, "\(error?.detail ?? "")")
        #expect(group.listeners.count == 1)
        let again = try #require(group.listeners.first)
        #expect(!again.isClosed && again.address.description == "127.0.0.1:\(port)")
        #expect(again.fileDescriptor.flatMap(Listener.inode(of:)) == inode, "the same socket listens again")
        expectListening(port, ["127.0.0.1:\(port)"])
        #expect(connectResult(to: addr("127.0.0.1", port)) == 0)
        group.close()
        #expect(loop.close() == 0)
    }

    @Test func theListeningTableReadsTheKernelsLinesAndOverlaps() throws {
        let v4 = "   0: 0100007F:5268 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 123456 1 0000000000000000 100 0 0 10 0"
        let entry = try #require(ListeningTable.parse(v4, v6: false))
        #expect(entry == ListeningTable.Entry(ip: .v4(IPv4Address(127, 0, 0, 1)), port: 0x5268, inode: 123456))
        let established = "   1: 0100007F:5268 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 123457 1 0000000000000000 100 0 0 10 0"
        #expect(ListeningTable.parse(established, v6: false) == nil, "only listening sockets")
        let v6 = "   0: 00000000000000000000000001000000:5268 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 99 1 0000000000000000 100 0 0 10 0"
        #expect(ListeningTable.parse(v6, v6: true)?.ip == .v6(.loopback))
        let any4 = IPAddress.v4(IPv4Address(0)), lo = IPAddress.v4(IPv4Address(127, 0, 0, 1))
        let lo2 = IPAddress.v4(IPv4Address(127, 0, 0, 2))
        #expect(ListeningTable.overlaps(lo2, any4) && ListeningTable.overlaps(any4, lo) && !ListeningTable.overlaps(lo2, lo))
        #expect(ListeningTable.overlaps(.v6(IPv6Address(high: 0, low: 0)), lo), "a dual-stack wildcard may take IPv4")
        #expect(ListeningTable.overlaps(.v6(IPv6Address("::ffff:127.0.0.1")!), lo))
        #expect(!ListeningTable.overlaps(lo, .v6(.loopback)), "UVBind's IPv6 listeners are IPv6 only")
        let table = ListeningTable(entries: [entry])
        #expect(table.holder(of: addr("0.0.0.0", 0x5268), excluding: []) == entry)
        #expect(table.holder(of: addr("0.0.0.0", 0x5268), excluding: [123456]) == nil, "its own sockets do not count")
    }

    @Test func anExplicitPortReplacesTheGroupsPortAndAnEmptyGroupKeepsIt() throws {
        let loop = TestLoop()
        let group = try ListenerGroup.open(plan("127.0.0.1"), loop: loop.loop) { _, _ in }
        let port = group.port
        // Nothing left: the group keeps its port for later.
        let none = BindPlan(value: "127.0.0.1", port: 0, targets: [])
        let emptied = try group.reconcile(to: none)
        #expect(emptied.closed.count == 1 && group.listeners.isEmpty)
        #expect(ListeningSockets.on(port: port).isEmpty)
        #expect(group.port == port)
        try group.reconcile(to: plan("127.0.0.2"))
        #expect(group.listeners.map(\.address.description) == ["127.0.0.2:\(port)"])

        // A free port, asked for explicitly: every listener moves to it.
        let probe = try ListenerGroup.open(plan("127.0.0.1"), loop: loop.loop) { _, _ in }
        let other = probe.port
        probe.close()
        let moved = try group.reconcile(to: plan("127.0.0.2", other))
        #expect(moved.opened.map(\.address.description) == ["127.0.0.2:\(other)"])
        #expect(moved.closed.count == 1 && group.port == other)
        expectListening(port, [])
        expectListening(other, ["127.0.0.2:\(other)"])
        group.close()
        #expect(loop.close() == 0)
    }

    // MARK: - Adopting descriptors

    /// A socket as a service manager would pass it: bound to 127.0.0.1, listening or not.
    func makeSocket(type: Int32 = Int32(SOCK_STREAM.rawValue), listening: Bool = true,
                    family: Int32 = AF_INET, v6only: Int32 = 1) -> Int32 {
        let fd = socket(family, type, 0)
        precondition(fd >= 0)
        // Linux makes a socket bound to one IPv6 address IPv6-only by itself; only
        // the wildcard :: can be dual-stack.
        let address = family == AF_INET6 ? addr(v6only == 0 ? "::" : "::1", 0) : addr("127.0.0.1", 0)
        if family == AF_INET6 {
            var on = v6only
            setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, &on, socklen_t(MemoryLayout<Int32>.size))
        }
        let length = socklen_t(family == AF_INET6 ? MemoryLayout<sockaddr_in6>.size : MemoryLayout<sockaddr_in>.size)
        precondition(address.withSockaddr { bind(fd, $0, length) } == 0)
        if listening { precondition(listen(fd, 16) == 0) }
        return fd
    }

    func isOpen(_ fd: Int32) -> Bool { fcntl(fd, F_GETFD) != -1 }

    @Test func adoptsAListeningSocket() throws {
        let loop = TestLoop()
        let fd = makeSocket()
        var accepted = 0
        let client = HandleStorage.allocate(uv_tcp_t.self)
        uv_tcp_init(loop.loop, client)
        let group = try ListenerGroup.adopt(descriptors: [fd], value: "LISTEN_FDS", loop: loop.loop) { listener, _ in
            if listener.accept(into: HandleStorage.stream(client)) == nil { accepted += 1 }
        }
        let listener = try #require(group.listeners.first)
        #expect(listener.isAdopted)
        #expect(listener.fileDescriptor == fd)
        #expect(listener.address.ip == .v4(.loopback) && listener.address.port == group.port && group.port != 0)
        #expect(connectResult(to: listener.address) == 0)
        loop.run(until: { accepted == 1 }, iterations: 100)
        #expect(accepted == 1)
        // An adopted group reconciles like any other: the adopted socket is kept.
        let changes = try group.reconcile(to: plan("127.0.0.1,127.0.0.2"))
        #expect(changes.kept.map { $0 === listener } == [true])
        expectListening(group.port, ["127.0.0.1:\(group.port)", "127.0.0.2:\(group.port)"])
        HandleStorage.close(client)
        group.close()
        #expect(!isOpen(fd), "the adopted descriptor is closed with its listener")
        #expect(loop.close() == 0)
    }

    @Test func refusesSocketsThatCannotServeAndLeavesThemOpen() throws {
        let loop = TestLoop()
        let good = makeSocket()
        var pipeEnds: [Int32] = [0, 0]
        #expect(pipe(&pipeEnds) == 0)
        var cases: [(fd: Int32, step: BindError.Step, words: String)] = [
            (makeSocket(listening: false), .adoptListening, "not listening"),
            (makeSocket(type: Int32(SOCK_DGRAM.rawValue), listening: false), .adoptCheck, "not a TCP stream socket"),
            (pipeEnds[0], .adoptCheck, "not an open socket"),
        ]
        if hostHasIPv6Loopback {
            cases.append((makeSocket(family: AF_INET6, v6only: 0), .adoptIPv6Only, "also accepts IPv4"))
        }
        for (fd, step, words) in cases {
            // The good one first: nothing may be taken over when a later one is refused.
            let error = #expect(throws: BindError.self, "\(words)") {
                try ListenerGroup.adopt(descriptors: [good, fd], value: "LISTEN_FDS", loop: loop.loop) { _, _ in }.close()
            }
            #expect(error?.step == step, "\(words)")
            #expect(error?.description.contains(words) == true, "\(error?.description ?? "")")
            #expect(error?.description.contains("fd \(fd)") == true)
            #expect(isOpen(fd) && isOpen(good), "a refused descriptor stays the caller's")
            Glibc.close(fd)
        }
        let twice = #expect(throws: BindError.self) {
            try ListenerGroup.adopt(descriptors: [good, good], value: "LISTEN_FDS", loop: loop.loop) { _, _ in }.close()
        }
        #expect(twice?.step == .adoptCheck)
        Glibc.close(pipeEnds[1])
        Glibc.close(good)
        #expect(loop.close() == 0)
    }

    // MARK: - SO_BINDTODEVICE

    @Test(.enabled(if: getuid() == 0, "SO_BINDTODEVICE needs CAP_NET_RAW before Linux 5.7"))
    func aListenerBoundToADevice() throws {
        let loop = TestLoop()
        let target = ListenTarget(address: addr("127.0.0.1", 0), device: "lo")
        let listener = try Listener.open(target, loop: loop.loop) { _, _ in }
        var name = [CChar](repeating: 0, count: 32)
        var length = socklen_t(name.count)
        #expect(getsockopt(listener.fileDescriptor!, SOL_SOCKET, SO_BINDTODEVICE, &name, &length) == 0)
        #expect(String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) == "lo")
        #expect(connectResult(to: listener.address) == 0, "a client over lo reaches it")
        listener.close()

        let missing = ListenTarget(address: addr("127.0.0.1", 0), device: "nosuch0")
        let failure = #expect(throws: Listener.OpenError.self) {
            try Listener.open(missing, loop: loop.loop) { _, _ in }.close()
        }
        #expect(failure == Listener.OpenError(.bindToDevice, .noSuchDevice))
        #expect(loop.close() == 0)
    }

    @Test func refusedDeviceBindingNamesTheCapability() {
        let target = ListenTarget(address: addr("192.0.2.10", 21118), device: "wg0")
        let error = BindError.opening(target, failed: Listener.OpenError(.bindToDevice, .operationNotPermitted),
                                      value: "192.0.2.10", interfaces: nil)
        #expect(error.kind == .permissionDenied)
        #expect(error.description.contains("CAP_NET_RAW"))
        #expect(error.description.contains("5.7"))
        #expect(error.description.contains("wg0"))
    }
}

/// A listening socket opened without libuv, as another program would hold one.
final class PlainListener {
    private var fd: Int32

    init(_ address: SocketAddress, listen shouldListen: Bool = true, reuseAddress: Bool = true) throws {
        fd = socket(address.family == .ipv6 ? AF_INET6 : AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var one: Int32 = 1
        if reuseAddress { setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size)) }
        let length = socklen_t(address.family == .ipv6 ? MemoryLayout<sockaddr_in6>.size : MemoryLayout<sockaddr_in>.size)
        guard address.withSockaddr({ bind(fd, $0, length) }) == 0, !shouldListen || listen(fd, 16) == 0 else {
            let code = errno
            Glibc.close(fd)
            throw UVError(-code)
        }
    }

    func close() {
        if fd >= 0 { Glibc.close(fd) }
        fd = -1
    }

    deinit { close() }
}
