import Testing
import UVBind
@testable import directd

/// The rate limit's parts, driven with their own clock (milliseconds).
struct RateLimitTableTests {
    static func ip(_ text: String) -> IPAddress {
        IPv4Address(text).map(IPAddress.v4) ?? .v6(IPv6Address(text)!)
    }

    static func key(_ text: String, prefix: Int = 64) -> ClientKey {
        ClientKey(ip(text), ipv6PrefixLength: prefix)
    }

    @Test(arguments: [("10/1m", 10, 60_000 as UInt64), ("5/10s", 5, 10_000), ("100/1h", 100, 3_600_000),
                      ("3/2", 3, 2000), (" 7/30s ", 7, 30_000)])
    func rateLimitsParse(_ text: String, count: Int, period: UInt64) throws {
        let limit = try RateLimit(parsing: text)
        #expect(limit.count == count && limit.period == period)
        #expect(try RateLimit(parsing: limit.description) == limit, "shown as it could be written: \(limit)")
    }

    @Test(arguments: ["10", "0/1m", "10/0s", "10/25h", "10/1d", "a/1m", "-1/1m", "10/m", "1/1m/2", "2000000/1s", "１/1m"])
    func malformedRateLimitsAreRefused(_ text: String) {
        #expect(throws: ConfigError.self) { try RateLimit(parsing: text) }
    }

    @Test func durationsReadAndShowAsWritten() {
        #expect(DurationText.milliseconds("10m") == 600_000)
        #expect(DurationText.milliseconds("90") == 90_000)
        #expect(DurationText.milliseconds("2h") == 7_200_000)
        #expect(DurationText.milliseconds("0") == 0)
        #expect(DurationText.milliseconds("10d") == nil)
        #expect(DurationText.milliseconds("1.5m") == nil)
        #expect(DurationText.show(600_000) == "10m")
        #expect(DurationText.show(90_000) == "90s")
        #expect(DurationText.show(7_200_000) == "2h")
    }

    @Test func keysAreAddressesForIPv4AndPrefixesForIPv6() {
        #expect(Self.key("192.0.2.7") != Self.key("192.0.2.8"))
        #expect(Self.key("::ffff:192.0.2.7") == Self.key("192.0.2.7"), "IPv4-mapped counts as IPv4")
        #expect(Self.key("2001:db8:1:2::1") == Self.key("2001:db8:1:2:ffff:ffff:ffff:ffff"), "one /64")
        #expect(Self.key("2001:db8:1:2::1") != Self.key("2001:db8:1:3::1"), "another /64")
        #expect(Self.key("2001:db8:1:2::1", prefix: 48) == Self.key("2001:db8:1:3::1", prefix: 48))
        #expect(Self.key("2001:db8:1:2::1", prefix: 128) != Self.key("2001:db8:1:2::2", prefix: 128))
        #expect(Self.key("2001:db8:1:2::1").description == "2001:db8:1:2::/64")
        #expect(Self.key("192.0.2.7").description == "192.0.2.7")
    }

    @Test func theLimitIsServedThenRefusedThenRefilled() throws {
        let table = RateLimitTable(capacity: 64)
        let limit = try RateLimit(parsing: "3/2s"), noBans = BanPolicy(banTime: 0)
        let client = Self.key("127.0.0.9"), other = Self.key("127.0.0.2")
        let first = (0..<5).map { _ in table.check(client, limit: limit, bans: noBans, now: 1000) }
        #expect(first == [.admitted, .admitted, .admitted, .limited, .limited])
        #expect(table.check(other, limit: limit, bans: noBans, now: 1000) == .admitted, "another client has its own bucket")
        // One token comes back every 2000/3 ms.
        #expect(table.check(client, limit: limit, bans: noBans, now: 1600) == .limited)
        #expect(table.check(client, limit: limit, bans: noBans, now: 1700) == .admitted)
        #expect(table.check(client, limit: limit, bans: noBans, now: 1700) == .limited)
        let later = (0..<4).map { _ in table.check(client, limit: limit, bans: noBans, now: 10_000) }
        #expect(later == [.admitted, .admitted, .admitted, .limited], "a full bucket after a period, never more")
        #expect(table.counts(now: 10_000).refusedLimited == 5)
        #expect(table.counts(now: 10_000).entries == 2)
    }

