import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Testing
@testable import directd

/// `metrics-listen`: its grammar, and a running directd's endpoint under real
/// traffic and hostile scrapers.
@Suite(.serialized)
struct MetricsEndpointTests {
    @Test(arguments: ["127.0.0.1:9118", "[::1]:0", "0.0.0.0:9118", "unix:/run/directd/metrics.sock"])
    func acceptsOneAddressOrAUnixPath(_ text: String) throws {
        if text.hasPrefix("[::1]"), !hostHasIPv6Loopback { return }
        let endpoint = try MetricsEndpoint(parsing: text)
        #expect(endpoint.text == text)
    }

    /// Nothing that could widen the listener, and nothing ambiguous, is taken.
    @Test(arguments: [":9118", "127.0.0.1", "lo:9118", "127.0.0.1,127.0.0.2:9118", "::1:9118",
                      "127.0.0.1:65536", "127.0.0.1:x", "[::1]", "unix:relative/path", "unix:", "localhost:9118",
                      "[fe80::1]:9118", "127.0.0.1:9118/"])
    func refusesAnythingElse(_ text: String) {
        #expect(throws: ConfigError.self) { try MetricsEndpoint(parsing: text) }
    }

    @Test func anInvalidValueIsAConfigError() throws {
        let finished = try runDirectd(["check", "--bind-interface", "127.0.0.1", "--metrics-listen", "lo:9118"])
        #expect(finished.status == 78)
        #expect(finished.stderr.contains("Invalid metrics-listen"))
    }

