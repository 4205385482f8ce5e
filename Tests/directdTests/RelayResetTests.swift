import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Testing

/// A peer that writes a burst and then resets (SO_LINGER 0): the other side
/// must see the reset too, never a clean FIN, in every relay mode and both
/// directions. libuv makes up an EOF when EPOLLHUP comes with a partial read,
/// so without a look at the socket's pending error the copy path passed such
/// a reset on as a FIN in most runs (issue 18, item 2).
@Suite(.serialized)
struct RelayResetTests {
    /// How a relayed connection moves its bytes in the test.
    enum Mode: String, CaseIterable, CustomStringConvertible {
        case copy
        case splice
        /// `auto` with every pipe taken, so that each direction hands over to copying.
        case autoCopying
        var description: String { rawValue }
        var flag: String { self == .autoCopying ? "auto" : rawValue }
    }

    /// Which side writes the burst and resets.
    enum Resetter: String, CaseIterable, CustomStringConvertible {
        case client, upstream
        var description: String { rawValue }
    }

    /// Connections per mode and direction: the defect showed in 8 to 20 of 20.
    static let runs = 20
    /// The burst: enough for several reads, so that the reset often lands in
    /// the same readiness event as the last partial read.
    static let burstLength = 200_000

    /// How a stream ended as one side saw it: the bytes, and the error or nil for EOF.
    struct Outcome: Sendable, CustomStringConvertible {
        let bytes: [UInt8]
        let error: Int32?
        var description: String { "\(bytes.count) bytes, then \(error.map { String(cString: strerror($0)) } ?? "EOF")" }
    }

    /// Reads until EOF or an error (bounded by the socket's receive timeout).
    static func readToEnd(_ fd: Int32) -> Outcome {
        var data: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while data.count <= 4 * burstLength {
            let got = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if got == 0 { return Outcome(bytes: data, error: nil) }
            if got < 0 {
                if errno == EINTR { continue }
                return Outcome(bytes: data, error: errno)
            }
            data += chunk[0..<got]
        }
        return Outcome(bytes: data, error: E2BIG)
    }

    static func sendAll(_ fd: Int32, _ bytes: [UInt8]) {
        var offset = 0
        while offset < bytes.count {
            let sent = bytes[offset...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if sent < 0, errno == EINTR { continue }
            if sent <= 0 { return }
            offset += sent
        }
    }

    /// The upstream: the first byte says what a connection is for.
    /// 1: a pipe holder (floods a client that never reads, until it goes);
    /// 2: the client resets (read to the end and record how it ended);
    /// 3: the upstream resets (send the burst, then reset).
    static func upstream(burst: [UInt8], seen: Observed<[Outcome]>, flooded: Observed<Int>) throws -> TestServer {
        try TestServer { fd in
            var first: UInt8 = 0
            guard recv(fd, &first, 1, 0) == 1 else { return }
            switch first {
            case 1:
                var forever = timeval(tv_sec: 0, tv_usec: 0)   // until the holder leaves
                setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &forever, socklen_t(MemoryLayout<timeval>.size))
                let chunk = [UInt8](repeating: 0x55, count: 65536)
                for _ in 0..<(1 << 14) {   // at most 1 GiB
                    let sent = chunk.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                    if sent <= 0 { break }
                    flooded.update { $0 += sent }
                }
            case 2:
                let rest = readToEnd(fd)
                let outcome = Outcome(bytes: [first] + rest.bytes, error: rest.error)
                seen.update { $0.append(outcome) }
            default:
                sendAll(fd, burst)
                Behaviour.reset(fd)
            }
        }
    }

    @Test(arguments: Mode.allCases, Resetter.allCases)
    func aResetAfterABurstIsPassedOnAsAReset(_ mode: Mode, _ resetter: Resetter) throws {
        var burst = randomBytes(Self.burstLength)
        burst[0] = 2   // the upstream's selector for "the client resets"
        let seen = Observed<[Outcome]>([])
        let flooded = Observed(0)
        let upstream = try Self.upstream(burst: burst, seen: seen, flooded: flooded)
        defer { upstream.stop() }
        // memory-limit 256 KiB allows 4 pipes: four holders take them all.
        let daemon = try Daemon(["--bind-interface", "127.0.0.1", "--port", "0", "--forward", "127.0.0.1:\(upstream.port)",
                                 "--relay-mode", mode.flag, "--log-level", "debug"]
                                + (mode == .autoCopying ? ["--memory-limit", "256K"] : []))
        var holders: [TCPClient] = []
        if mode == .autoCopying {
            for _ in 0..<4 {
                let holder = try TCPClient(host: "127.0.0.1", port: daemon.port)
                #expect(holder.send([1]))
                holders.append(holder)
            }
            // Bounded wait until the floods stall: each holder's socket and its
            // pipe are full, so every pipe is taken.
            // Stalled: no progress over three samples 0.2 s apart (at most 10 s).
            var last = -1, still = 0
            for _ in 0..<50 where still < 3 {
                usleep(200_000)
                let now = flooded.get()
                still = now == last && now >= 4 << 20 ? still + 1 : 0
                last = now
            }
        }
        let first = holders.count + 1
        var clean: [String] = []
        for run in 0..<Self.runs {
            let id = first + run
            var client: TCPClient? = try TCPClient(host: "127.0.0.1", port: daemon.port)
            let outcome: Outcome
            switch resetter {
            case .client:
                // Counted before the burst: directd and the upstream can finish
                // this run before the next line of this thread runs.
                let before = seen.get().count
                #expect(client!.send(burst))
                Behaviour.reset(client!.fd)
                client = nil   // closes: SO_LINGER 0 makes it a reset
                let deadline = Date().addingTimeInterval(10)
                while seen.get().count == before, Date() < deadline { usleep(2_000) }
                guard let last = seen.get().last, seen.get().count > before else {
                    Issue.record("run \(run): the upstream saw no end within 10 s")
                    continue
                }
                outcome = last
            case .upstream:
                #expect(client!.send([3]))
                outcome = Self.readToEnd(client!.fd)
            }
            // Whatever arrived is the burst's beginning, byte for byte.
            let prefix = outcome.bytes.count <= burst.count && outcome.bytes.withUnsafeBytes { got in
                burst.withUnsafeBytes { memcmp(got.baseAddress ?? UnsafeRawPointer(bitPattern: 1)!, $0.baseAddress!, got.count) == 0 }
            }
            #expect(prefix, "\(mode), \(resetter) resets, run \(run): the bytes that arrived are not the burst's beginning")
            if outcome.error != ECONNRESET { clean.append("run \(run) (#\(id)): \(outcome)") }
            client = nil
        }
        #expect(clean.isEmpty, "\(mode), \(resetter) resets: the other side must see a reset, in \(clean.count) of \(Self.runs) it did not: \(clean)")
        if mode == .autoCopying {
            let side = resetter == .client ? "from the client" : "from the upstream"
            #expect(daemon.logText.contains("#\(first): copying \(side): no pipe free"), "the relay copied: \(daemon.logText.suffix(800))")
        }
        holders.removeAll()
        #expect(daemon.stop() == 0)
    }
}
