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
        /// New connections per client per period; nil is off.
        var rateLimit: RateLimitPolicy?

        init(allowList: AllowList?, maxConnections: Int, maxConnectionsPerClient: Int,
             rateLimit: RateLimitPolicy? = nil) {
            self.allowList = allowList
            self.maxConnections = maxConnections
            self.maxConnectionsPerClient = maxConnectionsPerClient
            self.rateLimit = rateLimit
        }

        init(_ settings: Settings) {
            self.init(allowList: settings.allowList, maxConnections: settings.maxConnections,
                      maxConnectionsPerClient: settings.maxConnectionsPerClient,
                      rateLimit: RateLimitPolicy(settings))
        }
    }

    /// Why an accepted connection is closed again at once.
    enum Refusal: Equatable, CustomStringConvertible {
        case notAllowed
        case maxConnections(Int)
        case maxConnectionsPerClient(Int)
        case unknownPeer
        /// Past the rate limit; `bannedFor` milliseconds when this one started a ban.
        case rateLimited(RateLimit, client: ClientKey, bannedFor: UInt64?)
        /// Banned for this many more milliseconds.
        case banned(client: ClientKey, remaining: UInt64)

        var description: String {
            switch self {
            case .rateLimited(let limit, let client, nil): "rate-limit (\(limit)) exceeded by \(client)"
            case .rateLimited(let limit, let client, let ban?):
                "rate-limit (\(limit)) exceeded again by \(client): banned for \(DurationText.show(ban))"
            case .banned(let client, let remaining):
                "\(client) is banned (rate-limit) for \(DurationText.show((remaining + 999) / 1000 * 1000)) more"
            case .notAllowed: "not in the whitelist"
            case .maxConnections(let limit): "max-connections (\(limit)) reached"
            case .maxConnectionsPerClient(let limit): "max-connections-per-client (\(limit)) reached"
            case .unknownPeer: "its address could not be read"
            }
        }
    }

    /// nil to admit `peer`, or why not. A rate limit counts every connection
    /// the allow-list lets through (in `rates`, at `now`), even one then
    /// refused for another limit, as haproxy's conn_rate does.
    static func refusal(of peer: SocketAddress?, by policy: Policy, table: SessionTable,
                        rates: @autoclosure () -> RateLimitTable? = nil, now: UInt64 = 0) -> Refusal? {
        if let allowList = policy.allowList {
            guard let peer else { return .unknownPeer }
            if !allowList.allows(peer.ip) { return .notAllowed }
        }
        if let rateLimit = policy.rateLimit, let peer, let rates = rates(),
           let (client, verdict) = rateLimit.verdict(for: peer.ip, in: rates, now: now) {
            switch verdict {
            case .admitted: break
            case .limited: return .rateLimited(rateLimit.limit, client: client, bannedFor: nil)
            case .bannedNow(let duration): return .rateLimited(rateLimit.limit, client: client, bannedFor: duration)
            case .banned(let remaining): return .banned(client: client, remaining: remaining)
            }
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
        case .rateLimited(_, _, nil): (.warning, .refusedRateLimit)
        case .rateLimited: (.warning, .banned)
        case .banned: (.info, .refusedBanned)
        }
        Log.audit(line, severity: severity, category: category) {
            AuditFields.refused(peer, listener: listener, reason: refusal.reason)
        }
    }
}
