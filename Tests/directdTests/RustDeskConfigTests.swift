import Foundation
import Testing
@testable import directd

/// RustDesk's own RustDesk2.toml, as RustDesk writes it (issue 14).
struct RustDeskConfigTests {
    /// A full file: top-level keys and more than 20 options, most of them not
    /// directd's, comments, and both kinds of quotes.
    static let realistic = """
        # RustDesk2.toml, with a comment added by hand
        rendezvous_server = 'rs-ny.rustdesk.com:21116'
        nat_type = 1
        serial = 0
        unlock_pin = ''
        trusted_devices = ''

        [options]
        av1-test = 'Y'
        local-ip-addr = "192.0.2.10"
        direct-server = 'Y'
        direct-access-port = '21119'
        whitelist = "198.51.100.0/24,203.0.113.7"
        bind-interface = '127.0.0.1'
        enable-lan-discovery = 'N'
        allow-remote-config-modification = 'Y'
        approve-mode = 'password'
        verification-method = 'use-permanent-password'
        custom-rendezvous-server = ''
        relay-server = ''
        api-server = ''
        key = ''
        enable-keyboard = 'Y'
        enable-clipboard = 'Y'
        enable-file-transfer = 'Y'
        enable-audio = 'Y'
        enable-tunnel = 'Y'
        enable-remote-restart = 'Y'
        enable-record-session = 'Y'
        allow-auto-disconnect = 'N'
        auto-disconnect-timeout = '10'
        temporary-password-length = '6'
        theme = 'dark'
        lang = 'default'
        enable-udp = 'Y' # a trailing comment

        """

    func load(_ text: String, bom: Bool = false, crlf: Bool = false, path: String = "RustDesk2.toml") throws(ConfigError) -> Settings {
        var bytes = Array((crlf ? text.replacingOccurrences(of: "\n", with: "\r\n") : text).utf8)
        if bom { bytes = [0xEF, 0xBB, 0xBF] + bytes }
        var settings = Settings()
        #expect(ConfigFile.format(of: path, bytes) == .toml)
        _ = try RustDeskConfig.load(bytes, path: path, into: &settings)
        return settings
    }

    func failure(_ text: String) -> String? {
        do { _ = try load(text); return nil } catch { return error.description }
    }

    @Test(arguments: [(false, false), (true, false), (false, true), (true, true)])
    func aRealisticFileIsRead(bom: Bool, crlf: Bool) throws {
        let settings = try load(Self.realistic, bom: bom, crlf: crlf)
        #expect(settings.bindInterface == "127.0.0.1")
        #expect(settings.port == 21119)
        #expect(settings.allowList?.description == "198.51.100.0/24, 203.0.113.7/32")
        #expect(settings.warnings.isEmpty, "unknown keys are ignored silently in RustDesk's file")
    }

    @Test(arguments: [
        ("direct-server = 'Y'", "direct-server = 'N'", "direct access is off in that file"),
        ("direct-server = 'Y'", "direct-server = ''", "direct access is off in that file"),
        ("direct-server = 'Y'", "", "it does not set direct-server"),
        ("direct-server = 'Y'", "direct-server = 'yes'", "expected Y or N"),
        ("direct-server = 'Y'", "direct-server = 'Y'\nstop-service = 'Y'", "stop-service = 'Y'"),
    ])
    func directAccessMustBeOnInTheFile(_ line: String, _ replacement: String, _ message: String) {
        let text = Self.realistic.replacingOccurrences(of: line, with: replacement)
        #expect(failure(text)?.contains(message) == true, "\(failure(text) ?? "accepted")")
    }

    @Test func aFileWithoutOptionsHasDirectAccessOff() {
        #expect(failure("rendezvous_server = 'x'\n")?.contains("does not set direct-server") == true)
    }

    @Test(arguments: [
        ("[options]\ndirect-server = 'Y'\nbind-interface = '127.0.0.1\n", "line 3"),
        ("[options]\ndirect-server = 'Y'\n\nbind-interface = 127.0.0.1\n", "line 4"),
        ("[options]\ndirect-server = 'Y'\nbind-interface = '127.0.0.1'\nbind-interface = ''\n", "line 4"),
        ("[options]\ndirect-server = 'Y'\nbind-interface = '127.0.0.1'\u{0}bind-interface = ''\n", "line 3"),
    ])
    func malformedTOMLNamesTheLine(_ text: String, _ line: String) {
        let message = failure(text)
        #expect(message?.contains("is not valid TOML: \(line)") == true, "\(message ?? "accepted")")
    }

