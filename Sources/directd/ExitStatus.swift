import ArgumentParser
import UVBind

/// directd's exit codes, from sysexits(3); the README lists them. 0 (success) and
/// 64 (usage: an unknown flag, a missing value, a repeated flag) come from
/// swift-argument-parser's own `ExitCode.success` and `.validationFailure`.
enum ExitStatus: Int32, Sendable {
    /// Address not available, port in use, address family unavailable.
    case unavailable = 69
    /// Anything internal.
    case software = 70
    /// `directd upgrade`: the upgrade did not happen (rolled back, or not started);
    /// the running directd serves on as before.
    case temporaryFailure = 75
    /// Permission denied.
    case noPermission = 77
    /// Configuration or bind value invalid: every parse or resolve error.
    case config = 78
}

/// An error that knows which exit code it ends the process with.
protocol ExitCoded: Error {
    var exitStatus: ExitStatus { get }
}

extension BindError: ExitCoded {
    var exitStatus: ExitStatus {
        switch kind {
        case .invalidFormat, .unknownInterface, .unknownZone, .linkLocalWithoutZone,
             .interfaceWithoutAddresses, .invalidPort:
            .config
        case .addressNotAvailable, .addressInUse, .familyNotSupported:
            .unavailable
        case .permissionDenied:
            .noPermission
        case .system:
            .software
        }
    }
}

extension ExitStatus {
    /// Logs a failure's message and gives the exit code it carries; an error that
    /// carries none is internal (70).
    static func report(_ error: any Error) -> ExitCode {
        let status = (error as? any ExitCoded)?.exitStatus ?? .software
        Log.error("\(error)")
        return ExitCode(status.rawValue)
    }
}

extension StartError: ExitCoded {
    /// directd could not set up its own loop handles: internal.
    var exitStatus: ExitStatus { .software }
}

extension SocketActivationError: ExitCoded {
    /// Inherited sockets that are not what the bind value names: configuration.
    var exitStatus: ExitStatus { .config }
}

extension ConfigWatcher.WatchError: ExitCoded {
    /// The config file's directory cannot be watched (--watch-config): configuration.
    var exitStatus: ExitStatus { .config }
}

extension PrivilegeDrop.Failure: ExitCoded {
    /// Root could not be dropped as configured: internal, and never served.
    var exitStatus: ExitStatus { .software }
}
