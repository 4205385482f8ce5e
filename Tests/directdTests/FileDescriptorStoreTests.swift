import CUV
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Testing
import UVBind
@testable import directd

/// The listeners in systemd's file descriptor store: the names, the messages
/// (in process, against a notify socket of the test's own), and a restart
/// done by hand around the real binary (a crash, then a start with the stored
/// descriptors in LISTEN_FDS).
@Suite(.serialized)
struct FileDescriptorStoreTests {
    // MARK: names

    @Test func namesReadBackAndAreValidFDNames() throws {
        let cases: [(SocketAddress, String?, String)] = [
            (SocketAddress(ip: .v4(IPv4Address(127, 0, 0, 1)), port: 21118), nil, "tcp-127.0.0.1-21118"),
            (SocketAddress(ip: .v4(.any), port: 1), nil, "tcp-0.0.0.0-1"),
            (SocketAddress(ip: .v6(.any), port: 21118), nil, "tcp-[__]-21118"),
            (SocketAddress(ip: .v6(.loopback), port: 21118), nil, "tcp-[__1]-21118"),
            (SocketAddress(ip: .v6(IPv6Address("fe80::1")!), port: 21118, scopeID: 2, zone: "eth0"), nil, "tcp-[fe80__1%2]-21118"),
            (SocketAddress(ip: .v4(IPv4Address(192, 0, 2, 1)), port: 21118), "eth0", "tcp-192.0.2.1-21118-dev-eth0"),
            (SocketAddress(ip: .v4(IPv4Address(192, 0, 2, 1)), port: 21118), "we%ird\u{1}", "tcp-192.0.2.1-21118-dev-we%25ird%01"),
        ]
        for (address, device, text) in cases {
            let name = StoredListenerName(address: address, device: device)
            #expect(name.description == text)
            #expect(StoredListenerName(parsing: text) == name, "\(text) reads back")
            // systemd's fdname_is_valid: printable ASCII, no colon, at most 255 bytes.
            #expect(text.utf8.allSatisfy { $0 >= 0x20 && $0 < 0x7F && $0 != UInt8(ascii: ":") } && text.utf8.count <= 255)
        }
        for other in ["directd", "directd.socket", "tcp-127.0.0.1-021118", "tcp-127.0.0.1-21118-", "tcp-[::1]-1",
                      "tcp-[__1%0]-1", "tcp-1.2.3-1", "tcp-127.0.0.1-70000", "tcp-[__1]-1-dev-", "tcp-[__1]-1-eth0", ""] {
            #expect(StoredListenerName(parsing: other) == nil, "\(other) is not one of directd's names")
        }
    }

    // MARK: messages, in process

