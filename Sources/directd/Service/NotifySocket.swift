import CUV
#if canImport(Glibc)
import Glibc
#endif

/// One sd_notify datagram, with the descriptor it carries (a duplicate the
/// message owns: closed once sent or dropped).
struct NotifyMessage {
    let text: String
    let descriptor: Int32?

    init(_ text: String, descriptor: Int32? = nil) {
        self.text = text
        self.descriptor = descriptor
    }

    func discard() {
        if let descriptor { Glibc.close(descriptor) }
    }
}

/// The datagram socket toward `NOTIFY_SOCKET`: a path (`/run/systemd/notify`)
/// or an abstract name (`@name`, a leading NUL byte on the wire).
final class NotifySocket {
    enum Outcome {
        case sent, wouldBlock
        case failed(String)
    }

    struct Unusable: Error, CustomStringConvertible {
        let description: String
    }

    private let fd: Int32
    private var address = sockaddr_un()
    private let addressLength: socklen_t
    let displayName: String
    var reportedFailure = false

    init(name: String) throws(Unusable) {
        displayName = LogEscaping.escaped(name)
        var path = Array(name.utf8)
        switch path.first {
        case UInt8(ascii: "/"):
            break
        case UInt8(ascii: "@"):
            path[0] = 0
        default:
            // systemd also knows vsock: addresses (for virtual machines); directd does not.
            throw Unusable(description: "\"\(displayName)\" is neither a socket path (/...) nor an abstract name (@...)")
        }
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        // A path needs room for its terminating NUL; an abstract name does not.
        guard path.count < capacity || (path[0] == 0 && path.count <= capacity) else {
            throw Unusable(description: "\"\(displayName)\" is longer than a socket address allows (\(capacity - 1) bytes)")
        }
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: path) }
        // An abstract name's length is exact: trailing NULs would be part of it.
        addressLength = socklen_t(MemoryLayout<sa_family_t>.size + path.count + (path[0] == 0 ? 0 : 1))
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else {
            throw Unusable(description: "socket(AF_UNIX, SOCK_DGRAM) failed: \(String(cString: strerror(errno)))")
        }
    }

    deinit { Glibc.close(fd) }

    func send(_ message: String, descriptor: Int32? = nil) -> Outcome {
        var message = message
        let sent = message.withUTF8 { bytes in
            withUnsafeMutablePointer(to: &address) { pointer in
                if let descriptor {
                    return NotifySocket.sendWithDescriptor(fd, bytes, descriptor, pointer, addressLength)
                }
                return pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { address in
                    sendto(fd, bytes.baseAddress, bytes.count, Int32(MSG_DONTWAIT) | Int32(MSG_NOSIGNAL), address, addressLength)
                }
            }
        }
        if sent >= 0 { return .sent }
        switch errno {
        case EAGAIN, EINTR, ENOBUFS: return .wouldBlock
        case let code: return .failed(String(cString: strerror(code)))
        }
    }

    /// `BARRIER=1` (systemd 246 on): the manager closes its copy of the pipe's
    /// write end once it has handled every earlier message. Waits for that at
    /// most `timeout` ms; false when it did not come. Blocks: call it only
    /// before the loop runs.
    func barrier(timeout: Int32) -> Bool {
        var ends: [Int32] = [-1, -1]
        guard pipe2(&ends, O_CLOEXEC) == 0 else { return false }
        defer { Glibc.close(ends[0]) }
        let outcome = send("BARRIER=1", descriptor: ends[1])
        Glibc.close(ends[1])
        guard case .sent = outcome else { return false }
        var poller = pollfd(fd: ends[0], events: 0, revents: 0)
        var ready: Int32 = -1
        for _ in 0..<8 {   // EINTR: try again, a few times
            ready = poll(&poller, 1, timeout)
            if ready >= 0 || errno != EINTR { break }
        }
        return ready == 1 && poller.revents & Int16(POLLHUP) != 0
    }

    /// `sendmsg` with one descriptor as SCM_RIGHTS. Swift has no CMSG_* macros:
    /// the control buffer is laid out by hand, a `cmsghdr` then the int, in
    /// 8-byte words (CMSG_SPACE(4) on 64-bit Linux is 24 bytes, CMSG_LEN(4) 20).
    private static func sendWithDescriptor(_ fd: Int32, _ bytes: UnsafeBufferPointer<UInt8>, _ descriptor: Int32,
                                           _ address: UnsafeMutablePointer<sockaddr_un>,
                                           _ addressLength: socklen_t) -> Int {
        let headerSize = (MemoryLayout<cmsghdr>.size + 7) & ~7
        var control = [UInt64](repeating: 0, count: (headerSize + 8) / 8)
        var vector = iovec(iov_base: UnsafeMutableRawPointer(mutating: bytes.baseAddress), iov_len: bytes.count)
        return control.withUnsafeMutableBytes { buffer in
            let header = buffer.baseAddress!.assumingMemoryBound(to: cmsghdr.self)
            header.pointee.cmsg_level = SOL_SOCKET
            header.pointee.cmsg_type = Int32(SCM_RIGHTS)
            header.pointee.cmsg_len = headerSize + MemoryLayout<Int32>.size
            buffer.storeBytes(of: descriptor, toByteOffset: headerSize, as: Int32.self)
            return withUnsafeMutablePointer(to: &vector) { vector in
                var message = msghdr(msg_name: UnsafeMutableRawPointer(address), msg_namelen: addressLength,
                                     msg_iov: vector, msg_iovlen: 1, msg_control: buffer.baseAddress,
                                     msg_controllen: buffer.count, msg_flags: 0)
                return sendmsg(fd, &message, Int32(MSG_DONTWAIT) | Int32(MSG_NOSIGNAL))
            }
        }
    }
}
