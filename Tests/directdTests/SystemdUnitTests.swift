import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Testing

/// The shipped unit files, as systemd reads them.
struct SystemdUnitTests {
    static let packaging = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("packaging")

    static let analyze = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .first { FileManager.default.isExecutableFile(atPath: $0) }

    /// A copy of the units whose ExecStart is the directd just built: `verify`
    /// checks that the binary exists, and none is installed at /usr/local/bin.
    func unitsForVerify() throws -> URL {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("directd-units-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let service = try String(contentsOf: Self.packaging.appendingPathComponent("directd.service"), encoding: .utf8)
        #expect(service.contains("ExecStart=/usr/local/bin/directd "), "make install rewrites this path")
        try service.replacingOccurrences(of: "/usr/local/bin/directd", with: directdPath)
            .write(to: directory.appendingPathComponent("directd.service"), atomically: true, encoding: .utf8)
        try FileManager.default.copyItem(at: Self.packaging.appendingPathComponent("directd.socket"),
                                         to: directory.appendingPathComponent("directd.socket"))
        return directory
    }

    @Test func systemdAnalyzeVerifyAcceptsTheUnits() throws {
        guard let analyze = Self.analyze else {
            print("SystemdUnitTests: skipped: systemd-analyze not found (Debian: apt-get install systemd)")
            return
        }
        let directory = try unitsForVerify()
        defer { try? FileManager.default.removeItem(at: directory) }
        let result = try runDirectd(["verify", directory.appendingPathComponent("directd.service").path,
                                     directory.appendingPathComponent("directd.socket").path], executable: analyze)
        #expect(result.status == 0, "systemd-analyze verify: \(result.stderr)")
        #expect(!result.stderr.contains("directd."), "no warning about the units: \(result.stderr)")
    }

    @Test func exposureLevelIsTwoOrLower() throws {
        guard let analyze = Self.analyze else {
            print("SystemdUnitTests: skipped: systemd-analyze not found (Debian: apt-get install systemd)")
            return
        }
        let directory = try unitsForVerify()
        defer { try? FileManager.default.removeItem(at: directory) }
        let result = try runDirectd(["security", "--offline=true", "--no-pager",
                                     directory.appendingPathComponent("directd.service").path], executable: analyze)
        let line = try #require(result.stdout.split(separator: "\n").first { $0.contains("Overall exposure level") },
                                "\(result.stdout)\(result.stderr)")
        let level = try #require(line.split(separator: " ").compactMap { Double($0) }.first, "\(line)")
        #expect(level <= 2.0, "\(line)")
    }

    @Test func exampleConfigIsValid() throws {
        let result = try runDirectd(["check", "--config", Self.packaging.appendingPathComponent("directd.json").path])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("127.0.0.1:21118"), "\(result.stdout)")
    }

    @Test func socketExampleMatchesTheExampleConfig() throws {
        // The example socket listens where the example config's bind value does,
        // so the two installed together start (directd refuses any other socket).
        let socket = try String(contentsOf: Self.packaging.appendingPathComponent("directd.socket"), encoding: .utf8)
        let listens = socket.split(separator: "\n").filter { $0.hasPrefix("ListenStream=") }
        #expect(listens == ["ListenStream=127.0.0.1:21118"])
        let config = try String(contentsOf: Self.packaging.appendingPathComponent("directd.json"), encoding: .utf8)
        #expect(config.contains("\"bind-interface\": \"127.0.0.1\"") && config.contains("\"direct-access-port\": 21118"))
    }
}
