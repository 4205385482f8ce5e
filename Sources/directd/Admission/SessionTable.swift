import CUV
import UVBind

/// The open sessions: registry, totals, connections per client address, and the
/// deadline scan. Loop thread only.
final class SessionTable {
    private(set) var sessions: [UInt64: Session] = [:]
    /// Open sessions per client address (IPv4-mapped peers counted as IPv4), for
    /// `max-connections-per-client`.
    private var perClient: [IPAddress: Int] = [:]
    private var nextID: UInt64 = 1
    /// Sessions ever opened.
    private(set) var total: UInt64 = 0
    // Bytes of the sessions that have closed; open ones are added when asked.
    private var closedFromClients: UInt64 = 0
    private var closedToClients: UInt64 = 0

    var count: Int { sessions.count }
    var isEmpty: Bool { sessions.isEmpty }

    /// The identifier for the next session.
    func takeIdentifier() -> UInt64 {
        defer { nextID += 1 }
        return nextID
    }

    /// An upgrade handed over sessions up to `id`: new ones are numbered after it.
    func continueNumbering(after id: UInt64) {
        nextID = max(nextID, id + 1)
    }

    func insert(_ session: Session) {
        sessions[session.id] = session
        total += 1
        if let ip = session.peer.map({ Self.clientKey($0.ip) }) { perClient[ip, default: 0] += 1 }
    }

    /// Takes a closed session out and adds its bytes to the totals; false if it
    /// was never in (refused before it was admitted).
    func remove(_ session: Session) -> Bool {
        guard sessions.removeValue(forKey: session.id) != nil else { return false }
        let (fromClient, toClient) = session.byteCounts
        closedFromClients += fromClient
        closedToClients += toClient
        if let ip = session.peer.map({ Self.clientKey($0.ip) }) {
            let left = (perClient[ip] ?? 1) - 1
            perClient[ip] = left > 0 ? left : nil
        }
        return true
    }

    /// Open sessions from `ip`.
    func connections(from ip: IPAddress) -> Int {
        perClient[Self.clientKey(ip)] ?? 0
    }

    /// One client address however it arrived: `::ffff:192.0.2.1` is 192.0.2.1.
    static func clientKey(_ ip: IPAddress) -> IPAddress {
        if case .v6(let v6) = ip, let mapped = v6.ipv4Mapped { return .v4(mapped) }
        return ip
    }

    /// Bytes from and to clients, of closed and open sessions alike.
    var bytes: (fromClients: UInt64, toClients: UInt64) {
        sessions.values.reduce((closedFromClients, closedToClients)) { sum, session in
            let (from, to) = session.byteCounts
            return (sum.0 + from, sum.1 + to)
        }
    }

    var summary: String {
        let (from, to) = bytes
        return "summary: \(count) open, \(total) total, \(from) bytes from clients, \(to) bytes to clients"
    }

    /// Why a session's time is up.
    enum Expiry: Equatable {
        /// The upstream did not accept within the connect timeout.
        case connectTimeout
        /// No byte either way within the idle timeout.
        case idle
    }

    /// The sessions whose time is up at `now` (milliseconds of the loop's clock).
    /// A limit of 0 is off.
    func expired(at now: UInt64, connectLimit: UInt64, idleLimit: UInt64) -> [(Session, Expiry)] {
        guard connectLimit > 0 || idleLimit > 0 else { return [] }
        var expired: [(Session, Expiry)] = []
        for session in sessions.values {
            if session.connecting {
                if connectLimit > 0, now - session.opened >= connectLimit { expired.append((session, .connectTimeout)) }
            } else if idleLimit > 0, now - session.lastActivity >= idleLimit {
                expired.append((session, .idle))
            }
        }
        return expired
    }
}
