import CUV
#if canImport(Glibc)
import Glibc
#endif
import Testing
@testable import UVBind

/// Following the network, in a network namespace of the test's own: interfaces
/// (veth pairs) and documentation addresses come and go, and the listeners
/// follow, never wider than the value.
@Suite(.serialized, .enabled(if: NetworkNamespace.available, "needs root and network namespaces"))
struct FollowTests {
    static let port: UInt16 = 21118
    static let proc = "/proc/thread-self/net"

    /// Runs a follower on a test loop and records its events; `check` is called
    /// on every loop turn and fails the test if a socket listens on the port at
    /// an address the value does not allow (never wider).
    final class Harness {
        let loop = TestLoop()
        var events: [(time: UInt64, event: ListenerFollower.Event)] = []
        var follower: ListenerFollower!
        let allowed: (IPAddress) -> Bool
        var violations: [String] = []

        init(_ value: String, bindToDevice: Bool = false, allowed: @escaping (IPAddress) -> Bool) throws {
            self.allowed = allowed
            follower = try ListenerFollower(value: value, port: FollowTests.port, loop: loop.loop,
                                            bindToDevice: bindToDevice, onConnection: { _, _ in }) { [unowned self] event in
                events.append((now(), event))
            }
            sample()
        }

        func sample() {
            for socket in ListeningSockets.on(port: FollowTests.port, root: FollowTests.proc) where !allowed(socket.ip) {
                violations.append(socket.description)
            }
        }

        /// Runs the loop until `done` or `seconds` pass, sampling the socket table.
        @discardableResult
        func run(until done: () -> Bool, seconds: Double = 5) -> Bool {
            let deadline = now() + UInt64(seconds * 1e9)
            while !done() && now() < deadline {
                uv_run(loop.loop, UV_RUN_NOWAIT)
                sample()
                usleep(2_000)
            }
            return done()
        }

        var listening: [String] { follower.group.listeners.map(\.address.description).sorted() }
        var kernel: [String] { ListeningSockets.on(port: FollowTests.port, root: FollowTests.proc).map(\.description).sorted() }

        func count(_ match: (ListenerFollower.Event) -> Bool) -> Int { events.filter { match($0.event) }.count }

        func close() -> Int32 {
            var closed = false
            follower.close { closed = true }
            loop.run(until: { closed })
            #expect(closed, "the close callback ran")
            return loop.close()
        }
    }

    static func now() -> UInt64 {
        var spec = timespec()
        clock_gettime(CLOCK_MONOTONIC, &spec)
        return UInt64(spec.tv_sec) * 1_000_000_000 + UInt64(spec.tv_nsec)
    }

    /// A veth pair, both ends up: `name` is the interface the value names. No
    /// automatic IPv6 link-local address on it: an interface-name value would
    /// (rightly) listen on it once its DAD ends, and the tests name every address.
    static func makeLink(_ name: String) throws {
        try NetworkNamespace.ip("link", "add", name, "type", "veth", "peer", "name", "\(name)p")
        try NetworkNamespace.ip("link", "set", name, "addrgenmode", "none")
        try NetworkNamespace.ip("link", "set", "\(name)p", "up")
        try NetworkNamespace.ip("link", "set", name, "up")
    }

    @Test func anInterfaceThatComesLaterIsListenedOnAndLeftWhenItsAddressGoes() throws {
        try NetworkNamespace.run {
            let address = Fixtures.v4("198.51.100.7")
            let h = try Harness("vpn0", allowed: { $0 == address })
            #expect(h.follower.group.listeners.isEmpty)
            #expect(h.count { $0.kind == .waiting && $0.element == "vpn0" } == 1)

            try Self.makeLink("vpn0")
            // From the kernel's change (ip has returned) to listening, ten times.
            var latencies: [UInt64] = []
            for round in 0..<10 {
                let added = Self.now()
                try NetworkNamespace.ip("addr", "add", "198.51.100.7/24", "dev", "vpn0")
                #expect(h.run(until: { h.listening == ["198.51.100.7:21118"] }))
                latencies.append(((h.events.last { $0.event.kind == .listening }?.time ?? .max) &- added) / 1_000_000)
                if round < 9 {
                    try NetworkNamespace.ip("addr", "del", "198.51.100.7/24", "dev", "vpn0")
                    #expect(h.run(until: { h.listening.isEmpty }))
                }
            }
            latencies.sort()
            print("follow latency over 10 rounds: median \(latencies[5]) ms, max \(latencies[9]) ms (includes spawning ip)")
            #expect(latencies[9] < 1_000, "listened on within a second of the address")
            #expect(h.kernel == ["198.51.100.7:21118"])
            #expect(connectResult(to: SocketAddress(ip: address, port: Self.port)) == 0)

            try NetworkNamespace.ip("addr", "del", "198.51.100.7/24", "dev", "vpn0")
            #expect(h.run(until: { h.listening.isEmpty }))
            #expect(h.kernel.isEmpty)
            #expect(h.count { $0.kind == .stopped && $0.reason == "address removed" } == 10)

            try NetworkNamespace.ip("addr", "add", "198.51.100.7/24", "dev", "vpn0")
            #expect(h.run(until: { h.listening == ["198.51.100.7:21118"] }))
            #expect(h.kernel == ["198.51.100.7:21118"])
            #expect(h.violations.isEmpty, "never wider: \(h.violations)")
            #expect(h.close() == 0)
        }
    }

