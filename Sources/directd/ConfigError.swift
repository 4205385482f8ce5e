/// A config file or option value that cannot be used: unreadable, malformed, a
/// wrong type, a repeated key or an invalid value. Always exit 78.
struct ConfigError: Error, CustomStringConvertible, ExitCoded {
    let description: String

    var exitStatus: ExitStatus { .config }
}
