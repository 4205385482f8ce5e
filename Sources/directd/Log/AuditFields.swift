import UVBind

/// The structured fields of the audit lines, as journald stores them, so
/// that `journalctl DIRECTD_CLIENT=198.51.100.7` finds one client's sessions.
enum AuditFields {
    /// The client's address (an IPv4-mapped one as IPv4) and port.
    static func client(_ peer: SocketAddress?) -> [(String, String)] {
        guard let peer else { return [] }
        return [("DIRECTD_CLIENT", SessionTable.clientKey(peer.ip).description), ("DIRECTD_CLIENT_PORT", String(peer.port))]
    }

    static func opened(_ session: Session, listener: String, upstream: String?) -> [(String, String)] {
        [("DIRECTD_EVENT", "opened"), ("DIRECTD_SESSION", String(session.id)), ("DIRECTD_LISTENER", listener)]
            + client(session.peer) + (upstream.map { [("DIRECTD_UPSTREAM", $0)] } ?? [])
    }

    static func closed(_ session: Session, listener: String, fromClient: UInt64, toClient: UInt64,
                       seconds: Double, reason: String?) -> [(String, String)] {
        [("DIRECTD_EVENT", "closed"), ("DIRECTD_SESSION", String(session.id)), ("DIRECTD_LISTENER", listener),
         ("DIRECTD_BYTES_IN", String(fromClient)), ("DIRECTD_BYTES_OUT", String(toClient)),
         ("DIRECTD_DURATION", "\(seconds)")]
            + client(session.peer)
            + (session.target.map { [("DIRECTD_UPSTREAM", $0.description)] } ?? [])
            + (reason.map { [("DIRECTD_REASON", $0)] } ?? [])
    }

    static func refused(_ peer: SocketAddress?, listener: SocketAddress, reason: RefusalReason) -> [(String, String)] {
        [("DIRECTD_EVENT", "refused"), ("DIRECTD_LISTENER", listener.description), ("DIRECTD_REASON", reason.label)]
            + client(peer)
    }
}
