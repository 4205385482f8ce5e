import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Testing

/// The splice relay (`--relay-mode`): the same behaviour as copying, bytes moved
/// inside the kernel, and the ways it falls back to copying.
@Suite(.serialized)
struct SpliceTests {
    func relay(to port: UInt16, mode: String, _ extra: [String] = [], prefix: [String] = [],
               environment: [String: String] = [:]) throws -> Daemon {
        try Daemon(["--bind-interface", "127.0.0.1", "--port", "0", "--forward", "127.0.0.1:\(port)",
                    "--relay-mode", mode] + extra, prefix: prefix, environment: environment)
    }

    /// A random block of prime length: the expected stream is this block over
    /// and over, so a byte out of place shows unless it moved by an exact
    /// multiple of the length.
    static let blockLength = 1_000_003
    static let block: [UInt8] = randomBytes(blockLength)

    /// Sends `total` bytes of the block stream in writes of random size (1 byte
    /// to 256 KiB), half-closes, and meanwhile reads the echo back and compares
    /// each piece with the expected stream. True if every byte came back in order
    /// and the stream then ended cleanly.
    static func echoIntact(port: UInt16, total: Int) -> Bool {
        guard let client = try? TCPClient(host: "127.0.0.1", port: port) else { return false }
        let doubled = block + block   // any piece of at most blockLength bytes is one slice
        let sender = DispatchGroup()
        sender.enter()
        Thread.detachNewThread {
            defer { sender.leave() }
            var offset = 0
            while offset < total {
                let size = min(Int.random(in: 1...(256 << 10)), total - offset, blockLength)
                let start = offset % blockLength
                let sent = doubled[start..<(start + size)].withUnsafeBytes {
                    sendAll(client.fd, $0.baseAddress!, $0.count)
                }
                guard sent else { return }
                offset += size
            }
            client.finishSending()
        }
        var received = 0
        var intact = true
        var chunk = [UInt8](repeating: 0, count: 256 << 10)
        while true {
            let got = chunk.withUnsafeMutableBytes { recv(client.fd, $0.baseAddress, $0.count, 0) }
            if got < 0, errno == EINTR { continue }
            if got <= 0 { intact = intact && got == 0; break }
            let start = received % blockLength
            let same = chunk.withUnsafeBytes { bytes in
                doubled.withUnsafeBytes { memcmp(bytes.baseAddress!, $0.baseAddress! + start, got) == 0 }
            }
            if !same { intact = false }
            received += got
            if received > total { intact = false; break }
        }
        _ = sender.wait(timeout: .now() + 120)
        return intact && received == total
    }

    static func sendAll(_ fd: Int32, _ base: UnsafeRawPointer, _ count: Int) -> Bool {
        var offset = 0
        while offset < count {
            let sent = send(fd, base + offset, count - offset, Int32(MSG_NOSIGNAL))
            if sent < 0, errno == EINTR { continue }
            if sent <= 0 { return false }
            offset += sent
        }
        return true
    }

    @Test(arguments: ["copy", "splice", "auto"])
    func quarterGigabyteEachWayArrivesIntactOverConcurrentConnections(_ mode: String) throws {
        let upstream = try TestServer(behaviour: Behaviour.echo)
        let daemon = try relay(to: upstream.port, mode: mode, ["--log-level", "debug"])
        let port = daemon.port
        let connections = 4, each = 64 << 20   // 256 MiB each way in all
        let results = Observed<[Bool]>([])
        let group = DispatchGroup()
        for _ in 0..<connections {
            group.enter()
            Thread.detachNewThread {
                defer { group.leave() }
                let intact = Self.echoIntact(port: port, total: each)
                results.update { $0.append(intact) }
            }
        }
        #expect(group.wait(timeout: .now() + 240) == .success)
        #expect(results.get() == Array(repeating: true, count: connections))
        let line = "\(each) bytes from client, \(each) bytes to client"
        for _ in 0..<100 where daemon.logText.components(separatedBy: line).count < connections + 1 { usleep(50_000) }
        #expect(daemon.logText.components(separatedBy: line).count == connections + 1, "\(daemon.logText.suffix(600))")
        if mode != "copy" {
            #expect(!daemon.logText.contains(": copying from"), "every direction spliced: \(daemon.logText.suffix(600))")
        }
        #expect(daemon.stop() == 0)
        upstream.stop()
    }

