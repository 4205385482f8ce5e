#if canImport(Glibc)
import Glibc
#endif

/// `pid-file`: the process ID for a supervisor or a script that is not systemd.
/// Written at start, and rewritten by the new process of an in-place upgrade
/// once it has taken over, so that the file follows the PID change. Written to
/// a temporary file beside it and renamed over it: a reader sees the old
/// content or the new, never a partial one. At exit the file is removed only
/// if it still names this process (after an upgrade it names the new one).
struct PIDFile {
    let path: String

    /// Why the file cannot be written (exit 77 when permission is denied, 78
    /// otherwise: the path is the configuration's).
    struct WriteError: Error, CustomStringConvertible, ExitCoded {
        let description: String
        let code: Int32
        var exitStatus: ExitStatus { code == EACCES || code == EPERM || code == EROFS ? .noPermission : .config }
    }

    func write(pid: Int32 = getpid()) throws(WriteError) {
        let staged = "\(path).\(pid).tmp"
        let fd = open(staged, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw failure("cannot create \(staged)") }
        let text = Array("\(pid)\n".utf8)
        let written = text.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        let error = errno
        Glibc.close(fd)
        guard written == text.count else {
            unlink(staged)
            throw WriteError(description: "pid-file \(LogEscaping.escaped(path)): cannot write: \(String(cString: strerror(error)))", code: error)
        }
        guard rename(staged, path) == 0 else {
            let failed = failure("cannot rename \(staged) over it")
            unlink(staged)
            throw failed
        }
    }

    /// Removes the file if it names `pid` (this process, at exit).
    func remove(ifItNames pid: Int32 = getpid()) {
        guard let file = fopen(path, "r") else { return }
        var line = [CChar](repeating: 0, count: 32)
        let read = fgets(&line, 32, file) != nil
        fclose(file)
        guard read, Int32(String(decoding: line.prefix { $0 != 0 && $0 != 10 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)) == pid else { return }
        unlink(path)
    }

    private func failure(_ what: String) -> WriteError {
        let code = errno
        return WriteError(description: "pid-file \(LogEscaping.escaped(path)): \(LogEscaping.escaped(what)): \(String(cString: strerror(code)))", code: code)
    }
}
