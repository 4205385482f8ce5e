/// Why a connection was refused, as the metrics count it: a small fixed set, so
/// that each listener's refusal counters are an array indexed by the case.
/// `rateLimit` is exported (at 0) before any rate limit exists, so that a
/// dashboard's series is there from the first scrape.
enum RefusalReason: Int, CaseIterable, Sendable {
    case whitelist
    case maxConnections
    case maxConnectionsPerClient
    case rateLimit
    case unknownPeer

    /// The `reason` label.
    var label: String {
        switch self {
        case .whitelist: "whitelist"
        case .maxConnections: "max_connections"
        case .maxConnectionsPerClient: "max_connections_per_client"
        case .rateLimit: "rate_limit"
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
        case .unknownPeer: .unknownPeer
        }
    }
}
