import UVBind

/// The rate-limit options in force for new connections: the limit, the bans,
/// how IPv6 clients are grouped, and who is never limited.
struct RateLimitPolicy: Sendable, CustomStringConvertible {
    let limit: RateLimit
    let bans: BanPolicy
    let ipv6PrefixLength: Int
    /// Never limited (nor counted); nil: nobody is exempt.
    let exempt: AllowList?

    /// nil when `rate-limit` is off.
    init?(_ settings: Settings) {
        guard let limit = settings.rateLimit else { return nil }
        self.limit = limit
        bans = BanPolicy(banTime: settings.banTime)
        ipv6PrefixLength = settings.rateLimitIPv6Prefix
        exempt = settings.rateLimitExempt
    }

    /// The start's line: what is limited, how, and who is not.
    var description: String {
        "rate-limit \(limit) per client (IPv4 per address, IPv6 per /\(ipv6PrefixLength))"
            + (bans.isOn ? ", bans of \(DurationText.show(bans.banTime)) doubling up to \(BanPolicy.maximumFactor)x" : ", no bans")
            + (exempt.map { "; exempt: \($0.summary())" } ?? "")
    }

    /// What the table says of a connection from `ip`; nil when exempt.
    func verdict(for ip: IPAddress, in table: RateLimitTable, now: UInt64) -> (ClientKey, RateLimitTable.Verdict)? {
        if let exempt, exempt.allows(ip) { return nil }
        let key = ClientKey(ip, ipv6PrefixLength: ipv6PrefixLength)
        return (key, table.check(key, limit: limit, bans: bans, now: now))
    }
}