    /// A TCP urgent byte (MSG_OOB) in the stream: splice(2) stops at its mark
    /// for good, where recv steps over it. The data behind the mark arrives,
    /// directd does not spin, and a FIN after it still delivers everything.
    @Test(arguments: ["copy", "splice", "auto"])
    func urgentByteNeitherStallsNorSpinsNorLosesData(_ mode: String) throws {
        let received = Observed<[UInt8]?>(nil)
        let upstream = try TestServer { fd in
            var all: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 65536)
            while true {
                let got = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                if got <= 0 { break }
                all += buffer[0..<got]
            }
            received.update { $0 = all }
        }
        defer { upstream.stop() }
        let daemon = try relay(to: upstream.port, mode: mode)
        defer { daemon.stop() }
        let client = try TCPClient(host: "127.0.0.1", port: daemon.port)
        let bulk = randomBytes(64 << 10)
        #expect(client.send(bulk))
        usleep(100_000)
        var urgent: UInt8 = 0x21
        #expect(Glibc.send(client.fd, &urgent, 1, Int32(MSG_OOB)) == 1)
        #expect(client.send(Array("TAIL".utf8)))
        usleep(300_000)
        let before = try #require(cpuSeconds(of: daemon.pid))
        usleep(1_000_000)
        let after = try #require(cpuSeconds(of: daemon.pid))
        #expect(after - before < 0.3, "\(mode): directd used \(after - before) s of CPU in 1 s after an urgent byte")
        client.finishSending()
        let deadline = Date().addingTimeInterval(10)
        while received.get() == nil, Date() < deadline { usleep(10_000) }
        #expect(received.get() == bulk + Array("TAIL".utf8), "\(mode): the data behind the urgent mark arrives")
    }

    @Test(arguments: ["copy", "splice", "auto"])
    func clientResetIsPassedOnAsAReset(_ mode: String) throws {
        let upstreamSaw = Observed<Int32?>(nil)
        let upstream = try TestServer { fd in
            var buffer = [UInt8](repeating: 0, count: 65536)
            while true {
                let got = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                if got > 0 { continue }
                upstreamSaw.update { $0 = got == 0 ? 0 : errno }
                return
            }
        }
        let daemon = try relay(to: upstream.port, mode: mode)
        do {
            let client = try TCPClient(host: "127.0.0.1", port: daemon.port)
            #expect(client.send(randomBytes(100_000)))
            usleep(200_000)
            Behaviour.reset(client.fd)
        }   // the client closes here, with SO_LINGER 0: a reset
        let deadline = Date().addingTimeInterval(10)
        while upstreamSaw.get() == nil, Date() < deadline { usleep(10_000) }
        #expect(upstreamSaw.get() == ECONNRESET, "the upstream must see a reset, not a clean end")
        #expect(daemon.waitForLog("client connection reset by peer (ECONNRESET)"))
        daemon.stop()
        upstream.stop()
    }

    @Test(arguments: ["copy", "splice", "auto"])
    func upstreamThatDoesNotReadHoldsBackTheClient(_ mode: String) throws {
        let release = Observed(false)
        let upstream = try TestServer { fd in
            let deadline = Date().addingTimeInterval(20)
            while !release.get(), Date() < deadline { usleep(10_000) }
            _ = Behaviour.drain(fd)
        }
        let daemon = try relay(to: upstream.port, mode: mode)
        let before = try #require(residentBytes(of: daemon.pid))
        let client = try TCPClient(host: "127.0.0.1", port: daemon.port)
        // Push until the sockets and the relay take no more, a few times over.
        let chunk = randomBytes(1 << 20)
        var taken = 0
        for _ in 0..<20 {
            taken += client.sendUntilBlocked(chunk, limit: 64 << 20)
            usleep(50_000)
        }
        let during = try #require(residentBytes(of: daemon.pid))
        #expect(taken < 32 << 20, "the relay took \(taken) bytes for an upstream that does not read")
        #expect(during - before < 8 << 20, "directd grew by \(during - before) bytes")
        release.update { $0 = true }
        client.finishSending()
        #expect(daemon.waitForLog("#1 closed: \(taken) bytes from client"))
        daemon.stop()
        upstream.stop()
    }

    @Test func kernelThatCannotSpliceFallsBackToCopyingInAutoMode() throws {
        let upstream = try TestServer(behaviour: Behaviour.echo)
        let hook = ["DIRECTD_TEST_SPLICE_EINVAL": "1"]
        let daemon = try relay(to: upstream.port, mode: "auto", ["--log-level", "debug"], environment: hook)
        #expect(Self.echoIntact(port: daemon.port, total: 8 << 20))
        #expect(daemon.waitForLog("#1 closed: 8388608 bytes from client, 8388608 bytes to client"))
        #expect(daemon.logText.contains("copying from the client: splice(2) refused: invalid argument (EINVAL)"))
        #expect(daemon.logText.contains("copying from the upstream: splice(2) refused"))
        daemon.stop()

        // relay-mode splice was asked for explicitly: the connection fails and says why.
        let strict = try relay(to: upstream.port, mode: "splice", environment: hook)
        let client = try TCPClient(host: "127.0.0.1", port: strict.port)
        #expect(client.send([1, 2, 3]))
        #expect(client.receiveUntilEnd().failureText == "Connection reset by peer")
        #expect(strict.waitForLog("relay-mode splice cannot relay this connection"))
        strict.stop()
        upstream.stop()
    }

    @Test func morePipesWantedThanThePoolHoldsAreServedByCopying() throws {
        // memory-limit 256 KiB allows 4 pipes. Four clients that do not read pin
        // one pipe each (their upstream floods them); the next connection finds
        // none free and copies.
        let upstream = try TestServer { fd in
            var first = [UInt8](repeating: 0, count: 1)
            _ = recv(fd, &first, 1, 0)
            if first[0] == 1 {
                _ = Behaviour.flood(fd, count: 64 << 20)
            } else {
                Behaviour.echo(fd)
            }
        }
        let daemon = try relay(to: upstream.port, mode: "splice", ["--memory-limit", "256K", "--log-level", "debug"])
        var stalled: [TCPClient] = []
        for _ in 0..<4 {
            let client = try TCPClient(host: "127.0.0.1", port: daemon.port)
            #expect(client.send([1]))
            stalled.append(client)
        }
        usleep(500_000)
        let payload = [UInt8(2)] + randomBytes(4 << 20)
        let client = try TCPClient(host: "127.0.0.1", port: daemon.port)
        Thread.detachNewThread { [payload] in _ = client.send(payload); client.finishSending() }
        #expect(client.receiveAll() == Array(payload.dropFirst()), "served, by copying")
        #expect(daemon.logText.contains("#5: copying from the upstream: no pipe free"), "\(daemon.logText.suffix(800))")
        stalled.removeAll()
        #expect(daemon.stop() == 0)
        upstream.stop()
    }

    @Test func shortOfDescriptorsConnectionsAreServedByCopying() throws {
        let upstream = try TestServer(behaviour: Behaviour.echo)
        // 40 descriptors: connections take two each (as copying ones do) until
        // bytes flow; then a direction needs a pipe (and room for a duplicate of
        // a full sink), and when the budget has no room for them it copies.
        let daemon = try relay(to: upstream.port, mode: "splice", ["--log-level", "debug"],
                               prefix: ["/usr/bin/prlimit", "--nofile=40:40", "--"])
        // Opens connections, each checked with a round trip, until two have
        // been made copying ones for want of descriptors (bounded: 10).
        var clients: [TCPClient] = []
        for index in 0..<10 {
            let client = try TCPClient(host: "127.0.0.1", port: daemon.port)
            let message = [UInt8(index), 1, 2, 3]
            #expect(client.send(message) && client.receive(exactly: 4) == message, "connection \(index) served")
            clients.append(client)
            if daemon.logText.components(separatedBy: "no pipe free (pool limit or descriptors)").count > 2 { break }
        }
        #expect(daemon.logText.components(separatedBy: "no pipe free (pool limit or descriptors)").count > 2,
                "\(daemon.logText.suffix(800))")
        #expect(daemon.logText.contains("#1 opened") && !daemon.logText.contains("#1: copying"), "the first one spliced")
        for client in clients {
            let payload = randomBytes(1 << 20)
            Thread.detachNewThread { [payload] in _ = client.send(payload); client.finishSending() }
            #expect(client.receiveAll() == payload)
        }
        #expect(daemon.waitForLog("#\(clients.count) closed"))
        #expect(!daemon.logText.contains("error"), "\(daemon.logText.suffix(800))")
        #expect(daemon.stop() == 0)
        upstream.stop()
    }

    @Test func relayModeIsCheckedAndReported() throws {
        let auto = try runDirectd(["check", "--bind-interface", "127.0.0.1", "--forward", "127.0.0.1:9"])
        #expect(auto.status == 0)
        #expect(auto.stderr.contains("relay mode auto: bulk through splice(2)"), "\(auto.stderr)")
        let copy = try runDirectd(["check", "--bind-interface", "127.0.0.1", "--forward", "127.0.0.1:9", "--relay-mode", "copy"])
        #expect(copy.stderr.contains("relay mode copy: through pooled user-space buffers"), "\(copy.stderr)")
        let wrong = try runDirectd(["check", "--relay-mode", "fast"])
        #expect(wrong.status == 78)
        #expect(wrong.stderr.contains("Invalid relay-mode \"fast\": expected one of auto, splice, copy"), "\(wrong.stderr)")
        let daemon = try Daemon(["--bind-interface", "127.0.0.1", "--port", "0", "--forward", "127.0.0.1:9",
                                 "--relay-mode", "splice"])
        #expect(daemon.logText.contains("relay mode splice: splice(2) through pooled pipes"), "\(daemon.logText)")
        daemon.stop()
    }

    /// strace's call counts for a 32 MiB round trip through the relay.
    func syscallCounts(mode: String) throws -> [String: Int] {
        let upstream = try TestServer(behaviour: Behaviour.echo)
        let summary = FileManager.default.temporaryDirectory.appendingPathComponent("strace-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: summary) }
        let daemon = try relay(to: upstream.port, mode: mode, ["--log-level", "warning"],
                               prefix: ["/usr/bin/strace", "-f", "-c", "-o", summary.path, "--"])
        #expect(Self.echoIntact(port: daemon.port, total: 32 << 20))
        // SIGTERM to strace would only detach it: stop directd, and strace
        // writes its summary and exits with directd's status.
        let children = (try? String(contentsOfFile: "/proc/\(daemon.pid)/task/\(daemon.pid)/children", encoding: .utf8)) ?? ""
        let directd = try #require(children.split(separator: " ").first.flatMap { Int32($0) })
        kill(directd, SIGTERM)
        #expect(daemon.stop(signal: 0) == 0)
        upstream.stop()
        let text = try String(contentsOf: summary, encoding: .utf8)
        var counts: [String: Int] = [:]
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            // % time, seconds, usecs/call, calls, [errors], syscall
            guard fields.count >= 5, let calls = Int(fields[3]), let name = fields.last else { continue }
            counts[String(name)] = calls
        }
        return counts
    }

    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/strace"), "needs strace"))
    func spliceModeMovesPayloadWithSpliceAndNoReadsOrWrites() throws {
        // 32 MiB each way: copying in 64 KiB reads takes at least 1,024 reads;
        // splicing through 256 KiB pipes at least 512 splices (in and out).
        let payloadCalls = ["read", "write", "readv", "writev", "recvfrom", "sendto", "recvmsg", "sendmsg"]
        let spliced = try syscallCounts(mode: "splice")
        let splicedIO = payloadCalls.reduce(0) { $0 + (spliced[$1] ?? 0) }
        #expect((spliced["splice"] ?? 0) >= 512, "\(spliced)")
        #expect(splicedIO < 100, "splice mode read or wrote payload: \(spliced)")
        let copied = try syscallCounts(mode: "copy")
        #expect(copied["splice"] == nil, "\(copied)")
        #expect(payloadCalls.reduce(0) { $0 + (copied[$1] ?? 0) } >= 1024, "the count would show copying: \(copied)")
    }
}
