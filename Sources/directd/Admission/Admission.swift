import UVBind

/// Who may connect: the checks an accepted connection passes before anything
/// reaches the upstream, and how a refusal is logged. The gate decides *when* a
/// connection is taken off the listener; this decides whether it may stay.
enum Admission {
    /// Who may connect, from the settings in force when the connection arrived.
    struct Policy {
        var allowList: AllowList?
        var maxConnections: Int
        /// 0: no limit per client address.
        var maxConnectionsPerClient: Int

        init(allowList: AllowList?, maxConnections: Int, maxConnectionsPerClient: Int) {
            self.allowList = allowList
            self.maxConnections = maxConnections
            self.maxConnectionsPerClient = maxConnectionsPerClient
        }

        init(_ settings: Settings) {
            self.init(allowList: settings.allowList, maxConnections: settings.maxConnections,
                      maxConnectionsPerClient: settings.maxConnectionsPerClient)
        }
    }

    /// Why an accepted connection is closed again at once.
    enum Refusal: Equatable, CustomStringConvertible {
        case notAllowed
        case maxConnections(Int)
        case maxConnectionsPerClient(Int)
        case unknownPeer

        var description: String {
            switch self {
            case .notAllowed: "not in the whitelist"
            case .maxConnections(let limit): "max-connections (\(limit)) reached"
            case .maxConnectionsPerClient(let limit): "max-connections-per-client (\(limit)) reached"
            case .unknownPeer: "its address could not be read"
            }
        }
    }

    /// nil to admit `peer`, or why not.
    static func refusal(of peer: SocketAddress?, by policy: Policy, table: SessionTable) -> Refusal? {
        if let allowList = policy.allowList {
            guard let peer else { return .unknownPeer }
            if !allowList.allows(peer.ip) { return .notAllowed }
        }
        if table.count >= policy.maxConnections { return .maxConnections(policy.maxConnections) }
        if policy.maxConnectionsPerClient > 0, let peer,
           table.connections(from: peer.ip) >= policy.maxConnectionsPerClient {
            return .maxConnectionsPerClient(policy.maxConnectionsPerClient)
        }
        return nil
    }

    /// One line per refusal, within the log's rate limits: a client outside
    /// the allow-list is routine (info); a limit reached is worth a warning.
    /// On the journal, the line carries the audit fields (`AuditFields.refused`).
    static func log(_ refusal: Refusal, peer: SocketAddress?, listener: SocketAddress) {
        let line = "refused \(peer.map(\.description) ?? "unknown peer") on \(listener): \(refusal)"
        let (severity, category): (LogSeverity, LogCategory) = switch refusal {
        case .notAllowed, .unknownPeer: (.info, .refusedAllowList)
        case .maxConnections: (.warning, .refusedMaxConnections)
        case .maxConnectionsPerClient: (.warning, .refusedPerClient)
        }
        Log.audit(line, severity: severity, category: category) {
            AuditFields.refused(peer, listener: listener, reason: refusal.reason)
        }
    }
}
