import CUV
#if canImport(Glibc)
import Glibc
#endif
import UVBind

extension Server {
    /// Answers `directd status` on a unix socket only the owner may use (0600).
    func serveControl(at path: String) throws(EndpointError) {
        let limits = RequestServer.Limits(headBytes: ControlRequest.headBytes, deadlineMilliseconds: 2000, connections: 4)
        _ = try openEndpoint(.unix(path: path), mode: 0o600, limits: limits, overflowReply: ControlRequest.tooLong) {
            [unowned self] head in ControlRequest.respond(to: head, self.controlAnswers)
        }
        Log.info("control socket at \(path) (directd status --control-socket \(path))")
    }

    /// The state now, for `directd status`.
    func statusReport() -> StatusReport {
        var clients: [IPAddress: StatusReport.Client] = [:]
        for session in table.sessions.values {
            guard let peer = session.peer else { continue }
            let key = SessionTable.clientKey(peer.ip)
            let (from, to) = session.byteCounts
            clients[key, default: StatusReport.Client(address: key.description, open: 0, bytesFromClient: 0, bytesToClient: 0)].open += 1
            clients[key]!.bytesFromClient &+= from
            clients[key]!.bytesToClient &+= to
        }
        let top = clients.values.sorted { a, b in
            a.open != b.open ? a.open > b.open
                : a.bytesFromClient &+ a.bytesToClient != b.bytesFromClient &+ b.bytesToClient
                ? a.bytesFromClient &+ a.bytesToClient > b.bytesFromClient &+ b.bytesToClient
                : a.address < b.address
        }.prefix(StatusReport.topClients)
        let now = uv_now(loop)
        let refusals = RefusalReason.allCases.map { reason in
            (reason: reason.label, count: metrics.listeners.reduce(UInt64(0)) { $0 &+ $1.refused[reason.rawValue] })
        }
        return StatusReport(
            version: BuildIdentity.number, processID: getpid(),
            uptimeSeconds: Double(MonotonicClock.milliseconds() &- metrics.startMilliseconds) / 1000,
            listeners: listeningAddresses.map(\.description), relayMode: relay.mode.rawValue,
            forward: settings.forward?.description, open: table.count, total: table.total,
            clients: Array(top), refusals: refusals,
            recentRefusals: recentRefusals.entries.map { entry in
                StatusReport.Refusal(secondsAgo: Double(now &- entry.at) / 1000, reason: entry.reason.label,
                                     client: entry.client?.description ?? "unknown peer",
                                     listener: entry.listener.description)
            })
    }

    /// Where the control socket goes when none is configured: under systemd,
    /// in the unit's RuntimeDirectory (its first entry).
    static func defaultControlSocket(environment: [String: String]) -> String? {
        guard let directory = environment["RUNTIME_DIRECTORY"]?.split(separator: ":").first,
              directory.hasPrefix("/") else { return nil }
        return "\(directory)/control.sock"
    }
}
