/// Prometheus' text exposition format 0.0.4, written by hand: every series is
/// known in advance (listeners, reasons, causes, buckets), so the output is a
/// few dozen lines appended to one string. See the README ("Metrics") for why
/// not swift-prometheus.
struct Exposition {
    static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    private(set) var text = ""

    init(capacity: Int = 8 << 10) {
        text.reserveCapacity(capacity)
    }

    /// The whole page for `metrics` and the levels in `snapshot`.
    static func render(_ metrics: Metrics, _ snapshot: MetricsSnapshot) -> String {
        var page = Exposition(capacity: 4096 + metrics.listeners.count * 1024)
        page.family("directd_build_info", .gauge, "directd's version and relay mode (always 1).")
        page.sample("directd_build_info", [("version", snapshot.version), ("relay_mode", snapshot.relayMode)], 1)
        page.single("directd_start_time_seconds", .gauge, "Unix time directd started.", metrics.startTime)

        let listeners = metrics.listeners
        page.family("directd_connections_open", .gauge, "Connections open now, by listener.")
        for listener in listeners { page.sample("directd_connections_open", [("listener", listener.label)], Double(listener.open)) }
        page.family("directd_connections_accepted_total", .counter, "Connections admitted, by listener.")
        for listener in listeners { page.sample("directd_connections_accepted_total", [("listener", listener.label)], Double(listener.accepted)) }
        page.family("directd_connections_refused_total", .counter, "Connections accepted and closed at once, by listener and reason.")
        for listener in listeners {
            for reason in RefusalReason.allCases {
                page.sample("directd_connections_refused_total", [("listener", listener.label), ("reason", reason.label)],
                            Double(listener.refused[reason.rawValue]))
            }
        }
        page.family("directd_client_received_bytes_total", .counter, "Bytes read from clients, by listener.")
        for listener in listeners {
            page.sample("directd_client_received_bytes_total", [("listener", listener.label)], Double(listener.bytes.pointee.fromClients))
        }
        page.family("directd_client_sent_bytes_total", .counter, "Bytes written to clients, by listener.")
        for listener in listeners {
            page.sample("directd_client_sent_bytes_total", [("listener", listener.label)], Double(listener.bytes.pointee.toClients))
        }

        page.family("directd_upstream_connect_failures_total", .counter, "Upstream connects that failed, by cause.")
        for cause in UpstreamFailure.allCases {
            page.sample("directd_upstream_connect_failures_total", [("cause", cause.label)],
                        Double(metrics.upstreamFailures[cause.rawValue]))
        }
        page.histogram("directd_upstream_connect_duration_seconds", "Time an upstream took to accept a connection.", metrics.connectTime)
        page.histogram("directd_connection_duration_seconds", "How long admitted connections lasted, from accept to close.", metrics.connectionDuration)

        page.family("directd_relayed_bytes_total", .counter, "Bytes relayed, by how they moved (splice(2) or copied through user space).")
        page.sample("directd_relayed_bytes_total", [("method", "splice")], Double(metrics.splicedBytes))
        page.sample("directd_relayed_bytes_total", [("method", "copy")], Double(metrics.copiedBytes))

        page.single("directd_buffers_in_use", .gauge, "Relay buffers (64 KiB chunks) in use.", Double(snapshot.buffersInUse))
        page.single("directd_buffers_limit", .gauge, "Relay buffers memory-limit allows.", Double(snapshot.buffersLimit))
        page.single("directd_buffer_waiting_connections", .gauge, "Connection directions waiting for a relay buffer.", Double(snapshot.connectionsWaitingForBuffers))
        page.single("directd_pipes_in_use", .gauge, "Splice pipes in use.", Double(snapshot.pipesInUse))
        page.single("directd_pipes_open", .gauge, "Splice pipes open (in use and pooled).", Double(snapshot.pipesOpen))
        page.single("directd_descriptors_used", .gauge, "File descriptors in use, as the accept gate counts them.", Double(snapshot.descriptorsUsed))
        page.single("directd_descriptors_limit", .gauge, "The soft limit on file descriptors (RLIMIT_NOFILE).", Double(snapshot.descriptorLimit))

        page.single("directd_reloads_total", .counter, "Reloads that took effect.", Double(metrics.reloads))
        page.single("directd_reloads_rejected_total", .counter, "Reloads rejected (the old settings stayed).", Double(metrics.rejectedReloads))
        page.single("directd_last_reload_success_timestamp_seconds", .gauge, "Unix time of the last reload that took effect (the start before any).", metrics.lastGoodReload)
        page.single("directd_follow_events_total", .counter, "Listener changes made by bind-dynamic.", Double(metrics.followEvents))
        page.single("directd_log_lines_dropped_total", .counter, "Log lines dropped because standard error was not writable.", Double(snapshot.logLinesDropped))
        page.single("directd_log_lines_suppressed_total", .counter, "Log lines held back by the log's rate limits.", Double(snapshot.logLinesSuppressed))
        page.single("directd_journal_entries_dropped_total", .counter, "Audit entries the journal's socket did not take (written as plain lines instead).", Double(snapshot.journalEntriesDropped))
        return page.text
    }

    enum Kind: String { case counter, gauge, histogram }

    mutating func family(_ name: String, _ kind: Kind, _ help: String) {
        text += "# HELP \(name) \(help)\n# TYPE \(name) \(kind.rawValue)\n"
    }

    mutating func single(_ name: String, _ kind: Kind, _ help: String, _ value: Double) {
        family(name, kind, help)
        sample(name, [], value)
    }

    mutating func sample(_ name: String, _ labels: [(String, String)], _ value: Double) {
        text += name
        if !labels.isEmpty {
            text += "{"
            for (index, (label, labelValue)) in labels.enumerated() {
                if index > 0 { text += "," }
                text += label
                text += "=\""
                Self.appendEscaped(labelValue, to: &text)
                text += "\""
            }
            text += "}"
        }
        text += " "
        text += Self.number(value)
        text += "\n"
    }

    mutating func histogram(_ name: String, _ help: String, _ histogram: Histogram) {
        family(name, .histogram, help)
        var cumulative: UInt64 = 0
        for (bound, count) in zip(histogram.bounds, histogram.counts) {
            cumulative &+= count
            sample(name + "_bucket", [("le", Self.number(bound))], Double(cumulative))
        }
        sample(name + "_bucket", [("le", "+Inf")], Double(histogram.count))
        sample(name + "_sum", [], histogram.sum)
        sample(name + "_count", [], Double(histogram.count))
    }

    /// Integers without a fraction (counters up to 2^53 are exact); others as Swift prints them.
    static func number(_ value: Double) -> String {
        if value == value.rounded(), abs(value) < 9_007_199_254_740_992 { return String(Int64(value)) }
        return "\(value)"
    }

    /// A label value: backslash, double quote and line feed escaped, as the format says.
    static func appendEscaped(_ value: String, to text: inout String) {
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\\": text += "\\\\"
            case "\"": text += "\\\""
            case "\n": text += "\\n"
            default: text.unicodeScalars.append(scalar)
            }
        }
    }
}
