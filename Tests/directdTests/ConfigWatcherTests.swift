import CUV
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Testing
@testable import directd

/// The config file's directory is watched; the callback runs once per settled burst.
struct ConfigWatcherTests {
    final class Counter { var calls = 0 }

    func temporaryDirectory() throws -> URL {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("directd-watch-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        return directory
    }

    func write(_ text: String, to path: String) {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        _ = text.withCString { Glibc.write(fd, $0, strlen($0)) }
        close(fd)
    }

    @Test func atomicRenameIsSeen() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("directd.json").path
        write("{}", to: path)
        let loop = TestLoop()
        let counter = Counter()
        let watcher = try ConfigWatcher(loop: loop.loop, path: path, debounceMilliseconds: 50) { counter.calls += 1 }
        #expect(watcher.directory == directory.path && watcher.fileName == "directd.json")

        // Other files in the directory are not the config.
        write("{}", to: directory.appendingPathComponent("other.json").path)
        loop.run(milliseconds: 200)
        #expect(counter.calls == 0, "a change to another file is ignored")

        // An editor's save: a new file renamed over the old one (a new inode).
        let temporary = directory.appendingPathComponent(".directd.json.swp").path
        write("{\"options\": {}}", to: temporary)
        #expect(rename(temporary, path) == 0)
        loop.run(until: { counter.calls > 0 }, limit: 2000)
        #expect(counter.calls == 1)

        // And the watch survives the replaced inode: the next save is seen too.
        write("{\"options\": {\"grace\": 1}}", to: temporary)
        #expect(rename(temporary, path) == 0)
        loop.run(until: { counter.calls > 1 }, limit: 2000)
        #expect(counter.calls == 2)

        watcher.close()
        #expect(loop.close(), "the watcher's handles are closed")
    }

    @Test func burstOfWritesIsOneCall() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("directd.json").path
        write("{}", to: path)
        let loop = TestLoop()
        let counter = Counter()
        let watcher = try ConfigWatcher(loop: loop.loop, path: path, debounceMilliseconds: 200) { counter.calls += 1 }
        var writes: [UInt64] = []
        for index in 0..<10 {
            writes.append(uv_hrtime() / 1_000_000)
            write("{\"options\": {\"grace\": \(index)}}", to: path)
            loop.run(milliseconds: 10)   // the events arrive between writes
        }
        let longestGap = zip(writes.dropFirst(), writes).map { $0 - $1 }.max() ?? 0
        // A machine so loaded that the test stalled for the debounce time between
        // two writes has made two bursts; only then may there be two calls.
        let bursts = longestGap < 200 ? 1 : 2
        if bursts == 1 { #expect(counter.calls == 0, "nothing while the burst goes on") }
        loop.run(until: { counter.calls > 0 }, limit: 2000)
        loop.run(milliseconds: 500)
        #expect(counter.calls >= 1 && counter.calls <= bursts, "ten writes, one call (longest gap \(longestGap) ms)")
        watcher.close()
        #expect(loop.close())
    }

