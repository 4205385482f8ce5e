#if canImport(Glibc)
import Glibc
#endif

/// Keeps a spawned child from inheriting the test process's descriptors from
/// `lowest` up; call it after the file actions that move descriptors below
/// `lowest` (they run in order). Tests run in parallel, and not every socket of
/// theirs is close-on-exec: a long-lived child (a directd,
/// systemd-socket-activate) holding a copy of another test's client would keep
/// that connection open when the test closes it, and a reset the test means to
/// send would never go out.
func closeInheritedDescriptors(_ actions: inout posix_spawn_file_actions_t, from lowest: Int32) {
    let result = closeFrom(&actions, lowest)
    precondition(result == 0, "posix_spawn_file_actions_addclosefrom_np: \(String(cString: strerror(result)))")
}

/// glibc 2.34's posix_spawn_file_actions_addclosefrom_np is not in Swift's
/// Glibc module (a GNU extension): looked up by name, once.
private let closeFrom: @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32 = {
    guard let symbol = dlsym(nil, "posix_spawn_file_actions_addclosefrom_np") else {
        fatalError("the tests need glibc 2.34 or later (posix_spawn_file_actions_addclosefrom_np)")
    }
    return unsafeBitCast(symbol, to: (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32).self)
}()
