import CUV
import CUVBind
#if canImport(Glibc)
import Glibc
#endif

/// The static C strings the C API returns: made once, never freed, so that a
/// host may keep the pointers for the life of the process. The pointers are
/// `nonisolated(unsafe)` because nothing ever writes through them: sharing them
/// between threads is safe.
enum CStrings {
    nonisolated(unsafe) static let version = make("\(UVBIND_VERSION_MAJOR).\(UVBIND_VERSION_MINOR).\(UVBIND_VERSION_PATCH)")

    /// UVBind's own codes: name and description.
    nonisolated(unsafe) private static let own: [Int32: (name: UnsafePointer<CChar>, message: UnsafePointer<CChar>)] = [
        UVBIND_EFORMAT: (make("UVBIND_EFORMAT"), make("invalid bind interface address")),
        UVBIND_EIFACE: (make("UVBIND_EIFACE"), make("no such network interface")),
        UVBIND_EZONE: (make("UVBIND_EZONE"), make("unknown IPv6 zone")),
        UVBIND_ELINKLOCAL: (make("UVBIND_ELINKLOCAL"), make("link-local address without a usable zone")),
        UVBIND_ENOADDR: (make("UVBIND_ENOADDR"), make("interface has no usable address")),
        UVBIND_EPORT: (make("UVBIND_EPORT"), make("port outside 0 to 65535")),
        UVBIND_ECLOSED: (make("UVBIND_ECLOSED"), make("listeners already closing or closed")),
    ]
    nonisolated(unsafe) private static let unknownName = make("UNKNOWN")
    nonisolated(unsafe) private static let unknownMessage = make("unknown error")

    static func name(of code: Int32) -> UnsafePointer<CChar> {
        if let entry = own[code] { return entry.name }
        // libuv returns static strings for the codes it knows (and allocates, never
        // to be freed, for others: those are answered here instead).
        return knownToLibuv(code) ? uv_err_name(code) : unknownName
    }

    static func message(of code: Int32) -> UnsafePointer<CChar> {
        if let entry = own[code] { return entry.message }
        return knownToLibuv(code) ? uv_strerror(code) : unknownMessage
    }

    private static func knownToLibuv(_ code: Int32) -> Bool {
        code < 0 && !UVError(code).name.hasPrefix("Unknown system error")
    }

    private static func make(_ text: String) -> UnsafePointer<CChar> {
        UnsafePointer(strdup(text)!)
    }
}
