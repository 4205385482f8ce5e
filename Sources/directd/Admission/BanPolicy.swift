/// When a client that keeps coming past its rate limit is banned, and for how
/// long (`ban-time`), as fail2ban's increasing ban time does it.
///
/// - A connection refused by the rate limit is a strike. Strikes are forgotten
///   once the client's bucket is full again (it kept quiet for a period).
/// - `count` strikes (the limit's N: the client asked for twice its allowance)
///   ban it for `ban-time`.
/// - Each further ban doubles: ban-time, 2x, 4x ... up to `maximumFactor`
///   (64x: 10m grows to at most 10h40m).
/// - A client not banned for `maximumFactor` x ban-time after its last ban
///   ended starts again from 1x.
struct BanPolicy: Equatable, Sendable {
    /// Milliseconds; 0 is off (the rate limit still refuses, nobody is banned).
    let banTime: UInt64

    /// The longest ban is this many times ban-time.
    static let maximumFactor: UInt64 = 64
    /// Doublings at most: 2^6 = 64.
    static let maximumLevel: UInt8 = 6

    var isOn: Bool { banTime > 0 }

    /// Strikes that lead to a ban under `limit`.
    func strikesToBan(_ limit: RateLimit) -> Int { limit.count }

    /// How long the ban at `level` (0 for the first) lasts, in milliseconds.
    func duration(level: UInt8) -> UInt64 {
        banTime << UInt64(min(level, Self.maximumLevel))
    }

    /// How long after a ban ends the next one still counts as a repeat.
    var memory: UInt64 { banTime * Self.maximumFactor }
}
