import CUV
#if canImport(Glibc)
import Glibc
#endif

/// The state record's carrier: a memfd written once and sealed against every
/// change (`F_SEAL_WRITE`, `SHRINK`, `GROW`, `SEAL`), so that what the new
/// process checks is what it then uses.
enum SealedStateFile {
    static let seals = CUV_F_SEAL_SEAL | CUV_F_SEAL_SHRINK | CUV_F_SEAL_GROW | CUV_F_SEAL_WRITE

    /// A sealed memfd holding `bytes` (close-on-exec); nil with the errno.
    static func make(_ bytes: [UInt8]) -> Result<Int32, HandoverRefusal> {
        let fd = memfd_create("directd-upgrade", CUV_MFD_CLOEXEC | CUV_MFD_ALLOW_SEALING)
        guard fd >= 0 else { return .failure(HandoverRefusal("memfd_create: \(String(cString: strerror(errno)))")) }
        var written = 0
        while written < bytes.count {
            let done = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + written, bytes.count - written) }
            if done < 0, errno == EINTR { continue }
            guard done > 0 else {
                let error = errno
                Glibc.close(fd)
                return .failure(HandoverRefusal("writing the state: \(String(cString: strerror(error)))"))
            }
            written += done
        }
        guard fcntl(fd, CUV_F_ADD_SEALS, seals) == 0 else {
            let error = errno
            Glibc.close(fd)
            return .failure(HandoverRefusal("sealing the state: \(String(cString: strerror(error)))"))
        }
        return .success(fd)
    }

    /// The bytes of a sealed state file, after checking it is one.
    static func read(_ fd: Int32, limit: Int) throws(HandoverRefusal) -> [UInt8] {
        var status = stat()
        guard fstat(fd, &status) == 0, status.st_mode & S_IFMT == S_IFREG else {
            throw HandoverRefusal("the state descriptor is not a file")
        }
        guard fcntl(fd, CUV_F_GET_SEALS) & seals == seals else { throw HandoverRefusal("the state file is not sealed") }
        let size = Int(status.st_size)
        guard size <= limit else { throw HandoverRefusal("the state file is \(size) bytes, more than a record can be") }
        var bytes = [UInt8](repeating: 0, count: size)
        var done = 0
        while done < size {
            let got = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + done, size - done, off_t(done)) }
            if got < 0, errno == EINTR { continue }
            guard got > 0 else { throw HandoverRefusal("the state file ends early") }
            done += got
        }
        return bytes
    }
}
