import UVBind

/// A metrics or control endpoint could not open; the exit code follows the
/// cause, as for the listeners (69 in use or not available, 77 permission).
struct EndpointError: Error, CustomStringConvertible, ExitCoded {
    let description: String
    let code: UVError?

    init(_ description: String, code: UVError? = nil) {
        self.description = description
        self.code = code
    }

    var exitStatus: ExitStatus {
        switch code {
        case .some(.addressInUse), .some(.addressNotAvailable): .unavailable
        case .some(.permissionDenied), .some(.operationNotPermitted): .noPermission
        default: .software
        }
    }
}
