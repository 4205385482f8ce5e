/// `control-socket`: where `directd status` finds a running directd.
enum ControlSocketSetting: Sendable, Equatable {
    /// Empty, the default: under systemd with RuntimeDirectory set,
    /// `$RUNTIME_DIRECTORY/control.sock`; otherwise none.
    case automatic
    /// `off`: none, even under systemd.
    case off
    /// An absolute path.
    case path(String)

    /// The socket to open, given the environment.
    func path(environment: [String: String]) -> String? {
        switch self {
        case .automatic: Server.defaultControlSocket(environment: environment)
        case .off: nil
        case .path(let path): path
        }
    }
}

extension OptionValue where Value == ControlSocketSetting {
    static var controlSocket: Self {
        Self(expected: "an absolute path, off, or empty", acceptsNumbers: false,
             parse: { key, text throws(ConfigError) in
                 let trimmed = text.trimmedOfWhitespace
                 if trimmed.isEmpty { return .automatic }
                 if trimmed == "off" { return .off }
                 guard trimmed.hasPrefix("/"), !trimmed.hasSuffix("/"), trimmed.utf8.count <= 107 else {
                     throw ConfigError(description: "Invalid \(key) \(ConfigText.quoted(text)): expected an absolute path of at most 107 bytes, off, or empty")
                 }
                 return .path(trimmed)
             },
             show: { setting in
                 switch setting {
                 case .automatic: ""
                 case .off: "off"
                 case .path(let path): path
                 }
             })
    }
}
