/// The `rate-limit` option: at most `count` new connections per `period` from
/// one client (see `ClientKey`), as a token bucket: a client starts with
/// `count` tokens, each connection takes one, and tokens come back at
/// `count` per `period`.
struct RateLimit: Equatable, Sendable, CustomStringConvertible {
    let count: Int
    /// Milliseconds.
    let period: UInt64

    /// Larger values are typos, not policies (a million a second is no limit).
    static let maximumCount = 1_000_000
    /// A day: longer periods are a ban, which `ban-time` does.
    static let maximumPeriod: UInt64 = 86_400_000

    var description: String { "\(count)/\(DurationText.show(period))" }

    /// `N/DURATION`: `10/1m`, `5/10s`, `100/1h`.
    init(parsing text: String) throws(ConfigError) {
        let parts = text.trimmedOfWhitespace.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2, !parts[0].isEmpty, parts[0].utf8.allSatisfy({ (0x30...0x39).contains($0) }),
              parts[0].count <= 7, let count = Int(parts[0]), (1...Self.maximumCount).contains(count),
              let period = DurationText.milliseconds(parts[1]), (1...Self.maximumPeriod).contains(period) else {
            throw ConfigError(description: "Invalid rate-limit \(ConfigText.quoted(text)): expected N/DURATION, new connections per client per period, such as 10/1m or 5/10s (N from 1 to \(Self.maximumCount); units s, m, h; at most 24h)")
        }
        self.count = count
        self.period = period
    }

    /// Tokens that come back per millisecond.
    var refillPerMillisecond: Double { Double(count) / Double(period) }
}

/// Durations as an operator writes them: a whole number with `s`, `m` or `h`
/// (a plain number is seconds).
enum DurationText {
    private static let units: [(Character, UInt64)] = [("h", 3_600_000), ("m", 60_000), ("s", 1000)]

    /// nil unless `text` is digits with an optional unit; at most a year.
    static func milliseconds<Text: StringProtocol>(_ text: Text) -> UInt64? {
        var digits = Substring(String(text).trimmedOfWhitespace)
        var scale: UInt64 = 1000
        if let last = digits.last, let unit = units.first(where: { $0.0 == last }) {
            scale = unit.1
            digits = digits.dropLast()
        }
        guard !digits.isEmpty, digits.count <= 9, digits.utf8.allSatisfy({ (0x30...0x39).contains($0) }),
              let value = UInt64(digits), value * scale <= 365 * 86_400_000 else { return nil }
        return value * scale
    }

    /// The largest unit that divides `milliseconds`: 600000 → "10m".
    static func show(_ milliseconds: UInt64) -> String {
        for (unit, scale) in units where milliseconds > 0 && milliseconds % scale == 0 {
            return "\(milliseconds / scale)\(unit)"
        }
        return milliseconds == 0 ? "0" : "\(Double(milliseconds) / 1000)s"
    }
}

extension OptionValue where Value == RateLimit? {
    /// `N/DURATION`; empty is off.
    static var rateLimit: Self {
        Self(expected: "N/DURATION, such as 10/1m", acceptsNumbers: false,
             parse: { _, text throws(ConfigError) in
                 text.allSatisfy(\.isWhitespace) ? nil : try RateLimit(parsing: text)
             },
             show: { $0.map(\.description) ?? "" })
    }
}

extension OptionValue where Value == UInt64 {
    /// A duration in milliseconds, written `10m`, `30s`, `1h` or plain seconds;
    /// 0 or empty is off.
    static var duration: Self {
        Self(expected: "a duration such as 10m, 30s or 1h (0: off)", acceptsNumbers: true,
             parse: { key, text throws(ConfigError) in
                 if text.allSatisfy(\.isWhitespace) { return 0 }
                 guard let value = DurationText.milliseconds(text) else {
                     throw ConfigError(description: "Invalid \(key) \(ConfigText.quoted(text)): expected a duration such as 10m, 30s or 1h (a whole number with s, m or h; plain numbers are seconds; 0 is off; at most a year)")
                 }
                 return value
             },
             show: { DurationText.show($0) })
    }
}
