import UVBind

extension Server {
    /// Gives every listener open now its counters, so that their series exist
    /// (at 0) before the first connection.
    func registerListeners() {
        listenerSource?.listeners.forEach { _ = metrics.listenerIndex(for: $0.address) }
    }

    /// The levels a scrape reads, taken now (on the loop).
    func metricsSnapshot() -> MetricsSnapshot {
        var snapshot = MetricsSnapshot(version: BuildIdentity.number, relayMode: relay.mode.rawValue)
        snapshot.buffersInUse = pool.outstanding
        snapshot.buffersLimit = pool.limit
        snapshot.connectionsWaitingForBuffers = pool.waitingCount
        snapshot.pipesInUse = relay.pipes.inUse
        snapshot.pipesOpen = relay.pipes.open
        snapshot.descriptorsUsed = gate.descriptorsInUse
        snapshot.descriptorLimit = gate.descriptorLimit
        snapshot.logLinesDropped = Log.linesDropped
        snapshot.logLinesSuppressed = Log.linesSuppressed
        snapshot.journalEntriesDropped = Log.journalEntries.dropped
        return snapshot
    }

    /// Serves `GET /metrics` at `endpoint` (a unix socket with mode 0660).
    func serveMetrics(at endpoint: MetricsEndpoint) throws(EndpointError) {
        let server = try openEndpoint(endpoint.place, mode: 0o660, limits: .init(), overflowReply: ScrapeRequest.tooLarge) {
            [unowned self] head in ScrapeRequest.respond(to: head) { self.metricsPage() }
        }
        Log.line("serving metrics on \(server.address)")
    }

    /// The metrics page, as a scrape gets it.
    func metricsPage() -> String {
        Exposition.render(metrics, metricsSnapshot())
    }
}
