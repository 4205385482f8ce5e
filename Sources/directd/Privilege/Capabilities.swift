import CPrivilege
#if canImport(Glibc)
import Glibc
#endif

/// The calling thread's capabilities and no_new_privs flag, through the C
/// shim (glibc's prctl and syscall are variadic). directd drops on the loop
/// thread, the thread that binds.
enum Capabilities {
    /// CAP_NET_BIND_SERVICE's bit: binding ports below 1024.
    static let bindService: UInt32 = 1 << UInt32(CAP_NET_BIND_SERVICE)

    /// Effective and permitted sets, as /proc/PID/status shows them (CapEff, CapPrm).
    static func current() -> (effective: UInt64, permitted: UInt64)? {
        var effective: UInt64 = 0, permitted: UInt64 = 0
        return directd_capget(&effective, &permitted) == 0 ? (effective, permitted) : nil
    }

    /// Leaves exactly `mask` effective and permitted, nothing inheritable.
    static func set(_ mask: UInt32) -> Int32? {
        directd_capset(mask, mask) == 0 ? nil : errno
    }

    /// PR_SET_KEEPCAPS: whether the permitted set survives setuid from root.
    static func keepAcrossSetuid(_ keep: Bool) -> Int32? {
        directd_prctl(PR_SET_KEEPCAPS, keep ? 1 : 0) == 0 ? nil : errno
    }

    /// PR_SET_NO_NEW_PRIVS: no exec can ever give privileges back (set-user-ID
    /// binaries, file capabilities). It cannot be unset.
    static func forbidNewPrivileges() -> Int32? {
        directd_prctl(PR_SET_NO_NEW_PRIVS, 1) == 0 ? nil : errno
    }

    static var newPrivilegesForbidden: Bool {
        directd_prctl(PR_GET_NO_NEW_PRIVS, 0) == 1
    }

    /// `none`, `cap_net_bind_service`, or the mask in hex for anything else.
    static func describe(_ mask: UInt64) -> String {
        switch mask {
        case 0: "none"
        case UInt64(bindService): "cap_net_bind_service"
        default: "0x\(String(mask, radix: 16))"
        }
    }
}
