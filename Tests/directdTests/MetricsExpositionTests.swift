import CUV
import Testing
import UVBind
@testable import directd

/// The counters and their text exposition, driven directly.
struct MetricsExpositionTests {
    /// `name{labels} value` lines into a dictionary; comments are checked to
    /// name a known type for every family.
    static func samples(_ page: String) throws -> [String: String] {
        var samples: [String: String] = [:]
        for line in page.split(separator: "\n") {
            if line.hasPrefix("# TYPE ") {
                let kind = line.split(separator: " ").last.map(String.init)
                #expect(["counter", "gauge", "histogram"].contains(kind))
                continue
            }
            if line.hasPrefix("#") { continue }
            let space = try #require(line.lastIndex(of: " "))
            #expect(samples[String(line[..<space])] == nil, "one sample per series: \(line)")
            samples[String(line[..<space])] = String(line[line.index(after: space)...])
        }
        return samples
    }

    @Test func everyKnownSeriesStartsAtZero() throws {
        let metrics = Metrics()
        _ = metrics.listenerIndex(for: SocketAddress(ip: .v4(IPv4Address(127, 0, 0, 1)), port: 21118))
        let samples = try Self.samples(Exposition.render(metrics, MetricsSnapshot(version: "1.2.3", relayMode: "auto")))
        let listener = "listener=\"127.0.0.1:21118\""
        #expect(samples["directd_connections_open{\(listener)}"] == "0")
        for reason in ["whitelist", "max_connections", "max_connections_per_client", "rate_limit", "banned", "unknown_peer"] {
            #expect(samples["directd_connections_refused_total{\(listener),reason=\"\(reason)\"}"] == "0")
        }
        for cause in ["refused", "timeout", "unreachable", "other"] {
            #expect(samples["directd_upstream_connect_failures_total{cause=\"\(cause)\"}"] == "0")
        }
        #expect(samples["directd_upstream_connect_duration_seconds_bucket{le=\"+Inf\"}"] == "0")
        #expect(samples["directd_build_info{version=\"1.2.3\",relay_mode=\"auto\"}"] == "1")
        #expect(samples.keys.allSatisfy { $0.hasPrefix("directd_") })
    }

    @Test func eventsCountWhereTheyHappen() throws {
        let metrics = Metrics()
        let first = metrics.listenerIndex(for: SocketAddress(ip: .v4(IPv4Address(127, 0, 0, 1)), port: 1))
        let second = metrics.listenerIndex(for: SocketAddress(ip: .v4(IPv4Address(127, 0, 0, 2)), port: 2))
        #expect(metrics.listenerIndex(for: SocketAddress(ip: .v4(IPv4Address(127, 0, 0, 1)), port: 1)) == first)
        metrics.admitted(on: first)
        metrics.admitted(on: first)
        metrics.listeners[first].counting(fromClient: true, toClient: false).add(10, spliced: true)
        metrics.listeners[first].counting(fromClient: false, toClient: true).add(7, spliced: false)
        metrics.listeners[first].counting(fromClient: true, toClient: true).add(5, spliced: false)   // an echo
        metrics.listeners[second].counting(fromClient: true, toClient: false).add(1, spliced: false)
        metrics.closed(on: first, seconds: 0.5)
        metrics.refused(on: second, .maxConnectionsPerClient)
        metrics.upstreamFailed(UpstreamFailure(UVError(UV_ECONNREFUSED.rawValue)))
        metrics.connectTime.observe(0.003)
        metrics.connectTime.observe(20)
        let samples = try Self.samples(Exposition.render(metrics, MetricsSnapshot(version: "1", relayMode: "copy")))
        #expect(samples["directd_connections_open{listener=\"127.0.0.1:1\"}"] == "1")
        #expect(samples["directd_connections_accepted_total{listener=\"127.0.0.1:1\"}"] == "2")
        #expect(samples["directd_client_received_bytes_total{listener=\"127.0.0.1:1\"}"] == "15")
        #expect(samples["directd_client_sent_bytes_total{listener=\"127.0.0.1:1\"}"] == "12")
        #expect(samples["directd_relayed_bytes_total{method=\"splice\"}"] == "10")
        #expect(samples["directd_relayed_bytes_total{method=\"copy\"}"] == "13")
        #expect(samples["directd_client_received_bytes_total{listener=\"127.0.0.2:2\"}"] == "1")
        #expect(samples["directd_connections_refused_total{listener=\"127.0.0.2:2\",reason=\"max_connections_per_client\"}"] == "1")
        #expect(samples["directd_connections_refused_total{listener=\"127.0.0.1:1\",reason=\"max_connections_per_client\"}"] == "0")
        #expect(samples["directd_upstream_connect_failures_total{cause=\"refused\"}"] == "1")
        // Cumulative buckets: 3 ms is under 5 ms, 20 s only under +Inf.
        #expect(samples["directd_upstream_connect_duration_seconds_bucket{le=\"0.0025\"}"] == "0")
        #expect(samples["directd_upstream_connect_duration_seconds_bucket{le=\"0.005\"}"] == "1")
        #expect(samples["directd_upstream_connect_duration_seconds_bucket{le=\"10\"}"] == "1")
        #expect(samples["directd_upstream_connect_duration_seconds_bucket{le=\"+Inf\"}"] == "2")
        #expect(samples["directd_upstream_connect_duration_seconds_count"] == "2")
        #expect(samples["directd_connection_duration_seconds_sum"] == "0.5")
    }

    @Test func labelValuesAreEscaped() {
        var text = ""
        Exposition.appendEscaped("a\"b\\c\nd", to: &text)
        #expect(text == #"a\"b\\c\nd"#)
    }
}
