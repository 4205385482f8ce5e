/// A config file or option value that cannot be used: unreadable, malformed, a
/// wrong type, a repeated key or an invalid value. Always exit 78.
struct ConfigError: Error, CustomStringConvertible, ExitCoded {
    /// The message, with every control character of the operator's text in it
    /// escaped: whoever prints it (the log, a test, `check`) gets one safe line.
    let description: String

    /// The file turns direct access off (RustDesk's `direct-server`): at start
    /// directd refuses to serve, and a reload that reads it stops serving.
    let turnsDirectAccessOff: Bool

    init(description: String, turnsDirectAccessOff: Bool = false) {
        self.description = LogEscaping.escaped(description)
        self.turnsDirectAccessOff = turnsDirectAccessOff
    }

    var exitStatus: ExitStatus { .config }
}
