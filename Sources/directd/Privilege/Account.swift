#if canImport(Glibc)
import Glibc
#endif

/// A user or group of the system's databases (`/etc/passwd`, `/etc/group`,
/// or whatever NSS serves), looked up by name with the re-entrant calls.
enum Account {
    struct User: Equatable, Sendable {
        let name: String
        let uid: uid_t
        /// The user's primary group: what `group` defaults to.
        let gid: gid_t
    }

    struct Group: Equatable, Sendable {
        let name: String
        let gid: gid_t
    }

    /// NSS entries are small; a huge group (thousands of members) gets more room.
    private static let bufferSizes = [4096, 65_536, 1 << 20]

    static func user(named name: String) -> User? {
        lookUp { entry, buffer in
            var result: UnsafeMutablePointer<passwd>?
            let status = getpwnam_r(name, entry, buffer.baseAddress!, buffer.count, &result)
            return (status, result.map { User(name: name, uid: $0.pointee.pw_uid, gid: $0.pointee.pw_gid) })
        }
    }

    static func group(named name: String) -> Group? {
        lookUp { entry, buffer in
            var result: UnsafeMutablePointer<group>?
            let status = getgrnam_r(name, entry, buffer.baseAddress!, buffer.count, &result)
            return (status, result.map { Group(name: name, gid: $0.pointee.gr_gid) })
        }
    }

    /// The name of the user `uid`, for log lines; the number when it has none.
    static func userName(_ uid: uid_t) -> String {
        lookUp { entry, buffer in
            var result: UnsafeMutablePointer<passwd>?
            let status = getpwuid_r(uid, entry, buffer.baseAddress!, buffer.count, &result)
            return (status, result.map { String(cString: $0.pointee.pw_name) })
        } ?? "\(uid)"
    }

    /// The name of the group `gid`, for log lines; the number when it has none.
    static func groupName(_ gid: gid_t) -> String {
        lookUp { entry, buffer in
            var result: UnsafeMutablePointer<group>?
            let status = getgrgid_r(gid, entry, buffer.baseAddress!, buffer.count, &result)
            return (status, result.map { String(cString: $0.pointee.gr_name) })
        } ?? "\(gid)"
    }

    /// Runs a `get*_r` call with an entry and a scratch buffer, growing the
    /// buffer on ERANGE. The pointers live only inside this call.
    private static func lookUp<Entry, Found>(
        _ call: (UnsafeMutablePointer<Entry>, UnsafeMutableBufferPointer<CChar>) -> (Int32, Found?)
    ) -> Found? {
        let entry = UnsafeMutablePointer<Entry>.allocate(capacity: 1)
        defer { entry.deallocate() }
        for size in bufferSizes {
            var buffer = [CChar](repeating: 0, count: size)
            let (status, found) = buffer.withUnsafeMutableBufferPointer { call(entry, $0) }
            if status == ERANGE { continue }
            return found
        }
        return nil
    }
}

extension OptionValue where Value == String {
    /// A user name (`user`) or group name (`group`) that exists on this
    /// system; empty is none. Looked up when read, so `check` and a reload
    /// name an unknown one as an error.
    static func accountName(_ kind: String) -> Self {
        Self(expected: "the name of a \(kind) on this system", acceptsNumbers: false,
             parse: { key, text throws(ConfigError) in
                 let name = text.trimmedOfWhitespace
                 guard !name.isEmpty else { return "" }
                 let exists = kind == "user" ? Account.user(named: name) != nil : Account.group(named: name) != nil
                 guard exists else { throw PrivilegePlan.unknown(key, name) }
                 return name
             },
             show: { $0 })
    }
}
