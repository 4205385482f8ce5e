import UVBind

/// Where the metrics are served (`metrics-listen`): one TCP address and port,
/// or a unix stream socket. The address is read by UVBind's bind-value
/// grammar and resolved by its planner, so it is held to bind-interface's
/// rules (a zone where one is needed, never a family or interface wider than
/// written); it must be a single address literal: an interface name or a
/// list could name more than one socket, and the empty value would be every
/// interface. A wildcard (0.0.0.0, ::) is served only when written.
struct MetricsEndpoint: Sendable, Equatable, CustomStringConvertible {
    enum Place: Sendable, Equatable {
        case tcp(ListenTarget)
        /// Created mode 0660.
        case unix(path: String)
    }

    let text: String
    let place: Place

    var description: String { text }

    static let unixPrefix = "unix:"
    static let expected = "ADDRESS:PORT (127.0.0.1:9118, [::1]:9118) or unix:/absolute/path"

    init(parsing text: String) throws(ConfigError) {
        let trimmed = text.trimmedOfWhitespace
        self.text = trimmed
        if trimmed.hasPrefix(Self.unixPrefix) {
            let path = String(trimmed.dropFirst(Self.unixPrefix.count))
            guard path.hasPrefix("/"), !path.hasSuffix("/") else {
                throw Self.error(text, "a unix socket needs an absolute path")
            }
            // sockaddr_un's sun_path holds 107 bytes and the terminating NUL.
            guard path.utf8.count <= 107 else { throw Self.error(text, "the path is longer than 107 bytes") }
            place = .unix(path: path)
            return
        }
        guard let colon = trimmed.lastIndex(of: ":"), colon != trimmed.startIndex else {
            throw Self.error(text, "it has no port")
        }
        let address = String(trimmed[..<colon])
        let portText = String(trimmed[trimmed.index(after: colon)...])
        // An IPv6 address needs brackets, or its last group would read as the port.
        if address.contains(":"), !(address.hasPrefix("[") && address.hasSuffix("]")) {
            throw Self.error(text, "write an IPv6 address in brackets: [\(ConfigText.escapedText(address))]:\(ConfigText.escapedText(portText))")
        }
        let port: UInt16, value: BindValue
        do throws(BindError) {
            port = try ListenPort.parse(portText)
            value = try BindValue(parsing: address)
        } catch {
            throw ConfigError(description: "Invalid metrics-listen \(ConfigText.quoted(text)): \(error)")
        }
        guard value.elements.count == 1 else { throw Self.error(text, "it names more than one address") }
        switch value.elements[0].element {
        case .ipv4, .ipv6: break
        case .allInterfaces: throw Self.error(text, "the address is empty (write 0.0.0.0 or [::] to serve on every address)")
        case .interface: throw Self.error(text, "an interface name may hold several addresses; give one address")
        }
        let plan: BindPlan
        do throws(BindError) {
            plan = try BindPlan(value: address, port: port)
        } catch {
            throw ConfigError(description: "Invalid metrics-listen \(ConfigText.quoted(text)): \(error)")
        }
        guard plan.targets.count == 1, plan.waiting.isEmpty else {
            throw Self.error(text, "it does not resolve to exactly one address")
        }
        place = .tcp(plan.targets[0])
    }

    private static func error(_ text: String, _ why: String) -> ConfigError {
        ConfigError(description: "Invalid metrics-listen \(ConfigText.quoted(text)): \(why); expected \(expected)")
    }
}

extension OptionValue where Value == MetricsEndpoint? {
    /// `ADDRESS:PORT` or `unix:/path`; empty (or only white space) is off.
    static var metricsEndpoint: Self {
        Self(expected: MetricsEndpoint.expected, acceptsNumbers: false,
             parse: { _, text throws(ConfigError) in
                 text.trimmedOfWhitespace.isEmpty ? nil : try MetricsEndpoint(parsing: text)
             },
             show: { $0?.text ?? "" })
    }
}
