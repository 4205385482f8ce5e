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
        // TOMLKit hands strings over as C strings: the NUL must be caught before it cuts the value.
        #expect(failure("[options]\ndirect-server = 'Y'\ndirect-forward = \"localhost\\u0000.attacker.example:19001\"\n")?
            .contains("line 3: an escaped control character") == true)
        #expect(failure("[options]\ndirect-server = 'Y'\n\"bind-interface\\U00000000x\" = '0.0.0.0'\n") != nil)
        // An escaped backslash followed by "u0000" is text, not a NUL.
        #expect((try? load("[options]\ndirect-server = 'Y'\nbind-interface = \"\\\\u0000\"\n"))?.bindInterface == "\\u0000")
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
                #expect(!result.stderr.contains("warning"), "\(result.stderr)")
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
