#if canImport(Glibc)
import Glibc
#endif
import CUV
@_spi(Daemon) import UVBind

/// Calls back when the config file changes, for `--watch-config`.
///
/// It watches *directories*, not the file: an editor that saves by writing a
/// temporary file and renaming it over the old one replaces the inode, and a
/// watch on the old inode would never fire again. It watches every directory
/// the path resolves through (`WatchPlan`): the file's own, and the one of
/// each symlink along the way, so that a Kubernetes ConfigMap's `..data` swap
/// or an edit of a symlink's target in another folder is seen. Events for
/// other names are ignored. After each settled burst the path is resolved
/// again and the watches follow the new chain.
///
/// A directory along the way that disappears is reported (a warning), and its
/// parent is watched until it comes back; then the watch moves back, and the
/// callback runs (the file may have changed meanwhile). A watch that cannot
/// start is retried every `retrySeconds`, with a warning.
///
/// A save is a burst of events (create, several writes, rename); the callback
/// runs once, when the file has been quiet for `debounce` milliseconds. It
/// does not read the file: the reload does, and judges what it finds.
///
/// No handle keeps the loop alive: serving does. `close()` before the loop closes.
final class ConfigWatcher {
    struct WatchError: Error, CustomStringConvertible {
        let directory: String
        let error: UVError
        var description: String {
            "cannot watch the config file's directory \(LogEscaping.escaped(directory)) for changes: \(error)"
        }
    }

    let directory: String
    let fileName: String
    let debounce: UInt64
    static let retrySeconds: UInt64 = 1
    private let path: String
    private let workingDirectory: String
    private let loop: UnsafeMutablePointer<uv_loop_t>
    private let onChange: () -> Void
    private var plan: WatchPlan
    /// One watch per directory of the plan.
    private var watches: [String: DirectoryWatch] = [:]
    /// Runs while a burst is settling; its tick calls back once the file has
    /// been quiet for `debounce` milliseconds.
    private var settling: LoopTimer?
    /// Runs while a watch could not start.
    private var retrying: LoopTimer?
    private var lastEvent: UInt64 = 0
    private var isClosed = false

    /// Starts watching what `path` resolves through (relative to the working
    /// directory when it does not start with a slash).
    init(loop: UnsafeMutablePointer<uv_loop_t>, path: String, debounceMilliseconds: UInt64 = 200,
         onChange: @escaping () -> Void) throws(WatchError) {
        self.loop = loop
        self.path = path
        (directory, fileName) = Self.split(path)
        debounce = debounceMilliseconds
        self.onChange = onChange
        workingDirectory = Self.currentDirectory()
        plan = WatchPlan(path: path, workingDirectory: workingDirectory)
        if let missing = plan.missing {
            throw WatchError(directory: missing, error: UVError(UV_ENOENT.rawValue))
        }
        for place in plan.places {
            do throws(UVError) {
                watches[place.directory] = try DirectoryWatch(loop: loop, place: place, owner: self)
            } catch {
                close()
                throw WatchError(directory: place.directory, error: error)
            }
        }
    }

    /// Stops watching; a change still settling is dropped.
    func close() {
        guard !isClosed else { return }
        isClosed = true
        settling?.close()
        settling = nil
        retrying?.close()
        retrying = nil
        watches.values.forEach { $0.close() }
        watches = [:]
    }

    /// The directories watched now, in the order of the chain.
    var watchedDirectories: [String] { plan.directories.filter { watches[$0] != nil } }

    /// `/etc/directd/directd.json` → (`/etc/directd`, `directd.json`).
    static func split(_ path: String) -> (directory: String, fileName: String) {
        guard let slash = path.lastIndex(of: "/") else { return (".", path) }
        let directory = String(path[..<slash])
        return (directory.isEmpty ? "/" : directory, String(path[path.index(after: slash)...]))
    }

    fileprivate func event(in watch: DirectoryWatch, name: String?, status: Int32) {
        guard !isClosed else { return }
        if let error = UVError.check(status) {
            Log.warning("watching \(LogEscaping.escaped(watch.place.directory)) for config changes: \(error)")
        } else if let name, !watch.place.names.contains(name), name != watch.baseName {
            // Another entry of the directory. Linux always names the entry (the
            // directory's own name when it is removed or moved); a platform that
            // does not gets every event.
            return
        }
        lastEvent = uv_now(loop)
        guard settling == nil else { return }
        do {
            let timer = try LoopTimer(loop: loop, everyMilliseconds: debounce) { [unowned self] in settle() }
            timer.unref()
            settling = timer
        } catch {
            // No timer, no debounce: better one call per event than none.
            Log.warning("cannot start the config debounce timer: \(error)")
            follow()
            onChange()
        }
    }