    @Test func anExplicitAddressIsListenedOnOnceAssignedAndNothingElseMeanwhile() throws {
        try NetworkNamespace.run {
            try Self.makeLink("lan0")
            try NetworkNamespace.ip("addr", "add", "192.0.2.1/24", "dev", "lan0")
            let wanted = Fixtures.v4("203.0.113.5")
            let h = try Harness("203.0.113.5", allowed: { $0 == wanted })
            #expect(h.follower.group.listeners.isEmpty, "no wildcard and no other address while waiting")
            #expect(h.kernel.isEmpty)
            try NetworkNamespace.ip("addr", "add", "203.0.113.5/24", "dev", "lan0")
            #expect(h.run(until: { h.listening == ["203.0.113.5:21118"] }))
            #expect(h.violations.isEmpty, "never wider: \(h.violations)")
            #expect(h.close() == 0)
        }
    }

    @Test func aZonedLinkLocalAddressFollowsTheInterfaceAcrossReCreation() throws {
        try NetworkNamespace.run {
            let h = try Harness("fe80::1%vpn1", allowed: { $0 == Fixtures.v6("fe80::1") })
            try Self.makeLink("vpn1")
            try NetworkNamespace.ip("addr", "add", "fe80::1/64", "dev", "vpn1", "nodad")
            #expect(h.run(until: { h.listening == ["[fe80::1%vpn1]:21118"] }))
            let firstIndex = h.follower.group.listeners.first?.address.scopeID

            try NetworkNamespace.ip("link", "del", "vpn1")
            #expect(h.run(until: { h.listening.isEmpty }))
            try Self.makeLink("vpn1")
            try NetworkNamespace.ip("addr", "add", "fe80::1/64", "dev", "vpn1", "nodad")
            #expect(h.run(until: { h.listening == ["[fe80::1%vpn1]:21118"] }))
            let secondIndex = h.follower.group.listeners.first?.address.scopeID
            #expect(firstIndex != nil && secondIndex != nil && firstIndex != secondIndex, "a new index, followed by name")
            #expect(h.count { $0.kind == .stopped && $0.reason == "interface removed" } == 1)
            #expect(h.violations.isEmpty, "never wider: \(h.violations)")
            #expect(h.close() == 0)
        }
    }

    @Test func aTentativeIPv6AddressIsBoundOnlyAfterDuplicateAddressDetection() throws {
        try NetworkNamespace.run {
            let wanted = Fixtures.v6("2001:db8::7")
            let h = try Harness("2001:db8::7", allowed: { $0 == wanted })
            try Self.makeLink("vpn2")
            // DAD on (the namespace's default), one probe: about a second.
            try NetworkNamespace.ip("addr", "add", "2001:db8::7/64", "dev", "vpn2")
            var sawTentative = false
            var boundWhileTentative = false
            h.run(until: {
                let tentative = Self.isTentative("20010db8000000000000000000000007")
                sawTentative = sawTentative || tentative
                if tentative, !h.follower.group.listeners.isEmpty { boundWhileTentative = true }
                return !h.follower.group.listeners.isEmpty
            }, seconds: 8)
            #expect(h.listening == ["[2001:db8::7]:21118"])
            #expect(sawTentative, "the address was tentative for a while")
            #expect(!boundWhileTentative)
            #expect(h.count { $0.kind == .failed } == 0, "no error storm while waiting")
            #expect(h.events.count <= 4, "\(h.events.map(\.event.description))")
            #expect(h.violations.isEmpty, "never wider: \(h.violations)")
            #expect(h.close() == 0)
        }
    }

