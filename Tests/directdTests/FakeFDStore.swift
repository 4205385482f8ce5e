import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// systemd's side of the file descriptor store, as far as directd sees it: a
/// notify socket (a path) that keeps the descriptors sent with `FDSTORE=1`
/// under their `FDNAME=`, closes them on `FDSTOREREMOVE=1`, and answers
/// `BARRIER=1` by closing the pipe end it came with. A background thread
/// receives (bounded polls), so a directd waiting on a barrier is answered.
final class FakeFDStore: @unchecked Sendable {
    let fd: Int32
    /// The value for NOTIFY_SOCKET.
    let name: String
    private let lock = NSLock()
    private var entries: [(name: String, fd: Int32)] = []
    private var texts: [String] = []
    private var running = true
    private var thread: Thread?

    init() throws {
        name = FileManager.default.temporaryDirectory
            .appendingPathComponent("fdstore-\(getpid())-\(UUID().uuidString.prefix(8)).sock").path
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw TestFailure("socket: \(errno)") }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(name.utf8)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count + 1)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        }
        guard bound == 0 else { close(fd); throw TestFailure("bind \(name): \(String(cString: strerror(errno)))") }
        let thread = Thread { [unowned self] in self.pump() }
        self.thread = thread
        thread.start()
    }

    /// Stops the thread (within one poll) and closes every stored descriptor.
    func shutdown() {
        lock.withLock { running = false }
        let deadline = Date().addingTimeInterval(5)
        while lock.withLock({ thread != nil }), Date() < deadline { usleep(5_000) }
        lock.withLock {
            entries.forEach { close($0.fd) }
            entries.removeAll()
        }
    }

    deinit {
        shutdown()
        close(fd)
        unlink(name)
    }

    /// Every message received so far, in order.
    var messages: [String] { lock.withLock { texts } }
    /// The stored descriptors, in the order they came.
    var stored: [(name: String, fd: Int32)] { lock.withLock { entries } }

    /// Waits (bounded) until `condition` holds for the messages.
    func wait(timeout: Double = 10, until condition: ([String]) -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if condition(messages) { return true }
            usleep(10_000)
        }
        return condition(messages)
    }

    private func pump() {
        while lock.withLock({ running }) {
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&poller, 1, 50) == 1 else { continue }
            receive()
        }
        lock.withLock { thread = nil }
    }

    /// One datagram with its descriptors (close-on-exec, so that no child inherits them by accident).
    private func receive() {
        var buffer = [UInt8](repeating: 0, count: 4096)
        var control = [UInt64](repeating: 0, count: 64)
        let (count, descriptors): (Int, [Int32]) = buffer.withUnsafeMutableBytes { bytes in
            control.withUnsafeMutableBytes { controlBytes in
                var vector = iovec(iov_base: bytes.baseAddress, iov_len: bytes.count)
                return withUnsafeMutablePointer(to: &vector) { vector in
                    var message = msghdr(msg_name: nil, msg_namelen: 0, msg_iov: vector, msg_iovlen: 1,
                                         msg_control: controlBytes.baseAddress, msg_controllen: controlBytes.count,
                                         msg_flags: 0)
                    let count = recvmsg(fd, &message, Int32(MSG_DONTWAIT) | Int32(MSG_CMSG_CLOEXEC))
                    guard count >= 0 else { return (-1, []) }
                    // One cmsghdr (16 bytes on 64-bit Linux) then the ints.
                    var descriptors: [Int32] = []
                    if message.msg_controllen >= 16 {
                        let header = controlBytes.load(as: cmsghdr.self)
                        if header.cmsg_level == SOL_SOCKET, header.cmsg_type == Int32(SCM_RIGHTS) {
                            let n = (Int(header.cmsg_len) - 16) / 4
                            for index in 0..<n {
                                descriptors.append(controlBytes.load(fromByteOffset: 16 + 4 * index, as: Int32.self))
                            }
                        }
                    }
                    return (count, descriptors)
                }
            }
        }
        guard count >= 0 else { return }
        let text = String(decoding: buffer[0..<count], as: UTF8.self)
        var fields: [String: String] = [:]
        for line in text.split(separator: "\n") {
            guard let equals = line.firstIndex(of: "=") else { continue }
            fields[String(line[..<equals])] = String(line[line.index(after: equals)...])
        }
        lock.withLock {
            texts.append(text)
            if fields["FDSTORE"] == "1" {
                descriptors.forEach { entries.append((fields["FDNAME"] ?? "stored", $0)) }
            } else {
                if fields["FDSTOREREMOVE"] == "1", let name = fields["FDNAME"] {
                    entries.filter { $0.name == name }.forEach { close($0.fd) }
                    entries.removeAll { $0.name == name }
                }
                descriptors.forEach { close($0) }   // BARRIER=1's pipe end, or stray ones
            }
        }
    }

    /// Puts a descriptor in the store by hand (a stored socket of the test's making).
    func put(_ descriptor: Int32, name: String) {
        lock.withLock { entries.append((name, descriptor)) }
    }
}