    @Test func eachListenerIsStoredWithItsOwnDescriptorAndRemovedWhenItCloses() throws {
        let manager = try FakeFDStore()
        defer { manager.shutdown() }
        let loop = TestLoop()
        let group = try ListenerGroup.open(BindPlan(value: "127.0.0.1", port: 0), loop: loop.loop) { _, _ in }
        let port = group.port
        let notifier = ServiceNotifier(loop: loop.loop, environment: ["NOTIFY_SOCKET": manager.name])
        let store = FileDescriptorStore(stored: [], fromSocketUnit: false, environment: ["NOTIFY_SOCKET": manager.name])
        #expect(store.isStoring)
        store.attach(notifier, listeners: group.listeners)
        let first = "tcp-127.0.0.1-\(port)"
        try #require(manager.wait { $0 == ["FDSTORE=1\nFDNAME=\(first)"] }, "\(manager.messages)")
        let stored = manager.stored
        try #require(stored.count == 1 && stored[0].name == first)
        let listenerInode = socketInode(try #require(group.listeners.first?.fileDescriptor))
        #expect(socketInode(stored[0].fd) == listenerInode, "the descriptor sent is the listener's socket")
        #expect(stored[0].fd != group.listeners.first?.fileDescriptor, "a descriptor of the manager's own")

        // Nothing changed: nothing sent.
        store.sync(group.listeners)
        // A reload to another address: the old one out of the store, the new one in.
        try group.reconcile(to: BindPlan(value: "127.0.0.2", port: port))
        store.sync(group.listeners)
        let second = "tcp-127.0.0.2-\(port)"
        try #require(manager.wait { $0.count == 3 }, "\(manager.messages)")
        #expect(Array(manager.messages.dropFirst()) == ["FDSTOREREMOVE=1\nFDNAME=\(first)", "FDSTORE=1\nFDNAME=\(second)"])
        #expect(manager.stored.map(\.name) == [second])
        #expect(manager.stored.first.map { socketInode($0.fd) } == socketInode(try #require(group.listeners.first?.fileDescriptor)))

        // The listener closes (bind-dynamic saw its address go, say): removed.
        group.close()
        store.sync([])
        try #require(manager.wait { $0.count == 4 }, "\(manager.messages)")
        #expect(manager.messages.last == "FDSTOREREMOVE=1\nFDNAME=\(second)")
        #expect(manager.stored.isEmpty)

        // A stop: the store keeps what it has for the next start.
        store.freeze()
        store.sync([])
        notifier.close()
        #expect(loop.close())
        #expect(manager.messages.count == 4, "nothing after the freeze: \(manager.messages)")
    }

    @Test func socketUnitSocketsWinAndStoredOnesAreClosed() throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        try #require(fd >= 0)
        let name = try #require(StoredListenerName(parsing: "tcp-127.0.0.1-21118"))
        let passed = [(fd: fd, name: "directd.socket" as String?), (fd: fd, name: "tcp-127.0.0.1-21118" as String?)]
        let (stored, others) = FileDescriptorStore.split(passed)
        #expect(stored.map(\.name) == [name] && others.map(\.name) == ["directd.socket"])
        let before = socketInode(fd)
        let store = FileDescriptorStore(stored: stored, fromSocketUnit: true, environment: ["NOTIFY_SOCKET": "/nonexistent"])
        #expect(!store.isStoring, "the socket unit holds its sockets; nothing is stored")
        // By identity: a test running beside this one may reuse the number at once.
        #expect(fcntl(fd, F_GETFD) == -1 || socketInode(fd) != before, "the stored descriptor is closed")
        #expect(store.takeOver(ListenTarget(address: name.address)) == nil)
    }

    // MARK: a restart by hand, around the real binary

    @Test func aCrashAndARestartRefuseNothingAndServeTheSameSocket() throws {
        let manager = try FakeFDStore()
        defer { manager.shutdown() }
        let port = try freePort()
        let arguments = ["--bind-interface", "127.0.0.1", "--port", String(port)]
        let first = try StoreStarted(arguments, passing: [], notifySocket: manager.name)
        try #require(first.waitForLog("serving echo"), "\(first.log)")
        let name = "tcp-127.0.0.1-\(port)"
        try #require(manager.wait { $0.contains("FDSTORE=1\nFDNAME=\(name)") }, "no FDSTORE: \(manager.messages)")
        let stored = manager.stored
        try #require(stored.count == 1 && stored[0].name == name, "\(stored)")
        let inode = socketInode(stored[0].fd)
        #expect(first.socketInodes.contains(inode), "the stored descriptor is directd's listener")

        let client = ConnectLoop(port: port)
        client.start()
        defer { client.stop() }
        try #require(client.wait(forConnects: 20), "no connects while the first directd serves")
        #expect(first.stop(signal: SIGKILL) == 128 + SIGKILL, "a crash")
        let atCrash = client.counts.connected
        // Clients that connect and send while no directd runs: they wait in the
        // backlog of the stored socket, and the next directd serves them.
        var waiting = try (0..<3).map { index in
            let waiting = try TCPClient(host: "127.0.0.1", port: port)
            // Not inherited by the directd started next (its copy would hold the connection open).
            _ = fcntl(waiting.fd, F_SETFD, FD_CLOEXEC)
            #expect(waiting.send(Array("waited \(index)".utf8)))
            return waiting
        }
        usleep(200_000)   // the gap a restart leaves (no assertion on its length)
        let second = try StoreStarted(arguments, passing: manager.stored, notifySocket: manager.name)
        try #require(second.waitForLog("serving echo"), "\(second.log)")
        let inGap = client.counts.connected - atCrash
        for (index, waiting) in waiting.enumerated() {
            #expect(waiting.receive(exactly: "waited \(index)".utf8.count) == Array("waited \(index)".utf8),
                    "a client that connected during the gap is served, its bytes intact")
        }
        #expect(second.log.contains("taking over stored \(name)"), "\(second.log)")
        #expect(second.socketInodes.contains(inode), "the new directd serves the stored socket itself")
        try #require(client.wait(forConnects: client.counts.connected + 200), "connects go on after the restart")
        client.stop()
        let counts = client.counts
        #expect(counts.refused == 0, "\(counts.refused) of \(counts.connected + counts.refused) connects refused")
        #expect(counts.failed == 0, "\(counts.failed) connects failed otherwise")
        #expect(inGap > 0, "connects while no directd ran queued in the backlog")