    private func settle() {
        guard uv_now(loop) &- lastEvent >= debounce else { return }
        settling?.close()
        settling = nil
        follow()
        onChange()
    }

    /// Resolves the path again and moves the watches to the chain it has now.
    private func follow(reportingFailures: Bool = true) {
        let old = plan
        plan = WatchPlan(path: path, workingDirectory: workingDirectory)
        if let missing = plan.missing, missing != old.missing {
            Log.warning("config file \(LogEscaping.escaped(path)): its directory \(LogEscaping.escaped(missing)) is gone; stopped watching it, watching \(LogEscaping.escaped(WatchPlan.parent(of: missing))) until it is back")
        } else if plan.missing == nil, let missing = old.missing {
            Log.line("config file \(LogEscaping.escaped(path)): \(LogEscaping.escaped(missing)) is back; watching it for changes again")
        }
        var failed: [(String, UVError)] = []
        var kept: [String: DirectoryWatch] = [:]
        for place in plan.places {
            if let watch = watches[place.directory], watch.place.identity == place.identity, watch.isWatching {
                watch.place = place
                kept[place.directory] = watch
                watches[place.directory] = nil
                continue
            }
            do throws(UVError) {
                kept[place.directory] = try DirectoryWatch(loop: loop, place: place, owner: self)
            } catch {
                failed.append((place.directory, error))
            }
        }
        watches.values.forEach { $0.close() }   // directories no longer on the way
        watches = kept
        guard !failed.isEmpty else {
            retrying?.close()
            retrying = nil
            return
        }
        for (directory, error) in failed where reportingFailures {
            Log.warning("config file \(LogEscaping.escaped(path)): cannot watch \(LogEscaping.escaped(directory)) for changes: \(error); trying again every \(Self.retrySeconds) s")
        }
        guard retrying == nil else { return }
        do {
            let timer = try LoopTimer(loop: loop, everyMilliseconds: Self.retrySeconds * 1000) { [unowned self] in retry() }
            timer.unref()
            retrying = timer
        } catch {
            Log.warning("cannot start the config watch retry timer: \(error); no longer watching \(LogEscaping.escaped(path))")
        }
    }

    /// Every `retrySeconds` while a watch is missing: tries again, quietly.
    private func retry() {
        let missingBefore = plan.places.count - watches.count
        follow(reportingFailures: false)   // the warning was given once
        if watches.count == plan.places.count, missingBefore > 0 {
            Log.line("config file \(LogEscaping.escaped(path)): watching for changes again")
            onChange()
        }
    }

    private static func currentDirectory() -> String {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        guard getcwd(&buffer, buffer.count) != nil else { return "." }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// One directory's `uv_fs_event` handle, and the names in it that matter.
private final class DirectoryWatch {
    var place: WatchPlan.Place
    /// The directory's own name: libuv reports its removal or move under it.
    let baseName: String
    private weak var owner: ConfigWatcher?
    private let handle: UnsafeMutablePointer<uv_fs_event_t>
    private var isClosed = false

    init(loop: UnsafeMutablePointer<uv_loop_t>, place: WatchPlan.Place, owner: ConfigWatcher) throws(UVError) {
        self.place = place
        baseName = ConfigWatcher.split(place.directory).fileName
        self.owner = owner
        handle = HandleStorage.allocate(uv_fs_event_t.self)
        if let error = UVError.check(uv_fs_event_init(loop, handle)) {
            HandleStorage.discard(handle)
            throw error
        }
        HandleStorage.attach(self, to: handle)
        let started = uv_fs_event_start(handle, { handle, name, _, status in
            let watch = HandleStorage.owner(of: handle, as: DirectoryWatch.self)
            watch.owner?.event(in: watch, name: name.map { String(cString: $0) }, status: status)
        }, place.directory, 0)
        if let error = UVError.check(started) {
            close()
            throw error
        }
        uv_unref(HandleStorage.base(handle))
    }

    /// Still the directory it was started on (it has not been removed since).
    var isWatching: Bool { !isClosed && WatchPlan.identity(of: place.directory) == place.identity }

    func close() {
        guard !isClosed else { return }
        isClosed = true
        HandleStorage.close(handle)
    }
}
