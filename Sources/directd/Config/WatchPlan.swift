#if canImport(Glibc)
import Glibc
#endif

/// The directories a config path resolves through, and the entry names in each
/// that change what the path means: every symlink along the way (a
/// Kubernetes ConfigMap swaps `..data` by renaming a symlink), and the file
/// at the end. A directory that is missing is waited for in its parent.
///
/// It resolves as the kernel would (lstat and readlink, one component at a
/// time, at most 40 links) but records instead of opening. Re-made after every
/// event, since a swap changes the chain.
struct WatchPlan: Equatable {
    struct Place: Equatable {
        let directory: String
        /// Names in `directory` whose change is a change of the config.
        var names: Set<String>
        /// The directory's device and inode when the plan was made: a folder
        /// removed and made again is another one, and is watched again.
        let identity: FileIdentity?
    }

    struct FileIdentity: Equatable {
        let device: UInt64
        let inode: UInt64
    }

    private(set) var places: [Place] = []
    /// The first directory along the way that does not exist, if any: its
    /// parent is watched for it to come back.
    private(set) var missing: String?

    static let maximumLinks = 40

    init(path: String, workingDirectory: String) {
        var pending = Self.components(path)
        var current = path.hasPrefix("/") ? "/" : workingDirectory
        var links = 0
        while !pending.isEmpty {
            let name = pending.removeFirst()
            if name == "." { continue }
            if name == ".." { current = Self.parent(of: current); continue }
            let candidate = Self.join(current, name)
            var info = stat()
            guard lstat(candidate, &info) == 0 else {
                record(current, name)
                if !pending.isEmpty { missing = candidate }
                break
            }
            if info.st_mode & S_IFMT == S_IFLNK, links < Self.maximumLinks, let target = Self.readLink(candidate) {
                record(current, name)
                links += 1
                if target.hasPrefix("/") { current = "/" }
                pending = Self.components(target) + pending
                continue
            }
            if pending.isEmpty { record(current, name) }
            current = candidate
        }
    }

    /// Every directory to watch, in the order first met.
    var directories: [String] { places.map(\.directory) }

    private mutating func record(_ directory: String, _ name: String) {
        if let index = places.firstIndex(where: { $0.directory == directory }) {
            places[index].names.insert(name)
        } else {
            places.append(Place(directory: directory, names: [name], identity: Self.identity(of: directory)))
        }
    }

    static func identity(of directory: String) -> FileIdentity? {
        var info = stat()
        guard stat(directory, &info) == 0 else { return nil }
        return FileIdentity(device: UInt64(info.st_dev), inode: UInt64(info.st_ino))
    }

    private static func components(_ path: String) -> [String] {
        path.split(separator: "/", omittingEmptySubsequences: true).map(String.init)
    }

    static func join(_ directory: String, _ name: String) -> String {
        directory.hasSuffix("/") ? directory + name : directory + "/" + name
    }

    static func parent(of directory: String) -> String {
        guard let slash = directory.lastIndex(of: "/"), directory != "/" else { return "/" }
        let parent = String(directory[..<slash])
        return parent.isEmpty ? "/" : parent
    }

    private static func readLink(_ path: String) -> String? {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let count = readlink(path, &buffer, buffer.count - 1)
        guard count > 0 else { return nil }
        return String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
