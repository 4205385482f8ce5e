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
        /// Binding the socket to its interface before the bind.
        case bindToDevice = "SO_BINDTODEVICE"
        /// Taking over a descriptor: is it an IPv4 or IPv6 TCP stream socket?
        case adoptCheck = "getsockopt"
        /// Taking over a descriptor: is it listening?
        case adoptListening = "SO_ACCEPTCONN"
        /// Taking over a descriptor: an IPv6 socket must be IPv6 only.
        case adoptIPv6Only = "IPV6_V6ONLY"
        /// Taking over a descriptor: libuv's part.
        case adopt = "uv_tcp_open"

        /// The steps of taking over a descriptor that someone else opened.
        var isAdoption: Bool {
            switch self {
            case .adoptCheck, .adoptListening, .adoptIPv6Only, .adopt: true
            default: false
            }
        }
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
        case _ where step.isAdoption:
            return "Cannot take over the listening socket \(element ?? "") (\(value))"
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

    /// The error for a listener that could not open on `target`, worded for its
    /// kind and step. `interfaces` is read from the machine if an unavailable
    /// address needs it and none is given.
    static func opening(_ target: ListenTarget, failed failure: Listener.OpenError, value: String,
                        interfaces: InterfaceTable?) -> BindError {
        if failure.step == .bindToDevice, let device = target.device {
            return bindingToDevice(device, failedWith: failure.code, value: value, address: target.address)
        }
        let table = failure.code == .addressNotAvailable ? (interfaces ?? (try? InterfaceTable.current())) : interfaces
        return call(failure.step, failedWith: failure.code, value: value, address: target.address, interfaces: table)
    }

    /// `SO_BINDTODEVICE` refused: the capability and kernel version it needs, or
    /// the interface that is not there.
    static func bindingToDevice(_ device: String, failedWith code: UVError, value: String,
                                address: SocketAddress) -> BindError {
        let detail: String, remedy: String
        switch code {
        case .operationNotPermitted, .permissionDenied:
            detail = "binding the socket to interface \(device) (SO_BINDTODEVICE) was refused: before Linux 5.7 it needs the CAP_NET_RAW capability"
            remedy = "Run on Linux 5.7 or later, or grant CAP_NET_RAW (AmbientCapabilities=CAP_NET_RAW in a systemd unit), or turn bind-to-device off"
        case .noSuchDevice:
            detail = "there is no interface named \(device) to bind the socket to"
            remedy = "ip link show lists the interfaces"
        default:
            detail = "binding the socket to interface \(device) failed: \(code.message)"
            remedy = "This is unexpected; report it with the value and address above"
        }
        return BindError(kind: kind(of: code), value: value, address: address, step: .bindToDevice,
                         code: code, detail: detail, remedy: remedy)
    }

    /// A descriptor that cannot be taken over as a listener.
    static func adopting(_ descriptor: Int32, failed failure: Listener.OpenError, value: String) -> BindError {
        let detail: String, remedy: String
        switch (failure.step, failure.code) {
        case (.adoptListening, _):
            detail = "it is not listening (SO_ACCEPTCONN is off): a connected or unbound socket cannot serve"
            remedy = "Pass a socket that is bound and listening (ListenStream= in a systemd socket unit)"
        case (.adoptIPv6Only, _):
            detail = "it is an IPv6 socket that also accepts IPv4 (IPV6_V6ONLY is off), which is wider than its address says"
            remedy = "Set BindIPv6Only=ipv6-only in the socket unit, or listen on an IPv4 address for IPv4"
        case (_, .wrongProtocolType):
            detail = "it is not a TCP stream socket (a UDP or UNIX socket cannot be a TCP listener)"
            remedy = "Pass a TCP socket (ListenStream= with an IP address and port)"
        case (_, .familyNotSupported):
            detail = "it is neither an IPv4 nor an IPv6 socket"
            remedy = "Pass a TCP socket (ListenStream= with an IP address and port)"
        case (_, .notASocket), (_, .badDescriptor):
            detail = "it is not an open socket (\(failure.code.message))"
            remedy = "Check the descriptors the service manager passes (LISTEN_FDS)"
        default:
            detail = "\(failure.code.message)"
            remedy = "This is unexpected; report it with the value above"
        }
        return BindError(kind: .system, value: value, element: "fd \(descriptor)", step: failure.step,
                         code: failure.code, detail: detail, remedy: remedy)
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

/// `\n`, `\r`, `\t` and other control characters (C0, DEL and C1, such as
/// U+0085, which some readers take for a line break) written as escapes.
func escapingControlCharacters(_ text: String) -> String {
    func isControl(_ scalar: Unicode.Scalar) -> Bool {
        scalar.value < 0x20 || (0x7F...0x9F).contains(scalar.value)
    }
    guard text.unicodeScalars.contains(where: isControl) else { return text }
    var result = ""
    for scalar in text.unicodeScalars {
        switch scalar {
        case "\n": result += "\\n"
        case "\r": result += "\\r"
        case "\t": result += "\\t"
        case _ where isControl(scalar):
            result += "\\u{\(String(scalar.value, radix: 16))}"
        default: result.unicodeScalars.append(scalar)
        }
    }
    return result
}
