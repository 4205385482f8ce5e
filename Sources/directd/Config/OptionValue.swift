import UVBind

/// How one kind of option value is read from text and shown again.
///
/// The config file, TOML file and flags all hand an option its text, so every
/// value is checked by the same reader whichever way it came. A JSON number is
/// read from its literal text: `21118` and `"21118"` are one value, and `21118.0`
/// is refused in both forms.
struct OptionValue<Value: Sendable>: Sendable {
    /// What a valid value looks like, for messages: "a whole number from 0 to 65535".
    let expected: String
    /// A JSON number is accepted (read from its literal text).
    let acceptsNumbers: Bool
    let parse: @Sendable (_ key: String, _ text: String) throws(ConfigError) -> Value
    /// The value as the operator could write it, for help and change reports.
    let show: @Sendable (Value) -> String
}

extension OptionValue where Value == String {
    /// Kept as written; checked later by its own reader (the bind value's resolver).
    static var text: Self {
        Self(expected: "a string", acceptsNumbers: false, parse: { _, text in text }, show: { $0 })
    }
}

extension OptionValue where Value == UInt16 {
    /// `direct-access-port`: 0 to 65535, 0 lets the kernel choose.
    static var port: Self {
        Self(expected: "a whole number from 0 to 65535", acceptsNumbers: true,
             parse: { _, text throws(ConfigError) in
                 do throws(BindError) { return try ListenPort.parse(text) } catch { throw ConfigError(description: error.description) }
             },
             show: { String($0) })
    }
}

extension OptionValue where Value == Int {
    /// A whole number of things, plain ASCII digits, from `minimum` up.
    static func count(minimum: Int, maximum: Int = Int(Int32.max)) -> Self {
        let expected = minimum == 0 ? "a whole number, 0 or more" : "a whole number above \(minimum - 1)"
        return Self(expected: expected, acceptsNumbers: true,
                    parse: { key, text throws(ConfigError) in
                        let trimmed = text.trimmedOfWhitespace
                        guard !trimmed.isEmpty, trimmed.utf8.allSatisfy({ (0x30...0x39).contains($0) }),
                              let value = Int(trimmed), (minimum...maximum).contains(value) else {
                            throw ConfigError(description: "Invalid \(key) \(ConfigText.quoted(text)): expected \(expected)\(maximum < Int.max ? ", at most \(maximum)" : "")")
                        }
                        return value
                    },
                    show: { String($0) })
    }

    /// A size in bytes above 0: plain, or with K/KiB, M/MiB, G/GiB (powers of 1024).
    static var bytes: Self {
        let units: [(String, Int)] = [("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30),
                                      ("K", 1 << 10), ("M", 1 << 20), ("G", 1 << 30), ("", 1)]
        return Self(expected: "a size in bytes above 0, such as 65536 or 64KiB", acceptsNumbers: true,
                    parse: { key, text throws(ConfigError) in
                        let trimmed = text.trimmedOfWhitespace
                        for (suffix, scale) in units where trimmed.hasSuffix(suffix) {
                            let number = trimmed.dropLast(suffix.count)
                            if !number.isEmpty, number.utf8.allSatisfy({ (0x30...0x39).contains($0) }),
                               let value = Int(number), value > 0, value <= Int(Int32.max) / scale {
                                return value * scale
                            }
                            break
                        }
                        throw ConfigError(description: "Invalid \(key) \(ConfigText.quoted(text)): expected a size in bytes above 0, such as 1048576 or 1MiB")
                    },
                    show: { value in
                        for (suffix, scale) in [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)]
                        where value % scale == 0 {
                            return "\(value / scale)\(suffix)"
                        }
                        return String(value)
                    })
    }
}

extension OptionValue where Value == Int32 {
    /// The listen backlog: 1 up to Int32's maximum (the kernel caps it at somaxconn).
    static var backlog: Self {
        let count = OptionValue<Int>.count(minimum: 1)
        return Self(expected: count.expected, acceptsNumbers: true,
                    parse: { key, text throws(ConfigError) in Int32(try count.parse(key, text)) },
                    show: { String($0) })
    }
}