    /// Flags of an address in /proc/net/if_inet6 (hex, IFA_F_TENTATIVE is 0x40).
    static func isTentative(_ hex: String) -> Bool {
        guard let file = fopen("\(proc)/if_inet6", "r") else { return false }
        defer { fclose(file) }
        var line: UnsafeMutablePointer<CChar>?
        var capacity = 0
        defer { free(line) }
        while getline(&line, &capacity, file) > 0 {
            let fields = String(cString: line!).split(separator: " ", omittingEmptySubsequences: true)
            if fields.count > 4, fields[0] == hex, let flags = UInt32(fields[4], radix: 16) {
                return flags & 0x40 != 0
            }
        }
        return false
    }

    @Test func aThousandRapidChangesEndInExactlyTheRightState() throws {
        try NetworkNamespace.run {
            try Self.makeLink("vpn3")
            let allowed: Set<IPAddress> = [Fixtures.v4("198.51.100.10"), Fixtures.v4("198.51.100.11")]
            let h = try Harness("vpn3", allowed: { allowed.contains($0) })
            // 1,000 adds and removes in one `ip -batch`, while the loop is not
            // reading: the kernel's queue may overflow (ENOBUFS), then a resync.
            var script = ""
            for _ in 0..<500 {
                // /32 each: deleting a subnet's primary address would take its secondaries along.
                script += "addr add 198.51.100.10/32 dev vpn3\naddr add 198.51.100.11/32 dev vpn3\n"
                script += "addr del 198.51.100.10/32 dev vpn3\naddr del 198.51.100.11/32 dev vpn3\n"
            }
            script += "addr add 198.51.100.11/32 dev vpn3\n"
            let path = "/tmp/uvbind-follow-\(getpid()).batch"
            let file = fopen(path, "w")!
            fputs(script, file)
            fclose(file)
            defer { unlink(path) }
            try NetworkNamespace.ip("-batch", path)
            #expect(h.run(until: { h.listening == ["198.51.100.11:21118"] && h.kernel == ["198.51.100.11:21118"] }))
            // Settled: nothing more happens, and exactly one socket listens.
            h.run(until: { false }, seconds: 0.3)
            #expect(h.listening == ["198.51.100.11:21118"])
            #expect(h.kernel == ["198.51.100.11:21118"], "no leaked listener")
            #expect(h.violations.isEmpty, "never wider: \(h.violations)")
            #expect(h.close() == 0)
            #expect(ListeningSockets.on(port: Self.port, root: Self.proc).isEmpty)
        }
    }

