import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A RustDesk2.toml in a folder of its own, replaced atomically as editors do.
final class TOMLFileFixture {
    let directory: URL
    let path: String

    init(_ text: String) throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("directd-toml-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        path = directory.appendingPathComponent("RustDesk2.toml").path
        try write(text)
    }

    func write(_ text: String) throws {
        let temporary = directory.appendingPathComponent("RustDesk2.toml.tmp")
        try Data(text.utf8).write(to: temporary)
        guard rename(temporary.path, path) == 0 else { throw TestFailure("rename: \(errno)") }
    }

    deinit { try? FileManager.default.removeItem(at: directory) }
}

/// Issue 18 through the real binary: RustDesk2.toml read by directd's own reader.
@Suite(.serialized)
struct TOMLProcessTests {
    static let serving = "[options]\ndirect-server = 'Y'\nbind-interface = '127.0.0.1'\ndirect-access-port = '0'\n"

    /// 150,000 levels overflowed toml++'s stack (exit 139); 100,000 did not.
    static let deep = "[options]\ndirect-server = 'Y'\n"
        + Array(repeating: "a", count: 150_000).joined(separator: ".") + " = 1\n"

    @Test func aDeeplyNestedFileIsAConfigErrorForCheck() throws {
        let file = try TOMLFileFixture(Self.deep)
        let result = try runDirectd(["check", "--config", file.path])
        #expect(result.status == 78, "\(result.stderr)")
        #expect(result.stderr.contains("is not valid TOML: line 3, column "), "\(result.stderr)")
        #expect(result.stderr.contains("nested more than 64 levels deep"), "\(result.stderr)")
        #expect(result.stdout.isEmpty)
    }

    /// A reload (SIGHUP, or the watcher) that reads it is rejected; directd serves on.
    @Test(arguments: [false, true])
    func aDeeplyNestedFileOnReloadIsRejectedAndServingGoesOn(watch: Bool) throws {
        let file = try TOMLFileFixture(Self.serving)
        let daemon = try Daemon(["--config", file.path] + (watch ? ["--watch-config"] : []))
        defer { daemon.stop() }
        let port = daemon.port
        try file.write(Self.deep)
        if !watch { kill(daemon.pid, SIGHUP) }
        #expect(daemon.waitForLog("reload rejected"), "\(daemon.logText)")
        #expect(daemon.logText.contains("nested more than 64 levels deep"), "\(daemon.logText)")
        #expect(daemon.process.isRunning)
        let client = try TCPClient(host: "127.0.0.1", port: port)
        #expect(client.send([0x2A]) && client.receive(exactly: 1) == [0x2A], "the old listener still serves")
        #expect(daemon.stop() == 0)
    }

    /// `direct-access-port = 0x5000` listened on 20480: a TOML number now goes
    /// through the flag's parser, and gets the flag's message word for word.
    @Test(arguments: ["0x5000", "0o50000", "+21118", "2_1118"])
    func aTOMLNumberIsRefusedAsTheFlagRefusesIt(_ literal: String) throws {
        let file = try TOMLFileFixture("[options]\ndirect-server = 'Y'\nbind-interface = '127.0.0.1'\ndirect-access-port = \(literal)\n")
        let fromFile = try runDirectd(["check", "--config", file.path])
        let fromFlag = try runDirectd(["check", "--bind-interface", "127.0.0.1", "--port", literal])
        #expect(fromFile.status == 78 && fromFlag.status == 78, "\(fromFile.stderr)")
        #expect(fromFile.stdout.isEmpty, "it would listen: \(fromFile.stdout)")
        let message = { (result: Finished) in result.stderr.split(separator: "\n").map(withoutTimestamp) }
        #expect(!message(fromFlag).isEmpty && message(fromFile) == message(fromFlag), "\(fromFile.stderr) vs \(fromFlag.stderr)")
    }

    /// `grace = 5` was accepted and `grace = 0.5` refused; both are fine, as the flag is.
    @Test func aFractionalNumberIsReadAsTheFlagReadsIt() throws {
        for grace in ["5", "0.5", "'0.5'"] {
            let file = try TOMLFileFixture("[options]\ndirect-server = 'Y'\nbind-interface = '127.0.0.1'\ngrace = \(grace)\n")
            let result = try runDirectd(["check", "--config", file.path])
            #expect(result.status == 0, "grace = \(grace): \(result.stderr)")
            #expect(result.stdout == "listen 127.0.0.1:21118\n")
        }
    }

    /// toml++ garbled a repeated quoted key's name ('\"bibind-interface\" ').
    @Test func aDuplicateQuotedKeyIsNamedExactly() throws {
        let file = try TOMLFileFixture("[options]\ndirect-server = 'Y'\n\"bind-interface\" = '127.0.0.1'\n\"bind-interface\" = ''\n")
        let result = try runDirectd(["check", "--config", file.path])
        #expect(result.status == 78, "\(result.stderr)")
        #expect(result.stderr.contains("is not valid TOML: line 4, column 1: duplicate key \"bind-interface\";"), "\(result.stderr)")
    }
}
