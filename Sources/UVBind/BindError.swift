/// Every way turning a bind value into listeners can fail: parse, resolve, bind, listen.
///
/// It carries what an operator needs to act: the configured value, the offending
/// part, the concrete address when there is one, the step that failed and the libuv
/// code. `description` renders the whole message: what failed, why, what to do.
public struct BindError: Error, Sendable, CustomStringConvertible {
    public enum Kind: String, Sendable, CaseIterable {
        /// Not an address, interface name or list of them (the spec's "Invalid bind interface address").
        case invalidFormat
        /// A name that is not a local interface (host names are not resolved).
        case unknownInterface
        /// An IPv6 zone (`%eth9`, `%42`) that names no interface.
        case unknownZone
        /// A link-local IPv6 address whose interface cannot be determined.
        case linkLocalWithoutZone
        /// An interface that exists but holds no address (or is down).
        case interfaceWithoutAddresses
        /// A port that is not a whole number from 0 to 65535.
        case invalidPort
        /// The address is not held by any interface (`EADDRNOTAVAIL`).
        case addressNotAvailable
        /// Another socket already listens there (`EADDRINUSE`).
        case addressInUse
        /// Not allowed to bind there (`EACCES`: ports below 1024 without the capability).
        case permissionDenied
        /// The host does not support or has disabled the address family (`EAFNOSUPPORT`).
        case familyNotSupported
        /// Any other failure of a libuv call.
        case system
    }

    /// Where it failed: reading the value, matching it to interfaces, or a libuv call.
    public enum Step: String, Sendable {
        case parse, resolve
        case interfaces = "uv_interface_addresses"
        case socket = "uv_tcp_init_ex"
        case bind = "uv_tcp_bind"
        case listen = "uv_listen"
        case getsockname = "uv_tcp_getsockname"
    }

    public let kind: Kind
    /// The bind value as configured.
    public let value: String
    /// The element of the value at fault, when the value is a list or was trimmed.
    public let element: String?
    /// The concrete listen address, when the failure concerns one.
    public let address: SocketAddress?
    public let step: Step
    /// The libuv code, for failures that have one.
    public let code: UVError?
    /// Why it failed, in words.
    public let detail: String
    /// What to do about it.
    public let remedy: String

    public init(kind: Kind, value: String, element: String? = nil, address: SocketAddress? = nil,
                step: Step, code: UVError? = nil, detail: String, remedy: String) {
        self.kind = kind
        self.value = value
        self.element = element
        self.address = address
        self.step = step
        self.code = code
        self.detail = detail
        self.remedy = remedy
    }

    /// What failed, named the way each kind's first words say it.
    public var summary: String {
        let value = quoted(self.value)
        let part = element.flatMap { $0 == self.value ? nil : " (element \(quoted($0)))" } ?? ""
        let name = quoted(element ?? self.value)
        switch kind {
        case .invalidFormat:
            return "Invalid bind interface address \(value)\(part)"
        case .unknownInterface:
            return "Unknown interface \(name) in bind interface \(value)"
        case .unknownZone:
            return "Unknown zone in bind interface address \(value)\(part)"
        case .linkLocalWithoutZone:
            return "Link-local address without a zone in bind interface \(value)\(part)"
        case .interfaceWithoutAddresses:
            return "Interface \(name) has no usable address (bind interface \(value))"
        case .invalidPort:
            return "Invalid direct access port \(value)"
        case .system where step == .interfaces:
            return "Cannot read this machine's network interfaces (bind interface \(value))"
        case .addressNotAvailable, .addressInUse, .permissionDenied, .familyNotSupported, .system:
            let target = address.map { "Cannot listen on \($0)" } ?? "Cannot listen"
            return "\(target) (bind interface \(value))"
        }
    }

    /// The whole message, always one line: control characters in the operator's
    /// value are escaped wherever the value is repeated.
    public var description: String {
        var text = "\(summary): \(detail)"
        if let code { text += " [\(step.rawValue): \(code.name)]" }
        if !remedy.isEmpty { text += ". \(remedy)" }
        return escapingControlCharacters(text)
    }
}

extension BindError {
    /// The kind a libuv failure of a bind or listen step belongs to.
    static func kind(of code: UVError) -> Kind {
        switch code {
        case .addressInUse: .addressInUse
        case .addressNotAvailable: .addressNotAvailable
        case .permissionDenied, .operationNotPermitted: .permissionDenied
        case .familyNotSupported: .familyNotSupported
        default: .system
        }
    }

    /// The error for a failed libuv call on `address`, worded for its kind.
    static func call(_ step: Step, failedWith code: UVError, value: String, address: SocketAddress,
                     interfaces: InterfaceTable?) -> BindError {
        let kind = kind(of: code)
        let detail: String, remedy: String
        switch kind {
        case .addressInUse:
            detail = "another socket is already listening on port \(address.port) at that address"
            remedy = "Stop the program that holds it (ss -ltnp 'sport = :\(address.port)' shows which) or choose another direct-access-port"
        case .addressNotAvailable:
            detail = "\(address.host) is not assigned to any interface of this machine that is up"
            remedy = "Addresses here: \(interfaces?.addressSummary ?? "see ip addr show"). Use one of them or an interface name"
        case .permissionDenied:
            detail = address.port != 0 && address.port < 1024
                ? "ports below 1024 need root or the CAP_NET_BIND_SERVICE capability"
                : "the system refused the bind"
            remedy = address.port != 0 && address.port < 1024
                ? "Use a port of 1024 or above, or grant the capability (setcap cap_net_bind_service=+ep on the binary)"
                : "Check security policy (SELinux, AppArmor, seccomp) for this program"
        case .familyNotSupported:
            detail = "\(address.family) is not available on this host"
            remedy = address.family == .ipv6
                ? "Enable IPv6 (net.ipv6.conf.all.disable_ipv6=0) or bind an IPv4 address"
                : "Enable IPv4 or bind an IPv6 address"
        default:
            detail = "\(code.message)"
            remedy = "This is unexpected; report it with the value and address above"
        }
        return BindError(kind: kind, value: value, address: address, step: step, code: code,
                         detail: detail, remedy: remedy)
    }
}

/// `text` in double quotes.
func quoted(_ text: String) -> String {
    "\"" + text + "\""
}

/// `\n`, `\r`, `\t` and other control characters written as escapes.
func escapingControlCharacters(_ text: String) -> String {
    guard text.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) else { return text }
    var result = ""
    for scalar in text.unicodeScalars {
        switch scalar {
        case "\n": result += "\\n"
        case "\r": result += "\\r"
        case "\t": result += "\\t"
        case _ where scalar.value < 0x20 || scalar.value == 0x7F:
            result += "\\u{\(String(scalar.value, radix: 16))}"
        default: result.unicodeScalars.append(scalar)
        }
    }
    return result
}
