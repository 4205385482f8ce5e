import ArgumentParser
import Testing
import UVBind
@testable import directd

/// The one option table: every reader, flag and help line comes from it.
struct OptionTableTests {
    @Test func everyOptionHasAUniqueKeyAndFlag() {
        let keys = OptionTable.all.compactMap(\.key), flags = OptionTable.all.compactMap(\.flag)
        #expect(Set(keys).count == keys.count)
        #expect(Set(flags).count == flags.count)
        #expect(OptionTable.all.allSatisfy { $0.key != nil || $0.flag != nil })
    }

    @Test func everyFlagOfTheTableIsACommandLineFlagWithItsHelp() throws {
        let help = Check.helpMessage(columns: 1000)
        for option in OptionTable.all {
            guard let flag = option.flag else { continue }
            #expect(help.contains("--\(flag) <\(option.valueName)>"), "--\(flag) is missing from --help")
            #expect(help.contains(option.help), "--\(flag)'s help text is not the table's")
        }
        // And the other way: each @Option maps back to a table entry.
        let parsed = try ConfigOptions.parse(OptionTable.all.compactMap(\.flag).flatMap { ["--\($0)", "x"] })
        #expect(Set(parsed.flags.keys) == Set(OptionTable.all.compactMap(\.flag)))
    }

    @Test func everyDefaultIsWhatSettingsStartsWith() throws {
        let defaults = Settings()
        for option in OptionTable.all where !option.defaultText.isEmpty {
            var settings = Settings()
            try option.set(&settings, option.defaultText)
            #expect(settings.changes(from: defaults).isEmpty, "\(option.name)'s default text does not read back")
        }
        #expect(defaults.writeQueueLimit == 64 << 10)
        #expect(defaults.memoryLimit == 32 << 20)
        #expect(defaults.maxConnectionsPerClient == 0)
        #expect(defaults.port == 21118)
        #expect(defaults.backlog == 511)
    }

    @Test func flagsOverrideTheFileAndChangesAreListedWithReloadability() throws {
        let old = try Settings.resolve(file: nil, flags: ["port": "4000", "backlog": "100"])
        let new = try Settings.resolve(file: nil, flags: ["port": "4001", "backlog": "200", "memory-limit": "1MiB"])
        #expect(new.changes(from: old) == [
            Settings.Change(key: "direct-access-port", old: "4000", new: "4001", reloadable: true),
            Settings.Change(key: "memory-limit", old: "32MiB", new: "1MiB", reloadable: true),
            Settings.Change(key: "backlog", old: "100", new: "200", reloadable: false),
        ])
        #expect(new.changes(from: new).isEmpty)
    }

    @Test func newOptionsParse() throws {
        var settings = Settings()
        try settings.set("max-connections-per-client", "8")
        try settings.set("memory-limit", "64MiB")
        #expect(settings.maxConnectionsPerClient == 8)
        #expect(settings.memoryLimit == 64 << 20)
        #expect(throws: ConfigError.self) { try settings.set("memory-limit", "0") }
        #expect(throws: ConfigError.self) { try settings.set("max-connections-per-client", "-1") }
    }

    @Test func errorsCarryTheirExitCode() {
        let errors: [(any Error, Int32)] = [
            (ConfigError(description: "x"), 78),
            (BindError(kind: .invalidFormat, value: "x", step: .parse, detail: "", remedy: ""), 78),
            (BindError(kind: .addressInUse, value: "x", step: .listen, detail: "", remedy: ""), 69),
            (BindError(kind: .permissionDenied, value: "x", step: .bind, detail: "", remedy: ""), 77),
            (BindError(kind: .system, value: "x", step: .listen, detail: "", remedy: ""), 70),
            (CancellationError(), 70),
        ]
        for (error, code) in errors {
            #expect(((error as? any ExitCoded)?.exitStatus ?? .software).rawValue == code, "\(error)")
        }
    }
}

/// The command line's one-pass check.
struct ArgumentCheckTests {
    @Test func aRepeatedFlagIsRefusedInEitherSpelling() {
        #expect(throws: ValidationError.self) { try ArgumentCheck.normalise(["--port", "1", "--port=2"]) }
        #expect(throws: ValidationError.self) { try ArgumentCheck.normalise(["check", "--config=a", "--config", "b"]) }
    }

    @Test func anEmptyJoinedValueBecomesAnEmptyArgument() throws {
        #expect(try ArgumentCheck.normalise(["--bind-interface="]) == ["--bind-interface", ""])
        #expect(try ArgumentCheck.normalise(["--bind-interface=lo"]) == ["--bind-interface=lo"])
    }

    @Test func aValueThatLooksLikeAFlagIsNotCountedAsOne() throws {
        #expect(try ArgumentCheck.normalise(["--whitelist", "--port", "--port", "1"]) == ["--whitelist=--port", "--port=1"])
        #expect(try ArgumentCheck.normalise(["--port", "1", "--", "--port"]) == ["--port=1", "--", "--port"])
        #expect(try ArgumentCheck.normalise(["check", "--port", "-1", "--grace"]) == ["check", "--port=-1", "--grace"])
    }
}