    @Test(arguments: ["bind_interface", "Bind-Interface", "direct_access_port", "whitelists"])
    func aNearMissStillFails(_ key: String) {
        let message = failure("[options]\ndirect-server = 'Y'\n\(key) = '127.0.0.1'\n")
        #expect(message?.contains("did you mean") == true, "\(message ?? "accepted")")
    }

    @Test func valuesAreCheckedLikeFlags() {
        #expect(failure("[options]\ndirect-server = 'Y'\ndirect-access-port = '70000'\n")?.contains("Invalid direct access port") == true)
        #expect(failure("[options]\ndirect-server = 'Y'\nbind-interface = \"lo\\u0000\"\n")?.contains("control character") == true)
        #expect(failure("[options]\ndirect-server = 'Y'\nbind-interface = true\n")?.contains("must be a string") == true)
        // A NUL must never cut a value short (TOMLKit's C strings did): refused with its line.
        #expect(failure("[options]\ndirect-server = 'Y'\ndirect-forward = \"localhost\\u0000.attacker.example:19001\"\n")?
            .contains("line 3: an escaped control character") == true)
        #expect(failure("[options]\ndirect-server = 'Y'\n\"bind-interface\\U00000000x\" = '0.0.0.0'\n") != nil)
        // An escaped backslash followed by "u0000" is text, not a NUL.
        #expect((try? load("[options]\ndirect-server = 'Y'\nbind-interface = \"\\\\u0000\"\n"))?.bindInterface == "\\u0000")
    }

    /// Issue 18: a TOML number is read from its literal text by the flag's parser,
    /// so TOML's other integer forms are not port numbers, and 0.5 s is 0.5 s.
    @Test(arguments: ["0x5000", "0o50000", "+21118", "2_1118", "0b101", "21118.0", "2.1118e4", "inf"])
    func aNumberIsReadLikeTheFlag(_ literal: String) {
        let message = failure("[options]\ndirect-server = 'Y'\ndirect-access-port = \(literal)\n")
        #expect(message?.contains("Invalid direct access port \"\(literal)\"") == true, "\(message ?? "accepted")")
    }

    @Test func numbersTheFlagsAcceptAreAcceptedAsNumbers() throws {
        let settings = try load("[options]\ndirect-server = 'Y'\ndirect-access-port = 21119\ngrace = 0.5\nidle-timeout = 3\nmax-connections = 7\n")
        #expect(settings.port == 21119 && settings.grace == 0.5 && settings.idleTimeout == 3 && settings.maxConnections == 7)
        #expect(failure("[options]\ndirect-server = 'Y'\ngrace = -0.5\n")?.contains("Invalid grace \"-0.5\"") == true)
        #expect(failure("[options]\ndirect-server = 'Y'\nbind-interface = 127\n")?.contains("must be a string") == true)
        #expect(failure("[options]\ndirect-server = 'Y'\ngrace = 1979-05-27\n")?.contains("found a date or time") == true)
        #expect(failure("[options]\ndirect-server = 'Y'\ngrace = [1]\n")?.contains("found an array") == true)
    }

    /// Issue 18: toml++ garbled the name ('\"bibind-interface\" '); the key is named exactly.
    @Test(arguments: [
        "\"bind-interface\" = '127.0.0.1'\n\"bind-interface\" = ''\n",
        "bind-interface = '127.0.0.1'\n'bind-interface' = ''\n",
        "\"bind-interface\" = '127.0.0.1'\n\"bind\\u002Dinterface\" = ''\n",
    ])
    func aDuplicateQuotedKeyIsNamedExactly(_ lines: String) {
        let message = failure("[options]\ndirect-server = 'Y'\n" + lines)
        #expect(message?.hasSuffix("is not valid TOML: line 4, column 1: duplicate key \"bind-interface\"; TOML allows each key once in a table") == true,
                "\(message ?? "accepted")")
    }

    /// The name goes through the central escaper: a right-to-left override in a
    /// quoted key (valid TOML) cannot reorder the message.
    @Test func aDuplicateKeyIsEscapedByTheCentralEscaper() {
        let message = failure("[options]\ndirect-server = 'Y'\n\"a\u{202E}b\" = 1\n'a\u{202E}b' = 2\n")
        #expect(message?.contains("line 4, column 1: duplicate key \"a\\u{202e}b\"") == true, "\(message ?? "accepted")")
        #expect(message?.unicodeScalars.contains(where: LogEscaping.needsEscaping) == false)
    }

    @Test func optionsMayBeWrittenInAnyTOMLForm() throws {
        #expect(try load("options.direct-server = 'Y'\noptions.bind-interface = '127.0.0.1'\n").bindInterface == "127.0.0.1")
        #expect(try load("options = { direct-server = 'Y', bind-interface = \"\"\"127.0.0.2\"\"\" }\n").bindInterface == "127.0.0.2")
        #expect(try load("[options]\ndirect-server = '''Y'''\nbind-interface = '''\n127.0.0.3'''\n").bindInterface == "127.0.0.3")
        #expect(failure("[[options]]\ndirect-server = 'Y'\n")?.contains("must be a table ([options]), found an array") == true)
    }

    /// RustDesk's other keys and tables, in every TOML form, never make a valid file fail.
    @Test func otherKeysAndTablesInAnyFormAreIgnored() throws {
        let top = #"""
            last_update = 2026-12-03T08:00:00Z
            rate = 0.75
            ids = [ 1, 0x10, 'x', [true], { a = 1 } ]
            note = """
            multi-line \
              text"""

            """#
        let tables = """

            [peers."198.51.100.7"]
            seen = 1979-05-27
            [[history]]
            at = 07:32:00
            [[history]]
            what.deep.key = { x = [] }

            """
        let text = top + Self.realistic + tables
        let settings = try load(text)
        #expect(settings.bindInterface == "127.0.0.1" && settings.port == 21119)
    }

    @Test func theFormatIsRecognisedByExtensionOrContent() {
        #expect(ConfigFile.format(of: "/etc/directd.json", Array("[options]".utf8)) == .json)
        #expect(ConfigFile.format(of: "/etc/directd.TOML", Array("{}".utf8)) == .toml)
        #expect(ConfigFile.format(of: "/etc/directd.conf", Array(" \n{\"options\": {}}".utf8)) == .json)
        #expect(ConfigFile.format(of: "/etc/directd.conf", Array("\u{FEFF}# comment\n[options]".utf8)) == .toml)
        #expect(ConfigFile.format(of: "/etc/directd.conf", Array("[options]\n".utf8)) == .toml)
        #expect(ConfigFile.format(of: "/etc/directd.conf", Array("[\"options\"]".utf8)) == .json)
    }
}

/// The same through the real binary: `check` and `serve` refuse a file with direct access off.
@Suite(.serialized)
struct RustDeskConfigProcessTests {
    func withFile(_ text: String, name: String, _ body: (String) throws -> Void) throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("directd-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let url = directory.appendingPathComponent(name)
        try Data(text.utf8).write(to: url)
        try body(url.path)
    }

    @Test func checkReadsRustDesksFileByExtensionAndByContent() throws {
        for name in ["RustDesk2.toml", "rustdesk.conf"] {
            try withFile(RustDeskConfigTests.realistic.replacingOccurrences(of: "\n", with: "\r\n"), name: name) { path in
                let result = try runDirectd(["check", "--config", path])
                #expect(result.status == 0, "\(result.stderr)")
                #expect(result.stdout == "listen 127.0.0.1:21119\n")
                // As root, check says that directd would serve as root: not about the file.
                #expect(!result.stderr.split(separator: "\n").contains { $0.contains("warning") && !$0.contains("will serve as root") },
                        "\(result.stderr)")
            }
        }
    }

    @Test func directAccessOffRefusesToStartAndCheckSaysTheSame() throws {
        let off = RustDeskConfigTests.realistic.replacingOccurrences(of: "direct-server = 'Y'", with: "direct-server = 'N'")
        try withFile(off, name: "RustDesk2.toml") { path in
            for command in [["check"], []] {
                let result = try runDirectd(command + ["--config", path, "--port", "0"])
                #expect(result.status == 78, "\(result.stderr)")
                #expect(result.stderr.contains("direct access is off in that file"), "\(result.stderr)")
                #expect(result.stdout.isEmpty)
            }
        }
    }
}
