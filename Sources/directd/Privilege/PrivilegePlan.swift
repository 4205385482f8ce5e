#if canImport(Glibc)
import Glibc
#endif

/// What the `user` and `group` options mean for a process started by `uid`:
/// decided before anything opens, so that `check` says the same as `serve`.
///
/// As nginx does: only root can drop, so a `user` given to a process that is
/// not root (systemd's `DynamicUser=`, `User=`, a shell) changes nothing and
/// says so in a warning; a root process without `user` serves as root, and
/// says that too.
enum PrivilegePlan: Equatable, Sendable {
    /// Not root: directd runs as it was started.
    case notRoot(uid: uid_t, ignoredUser: String?)
    /// Root, and no `user`: it serves as root.
    case stayRoot
    /// Root: drop to `user`/`group` once the listeners are open, keeping
    /// CAP_NET_BIND_SERVICE only for a port below 1024.
    case drop(user: Account.User, group: Account.Group, keepBindService: Bool)

    init(_ settings: Settings, effectiveUID: uid_t = geteuid()) throws(ConfigError) {
        guard effectiveUID == 0 else {
            self = .notRoot(uid: effectiveUID, ignoredUser: settings.user.isEmpty ? nil : settings.user)
            return
        }
        guard !settings.user.isEmpty else {
            guard settings.group.isEmpty else {
                throw ConfigError(description: "group \(ConfigText.quoted(settings.group)) needs user: set user too (the group alone would keep root's user ID)")
            }
            self = .stayRoot
            return
        }
        guard let user = Account.user(named: settings.user) else { throw Self.unknown("user", settings.user) }
        let group: Account.Group
        if settings.group.isEmpty {
            group = Account.Group(name: Account.groupName(user.gid), gid: user.gid)
        } else {
            guard let named = Account.group(named: settings.group) else { throw Self.unknown("group", settings.group) }
            group = named
        }
        guard user.uid != 0 else {
            throw ConfigError(description: "Invalid user \(ConfigText.quoted(settings.user)): it is root (uid 0); name an unprivileged user such as nobody, or leave user empty")
        }
        self = .drop(user: user, group: group, keepBindService: Self.needsBindService(settings))
    }

    static func unknown(_ option: String, _ name: String) -> ConfigError {
        ConfigError(description: "Invalid \(option) \(ConfigText.quoted(name)): no such \(option) on this system")
    }

    /// A port below 1024 may have to be bound again after the drop: by a
    /// reload that changes the bind value, or by bind-dynamic following the
    /// network. Port 0 (the kernel's choice) never needs it.
    static func needsBindService(_ settings: Settings) -> Bool {
        (1..<1024).contains(settings.port)
    }

    /// The same plan for sockets the service manager handed over: directd
    /// never binds those again (a reload cannot move them), so no capability.
    var forInheritedSockets: PrivilegePlan {
        guard case .drop(let user, let group, _) = self else { return self }
        return .drop(user: user, group: group, keepBindService: false)
    }

    /// The warning `check` and the start give, if any.
    var warning: String? {
        switch self {
        case .stayRoot:
            "directd will serve as root: set user (and group) to drop root once the listeners are open"
        case .notRoot(let uid, let user?):
            "user \(ConfigText.quoted(user)) applies only when directd starts as root; it runs as uid \(uid), unchanged"
        case .notRoot, .drop:
            nil
        }
    }

    /// What `check` says it would do.
    var summary: String? {
        guard case .drop(let user, let group, let keep) = self else { return nil }
        return "would drop root to user \(user.name) (uid \(user.uid)), group \(group.name) (gid \(group.gid)) once listening; capabilities then: \(keep ? "cap_net_bind_service (a port below 1024)" : "none")"
    }
}
