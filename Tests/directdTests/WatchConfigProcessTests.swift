import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Testing

/// `--watch-config` through the real binary, where the path resolves through
/// symlinks or its folder goes away (issue 18 item 6).
@Suite(.serialized)
struct WatchConfigProcessTests {
    func options(_ maxConnections: Int) -> String {
        #"{"options": {"bind-interface": "127.0.0.1", "direct-access-port": "0", "max-connections": "\#(maxConnections)"}}"#
    }

    func temporaryDirectory() throws -> String {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("directd-watchp-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        return directory.path
    }

    /// Kubernetes' update of a mounted ConfigMap: a new folder, then `..data`
    /// swapped to it by renaming a symlink. Before, no reload happened.
    @Test func aConfigMapUpdateReloads() throws {
        let root = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        func publish(_ version: String, _ text: String) throws {
            try FileManager.default.createDirectory(atPath: "\(root)/..\(version)", withIntermediateDirectories: false)
            try text.write(toFile: "\(root)/..\(version)/directd.json", atomically: false, encoding: .utf8)
            try #require(symlink("..\(version)", "\(root)/..data_tmp") == 0)
            try #require(rename("\(root)/..data_tmp", "\(root)/..data") == 0)
        }
        try publish("2026_12_03_08_00_00.1", options(10))
        try #require(symlink("..data/directd.json", "\(root)/directd.json") == 0)
        let daemon = try Daemon(["--config", "\(root)/directd.json", "--watch-config"])
        defer { daemon.stop() }
        try publish("2026_12_03_08_05_00.2", options(20))
        try FileManager.default.removeItem(atPath: "\(root)/..2026_12_03_08_00_00.1")
        #expect(daemon.waitForLog("reloaded: max-connections: \"10\" → \"20\""), "\(daemon.logText)")
        try publish("2026_12_03_08_10_00.3", options(30))
        #expect(daemon.waitForLog("reloaded: max-connections: \"20\" → \"30\""), "\(daemon.logText)")
    }

    /// The config folder removed and made again: a warning when watching
    /// stops, and reloads again once it is back. Before: silence for ever.
    @Test func aRemovedConfigFolderIsReportedAndWatchedAgain() throws {
        let parent = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: parent) }
        let folder = parent + "/conf", path = parent + "/conf/directd.json"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: false)
        try options(10).write(toFile: path, atomically: false, encoding: .utf8)
        let daemon = try Daemon(["--config", path, "--watch-config"])
        defer { daemon.stop() }
        try FileManager.default.removeItem(atPath: folder)
        #expect(daemon.waitForLog("its directory \(folder) is gone; stopped watching it, watching \(parent) until it is back"),
                "\(daemon.logText)")
        #expect(daemon.waitForLog("reload rejected"), "the file is gone: the reload says so and changes nothing")
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: false)
        try options(20).write(toFile: path, atomically: false, encoding: .utf8)
        #expect(daemon.waitForLog("reloaded: max-connections: \"10\" → \"20\""), "\(daemon.logText)")
        // Watched again: an in-place edit of the file in the new folder reloads.
        usleep(300_000)
        try options(30).write(toFile: path, atomically: false, encoding: .utf8)
        #expect(daemon.waitForLog("reloaded: max-connections: \"20\" → \"30\""), "\(daemon.logText)")
        #expect(daemon.process.isRunning)
    }
}
