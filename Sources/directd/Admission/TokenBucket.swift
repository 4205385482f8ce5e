/// One client's allowance under a `RateLimit`: full (`count` tokens) when
/// first seen, one token per connection, refilled continuously at
/// `count` per `period`. A value type kept inside the rate-limit table's
/// fixed storage; pure, the caller gives the time (milliseconds).
struct TokenBucket: Sendable {
    private(set) var tokens: Double
    private(set) var updated: UInt64

    /// An empty slot's placeholder.
    init() {
        tokens = 0
        updated = 0
    }

    /// A full bucket, as a client never seen before gets.
    init(full limit: RateLimit, now: UInt64) {
        tokens = Double(limit.count)
        updated = now
    }

    /// Refills for the time since the last call. A changed limit (a reload)
    /// applies from here on: tokens above the new count are cut to it.
    mutating func refill(_ limit: RateLimit, now: UInt64) {
        if now > updated {
            tokens += Double(now - updated) * limit.refillPerMillisecond
        }
        tokens = min(tokens, Double(limit.count))
        updated = max(updated, now)
    }

    /// Takes one token if there is one.
    mutating func take(_ limit: RateLimit, now: UInt64) -> Bool {
        refill(limit, now: now)
        guard tokens >= 1 else { return false }
        tokens -= 1
        return true
    }

    /// Full again: the client has kept within its limit for a whole period.
    func isFull(_ limit: RateLimit) -> Bool { tokens >= Double(limit.count) }
}
