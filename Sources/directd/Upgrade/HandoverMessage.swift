#if canImport(Glibc)
import Glibc
#endif
import UVBind

/// The messages of an upgrade, one per `HandoverChannel` message, in order:
/// 1. new → old: `hello <format> <version>`: the handover format it reads, and
///    the directd version it is;
/// 2. old → new: `state <batches>` with the sealed state file, then `batches`
///    messages `fds <count>`, each with at most `SCM_MAX_FD` descriptors;
/// 3. new → old: `serving <pid>`, or `refused: <why>`.
enum HandoverMessage: Equatable {
    case hello(format: UInt32, version: String)
    case state(batches: Int)
    case descriptors(count: Int)
    case serving(pid: Int32)
    case refused(String)

    var text: String {
        switch self {
        case .hello(let format, let version): "hello \(format) \(version)"
        case .state(let batches): "state \(batches)"
        case .descriptors(let count): "fds \(count)"
        case .serving(let pid): "serving \(pid)"
        case .refused(let why): "refused: \(why)"
        }
    }

    init?(parsing text: String) {
        if text.hasPrefix("refused: ") {
            self = .refused(String(text.dropFirst("refused: ".count)))
            return
        }
        let words = text.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: false)
        guard words.count >= 2 else { return nil }
        switch (words[0], words.count) {
        case ("hello", 3):
            guard let format = UInt32(words[1]) else { return nil }
            self = .hello(format: format, version: String(words[2]))
        case ("state", 2):
            guard let batches = Int(words[1]), batches >= 0 else { return nil }
            self = .state(batches: batches)
        case ("fds", 2):
            guard let count = Int(words[1]), count > 0, count <= HandoverChannel.descriptorsPerMessage else { return nil }
            self = .descriptors(count: count)
        case ("serving", 2):
            guard let pid = Int32(words[1]) else { return nil }
            self = .serving(pid: pid)
        default:
            return nil
        }
    }
}

/// What this build says in its hello.
enum BuildIdentity {
    /// `directd 0.2.0`. Test hook: `DIRECTD_TEST_VERSION_FILE` names a file
    /// whose first line is appended (` (b)`), read at start, so that a test can
    /// tell two builds apart without building twice. Not an operator setting.
    static let version: String = {
        var version = "directd \(uvbindVersion)"
        if let path = getenv("DIRECTD_TEST_VERSION_FILE").map({ String(cString: $0) }),
           let file = fopen(path, "r") {
            defer { fclose(file) }
            var line = [CChar](repeating: 0, count: 64)
            if fgets(&line, 64, file) != nil {
                let suffix = String(decoding: line.prefix { $0 != 0 && $0 != 10 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
                if !suffix.isEmpty { version += " (\(LogEscaping.escaped(suffix)))" }
            }
        }
        return version
    }()

    /// The handover format this build speaks. Test hook:
    /// `DIRECTD_TEST_HANDOVER_FORMAT` makes a new process claim another, so
    /// that a test can prove the rollback on a mismatch. Not an operator setting.
    static let handoverFormat: UInt32 = getenv("DIRECTD_TEST_HANDOVER_FORMAT")
        .flatMap { UInt32(String(cString: $0)) } ?? HandoverRecord.formatVersion
}
