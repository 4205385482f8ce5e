/// Why a connection was refused, as the metrics count it: a small fixed set, so
/// that each listener's refusal counters are an array indexed by the case.
/// Every reason is exported from the start (at 0), so that a dashboard's
/// series is there from the first scrape. `banned` counts the refusals of a
/// client during its ban; the refusal that starts a ban is a `rateLimit`.
enum RefusalReason: Int, CaseIterable, Sendable {
    case whitelist
    case maxConnections
    case maxConnectionsPerClient
    case rateLimit
    case banned
    case unknownPeer

    /// The `reason` label.
    var label: String {
        switch self {
        case .whitelist: "whitelist"
        case .maxConnections: "max_connections"
        case .maxConnectionsPerClient: "max_connections_per_client"
        case .rateLimit: "rate_limit"
        case .banned: "banned"
        case .unknownPeer: "unknown_peer"
        }
    }
}

extension Admission.Refusal {
    var reason: RefusalReason {
        switch self {
        case .notAllowed: .whitelist
        case .maxConnections: .maxConnections
        case .maxConnectionsPerClient: .maxConnectionsPerClient
        case .rateLimited: .rateLimit
        case .banned: .banned
        case .unknownPeer: .unknownPeer
        }
    }
}