    @Test func bansStartAfterAsManyStrikesAsTheLimitAndDoubleUpToTheCap() throws {
        let table = RateLimitTable(capacity: 64)
        let limit = try RateLimit(parsing: "3/2s"), bans = BanPolicy(banTime: 10_000)
        let client = Self.key("198.51.100.7")
        var now: UInt64 = 5000
        var durations: [UInt64] = []
        for _ in 0..<9 {
            // Three served, then three refused: the third refusal bans.
            var verdicts = (0..<6).map { _ in table.check(client, limit: limit, bans: bans, now: now) }
            #expect(verdicts.prefix(3).allSatisfy { $0 == .admitted }, "\(verdicts)")
            #expect(verdicts[3] == .limited && verdicts[4] == .limited)
            guard case .bannedNow(let duration) = verdicts.removeLast() else {
                Issue.record("no ban after three strikes: \(verdicts)")
                return
            }
            durations.append(duration)
            #expect(table.isBanned(client, now: now + duration - 1))
            #expect(table.check(client, limit: limit, bans: bans, now: now + duration - 1) == .banned(1))
            #expect(!table.isBanned(client, now: now + duration))
            now += duration + 2000   // the ban is over and the bucket full again
        }
        #expect(durations == [1, 2, 4, 8, 16, 32, 64, 64, 64].map { $0 * 10_000 })
        #expect(table.counts(now: 0).bans == 9)
    }

    @Test func aRepeatLongAfterTheLastBanStartsAgainFromOnce() throws {
        let table = RateLimitTable(capacity: 64)
        let limit = try RateLimit(parsing: "1/1s"), bans = BanPolicy(banTime: 1000)
        let client = Self.key("203.0.113.5")
        func offend(at now: UInt64) -> RateLimitTable.Verdict {
            _ = table.check(client, limit: limit, bans: bans, now: now)
            return table.check(client, limit: limit, bans: bans, now: now)
        }
        #expect(offend(at: 10_000) == .bannedNow(1000))
        #expect(offend(at: 12_000) == .bannedNow(2000))
        #expect(offend(at: 12_000 + 2000 + BanPolicy.maximumFactor * 1000 + 1) == .bannedNow(1000))
    }

    @Test func strikesAreForgottenOnceTheClientKeepsToItsLimit() throws {
        let table = RateLimitTable(capacity: 64)
        let limit = try RateLimit(parsing: "2/1s"), bans = BanPolicy(banTime: 60_000)
        let client = Self.key("192.0.2.1")
        var now: UInt64 = 0
        for _ in 0..<10 {
            // Two served and one refused each second: one strike, never two in a row.
            let verdicts = (0..<3).map { _ in table.check(client, limit: limit, bans: bans, now: now) }
            #expect(verdicts == [.admitted, .admitted, .limited])
            now += 1000
        }
        #expect(table.counts(now: now).bans == 0)
    }

    /// A million distinct sources: the storage is what it was, and the bans hold.
    @Test func aMillionSourcesStayWithinTheCapAndDoNotPushBansOut() throws {
        let table = RateLimitTable()
        let storage = table.allocatedSlots, bytes = table.allocatedBytes
        let limit = try RateLimit(parsing: "1/1h"), bans = BanPolicy(banTime: 3_600_000)
        let banned = (1...200).map { Self.key("2001:db8:ffff:\(String($0, radix: 16))::1") }
        for key in banned {
            _ = table.check(key, limit: limit, bans: bans, now: 1)
            #expect(table.check(key, limit: limit, bans: bans, now: 1) == .bannedNow(3_600_000))
        }
        var admitted = 0
        for index in 0..<1_000_000 {
            let key: ClientKey = index % 2 == 0
                ? ClientKey(IPAddress.v4(IPv4Address(0x0A00_0000 | UInt32(index))), ipv6PrefixLength: 64)
                : ClientKey(aggregate: 0x2001_0db8 << 96 | UInt128(index) << 64, length: 64, isIPv4: false)
            if table.check(key, limit: limit, bans: bans, now: 2 + UInt64(index)) == .admitted { admitted += 1 }
        }
        #expect(admitted == 1_000_000, "each new source has its first connection")
        #expect(table.allocatedSlots == storage, "the storage never grew")
        // 4 MiB, and what the allocator rounds up (a page at most).
        #expect(table.allocatedBytes == bytes && bytes <= (4 << 20) + 4096, "\(bytes) bytes (\(bytes / table.capacity) a slot)")
        let counts = table.counts(now: 2_000_000)
        #expect(counts.entries == table.capacity, "full, and no more")
        #expect(counts.banned == banned.count)
        #expect(banned.allSatisfy { table.isBanned($0, now: 2_000_000) }, "every ban still in force")
        #expect(banned.allSatisfy { table.check($0, limit: limit, bans: bans, now: 2_000_000) != .admitted })
    }

