import CUV
import UVBind

/// Why an upstream connect failed, as the metrics count it (the `cause` label).
enum UpstreamFailure: Int, CaseIterable, Sendable {
    case refused
    case timeout
    case unreachable
    case other

    /// The cause of libuv's connect error.
    init(_ error: UVError) {
        switch error.code {
        case UV_ECONNREFUSED.rawValue, UV_ECONNRESET.rawValue: self = .refused
        case UV_ETIMEDOUT.rawValue: self = .timeout
        case UV_ENETUNREACH.rawValue, UV_EHOSTUNREACH.rawValue, UV_EADDRNOTAVAIL.rawValue, UV_ENETDOWN.rawValue: self = .unreachable
        default: self = .other
        }
    }

    var label: String {
        switch self {
        case .refused: "refused"
        case .timeout: "timeout"
        case .unreachable: "unreachable"
        case .other: "other"
        }
    }
}