    @Test func lostEventsCauseAFullResyncThatEndsRight() throws {
        try NetworkNamespace.run {
            try Self.makeLink("vpn6")
            let h = try Harness("vpn6", allowed: { $0 == Fixtures.v4("198.51.100.40") })
            // A tiny receive buffer, and many events while the loop does not read: ENOBUFS.
            var size: Int32 = 256
            #expect(setsockopt(h.follower.netlinkDescriptor, SOL_SOCKET, SO_RCVBUFFORCE, &size,
                               socklen_t(MemoryLayout<Int32>.size)) == 0)
            var script = ""
            for _ in 0..<200 {
                script += "addr add 198.51.100.40/32 dev vpn6\naddr del 198.51.100.40/32 dev vpn6\n"
            }
            script += "addr add 198.51.100.40/32 dev vpn6\n"
            let path = "/tmp/uvbind-resync-\(getpid()).batch"
            let file = fopen(path, "w")!
            fputs(script, file)
            fclose(file)
            defer { unlink(path) }
            try NetworkNamespace.ip("-batch", path)
            #expect(h.run(until: { h.listening == ["198.51.100.40:21118"] }))
            #expect(h.count { $0.kind == .resynchronised } >= 1, "the overflow was reported")
            #expect(h.kernel == ["198.51.100.40:21118"])
            // Still watching after the overflow (libuv stops a poll handle on POLLERR).
            try NetworkNamespace.ip("addr", "del", "198.51.100.40/32", "dev", "vpn6")
            #expect(h.run(until: { h.listening.isEmpty }, seconds: 2), "the next event is still seen")
            #expect(h.kernel.isEmpty)
            #expect(h.violations.isEmpty, "never wider: \(h.violations)")
            #expect(h.close() == 0)
        }
    }

    @Test func aTakenAddressIsReportedOnceAndRetriedWithoutAnEvent() throws {
        try NetworkNamespace.run {
            try Self.makeLink("vpn7")
            try NetworkNamespace.ip("addr", "add", "198.51.100.50/24", "dev", "vpn7")
            // Someone else listens there first.
            let loop = TestLoop()
            let blocker = try ListenerGroup.open(BindPlan(value: "198.51.100.50", port: Self.port), loop: loop.loop) { _, _ in }
            let h = try Harness("vpn7", allowed: { $0 == Fixtures.v4("198.51.100.50") })
            #expect(h.follower.group.listeners.isEmpty)
            #expect(h.count { $0.kind == .failed && $0.error?.kind == .addressInUse } == 1)
            // Retries on the back-off timer do not report the same failure again.
            h.run(until: { false }, seconds: 0.7)
            #expect(h.count { $0.kind == .failed } == 1, "\(h.events.map(\.event.description))")
            // Freed with no netlink event at all: the back-off timer retries.
            blocker.close()
            #expect(loop.close() == 0)
            #expect(h.run(until: { h.listening == ["198.51.100.50:21118"] }, seconds: 10))
            #expect(h.close() == 0)
        }
    }

    @Test func bindToDeviceBindsEachListenerToItsInterface() throws {
        try NetworkNamespace.run {
            try Self.makeLink("vpn4")
            try NetworkNamespace.ip("addr", "add", "198.51.100.20/24", "dev", "vpn4")
            let h = try Harness("vpn4", bindToDevice: true, allowed: { $0 == Fixtures.v4("198.51.100.20") })
            #expect(h.listening == ["198.51.100.20:21118"])
            let fd = try #require(h.follower.group.listeners.first?.fileDescriptor)
            var name = [CChar](repeating: 0, count: 32)
            var length = socklen_t(name.count)
            #expect(getsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, &name, &length) == 0)
            #expect(String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) == "vpn4")
            #expect(h.close() == 0)
        }
    }

    @Test func updatingTheValueKeepsWhatItStillNames() throws {
        try NetworkNamespace.run {
            try Self.makeLink("vpn8")
            try NetworkNamespace.ip("addr", "add", "198.51.100.60/32", "dev", "vpn8")
            try NetworkNamespace.ip("addr", "add", "198.51.100.61/32", "dev", "vpn8")
            let h = try Harness("198.51.100.60", allowed: { $0 == Fixtures.v4("198.51.100.60") || $0 == Fixtures.v4("198.51.100.61") })
            let kept = try #require(h.follower.group.listeners.first)
            let fd = kept.fileDescriptor
            try h.follower.update(value: "198.51.100.60, 198.51.100.61, nosuch1")
            #expect(h.listening == ["198.51.100.60:21118", "198.51.100.61:21118"])
            #expect(h.follower.group.listeners.first === kept && kept.fileDescriptor == fd)
            #expect(h.count { $0.kind == .waiting && $0.element == "nosuch1" } == 1)
            #expect(throws: BindError.self) { try h.follower.update(value: "198.51.100.61,,") }
            #expect(h.listening == ["198.51.100.60:21118", "198.51.100.61:21118"], "a bad value changes nothing")
            try h.follower.update(value: "198.51.100.61")
            #expect(h.listening == ["198.51.100.61:21118"])
            #expect(h.kernel == ["198.51.100.61:21118"])
            #expect(h.close() == 0)
        }
    }

    @Test func aMalformedValueStillFailsAtStart() {
        let loop = TestLoop()
        for value in ["::1%lo,vpn0", "999.1.1.1", "vpn0,"] {
            #expect(throws: BindError.self, "\(value)") {
                _ = try ListenerFollower(value: value, port: 1, loop: loop.loop, onConnection: { _, _ in }) { _ in }
            }
        }
        for value in ["", "0.0.0.0", "vpn0,::"] {
            let error = #expect(throws: BindError.self, "\(value)") {
                _ = try ListenerFollower(value: value, port: 1, loop: loop.loop, bindToDevice: true,
                                         onConnection: { _, _ in }) { _ in }
            }
            #expect(error?.kind == .invalidFormat)
            #expect(error?.description.contains("bind-to-device") == true)
        }
        #expect(loop.close() == 0)
    }
}