/// directd started as systemd starts a service with a non-empty fdstore: the
/// descriptors at 3, 4, ..., `LISTEN_PID` its own (set by a shell that then
/// execs directd, keeping the PID), `LISTEN_FDS` and `LISTEN_FDNAMES`.
final class StoreStarted {
    let pid: pid_t
    let logPath: String
    private var status: Int32?

    init(_ arguments: [String], passing descriptors: [(name: String, fd: Int32)], notifySocket: String) throws {
        logPath = FileManager.default.temporaryDirectory.appendingPathComponent("stored-\(UUID().uuidString).log").path
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 2, logPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        // Copies far above 3 first, so that moving one to 3 + i never overwrites
        // another still to be moved; dup2 clears close-on-exec on the target.
        let high = descriptors.map { fcntl($0.fd, F_DUPFD_CLOEXEC, 1000) }
        defer { high.forEach { if $0 >= 0 { close($0) } } }
        guard !high.contains(-1) else { throw TestFailure("dup: \(String(cString: strerror(errno)))") }
        for (index, fd) in high.enumerated() {
            posix_spawn_file_actions_adddup2(&actions, fd, 3 + Int32(index))
        }
        closeInheritedDescriptors(&actions, from: 3 + Int32(descriptors.count))
        var environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("LISTEN_") }
        environment["NOTIFY_SOCKET"] = notifySocket
        if !descriptors.isEmpty {
            environment["LISTEN_FDS"] = String(descriptors.count)
            environment["LISTEN_FDNAMES"] = descriptors.map(\.name).joined(separator: ":")
        }
        let script = descriptors.isEmpty ? "exec \"$0\" \"$@\"" : "LISTEN_PID=$$ exec \"$0\" \"$@\""
        let argv = ["/bin/sh", "-c", script, directdPath] + arguments
        var cArguments = argv.map { strdup($0) } + [nil]
        defer { cArguments.forEach { free($0) } }
        var cEnvironment = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { cEnvironment.forEach { free($0) } }
        var pid: pid_t = 0
        let result = posix_spawn(&pid, argv[0], &actions, nil, &cArguments, &cEnvironment)
        guard result == 0 else { throw TestFailure("posix_spawn: \(String(cString: strerror(result)))") }
        self.pid = pid
    }

    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// Waits (bounded) until the log contains `text`.
    func waitForLog(_ text: String, timeout: Double = 15) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if log.contains(text) { return true }
            if exitStatus(within: 0) != nil { return log.contains(text) }
            usleep(10_000)
        }
        return log.contains(text)
    }

    /// The exit status once it has exited (bounded), else nil; 128 + n for signal n.
    func exitStatus(within seconds: Double) -> Int32? {
        let deadline = Date().addingTimeInterval(seconds)
        while status == nil {
            var raw: Int32 = 0
            if waitpid(pid, &raw, WNOHANG) == pid {
                status = (raw & 0x7F) == 0 ? (raw >> 8) & 0xFF : 128 + (raw & 0x7F)
            } else if Date() >= deadline {
                return nil
            } else {
                usleep(10_000)
            }
        }
        return status
    }

    /// The inodes of the sockets this process holds (`/proc/PID/fd`).
    var socketInodes: Set<UInt64> {
        let directory = "/proc/\(pid)/fd"
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        var inodes = Set<UInt64>()
        for entry in entries {
            guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "\(directory)/\(entry)"),
                  target.hasPrefix("socket:["), let inode = UInt64(target.dropFirst(8).dropLast()) else { continue }
            inodes.insert(inode)
        }
        return inodes
    }

    /// A signal, then the exit status (SIGKILL after 10 s).
    @discardableResult
    func stop(signal: Int32 = SIGTERM) -> Int32? {
        if status == nil { kill(pid, signal) }
        if let status = exitStatus(within: 10) { return status }
        kill(pid, SIGKILL)
        return exitStatus(within: 5)
    }

    deinit {
        if status == nil { _ = stop(signal: SIGKILL) }
        unlink(logPath)
    }
}

/// The inode of the socket behind a descriptor.
func socketInode(_ fd: Int32) -> UInt64 {
    var status = stat()
    return fstat(fd, &status) == 0 ? UInt64(status.st_ino) : 0
}

/// The local addresses in state LISTEN on `port` in /proc/net/tcp and tcp6,
/// as the kernel writes them (`0100007F`, `00000000`, 32 hex digits for IPv6).
func listeningAddresses(port: UInt16) -> [String] {
    var found: [String] = []
    let portHex = String(format: "%04X", port)
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = (try? String(contentsOfFile: file, encoding: .utf8)) ?? ""
        for line in text.split(separator: "\n").dropFirst() {
            let fields = line.split(separator: " ")
            guard fields.count > 3, fields[3] == "0A" else { continue }
            let local = fields[1].split(separator: ":")
            if local.count == 2, local[1] == portHex { found.append(String(local[0])) }
        }
    }
    return found
}
