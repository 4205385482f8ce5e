import ArgumentParser
import UVBind

/// directd's exit codes, from sysexits(3); the README lists them.
enum ExitStatus: Int32 {
    case ok = 0
    /// Command-line usage (swift-argument-parser exits with it on bad flags).
    case usage = 64
    /// Address not available, port in use, address family unavailable.
    case unavailable = 69
    /// Anything internal.
    case software = 70
    /// Permission denied.
    case noPermission = 77
    /// Configuration or bind value invalid: every parse or resolve error.
    case config = 78

    init(_ error: BindError) {
        switch error.kind {
        case .invalidFormat, .unknownInterface, .unknownZone, .linkLocalWithoutZone,
             .interfaceWithoutAddresses, .invalidPort:
            self = .config
        case .addressNotAvailable, .addressInUse, .familyNotSupported:
            self = .unavailable
        case .permissionDenied:
            self = .noPermission
        case .system:
            self = .software
        }
    }
}

extension ExitStatus {
    /// Logs a failure's message and gives the exit code it maps to.
    static func report(_ error: any Error) -> ExitCode {
        let status: ExitStatus
        switch error {
        case let error as BindError: status = ExitStatus(error)
        case is ConfigError: status = .config
        default: status = .software
        }
        Log.error("\(error)")
        return ExitCode(status.rawValue)
    }
}
