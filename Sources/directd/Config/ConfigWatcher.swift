import CUV
@_spi(Daemon) import UVBind

/// Calls back when the config file changes, for `--watch-config`.
///
/// It watches the file's *directory*, not the file: an editor that saves by
/// writing a temporary file and renaming it over the old one replaces the
/// inode, and a watch on the old inode would never fire again. Events for
/// other names in the directory are ignored.
///
/// A save is a burst of events (create, several writes, rename); the callback
/// runs once, when the file has been quiet for `debounce` milliseconds. It
/// does not read the file: the reload does, and judges what it finds.
///
/// Neither handle keeps the loop alive: serving does. `close()` before the
/// loop closes.
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
    private let loop: UnsafeMutablePointer<uv_loop_t>
    private let onChange: () -> Void
    private let handle: UnsafeMutablePointer<uv_fs_event_t>
    /// Runs while a burst is settling; its tick calls back once the file has
    /// been quiet for `debounce` milliseconds.
    private var settling: LoopTimer?
    private var lastEvent: UInt64 = 0
    private var isClosed = false

    /// Starts watching the directory of `path` (relative to the working
    /// directory when it has no slash).
    init(loop: UnsafeMutablePointer<uv_loop_t>, path: String, debounceMilliseconds: UInt64 = 200,
         onChange: @escaping () -> Void) throws(WatchError) {
        self.loop = loop
        let (directory, fileName) = Self.split(path)
        self.directory = directory
        self.fileName = fileName
        debounce = debounceMilliseconds
        self.onChange = onChange
        handle = HandleStorage.allocate(uv_fs_event_t.self)
        if let error = UVError.check(uv_fs_event_init(loop, handle)) {
            HandleStorage.discard(handle)
            throw WatchError(directory: directory, error: error)
        }
        HandleStorage.attach(self, to: handle)
        let started = uv_fs_event_start(handle, { handle, name, _, status in
            HandleStorage.owner(of: handle, as: ConfigWatcher.self).event(name: name, status: status)
        }, directory, 0)
        if let error = UVError.check(started) {
            close()
            throw WatchError(directory: directory, error: error)
        }
        uv_unref(HandleStorage.base(handle))
    }

    /// Stops watching; a change still settling is dropped.
    func close() {
        guard !isClosed else { return }
        isClosed = true
        settling?.close()
        settling = nil
        HandleStorage.close(handle)
    }

    /// `/etc/directd/directd.json` → (`/etc/directd`, `directd.json`).
    static func split(_ path: String) -> (directory: String, fileName: String) {
        guard let slash = path.lastIndex(of: "/") else { return (".", path) }
        let directory = String(path[..<slash])
        return (directory.isEmpty ? "/" : directory, String(path[path.index(after: slash)...]))
    }

    private func event(name: UnsafePointer<CChar>?, status: Int32) {
        guard !isClosed else { return }
        if let error = UVError.check(status) {
            Log.warning("watching \(LogEscaping.escaped(directory)) for config changes: \(error)")
            return
        }
        // Linux always names the entry; a platform that does not gets every event.
        if let name, String(cString: name) != fileName { return }
        lastEvent = uv_now(loop)
        guard settling == nil else { return }
        do {
            let timer = try LoopTimer(loop: loop, everyMilliseconds: debounce) { [unowned self] in
                settle()
            }
            timer.unref()
            settling = timer
        } catch {
            // No timer, no debounce: better one call per event than none.
            Log.warning("cannot start the config debounce timer: \(error)")
            onChange()
        }
    }

    private func settle() {
        guard uv_now(loop) &- lastEvent >= debounce else { return }
        settling?.close()
        settling = nil
        onChange()
    }
}