    @Test func closedWatcherCallsNoMore() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("directd.json").path
        let loop = TestLoop()
        let counter = Counter()
        let watcher = try ConfigWatcher(loop: loop.loop, path: path, debounceMilliseconds: 50) { counter.calls += 1 }
        write("{}", to: path)
        loop.run(milliseconds: 20)
        watcher.close()   // while the burst settles
        loop.run(milliseconds: 200)
        #expect(counter.calls == 0)
        #expect(loop.close())
    }

    @Test func missingDirectoryIsAnError() {
        let loop = TestLoop()
        #expect(throws: ConfigWatcher.WatchError.self) {
            try ConfigWatcher(loop: loop.loop, path: "/nonexistent-\(UUID().uuidString)/directd.json") {}
        }
        #expect(loop.close())
    }

    // MARK: what the path resolves through (issue 18 item 6)

    /// A Kubernetes ConfigMap: `directd.json` → `..data/directd.json`, `..data`
    /// → a timestamped folder; an update swaps `..data` by renaming a new symlink
    /// over it, then removes the old folder.
    @Test func aConfigMapSwapIsSeenAndFollowed() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let root = directory.path
        func publish(_ version: String, content: String) {
            let folder = "\(root)/..\(version)"
            mkdir(folder, 0o755)
            write(content, to: "\(folder)/directd.json")
            symlink("..\(version)", "\(root)/..data_tmp")
            rename("\(root)/..data_tmp", "\(root)/..data")
        }
        publish("2026_12_03_a", content: "{}")
        #expect(symlink("..data/directd.json", "\(root)/directd.json") == 0)
        let loop = TestLoop()
        let counter = Counter()
        let watcher = try ConfigWatcher(loop: loop.loop, path: "\(root)/directd.json", debounceMilliseconds: 50) { counter.calls += 1 }
        #expect(watcher.watchedDirectories == [root, "\(root)/..2026_12_03_a"])
        publish("2026_12_03_b", content: "{\"options\": {}}")
        #expect(loop.run(until: { counter.calls == 1 }, limit: 2000), "the swap of ..data is a change")
        #expect(watcher.watchedDirectories == [root, "\(root)/..2026_12_03_b"], "the watch follows the new folder")
        try FileManager.default.removeItem(atPath: "\(root)/..2026_12_03_a")
        loop.run(milliseconds: 150)
        #expect(counter.calls == 1, "removing the old folder changes nothing")
        // The file in the new folder, edited in place: seen through the chain.
        write("{\"options\": {\"grace\": 2}}", to: "\(root)/..2026_12_03_b/directd.json")
        #expect(loop.run(until: { counter.calls == 2 }, limit: 2000))
        publish("2026_12_03_c", content: "{}")
        #expect(loop.run(until: { counter.calls == 3 }, limit: 2000), "and the next swap too")
        watcher.close()
        #expect(loop.close())
    }

    @Test func anEditOfASymlinksTargetInAnotherFolderIsSeen() throws {
        let linkFolder = try temporaryDirectory(), targetFolder = try temporaryDirectory()
        defer {
            try? FileManager.default.removeItem(at: linkFolder)
            try? FileManager.default.removeItem(at: targetFolder)
        }
        let target = targetFolder.appendingPathComponent("real.json").path
        write("{}", to: target)
        let path = linkFolder.appendingPathComponent("directd.json").path
        #expect(symlink(target, path) == 0)
        let loop = TestLoop()
        let counter = Counter()
        let watcher = try ConfigWatcher(loop: loop.loop, path: path, debounceMilliseconds: 50) { counter.calls += 1 }
        write("{}", to: targetFolder.appendingPathComponent("other.json").path)
        loop.run(milliseconds: 150)
        #expect(counter.calls == 0, "another file in the target's folder is not the config")
        write("{\"options\": {}}", to: target)   // in place, same inode
        #expect(loop.run(until: { counter.calls == 1 }, limit: 2000))
        watcher.close()
        #expect(loop.close())
    }

    /// The watched folder removed, then made again: the parent is watched
    /// meanwhile, and the folder again once it is back.
    @Test func aRemovedFolderIsWatchedAgainWhenItComesBack() throws {
        let parent = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: parent) }
        let folder = parent.appendingPathComponent("conf").path
        mkdir(folder, 0o755)
        let path = folder + "/directd.json"
        write("{}", to: path)
        let loop = TestLoop()
        let counter = Counter()
        let watcher = try ConfigWatcher(loop: loop.loop, path: path, debounceMilliseconds: 50) { counter.calls += 1 }
        #expect(watcher.watchedDirectories == [folder])
        try FileManager.default.removeItem(atPath: folder)
        #expect(loop.run(until: { counter.calls == 1 }, limit: 2000), "the file is gone: a change")
        #expect(watcher.watchedDirectories == [parent.path], "the parent, until the folder is back")
        mkdir(folder, 0o755)
        write("{}", to: path)
        #expect(loop.run(until: { counter.calls == 2 }, limit: 2000), "the folder is back")
        #expect(watcher.watchedDirectories == [folder])
        loop.run(milliseconds: 100)
        let calls = counter.calls
        write("{\"options\": {}}", to: path)
        #expect(loop.run(until: { counter.calls > calls }, limit: 2000), "and its file is watched again")
        watcher.close()
        #expect(loop.close())
    }

    @Test func splitsThePath() {
        #expect(ConfigWatcher.split("/etc/directd/directd.json") == ("/etc/directd", "directd.json"))
        #expect(ConfigWatcher.split("directd.json") == (".", "directd.json"))
        #expect(ConfigWatcher.split("/directd.json") == ("/", "directd.json"))
    }
}