    @Test func answersOnlyGetMetrics() throws {
        let daemon = try Daemon(["--bind-interface", "127.0.0.1", "--port", "0", "--metrics-listen", "127.0.0.1:0"])
        let port = try #require(daemon.metricsPort)
        let ok = try httpGet(port, request: "GET /metrics HTTP/1.0\r\n\r\n")
        #expect(ok.status == "HTTP/1.0 200 OK")
        #expect(ok.headers.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8"))
        #expect(ok.body.contains("directd_connections_open{listener=\"\(daemon.listening[0])\"} 0"))
        #expect(try httpGet(port, request: "GET /metrics?x=1 HTTP/1.1\nHost: a\n\n").status == "HTTP/1.1 200 OK")
        #expect(try httpGet(port, request: "GET / HTTP/1.1\r\n\r\n").status == "HTTP/1.1 404 Not Found")
        let post = try httpGet(port, request: "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
        #expect(post.status == "HTTP/1.1 405 Method Not Allowed")
        #expect(post.headers.contains("Allow: GET"))
        #expect(try httpGet(port, request: "GET /metrics SPDY/3\r\n\r\n").status.hasSuffix("400 Bad Request"))
        #expect(daemon.stop() == 0)
    }

    /// Admitted, refused (whitelist, per-client limit) and failed connections
    /// show in the counters with the values the script produced.
    @Test func countsWhatHappened() throws {
        let upstream = try TestServer(behaviour: Behaviour.echo)
        let daemon = try Daemon(["--bind-interface", "127.0.0.1", "--port", "0", "--forward", "127.0.0.1:\(upstream.port)",
                                 "--whitelist", "127.0.0.1", "--max-connections-per-client", "2",
                                 "--metrics-listen", "127.0.0.1:0"])
        let port = daemon.port, metrics = try #require(daemon.metricsPort)
        let listener = "listener=\"\(daemon.listening[0])\""
        let payload = randomBytes(1000)
        for _ in 0..<3 {
            let client = try TCPClient(host: "127.0.0.1", port: port)
            _ = client.send(payload)
            client.finishSending()
            #expect(client.receiveAll() == payload)
        }
        // Not in the whitelist: accepted and closed at once.
        let stranger = try TCPClient(host: "127.0.0.1", port: port, source: "127.0.0.2")
        _ = stranger.receiveUntilEnd()
        // Two held open (each proven admitted by a round trip), the third refused.
        let held = try (0..<2).map { _ in try TCPClient(host: "127.0.0.1", port: port) }
        for client in held {
            _ = client.send([1, 2, 3])
            #expect(client.receive(exactly: 3) == [1, 2, 3])
        }
        let third = try TCPClient(host: "127.0.0.1", port: port)
        _ = third.receiveUntilEnd()
        held.forEach { $0.finishSending(); _ = $0.receiveAll() }
        // The upstream gone: two connects refused.
        upstream.stop()
        for _ in 0..<2 {
            let client = try TCPClient(host: "127.0.0.1", port: port)
            _ = client.receiveUntilEnd()
        }
        let samples = try scrape(metrics) { $0["directd_connection_duration_seconds_count"] == 7 }
        #expect(samples["directd_connections_open{\(listener)}"] == 0)
        #expect(samples["directd_connections_accepted_total{\(listener)}"] == 7)
        #expect(samples["directd_connections_refused_total{\(listener),reason=\"whitelist\"}"] == 1)
        #expect(samples["directd_connections_refused_total{\(listener),reason=\"max_connections_per_client\"}"] == 1)
        #expect(samples["directd_connections_refused_total{\(listener),reason=\"max_connections\"}"] == 0)
        #expect(samples["directd_connections_refused_total{\(listener),reason=\"rate_limit\"}"] == 0)
        #expect(samples["directd_upstream_connect_failures_total{cause=\"refused\"}"] == 2)
        #expect(samples["directd_upstream_connect_failures_total{cause=\"timeout\"}"] == 0)
        #expect(samples["directd_upstream_connect_duration_seconds_count"] == 5)
        #expect(samples["directd_client_received_bytes_total{\(listener)}"] == 3006)
        #expect(samples["directd_client_sent_bytes_total{\(listener)}"] == 3006)
        let relayed = (samples["directd_relayed_bytes_total{method=\"splice\"}"] ?? 0)
            + (samples["directd_relayed_bytes_total{method=\"copy\"}"] ?? 0)
        #expect(relayed == 6012)   // each byte relayed twice: to the upstream and back
        #expect(samples["directd_buffers_in_use"] == 0)
        #expect(samples["directd_buffer_waiting_connections"] == 0)
        #expect((samples["directd_descriptors_limit"] ?? 0) > (samples["directd_descriptors_used"] ?? 0))
        #expect((samples["directd_descriptors_used"] ?? 0) > 0)
        #expect(daemon.stop() == 0)
    }

    /// An upstream that never answers is a timeout, counted apart from refusals.
    @Test func aSilentUpstreamCountsAsATimeout() throws {
        // A listener that never accepts, with its queue full, drops new SYNs.
        let silent = try TestServer(accepting: false, backlog: 0)
        var fillers: [TCPClient] = []
        for _ in 0..<4 {
            if let filler = try? TCPClient(host: "127.0.0.1", port: silent.port, connectTimeout: 1) { fillers.append(filler) }
        }
        let daemon = try Daemon(["--bind-interface", "127.0.0.1", "--port", "0", "--forward", "127.0.0.1:\(silent.port)",
                                 "--connect-timeout", "0.5", "--metrics-listen", "127.0.0.1:0"])
        let metrics = try #require(daemon.metricsPort)
        let client = try TCPClient(host: "127.0.0.1", port: daemon.port)
        _ = client.receiveUntilEnd()
        let samples = try scrape(metrics) { $0["directd_upstream_connect_failures_total{cause=\"timeout\"}"] == 1 }
        #expect(samples["directd_upstream_connect_failures_total{cause=\"timeout\"}"] == 1)
        #expect(samples["directd_upstream_connect_failures_total{cause=\"refused\"}"] == 0)
        #expect(samples["directd_upstream_connect_duration_seconds_count"] == 0)
        #expect(daemon.stop() == 0)
        silent.stop()
        _ = fillers
    }

    /// A reload that takes effect and one that is rejected are counted, and
    /// the time of the good one moves.
    @Test func reloadsAreCounted() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("directd-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let config = directory.appendingPathComponent("directd.json")
        try #"{"options": {"bind-interface": "127.0.0.1", "direct-access-port": 0, "max-connections": 5}}"#
            .write(to: config, atomically: true, encoding: .utf8)
        let daemon = try Daemon(["--config", config.path, "--metrics-listen", "127.0.0.1:0"])
        let metrics = try #require(daemon.metricsPort)
        let start = try #require(metricSamples(try httpGet(metrics).body)["directd_last_reload_success_timestamp_seconds"])
        usleep(20_000)
        try #"{"options": {"bind-interface": "127.0.0.1", "direct-access-port": 0, "max-connections": 6}}"#
            .write(to: config, atomically: true, encoding: .utf8)
        kill(daemon.pid, SIGHUP)
        var samples = try scrape(metrics) { $0["directd_reloads_total"] == 1 }
        #expect(samples["directd_reloads_total"] == 1)
        #expect((samples["directd_last_reload_success_timestamp_seconds"] ?? 0) > start)
        try #"{"options": {"bind-interface": "127.0.0.1", "direct-access-port": 0, "max-connections": "x"}}"#
            .write(to: config, atomically: true, encoding: .utf8)
        kill(daemon.pid, SIGHUP)
        samples = try scrape(metrics) { $0["directd_reloads_rejected_total"] == 1 }
        #expect(samples["directd_reloads_rejected_total"] == 1)
        #expect(samples["directd_reloads_total"] == 1)
        #expect(daemon.stop() == 0)
    }

    /// A hundred scrapers that send nothing and one that sends a 1 MB request
    /// line: relaying goes on, the endpoint still answers, and the idle ones
    /// are closed by the deadline.
    @Test func hostileScrapersLeaveRelayingAlone() throws {
        let daemon = try Daemon(["--bind-interface", "127.0.0.1", "--port", "0", "--metrics-listen", "127.0.0.1:0"])
        let port = daemon.port, metrics = try #require(daemon.metricsPort)
        let idle = try (0..<100).map { _ in try TCPClient(host: "127.0.0.1", port: metrics) }
        let huge = try TCPClient(host: "127.0.0.1", port: metrics)
        let hugeReply = Observed<[UInt8]?>(nil)
        let done = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            _ = huge.send(Array("GET /".utf8) + [UInt8](repeating: UInt8(ascii: "a"), count: 1 << 20))
            hugeReply.update { $0 = (try? huge.receiveUntilEnd().get()) ?? [] }
            done.signal()
        }
        let echo = try TCPClient(host: "127.0.0.1", port: port)
        for round in 0..<200 {
            let message = [UInt8](repeating: UInt8(round % 251), count: 64)
            _ = echo.send(message)
            #expect(echo.receive(exactly: 64) == message)
        }
        #expect(try httpGet(metrics).status == "HTTP/1.1 200 OK")
        #expect(done.wait(timeout: .now() + 20) == .success)
        let reply = hugeReply.get() ?? []
        // Answered 431, or cut with a reset while it was still sending: never read whole.
        #expect(reply.isEmpty || String(decoding: reply.prefix(12), as: UTF8.self) == "HTTP/1.1 431")
        // The idle ones end (the deadline, or evicted for newer ones), none answered.
        let ended = idle.prefix(5).map { $0.receiveUntilEnd() }
        #expect(ended.allSatisfy { (try? $0.get())?.isEmpty ?? true })
        for round in 0..<10 {
            let message = [UInt8](repeating: UInt8(round), count: 64)
            _ = echo.send(message)
            #expect(echo.receive(exactly: 64) == message)
        }
        #expect(daemon.stop() == 0)
    }

    @Test func servesOnAUnixSocketWithMode0660() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("directd-metrics-\(getpid())-\(UUID().uuidString.prefix(8)).sock").path
        defer { unlink(path) }
        let daemon = try Daemon(["--bind-interface", "127.0.0.1", "--port", "0", "--metrics-listen", "unix:\(path)"])
        var info = stat()
        #expect(lstat(path, &info) == 0)
        #expect(info.st_mode & 0o777 == 0o660)
        let reply = try UnixClient.exchange(path, request: Array("GET /metrics HTTP/1.0\r\n\r\n".utf8))
        let (status, _, body) = try splitHTTP(String(decoding: reply, as: UTF8.self))
        #expect(status == "HTTP/1.0 200 OK")
        #expect(body.contains("directd_build_info{"))
        #expect(daemon.stop() == 0)
        #expect(lstat(path, &info) != 0, "the socket file is removed at exit")
    }
}