        do {
            let echo = try TCPClient(host: "127.0.0.1", port: port)
            let bytes = Array("the same socket".utf8)
            #expect(echo.send(bytes))
            #expect(echo.receive(exactly: bytes.count) == bytes)
        }
        waiting.removeAll()   // closed here, so the stop below finds no session open
        #expect(second.stop() == 0, "\(second.log.split(separator: "\n").suffix(12).joined(separator: "\n"))")
        #expect(!manager.messages.contains { $0.hasPrefix("FDSTOREREMOVE") }, "a stop keeps the store: \(manager.messages)")
    }

    @Test func aChangedConfigClosesTheStaleStoredListenerAndOpensTheNewOne() throws {
        let manager = try FakeFDStore()
        defer { manager.shutdown() }
        let port = try freePort()
        let first = try StoreStarted(["--bind-interface", "127.0.0.1", "--port", String(port)], passing: [],
                                     notifySocket: manager.name)
        try #require(first.waitForLog("serving echo"), "\(first.log)")
        let old = "tcp-127.0.0.1-\(port)"
        try #require(manager.wait { $0.contains("FDSTORE=1\nFDNAME=\(old)") }, "\(manager.messages)")
        first.stop(signal: SIGKILL)

        // The operator widened it to every interface, then restarted: the
        // wildcard cannot bind while the stored 127.0.0.1 socket is held.
        let second = try StoreStarted(["--bind-interface", "", "--port", String(port)], passing: manager.stored,
                                      notifySocket: manager.name)
        try #require(second.waitForLog("serving echo"), "the start must not fail: \(second.log)")
        #expect(second.log.contains("closed stored \(old): the configuration no longer names it"), "\(second.log)")
        #expect(!second.log.contains("did not confirm"), "the barrier was answered: \(second.log)")
        let new = "tcp-0.0.0.0-\(port)"
        try #require(manager.wait { $0.contains("FDSTORE=1\nFDNAME=\(new)") }, "\(manager.messages)")
        let messages = manager.messages
        let removed = try #require(messages.firstIndex(of: "FDSTOREREMOVE=1\nFDNAME=\(old)"), "\(messages)")
        #expect(removed < messages.firstIndex(of: "FDSTORE=1\nFDNAME=\(new)")!)
        #expect(!manager.stored.contains { $0.name == old })
        #expect(listeningAddresses(port: port).contains("00000000"))
        #expect(!listeningAddresses(port: port).contains("0100007F"), "the stale listener is gone")
        do {
            let echo = try TCPClient(host: "127.0.0.1", port: port)
            #expect(echo.send([7]) && echo.receive(exactly: 1) == [7])
        }
        #expect(second.stop() == 0)
    }

    /// A reload from 127.0.0.1 to every interface on the same port: the
    /// manager's copy of the old listener would keep the wildcard from binding,
    /// so it is taken out of the store (and awaited) first.
    @Test func aReloadThatWidensOnTheSamePortIsNotBlockedByTheStoredCopy() throws {
        let manager = try FakeFDStore()
        defer { manager.shutdown() }
        let port = try freePort()
        let config = try ConfigFileFixture(["bind-interface": "127.0.0.1", "direct-access-port": String(port)])
        let started = try StoreStarted(["--config", config.path], passing: [], notifySocket: manager.name)
        try #require(started.waitForLog("serving echo"), "\(started.log)")
        let old = "tcp-127.0.0.1-\(port)"
        try #require(manager.wait { $0.contains("FDSTORE=1\nFDNAME=\(old)") }, "\(manager.messages)")
        try config.write(["bind-interface": "", "direct-access-port": String(port)])
        kill(started.pid, SIGHUP)
        try #require(started.waitForLog("reloaded: "), "\(started.log)")
        #expect(!started.log.contains("reload rejected"), "\(started.log)")
        let new = "tcp-0.0.0.0-\(port)"
        #expect(manager.wait { $0.contains("FDSTORE=1\nFDNAME=\(new)") }, "\(manager.messages)")
        let messages = manager.messages
        let removed = try #require(messages.firstIndex(of: "FDSTOREREMOVE=1\nFDNAME=\(old)"), "\(messages)")
        #expect(removed < (messages.firstIndex(of: "FDSTORE=1\nFDNAME=\(new)") ?? -1))
        #expect(manager.stored.map(\.name).filter { $0.hasPrefix("tcp-0.0.0.0") || $0.hasPrefix("tcp-127") } == [new])
        #expect(listeningAddresses(port: port).contains("00000000"))
        #expect(!listeningAddresses(port: port).contains("0100007F"))
        #expect(started.stop() == 0)
    }

    /// bind-dynamic follows the value, and takes its stored listeners over too.
    @Test func bindDynamicTakesItsStoredListenerOverAfterACrash() throws {
        let manager = try FakeFDStore()
        defer { manager.shutdown() }
        let port = try freePort()
        let arguments = ["--bind-dynamic", "Y", "--bind-interface", "127.0.0.1", "--port", String(port)]
        let first = try StoreStarted(arguments, passing: [], notifySocket: manager.name)
        try #require(first.waitForLog("serving echo"), "\(first.log)")
        let name = "tcp-127.0.0.1-\(port)"
        try #require(manager.wait { $0.contains("FDSTORE=1\nFDNAME=\(name)") }, "\(manager.messages)")
        let inode = socketInode(try #require(manager.stored.first?.fd))
        first.stop(signal: SIGKILL)
        let second = try StoreStarted(arguments, passing: manager.stored, notifySocket: manager.name)
        try #require(second.waitForLog("serving echo"), "\(second.log)")
        #expect(second.log.contains("taking over stored \(name)"), "\(second.log)")
        #expect(second.socketInodes.contains(inode))
        #expect(!manager.messages.contains { $0.hasPrefix("FDSTOREREMOVE") }, "\(manager.messages)")
        do {
            let echo = try TCPClient(host: "127.0.0.1", port: port)
            #expect(echo.send([9]) && echo.receive(exactly: 1) == [9])
        }
        #expect(second.stop() == 0)
    }

    /// A socket unit's socket and a stored one together: socket activation
    /// decides, the stored one is closed and taken out, nothing is stored.
    @Test func withASocketUnitTheStoredListenersAreClosedAndNothingIsStored() throws {
        let manager = try FakeFDStore()
        defer { manager.shutdown() }
        let port = try freePort()
        let unitSocket = try listeningSocket(port: port)
        let stalePort = try freePort()
        let stale = try listeningSocket(port: stalePort)
        let staleName = "tcp-127.0.0.1-\(stalePort)"
        manager.put(stale, name: staleName)
        let started = try StoreStarted(["--bind-interface", "127.0.0.1", "--port", String(port)],
                                       passing: [("directd", unitSocket)] + manager.stored, notifySocket: manager.name)
        defer { close(unitSocket) }
        try #require(started.waitForLog("serving echo"), "\(started.log)")
        #expect(started.log.contains("listening on 127.0.0.1:\(port) (from the service manager)"), "\(started.log)")
        #expect(started.log.contains("closed stored \(staleName): the socket unit's sockets are served instead"), "\(started.log)")
        #expect(manager.wait { $0.contains("FDSTOREREMOVE=1\nFDNAME=\(staleName)") }, "\(manager.messages)")
        #expect(!manager.messages.contains { $0.hasPrefix("FDSTORE=1") }, "the socket unit holds its sockets: \(manager.messages)")
        #expect(!listeningAddresses(port: stalePort).contains("0100007F"), "the stale one is gone")
        #expect(started.stop() == 0)
    }

    /// A listening TCP socket on 127.0.0.1:port, as a socket unit would pass it.
    func listeningSocket(port: UInt16) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard fd >= 0, bound == 0, listen(fd, 16) == 0 else { throw TestFailure("listen on \(port): \(errno)") }
        return fd
    }

    /// A stored socket that is not what its name says.
    enum Impostor: String, CaseIterable {
        /// 0.0.0.0 under the name of 127.0.0.1.
        case wider
        /// Bound where its name says, but not listening.
        case notListening
        /// `::` that takes IPv4 too (IPV6_V6ONLY off) under the name of `::`.
        case dualStack
    }

    @Test(arguments: Impostor.allCases)
    func aStoredSocketThatIsNotWhatItsNameSaysIsNeverServed(_ impostor: Impostor) throws {
        let manager = try FakeFDStore()
        defer { manager.shutdown() }
        let port = try freePort()
        let v6 = impostor == .dualStack
        let fd = socket(v6 ? AF_INET6 : AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else {
            try #require(v6, "socket: \(errno)")
            return   // no IPv6 here
        }
        var one: Int32 = 1, zero: Int32 = 0
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        let bound: Int32
        if v6 {
            setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, &zero, socklen_t(MemoryLayout<Int32>.size))
            var address = sockaddr_in6()
            address.sin6_family = sa_family_t(AF_INET6)
            address.sin6_port = port.bigEndian
            bound = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) }
            }
        } else {
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = port.bigEndian
            address.sin_addr.s_addr = impostor == .wider ? 0 : UInt32(0x7F00_0001).bigEndian
            bound = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
        }
        try #require(bound == 0, "bind: \(String(cString: strerror(errno)))")
        if impostor != .notListening { try #require(listen(fd, 16) == 0) }
        let name = v6 ? "tcp-[__]-\(port)" : "tcp-127.0.0.1-\(port)"
        manager.put(fd, name: name)
        let impostorInode = socketInode(fd)

        let value = v6 ? "::" : "127.0.0.1"
        let started = try StoreStarted(["--bind-interface", value, "--port", String(port)], passing: manager.stored,
                                       notifySocket: manager.name)
        try #require(started.waitForLog("serving echo"), "it opens its own listener instead: \(started.log)")
        #expect(started.log.contains("stored \(name)") && started.log.contains("closed, never served"), "\(started.log)")
        if impostor != .notListening {
            #expect(started.log.contains("wider than what its name says"), "\(started.log)")
        }
        #expect(!started.log.contains("taking over"), "\(started.log)")
        #expect(manager.messages.first == "FDSTOREREMOVE=1\nFDNAME=\(name)", "\(manager.messages)")
        #expect(!started.socketInodes.contains(impostorInode), "directd holds no copy of it")
        let listening = listeningAddresses(port: port)
        #expect(!listening.contains("00000000"), "nothing listens on 0.0.0.0: \(listening)")
        if v6 {
            // Its own `::` listener is IPv6 only: IPv4 finds nothing.
            #expect(throws: TestFailure.self) { _ = try TCPClient(host: "127.0.0.1", port: port, connectTimeout: 2) }
        } else {
            #expect(listening.contains("0100007F"), "\(listening)")
        }
        #expect(manager.wait { $0.contains("FDSTORE=1\nFDNAME=\(name)") }, "its own listener stored: \(manager.messages)")
        #expect(started.stop() == 0)
    }
}

