import Foundation
#if canImport(Glibc)
import Glibc
#endif
import CUV
import Testing
import UVBind
@testable import directd

extension TestLoop {
    /// Runs until no handle is left, then closes the loop: 0 when every handle
    /// was closed (nothing leaked on the loop).
    func finish() -> Int32 {
        run(until: { uv_loop_alive(loop) == 0 }, limit: 5000)
        let result = uv_loop_close(loop)
        if result == 0 { loop.deallocate() }
        return result
    }
}

/// A host that records what sessions tell it.
final class RecordingHost: SessionHost {
    var descriptors = 0
    var closed: [(UInt64, String?)] = []
    func session(_ session: Session, changedDescriptorsBy delta: Int) { descriptors += delta }
    func session(_ session: Session, upstreamFailed reason: String) {}
    func sessionWaitsForMemory(_ session: Session) {}
    func sessionClosed(_ session: Session, reason: String?) { closed.append((session.id, reason)) }
}

/// directd's parts on a test loop, in this process: the accept gate's
/// decisions, the session table and its deadline scan, and a whole server's
/// half-close and reset ordering over real loopback sockets.
@Suite(.serialized)
struct InProcessTests {
    func address(_ text: String, port: UInt16 = 40000) -> SocketAddress {
        if let v4 = IPv4Address(text) { return SocketAddress(ip: .v4(v4), port: port) }
        return SocketAddress(ip: .v6(IPv6Address(text)!), port: port)
    }

    /// Sessions with made-up peers, in a table.
    func table(peers: [String], loop: TestLoop, host: RecordingHost) -> (SessionTable, [Session]) {
        let table = SessionTable()
        let pool = BufferPool(memoryLimit: 1 << 20)
        var sessions: [Session] = []
        for peer in peers {
            let session = Session(host: host, loop: loop.loop, pool: pool, writeQueueLimit: 65536,
                                  id: table.takeIdentifier())!
            session.peer = address(peer)
            table.insert(session)
            sessions.append(session)
        }
        return (table, sessions)
    }

    @Test func acceptGateDecisions() throws {
        let loop = TestLoop()
        let host = RecordingHost()
        let (table, sessions) = table(peers: ["192.0.2.1", "192.0.2.1", "::ffff:192.0.2.1", "198.51.100.9"],
                                      loop: loop, host: host)
        #expect(host.descriptors == 4, "each session holds its client's descriptor")
        #expect(table.connections(from: .v4(IPv4Address("192.0.2.1")!)) == 3, "mapped peers count as IPv4")
        let allow = try AllowList(parsing: "192.0.2.0/24")
        var policy = Admission.Policy(allowList: allow, maxConnections: 10, maxConnectionsPerClient: 0)
        #expect(Admission.refusal(of: address("192.0.2.7"), by: policy, table: table) == nil)
        #expect(Admission.refusal(of: address("::ffff:192.0.2.7"), by: policy, table: table) == nil)
        #expect(Admission.refusal(of: address("203.0.113.1"), by: policy, table: table) == .notAllowed)
        #expect(Admission.refusal(of: nil, by: policy, table: table) == .unknownPeer)
        policy.maxConnectionsPerClient = 3
        #expect(Admission.refusal(of: address("::ffff:192.0.2.1"), by: policy, table: table) == .maxConnectionsPerClient(3))
        #expect(Admission.refusal(of: address("192.0.2.2"), by: policy, table: table) == nil)
        policy.maxConnections = 4
        #expect(Admission.refusal(of: address("192.0.2.2"), by: policy, table: table) == .maxConnections(4))

        // Closing gives the slots and descriptors back.
        sessions.forEach { $0.close(reason: "test") }
        #expect(host.descriptors == 0)
        #expect(sessions.allSatisfy { table.remove($0) })
        #expect(table.connections(from: .v4(IPv4Address("192.0.2.1")!)) == 0)
        #expect(table.isEmpty)
        #expect(loop.finish() == 0, "every handle closed")
    }

    @Test func deadlineScanFindsIdleSessionsOnly() {
        let loop = TestLoop()
        let host = RecordingHost()
        let (table, sessions) = table(peers: ["192.0.2.1", "192.0.2.2"], loop: loop, host: host)
        let opened = sessions[0].opened
        #expect(table.expired(at: opened + 999, connectLimit: 5000, idleLimit: 1000).isEmpty)
        let expired = table.expired(at: opened + 1000, connectLimit: 5000, idleLimit: 1000)
        #expect(expired.count == 2 && expired.allSatisfy { $0.1 == .idle })
        #expect(table.expired(at: opened + 1_000_000, connectLimit: 5000, idleLimit: 0).isEmpty, "idle-timeout 0 is off")
        sessions.forEach { $0.close(reason: nil) }
        #expect(loop.finish() == 0)
    }

    /// A whole server on the test loop: an echo whose client half-closes gets
    /// every byte back and then EOF; the session ends only then.
    @Test func echoPassesHalfCloseOnAfterTheData() throws {
        let loop = TestLoop()
        var settings = Settings()
        settings.bindInterface = "127.0.0.1"
        settings.port = 0
        let server = Server(loop: loop.loop, settings: settings)
        try server.listen(BindPlan(value: "127.0.0.1", port: 0))
        server.measureDescriptors()
        let port = try #require(server.listeningAddresses.first?.port)
        let received = Observed<Result<[UInt8], TestFailure>?>(nil)
        let payload = randomBytes(300_000)
        Thread.detachNewThread {
            guard let client = try? TCPClient(host: "127.0.0.1", port: port) else { return }
            _ = client.send(payload)
            client.finishSending()
            let result = client.receiveUntilEnd()
            received.update { $0 = result }
        }
        #expect(loop.run(until: { received.get() != nil }))
        #expect(try received.get()?.get() == payload)
        #expect(loop.run(until: { server.table.isEmpty && server.table.total == 1 }))
        server.stop()
        #expect(loop.finish() == 0, "the server closed every handle")
    }

    /// A relay whose upstream resets: the client gets a reset too (never a FIN,
    /// which would make a cut stream look complete).
    @Test func upstreamResetReachesTheClientAsAReset() throws {
        let upstream = try TestServer { fd in
            var byte: UInt8 = 0
            _ = recv(fd, &byte, 1, 0)
            Behaviour.reset(fd)
        }
        defer { upstream.stop() }
        let loop = TestLoop()
        var settings = Settings()
        settings.forward = try Upstream(parsing: "127.0.0.1:\(upstream.port)")
        let server = Server(loop: loop.loop, settings: settings)
        try server.listen(BindPlan(value: "127.0.0.1", port: 0))
        server.measureDescriptors()
        let port = try #require(server.listeningAddresses.first?.port)
        let received = Observed<String??>(nil)
        Thread.detachNewThread {
            guard let client = try? TCPClient(host: "127.0.0.1", port: port) else { return }
            _ = client.send([1])
            let result = client.receiveUntilEnd().failureText
            received.update { $0 = .some(result) }
        }
        #expect(loop.run(until: { received.get() != nil }))
        #expect(received.get() == .some("Connection reset by peer"))
        #expect(loop.run(until: { server.table.isEmpty }))
        server.stop()
        #expect(loop.finish() == 0)
    }
}
