import Foundation
import Testing

/// Config files and command lines that once widened the bind or misled the
/// operator, run through the real binary: each must exit with its code, print no
/// listener, and say what is wrong (issues 9 and 10).
@Suite(.serialized)
struct ConfigProcessTests {
    func withFile(_ text: String, suffix: String = "json", _ body: (String) throws -> Void) throws {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("directd-\(UUID().uuidString).\(suffix)")
        try Data(text.utf8).write(to: url)
        defer { try? FileManager.default.removeItem(at: url) }
        try body(url.path)
    }

    @Test(arguments: [
        (#"{"options":{"bind-interface":"","bind-interface":"127.0.0.1"}}"#, "duplicate key \"bind-interface\""),
        (#"{"options":{"bind-interface":"127.0.0.1","bind\u002dinterface":""}}"#, "duplicate key \"bind-interface\""),
        (#"{"options":{"bind-interface":"127.0.0.1","whitelist":"","whitelist":"10.0.0.0/8"}}"#, "duplicate key \"whitelist\""),
        (#"{"options": null}"#, "\"options\" must be an object"),
        (#"{"settings":{"bind-interface":"127.0.0.1"}}"#, "has no \"options\" object"),
        (#"{"opts":{"bind-interface":"127.0.0.1"}}"#, "has no \"options\" object"),
        (#"{"options":{"bind-interface":"127.0.0.1","direct-forward":"localhost\u0000.attacker.example:19001"}}"#, "control character"),
        (#"{"options":{"bind-interface":"127.0.0.1\u0000 0.0.0.0"}}"#, "control character"),
        (#"{"options":{"bind-interface":"127.0.0.1","direct-access-port":21118.0}}"#, "must be a whole number from 0 to 65535, found 21118.0"),
        (#"{"options":{"bind-interface":"127.0.0.1","direct-access-port":2.1118e4}}"#, "must be a whole number from 0 to 65535, found 2.1118e4"),
    ])
    func configPathsThatWidenedTheBindExit78(_ json: String, _ message: String) throws {
        try withFile(json) { path in
            for command in [["check"], []] {
                let result = try runDirectd(command + ["--config", path, "--port", "0"])
                #expect(result.status == 78, "\(command) \(json): \(result.stderr)")
                #expect(result.stderr.contains(message), "\(result.stderr)")
                #expect(result.stdout.isEmpty)
                #expect(!result.stderr.contains("listening on"))
            }
        }
    }

    // MARK: command line (issue 9 item 17, issue 10 item 7)

    @Test func aRepeatedFlagIsAUsageErrorNamingIt() throws {
        let result = try runDirectd(["check", "--bind-interface", "127.0.0.1", "--port", "1", "--bind-interface=0.0.0.0"])
        #expect(result.status == 64, "\(result.stderr)")
        #expect(result.stderr.contains("--bind-interface is given more than once"), "\(result.stderr)")
        #expect(result.stdout.isEmpty)
    }

    @Test func aLongCommandLineIsReadInLinearTime() throws {
        // Before, 12,000 repeated flags took 37 s (quadratic). Compared by the
        // CPU time directd itself spends (not the wall clock, which a loaded
        // machine stretches): ten times the arguments may cost about ten times
        // as much, a quadratic reader a hundred times.
        let shapes: [(Int) -> [String]] = [{ Array(Array(repeating: ["--port", "1"], count: $0 / 2).joined()) },
                                           { Array(repeating: "--grace=1", count: $0) },
                                           { Array(repeating: "operand", count: $0) }]
        for shape in shapes {
            let small = try cpuSeconds(["check"] + shape(2_000))
            let large = try cpuSeconds(["check"] + shape(20_000))
            #expect(large < 30 * max(small, 0.01), "2,000 arguments: \(small) s of CPU, 20,000: \(large) s")
        }
    }

    /// The CPU seconds (user and system) one run of directd took, read from the
    /// shell that ran it (`times`); the run must end as a usage error.
    private func cpuSeconds(_ arguments: [String]) throws -> Double {
        let script = "\"$0\" \"$@\"; status=$?; times >&2; exit $status"
        let result = try runDirectd(arguments, prefix: ["/bin/bash", "-c", script], timeout: 60)
        #expect(result.status == 64, "\(result.stderr.prefix(300))")
        // The last line of `times`: the children's user and system time, as 0m0.012s 0m0.004s.
        let fields = result.stderr.split(separator: "\n").last?.split(separator: " ") ?? []
        let seconds = fields.compactMap { field -> Double? in
            guard let m = field.firstIndex(of: "m"), field.hasSuffix("s"),
                  let minutes = Double(field[..<m]),
                  let rest = Double(field[field.index(after: m)..<field.index(before: field.endIndex)]) else { return nil }
            return minutes * 60 + rest
        }
        #expect(seconds.count == 2, "times printed \(fields)")
        return seconds.reduce(0, +)
    }

    @Test(arguments: [["--bind-interface", ""], ["--bind-interface="], ["--bind-interface", " "]])
    func anEmptyBindInterfaceMeansAllInterfacesInEverySpelling(_ flags: [String]) throws {
        let result = try runDirectd(["check", "--port", "4321"] + flags)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.hasPrefix("listen 0.0.0.0:4321\n"), "\(result.stdout)")
    }

    @Test func anEmptyValueIsTheSameInBothSpellingsForEveryOption() throws {
        for flag in ["port", "forward", "whitelist", "max-connections", "idle-timeout", "log-level", "backlog", "memory-limit"] {
            let separate = try runDirectd(["check", "--\(flag)", ""])
            let joined = try runDirectd(["check", "--\(flag)="])
            #expect(separate.status == joined.status, "--\(flag): \(separate.stderr) / \(joined.stderr)")
            #expect(separate.stdout == joined.stdout)
        }
    }

    @Test(arguments: [
        (["--port", "http"], "Invalid direct access port \"http\""),
        (["--backlog", "0"], "Invalid backlog \"0\""),
        (["--max-connections-per-client", "-1"], "Invalid max-connections-per-client \"-1\""),
        (["--memory-limit", "lots"], "Invalid memory-limit \"lots\""),
        (["--forward", "localhost\u{1}:80"], "control character"),
    ])
    func anInvalidFlagValueIsAConfigurationError(_ flags: [String], _ message: String) throws {
        let result = try runDirectd(["check"] + flags)
        #expect(result.status == 78, "\(result.stderr)")
        #expect(result.stderr.contains(message), "\(result.stderr)")
    }

    @Test func anEmptyWhitelistIsNotedAtStart() throws {
        let result = try runDirectd(["check", "--bind-interface", "127.0.0.1", "--whitelist", ""])
        #expect(result.status == 0)
        #expect(result.stderr.contains("whitelist is empty: every client is allowed"), "\(result.stderr)")
        let none = try runDirectd(["check", "--bind-interface", "127.0.0.1"])
        #expect(!none.stderr.contains("whitelist is empty"))
    }

    // MARK: version (issue 14)

    @Test func versionComesFromTheHeader() throws {
        let header = try String(contentsOfFile: #filePath.replacingOccurrences(of: "Tests/directdTests/ConfigProcessTests.swift", with: "Modules/UVBind/uvbind.h"), encoding: .utf8)
        func part(_ name: String) -> String? {
            header.split(separator: "\n").first { $0.hasPrefix("#define UVBIND_VERSION_\(name) ") }
                .map { String($0.split(separator: " ").last!) }
        }
        let expected = "directd \(part("MAJOR") ?? "?").\(part("MINOR") ?? "?").\(part("PATCH") ?? "?")\n"
        for arguments in [["--version"], ["check", "--version"]] {
            let result = try runDirectd(arguments)
            #expect(result.status == 0)
            #expect(result.stdout == expected)
        }
    }
}