extension OptionValue where Value == Double {
    /// Seconds, 0 or more, as decimal digits with an optional fraction and "s".
    static func seconds(aboveZero: Bool = false) -> Self {
        Self(expected: aboveZero ? "seconds above 0, such as 5 or 0.5" : "seconds, such as 5 or 0.5", acceptsNumbers: true,
             parse: { key, text throws(ConfigError) in
                 let trimmed = text.trimmedOfWhitespace
                 let number = trimmed.hasSuffix("s") ? String(trimmed.dropLast()) : trimmed
                 guard !number.isEmpty, number.utf8.allSatisfy({ (0x30...0x39).contains($0) || $0 == UInt8(ascii: ".") }),
                       let value = Double(number), value.isFinite, value >= 0, value <= 86_400 * 365 else {
                     throw ConfigError(description: "Invalid \(key) \(ConfigText.quoted(text)): expected seconds, such as 5 or 0.5")
                 }
                 guard !aboveZero || value > 0 else {
                     throw ConfigError(description: "Invalid \(key) \(ConfigText.quoted(text)): it must be above 0 seconds")
                 }
                 return value
             },
             show: { $0 == $0.rounded() ? String(Int($0)) : String($0) })
    }
}

extension OptionValue where Value == LogLevel {
    static var logLevel: Self {
        let names = LogLevel.allCases.map { "\($0)" }.joined(separator: ", ")
        return Self(expected: "one of \(names)", acceptsNumbers: false,
                    parse: { key, text throws(ConfigError) in
                        guard let level = LogLevel(argument: text.trimmedOfWhitespace) else {
                            throw ConfigError(description: "Invalid \(key) \(ConfigText.quoted(text)): expected one of \(names)")
                        }
                        return level
                    },
                    show: { "\($0)" })
    }
}

extension OptionValue where Value == Upstream? {
    /// `HOST:PORT`; empty (or only white space) means none: serve echo.
    static var upstream: Self {
        Self(expected: "HOST:PORT", acceptsNumbers: false,
             parse: { _, text throws(ConfigError) in
                 let trimmed = text.trimmedOfWhitespace
                 return trimmed.isEmpty ? nil : try Upstream(parsing: trimmed)
             },
             show: { $0.map { "\($0)" } ?? "" })
    }
}

extension OptionValue where Value == AllowList? {
    /// Addresses and prefixes; empty (or only white space) means every client
    /// (for `whitelist`) or none (for `rate-limit-exempt`).
    static var allowList: Self {
        Self(expected: "addresses and prefixes separated by commas", acceptsNumbers: false,
             parse: { key, text throws(ConfigError) in
                 let trimmed = text.trimmedOfWhitespace
                 return trimmed.isEmpty ? nil : try AllowList(parsing: trimmed, option: key)
             },
             show: { $0.map { "\($0)" } ?? "" })
    }
}

extension OptionValue where Value == Bool? {
    /// RustDesk's booleans: "Y" is on, "N" or empty is off; nil means not stated.
    /// Anything else is refused rather than guessed: RustDesk would read it as off.
    static var yesNo: Self {
        Self(expected: "Y or N", acceptsNumbers: false,
             parse: { key, text throws(ConfigError) in
                 switch text.trimmedOfWhitespace {
                 case "Y": return true
                 case "N", "": return false
                 default:
                     throw ConfigError(description: "Invalid \(key) \(ConfigText.quoted(text)): expected Y or N (RustDesk reads only \"Y\" as on)")
                 }
             },
             show: { $0.map { $0 ? "Y" : "N" } ?? "" })
    }
}

extension OptionValue where Value == ProxyHeader.Version? {
    /// `off` (or empty), `v1` or `v2`.
    static var proxyProtocol: Self {
        Self(expected: "off, v1 or v2", acceptsNumbers: false,
             parse: { _, text throws(ConfigError) in try ProxyHeader.version(parsing: text) },
             show: { $0?.rawValue ?? "off" })
    }
}

extension OptionValue where Value == Bool {
    /// A switch: `Y` or `N`, as RustDesk writes its booleans; `true` and `false`
    /// are accepted too. Empty is off.
    static var onOff: Self {
        Self(expected: "Y or N", acceptsNumbers: false,
             parse: { key, text throws(ConfigError) in
                 switch text.trimmedOfWhitespace {
                 case "Y", "true": return true
                 case "N", "false", "": return false
                 default:
                     throw ConfigError(description: "Invalid \(key) \(ConfigText.quoted(text)): expected Y or N (or true, false)")
                 }
             },
             show: { $0 ? "Y" : "N" })
    }
}

extension OptionValue where Value == RelayMode {
    /// `auto`, `splice` or `copy`.
    static var relayMode: Self {
        let names = RelayMode.allCases.map(\.rawValue).joined(separator: ", ")
        return Self(expected: "one of \(names)", acceptsNumbers: false,
                    parse: { key, text throws(ConfigError) in
                        guard let mode = RelayMode(rawValue: text.trimmedOfWhitespace) else {
                            throw ConfigError(description: "Invalid \(key) \(ConfigText.quoted(text)): expected one of \(names)")
                        }
                        return mode
                    },
                    show: { $0.rawValue })
    }
}
