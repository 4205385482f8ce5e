#if canImport(Glibc)
import Glibc
#endif

/// Dropping root once the listeners are open, as haproxy's and nginx's
/// `user`/`group` do, then checking that it cannot be undone.
///
/// The order matters: the supplementary groups and the group go while still
/// root; setuid last. PR_SET_KEEPCAPS keeps the permitted set across setuid
/// only when CAP_NET_BIND_SERVICE is to stay; capset then leaves exactly that
/// (or nothing). NO_NEW_PRIVS is set always: no exec can regain anything.
/// glibc applies setgroups/setgid/setuid to every thread; the capability
/// calls and prctl apply to this one, the loop thread, which does all binding
/// (a libuv pool thread, had one started, would have none left at all).
enum PrivilegeDrop {
    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    /// Drops to the plan's user and group; does nothing unless the plan says
    /// drop. Any failure is fatal: directd never serves half-dropped.
    static func perform(_ plan: PrivilegePlan) throws(Failure) -> Privileges {
        guard case .drop(let user, let group, let keepBindService) = plan else { return .asStarted }
        func fail(_ step: String, _ code: Int32) -> Failure {
            Failure(description: "cannot drop root to user \(user.name), group \(group.name): \(step) failed: \(String(cString: strerror(code)))")
        }
        if keepBindService, let code = Capabilities.keepAcrossSetuid(true) { throw fail("prctl(PR_SET_KEEPCAPS)", code) }
        var groups = [group.gid]
        if setgroups(1, &groups) != 0 { throw fail("setgroups", errno) }
        if setgid(group.gid) != 0 { throw fail("setgid(\(group.gid))", errno) }
        if setuid(user.uid) != 0 { throw fail("setuid(\(user.uid))", errno) }
        if let code = Capabilities.set(keepBindService ? Capabilities.bindService : 0) { throw fail("capset", code) }
        if keepBindService, let code = Capabilities.keepAcrossSetuid(false) { throw fail("prctl(PR_SET_KEEPCAPS, 0)", code) }
        if let code = Capabilities.forbidNewPrivileges() { throw fail("prctl(PR_SET_NO_NEW_PRIVS)", code) }
        // Verify, as OpenSSH does: root must be out of reach now.
        let effective = Capabilities.current()?.effective
        guard getuid() == user.uid, geteuid() == user.uid, getgid() == group.gid, getegid() == group.gid,
              setuid(0) != 0, effective == UInt64(keepBindService ? Capabilities.bindService : 0),
              Capabilities.newPrivilegesForbidden else {
            throw Failure(description: "dropping root to user \(user.name) did not hold (uid \(getuid()), euid \(geteuid()), gid \(getgid()), capabilities \(effective.map(Capabilities.describe) ?? "unknown")); stopping")
        }
        return Privileges(droppedTo: user.name, keepsBindService: keepBindService)
    }
}

/// What directd runs with after the start, for reloads to check against.
struct Privileges: Equatable, Sendable {
    /// The user root was dropped to; nil when directd runs as it was started.
    let droppedTo: String?
    /// CAP_NET_BIND_SERVICE was kept (a port below 1024 was configured).
    let keepsBindService: Bool

    static let asStarted = Privileges(droppedTo: nil, keepsBindService: false)

    /// The log line after the drop: the identity and the capabilities it ends with.
    static func describeCurrent() -> String {
        let capabilities = Capabilities.current().map { Capabilities.describe($0.effective) } ?? "unknown"
        return "running as user \(Account.userName(getuid())) (uid \(getuid())), group \(Account.groupName(getgid())) (gid \(getgid())); capabilities: \(capabilities); no_new_privs: \(Capabilities.newPrivilegesForbidden ? "on" : "off")"
    }

    /// Why `new` cannot be put in force with what is left after the drop; nil
    /// when it can. A new port below 1024 needs CAP_NET_BIND_SERVICE, which
    /// stays only when such a port was configured at the start.
    func reloadRefusal(_ new: Settings, from current: Settings) -> String? {
        guard let user = droppedTo, !keepsBindService,
              new.port != current.port, (1..<1024).contains(new.port) else { return nil }
        return "direct-access-port \(new.port) is below 1024 and needs CAP_NET_BIND_SERVICE, which directd gave up when it dropped root to user \(user) (it keeps it only when the port at start is below 1024); restart directd to listen on port \(new.port)"
    }
}