    /// A window full of bans: the next client is tracked under its /48, and
    /// when that has no room either it is let through, counted, never refused.
    @Test func aWindowFullOfBansKeepsItsBans() throws {
        let table = RateLimitTable(capacity: RateLimitTable.defaultWindow)   // one window: every key shares it
        let limit = try RateLimit(parsing: "1/1h"), bans = BanPolicy(banTime: 3_600_000)
        let attackers = (0..<RateLimitTable.defaultWindow).map { Self.key("2001:db8:aaaa:\($0)::1") }
        for key in attackers {
            _ = table.check(key, limit: limit, bans: bans, now: 1)
            _ = table.check(key, limit: limit, bans: bans, now: 1)
        }
        #expect(table.counts(now: 2).banned == RateLimitTable.defaultWindow)
        let newcomer = Self.key("2001:db8:bbbb::1")
        #expect(table.check(newcomer, limit: limit, bans: bans, now: 2) == .admitted)
        #expect(table.check(newcomer, limit: limit, bans: bans, now: 2) == .admitted)
        #expect(table.counts(now: 2).untracked == 2)
        #expect(attackers.allSatisfy { table.isBanned($0, now: 2) })
        // Once the bans expire, the slots are taken again: the newcomer is
        // tracked, and under 1/1h its first refusal is its ban.
        #expect(table.check(newcomer, limit: limit, bans: bans, now: 3_600_002) == .admitted)
        #expect(table.check(newcomer, limit: limit, bans: bans, now: 3_600_002) == .bannedNow(3_600_000))
        #expect(table.counts(now: 3_600_002).untracked == 2)
    }

    /// Windows of one slot: a /64 whose slot is banned is counted under its
    /// /48, and every other such /64 of that /48 shares that one bucket.
    @Test func aFullWindowSendsAClientToItsWiderPrefix() throws {
        let table = RateLimitTable(capacity: 64, window: 1)
        let limit = try RateLimit(parsing: "1/1h"), bans = BanPolicy(banTime: 3_600_000)
        let site = Self.key("2001:db8:5::1", prefix: 48)
        let slash64s = (0..<5000).map { Self.key("2001:db8:5:\(String($0, radix: 16))::1") }
        let banned = try #require(slash64s.first { table.home(of: $0) != table.home(of: site) })
        #expect(table.wider(banned) == site)
        _ = table.check(banned, limit: limit, bans: bans, now: 1)
        #expect(table.check(banned, limit: limit, bans: bans, now: 1) == .bannedNow(3_600_000))
        // Two more /64s whose only slot is the banned one: both go to the /48.
        let crowded = slash64s.filter { $0 != banned && table.home(of: $0) == table.home(of: banned) }.prefix(2)
        try #require(crowded.count == 2)
        #expect(table.check(crowded.first!, limit: limit, bans: bans, now: 2) == .admitted)
        // One bucket for the /48: under 1/1h its first refusal bans the /48.
        #expect(table.check(crowded.last!, limit: limit, bans: bans, now: 2) == .bannedNow(3_600_000))
        #expect(table.check(crowded.first!, limit: limit, bans: bans, now: 3) == .banned(3_599_999))
        #expect(table.isBanned(banned, now: 2), "the ban stays")
        #expect(table.counts(now: 2).untracked == 0)
    }

    @Test func exemptClientsAreNeitherLimitedNorCounted() throws {
        var settings = Settings()
        try settings.set("rate-limit", "1/1h")
        try settings.set("rate-limit-exempt", "127.0.0.10, 2001:db8:e::/48")
        let policy = try #require(RateLimitPolicy(settings))
        let table = RateLimitTable(capacity: 64)
        for _ in 0..<5 {
            #expect(policy.verdict(for: Self.ip("127.0.0.10"), in: table, now: 1) == nil)
            #expect(policy.verdict(for: Self.ip("2001:db8:e:1::5"), in: table, now: 1) == nil)
        }
        #expect(table.counts(now: 1).entries == 0)
        #expect(policy.verdict(for: Self.ip("127.0.0.11"), in: table, now: 1)?.1 == .admitted)
        #expect(policy.verdict(for: Self.ip("127.0.0.11"), in: table, now: 1)?.1 == .limited)
    }
}
