import CUV
#if canImport(Glibc)
import Glibc
#endif

/// A libuv error code: a negative errno, as every libuv call returns it.
///
/// Like swift-system's `Errno`, it is a thin typed value over the C code. Its
/// `name` (`EADDRINUSE`) and `message` ("address already in use") come from libuv
/// itself, through the `_r` variants that never allocate or leak for unknown codes.
public struct UVError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The code as libuv returns it (always negative).
    public let code: Int32

    public init(_ code: Int32) { self.code = code }

    /// Wraps a libuv result: nil for success (>= 0), the error otherwise.
    @inlinable
    public static func check(_ result: Int32) -> UVError? {
        result < 0 ? UVError(result) : nil
    }

    /// The symbolic name, for example `EADDRINUSE`.
    public var name: String {
        Self.text { uv_err_name_r(code, $0, $1) }
    }

    /// The human description, for example `address already in use`.
    public var message: String {
        Self.text { uv_strerror_r(code, $0, $1) }
    }

    public var description: String { "\(message) (\(name))" }

    private static func text(
        _ fill: (UnsafeMutablePointer<CChar>, Int) -> UnsafeMutablePointer<CChar>?
    ) -> String {
        withUnsafeTemporaryAllocation(of: CChar.self, capacity: 96) { buffer in
            buffer.initialize(repeating: 0)
            _ = fill(buffer.baseAddress!, buffer.count)
            buffer[buffer.count - 1] = 0
            return String(cString: buffer.baseAddress!)
        }
    }
}

extension UVError {
    public static let addressInUse = UVError(UV_EADDRINUSE.rawValue)
    public static let addressNotAvailable = UVError(UV_EADDRNOTAVAIL.rawValue)
    public static let permissionDenied = UVError(UV_EACCES.rawValue)
    public static let operationNotPermitted = UVError(UV_EPERM.rawValue)
    public static let familyNotSupported = UVError(UV_EAFNOSUPPORT.rawValue)
    public static let invalidArgument = UVError(UV_EINVAL.rawValue)
    public static let endOfFile = UVError(UV_EOF.rawValue)
    public static let tryAgain = UVError(UV_EAGAIN.rawValue)
    public static let cancelled = UVError(UV_ECANCELED.rawValue)
    public static let tooManyOpenFiles = UVError(UV_EMFILE.rawValue)
    public static let tooManyOpenFilesInSystem = UVError(UV_ENFILE.rawValue)
    // libuv's codes are negative errno values on Unix; these few are not
    // imported as UV_E* constants, so they are spelled from errno.
    public static let noSuchDevice = UVError(-ENODEV)
    public static let wrongProtocolType = UVError(-EPROTOTYPE)
    public static let notASocket = UVError(-ENOTSOCK)
    public static let badDescriptor = UVError(-EBADF)
}