/// A client connecting to 127.0.0.1:port in a loop, counting outcomes;
/// bounded in attempts and in time.
final class ConnectLoop: @unchecked Sendable {
    struct Counts { var connected = 0, refused = 0, failed = 0 }
    let port: UInt16
    private let lock = NSLock()
    private var state = Counts()
    private var running = true
    private var done = false
    static let attemptLimit = 200_000

    init(port: UInt16) { self.port = port }

    var counts: Counts { lock.withLock { state } }

    func start() {
        Thread { [self] in
            let deadline = Date().addingTimeInterval(120)
            for _ in 0..<Self.attemptLimit where lock.withLock({ running }) && Date() < deadline {
                let outcome = attempt()
                // Paced (about 1,000 a second at most): the backlog's 511 places
                // then outlast a restart's gap, so no connect waits on a dropped SYN.
                usleep(1000)
                lock.withLock {
                    switch outcome {
                    case 0: state.connected += 1
                    case ECONNREFUSED: state.refused += 1
                    default: state.failed += 1
                    }
                }
            }
            lock.withLock { done = true }
        }.start()
    }

    /// 0, or the connect's errno.
    private func attempt() -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return errno }
        defer { close(fd) }
        var limit = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        return result == 0 ? 0 : errno
    }

    /// Waits (bounded) until at least `count` connects succeeded.
    func wait(forConnects count: Int, timeout: Double = 30) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if counts.connected >= count { return true }
            if lock.withLock({ done }) { break }
            usleep(5_000)
        }
        return counts.connected >= count
    }

    /// Stops the loop and waits (bounded) for its last attempt.
    func stop() {
        lock.withLock { running = false }
        let deadline = Date().addingTimeInterval(15)
        while !lock.withLock({ done }), Date() < deadline { usleep(5_000) }
    }
}
