import Testing
@testable import directd

/// Each option's reader: what it accepts and what it refuses, whichever way it came.
struct SettingsTests {
    func set(_ key: String, _ text: String) throws -> Settings {
        var settings = Settings()
        try settings.set(key, text)
        return settings
    }

    @Test(arguments: [("1048576", 1 << 20), ("1MiB", 1 << 20), ("256K", 256 << 10), ("64KiB", 64 << 10), (" 2M ", 2 << 20)])
    func sizes(_ text: String, _ bytes: Int) throws {
        #expect(try set("write-queue-limit", text).writeQueueLimit == bytes)
    }

    @Test(arguments: ["0", "-1", "1XB", "MiB", "1.5M", "99999999G", ""])
    func badSizes(_ text: String) {
        #expect(throws: ConfigError.self) { try set("write-queue-limit", text) }
    }

    @Test func seconds() throws {
        #expect(try set("idle-timeout", "0.5").idleTimeout == 0.5)
        #expect(try set("grace", "3s").grace == 3)
        #expect(try set("idle-timeout", "0").idleTimeout == 0, "0 turns the idle timeout off")
    }

    @Test(arguments: [("idle-timeout", "-1"), ("grace", "soon"), ("connect-timeout", "0"), ("connect-timeout", "1e3"),
                      ("max-connections", "0"), ("max-connections", "ten"), ("log-level", "loud")])
    func badValues(_ key: String, _ text: String) {
        #expect(throws: ConfigError.self) { try set(key, text) }
    }

    @Test func emptyForwardAndWhitelistMeanNone() throws {
        let settings = try set("direct-forward", " ")
        #expect(settings.forward == nil)
        #expect(try set("whitelist", "").allowList == nil)
    }
}
