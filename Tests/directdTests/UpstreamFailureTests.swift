import Foundation
#if canImport(Glibc)
import Glibc
#endif
import CUV
import Testing
@_spi(Daemon) import UVBind
@testable import directd

/// An upstream that fails before the relay starts: the client gets a reset,
/// never a FIN after 0 bytes, which would look like an empty successful reply
/// (issue 18, item 11). Refusals and timeouts are proven through the binary
/// (`RelayTests`); this is the case a process test cannot time: the upstream
/// accepts, sends, and resets before the loop runs the connect callback.
@Suite(.serialized)
struct UpstreamFailureTests {
    @Test func anUpstreamThatResetsBeforeTheConnectCallbackResetsTheClient() throws {
        let reset = Observed(false)
        let upstream = try TestServer { fd in
            // As much of 128 KiB as the socket takes without the relay reading, then RST.
            let burst = randomBytes(128 << 10)
            _ = burst.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT | MSG_NOSIGNAL)) }
            Behaviour.reset(fd)
            close(fd)
            reset.update { $0 = true }
        }
        defer { upstream.stop() }
        // The client's connection: the test holds one end, the session the other.
        let front = try TestServer(accepting: false)
        defer { front.stop() }
        let client = try TCPClient(host: "127.0.0.1", port: front.port)
        let accepted = accept(front.fd, nil, nil)
        try #require(accepted >= 0)

        let loop = TestLoop()
        let host = RecordingHost()
        let session = try #require(Session(host: host, loop: loop.loop, pool: BufferPool(memoryLimit: 1 << 20),
                                           writeQueueLimit: 65536, id: 1))
        try #require(uv_tcp_open(session.client, accepted) == 0)
        session.startRelay(to: try Upstream(parsing: "127.0.0.1:\(upstream.port)"))
        // The loop does not run until the upstream has sent and reset (bounded).
        let deadline = Date().addingTimeInterval(10)
        while !reset.get(), Date() < deadline { usleep(1_000) }
        #expect(reset.get(), "the upstream reset within 10 s")
        usleep(50_000)   // the RST crosses loopback
        #expect(loop.run(until: { !host.closed.isEmpty }))
        #expect(client.receiveUntilEnd().failureText == "Connection reset by peer",
                "the client must see a reset, not an empty reply")
        #expect(loop.finish() == 0, "every handle closed")
    }
}
