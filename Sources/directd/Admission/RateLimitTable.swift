/// The clients a rate limit tracks, in fixed storage: `capacity` slots
/// allocated once, never grown, kept across reloads. Loop thread only.
///
/// Slots are found by a seeded hash (Swift's per-process random seed plus
/// one of our own: no hash flooding) and a window of `window` slots after
/// it, so a check costs at most one window scan: O(1), no allocation.
///
/// A client not in its window takes, in this order, an empty slot, or the
/// least recently seen slot that is not banned. Banned slots are never
/// taken: a ban lasts until it expires, however many new addresses come.
/// When every slot of the window is banned, the client is tracked under
/// its wider prefix (an IPv6 /48, an IPv4 /24), so a flood from one /48
/// shares one bucket there; if that window is full of bans too, the
/// connection is let through uncounted (`untracked`), never refused for a
/// slot it could not get.
final class RateLimitTable {
    /// What a check decided.
    enum Verdict: Equatable, Sendable {
        case admitted
        /// Past the limit: refused.
        case limited
        /// Past the limit once too often: refused, and banned from now for
        /// this many milliseconds.
        case bannedNow(UInt64)
        /// Refused: banned for this many more milliseconds.
        case banned(UInt64)

        var refuses: Bool { self != .admitted }
    }

    /// The read-only view for status and metrics.
    struct Counts: Equatable, Sendable, CustomStringConvertible {
        /// Slots in use, and the slots there are.
        var entries = 0
        var capacity = 0
        /// Clients banned now.
        var banned = 0
        /// Connections refused past a limit, and refused while banned.
        var refusedLimited: UInt64 = 0
        var refusedBanned: UInt64 = 0
        /// Bans given since start.
        var bans: UInt64 = 0
        /// Connections let through because their window was full of bans.
        var untracked: UInt64 = 0

        /// For the SIGUSR1 summary.
        var description: String {
            "rate-limit: \(entries) of \(capacity) clients tracked, \(banned) banned, \(refusedLimited) refused past the limit, \(refusedBanned) while banned, \(bans) bans, \(untracked) untracked"
        }
    }

    private struct Slot {
        var key: ClientKey?
        var bucket: TokenBucket
        var seen: UInt64 = 0
        var bannedUntil: UInt64 = 0
        var strikes: UInt32 = 0
        var banLevel: UInt8 = 0
    }

    /// 65,536 slots of 64 bytes: 4 MiB, allocated when the limit is first on.
    static let defaultCapacity = 1 << 16
    /// Slots scanned per check.
    static let defaultWindow = 16

    let capacity: Int
    let window: Int
    private var slots: [Slot]
    private let seed: UInt64
    private var counts = Counts()

    /// `capacity` is rounded up to a power of two, at least `window`. Tests
    /// use small ones.
    init(capacity: Int = RateLimitTable.defaultCapacity, window: Int = RateLimitTable.defaultWindow) {
        self.window = max(window, 1)
        var size = self.window
        while size < capacity { size <<= 1 }
        self.capacity = size
        let empty = Slot(key: nil, bucket: TokenBucket())
        slots = Array(repeating: empty, count: size)
        seed = UInt64.random(in: .min ... .max)
        counts.capacity = size
    }

    /// Slots the storage holds, and their bytes; the cap test checks they never change.
    var allocatedSlots: Int { slots.capacity }
    var allocatedBytes: Int { slots.capacity * MemoryLayout<Slot>.stride }

    /// Counts a connection from `key` against `limit`, banning by `bans`.
    func check(_ key: ClientKey, limit: RateLimit, bans: BanPolicy, now: UInt64) -> Verdict {
        if let index = slot(for: key, limit: limit, now: now)
            ?? wider(key).flatMap({ slot(for: $0, limit: limit, now: now) }) {
            return judge(index, limit: limit, bans: bans, now: now)
        }
        counts.untracked += 1
        return .admitted
    }

    /// Whether `key` is banned at `now` (for tests and status).
    func isBanned(_ key: ClientKey, now: UInt64) -> Bool {
        let start = home(of: key)
        for step in 0..<window {
            let slot = slots[(start + step) & (capacity - 1)]
            if slot.key == key { return slot.bannedUntil > now }
        }
        return false
    }

    /// The counts, with the bans in force at `now` (a scan: for status, not per connection).
    func counts(now: UInt64) -> Counts {
        var result = counts
        result.banned = slots.reduce(0) { $0 + ($1.key != nil && $1.bannedUntil > now ? 1 : 0) }
        return result
    }

    // MARK: slots

    /// The first slot of `key`'s window (internal for the tests).
    func home(of key: ClientKey) -> Int {
        var hasher = Hasher()
        hasher.combine(seed)
        hasher.combine(key)
        return Int(truncatingIfNeeded: UInt(bitPattern: hasher.finalize())) & (capacity - 1)
    }

    /// The slot holding `key`, or the one it takes over (a full bucket under
    /// `limit`); nil when every slot of its window is banned.
    private func slot(for key: ClientKey, limit: RateLimit, now: UInt64) -> Int? {
        let start = home(of: key)
        // The slot to take: the lowest rank, an empty slot (0) before the least
        // recently seen unbanned one (seen + 1). Banned slots have no rank.
        var victim: Int?
        var victimRank = UInt64.max
        for step in 0..<window {
            let index = (start + step) & (capacity - 1)
            let slot = slots[index]
            if slot.key == key { return index }
            let rank: UInt64
            if slot.key == nil { rank = 0 } else if slot.bannedUntil <= now { rank = slot.seen &+ 1 } else { continue }
            if rank < victimRank { victim = index; victimRank = rank }
        }
        guard let victim else { return nil }
        if slots[victim].key == nil { counts.entries += 1 }
        slots[victim] = Slot(key: key, bucket: TokenBucket(full: limit, now: now), seen: now)
        return victim
    }

    /// The prefix a client is tracked under when its own window is full of bans.
    func wider(_ key: ClientKey) -> ClientKey? {
        if key.isIPv4 {
            return ClientKey(aggregate: key.value & 0xFFFF_FF00, length: 24, isIPv4: true)
        }
        guard key.length > 48 else { return nil }
        return ClientKey(aggregate: key.value & (~UInt128(0) << 80), length: 48, isIPv4: false)
    }

    private func judge(_ index: Int, limit: RateLimit, bans: BanPolicy, now: UInt64) -> Verdict {
        slots[index].seen = now
        if slots[index].bannedUntil > now {
            counts.refusedBanned += 1
            return .banned(slots[index].bannedUntil - now)
        }
        slots[index].bucket.refill(limit, now: now)
        if slots[index].bucket.isFull(limit) { slots[index].strikes = 0 }
        if slots[index].bucket.take(limit, now: now) { return .admitted }
        counts.refusedLimited += 1
        guard bans.isOn else { return .limited }
        slots[index].strikes += 1
        guard slots[index].strikes >= bans.strikesToBan(limit) else { return .limited }
        // A repeat doubles the ban, unless the last one ended long enough ago.
        let last = slots[index].bannedUntil
        if last > 0, now > last + bans.memory { slots[index].banLevel = 0 }
        let duration = bans.duration(level: slots[index].banLevel)
        slots[index].bannedUntil = now + duration
        slots[index].banLevel = min(slots[index].banLevel + 1, BanPolicy.maximumLevel)
        slots[index].strikes = 0
        counts.bans += 1
        return .bannedNow(duration)
    }
}
