import CUV
#if canImport(Glibc)
import Glibc
#endif

/// The unix socket between a running directd and the process that takes over
/// from it (`socketpair(AF_UNIX, SOCK_SEQPACKET)`): each message is one record,
/// kept whole by the kernel, and may carry descriptors (`SCM_RIGHTS`).
///
/// All of the upgrade's unsafe pointer code is here: Swift has no `CMSG_*`
/// macros, so the control buffer is laid out by hand (one `cmsghdr`, then the
/// descriptors as ints, in 8-byte words), as `NotifySocket` does for one.
struct HandoverChannel {
    let fd: Int32

    /// The kernel's limit of descriptors in one message (`SCM_MAX_FD`).
    static let descriptorsPerMessage = 253
    /// A message's text is short (a hello, a verdict, a batch header).
    static let messageLimit = 4096

    /// Both ends, close-on-exec; nil (with errno) when the kernel refuses.
    static func pair() -> (parent: HandoverChannel, child: HandoverChannel)? {
        var ends: (Int32, Int32) = (-1, -1)
        let made = withUnsafeMutableBytes(of: &ends) {
            socketpair(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0,
                       $0.baseAddress!.assumingMemoryBound(to: Int32.self)) == 0
        }
        return made ? (HandoverChannel(fd: ends.0), HandoverChannel(fd: ends.1)) : nil
    }

    private static var headerSize: Int { (MemoryLayout<cmsghdr>.size + 7) & ~7 }

    /// Sends `text` with up to `descriptorsPerMessage` descriptors. The
    /// descriptors stay the caller's (the receiver gets its own copies).
    /// Returns 0 or an errno. `blocking` waits for room (at most 10 s) even on
    /// a descriptor set non-blocking, as the old process's end is.
    func send(_ text: String, descriptors: [Int32] = [], blocking: Bool = false) -> Int32 {
        for _ in 0..<1000 {
            let error = sendOnce(text, descriptors: descriptors, blocking: blocking)
            guard blocking, error == EAGAIN else { return error }
            var poller = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
            _ = poll(&poller, 1, 10)
        }
        return EAGAIN
    }

    private func sendOnce(_ text: String, descriptors: [Int32], blocking: Bool) -> Int32 {
        precondition(descriptors.count <= Self.descriptorsPerMessage)
        var bytes = Array(text.utf8)
        let flags = Int32(MSG_NOSIGNAL) | (blocking ? 0 : Int32(MSG_DONTWAIT))
        let controlSize = descriptors.isEmpty ? 0 : Self.headerSize + ((descriptors.count * 4 + 7) & ~7)
        var control = [UInt64](repeating: 0, count: max(controlSize / 8, 1))
        let sent = bytes.withUnsafeMutableBytes { body in
            control.withUnsafeMutableBytes { buffer in
                if !descriptors.isEmpty {
                    let header = buffer.baseAddress!.assumingMemoryBound(to: cmsghdr.self)
                    header.pointee.cmsg_level = SOL_SOCKET
                    header.pointee.cmsg_type = Int32(SCM_RIGHTS)
                    header.pointee.cmsg_len = Self.headerSize + descriptors.count * 4
                    for (index, descriptor) in descriptors.enumerated() {
                        buffer.storeBytes(of: descriptor, toByteOffset: Self.headerSize + index * 4, as: Int32.self)
                    }
                }
                var vector = iovec(iov_base: body.baseAddress, iov_len: body.count)
                return withUnsafeMutablePointer(to: &vector) { vector in
                    var message = msghdr(msg_name: nil, msg_namelen: 0, msg_iov: vector, msg_iovlen: 1,
                                         msg_control: descriptors.isEmpty ? nil : buffer.baseAddress,
                                         msg_controllen: descriptors.isEmpty ? 0 : controlSize, msg_flags: 0)
                    return sendmsg(fd, &message, flags)
                }
            }
        }
        return sent == bytes.count ? 0 : (sent < 0 ? errno : EMSGSIZE)
    }

    /// What one `receive` got.
    enum Received {
        case message(String, descriptors: [Int32])
        /// The other end closed (EOF).
        case closed
        /// Nothing yet (non-blocking).
        case nothing
        case failed(Int32)
    }

    /// Receives one message and its descriptors (close-on-exec). A message
    /// whose descriptors did not all fit is refused (`EMSGSIZE`) and the ones
    /// that came are closed.
    func receive(blocking: Bool) -> Received {
        var body = [UInt8](repeating: 0, count: Self.messageLimit)
        let controlSize = Self.headerSize + Self.descriptorsPerMessage * 4 + 8
        var control = [UInt64](repeating: 0, count: controlSize / 8 + 1)
        var descriptors: [Int32] = []
        var truncated = false
        let got = body.withUnsafeMutableBytes { bodyBuffer in
            control.withUnsafeMutableBytes { buffer in
                var vector = iovec(iov_base: bodyBuffer.baseAddress, iov_len: bodyBuffer.count)
                return withUnsafeMutablePointer(to: &vector) { vector in
                    var message = msghdr(msg_name: nil, msg_namelen: 0, msg_iov: vector, msg_iovlen: 1,
                                         msg_control: buffer.baseAddress, msg_controllen: buffer.count, msg_flags: 0)
                    let flags = Int32(MSG_CMSG_CLOEXEC) | (blocking ? 0 : Int32(MSG_DONTWAIT))
                    let got = recvmsg(fd, &message, flags)
                    guard got >= 0 else { return got }
                    truncated = message.msg_flags & Int32(MSG_CTRUNC) != 0 || message.msg_flags & Int32(MSG_TRUNC) != 0
                    // Walk the control messages: each is a header and its data,
                    // padded to 8 bytes.
                    var offset = 0
                    while offset + Self.headerSize <= message.msg_controllen {
                        let header = (buffer.baseAddress! + offset).assumingMemoryBound(to: cmsghdr.self).pointee
                        guard header.cmsg_len >= Self.headerSize, offset + header.cmsg_len <= message.msg_controllen else { break }
                        if header.cmsg_level == SOL_SOCKET, header.cmsg_type == Int32(SCM_RIGHTS) {
                            let count = (header.cmsg_len - Self.headerSize) / 4
                            for index in 0..<count {
                                descriptors.append(buffer.load(fromByteOffset: offset + Self.headerSize + index * 4,
                                                               as: Int32.self))
                            }
                        }
                        offset += (header.cmsg_len + 7) & ~7
                    }
                    return got
                }
            }
        }
        if got < 0 {
            let error = errno
            return error == EAGAIN || error == EWOULDBLOCK ? .nothing : .failed(error)
        }
        if truncated {
            descriptors.forEach { _ = Glibc.close($0) }
            return .failed(EMSGSIZE)
        }
        if got == 0, descriptors.isEmpty { return .closed }
        return .message(String(decoding: body.prefix(got), as: UTF8.self), descriptors: descriptors)
    }

    /// Waits (bounded) until a message can be read; false on timeout.
    func waitReadable(milliseconds: Int32) -> Bool {
        var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        for _ in 0..<8 {   // EINTR: try again, a few times
            let ready = poll(&poller, 1, milliseconds)
            if ready >= 0 { return ready == 1 }
            if errno != EINTR { return false }
        }
        return false
    }

    func close() { _ = Glibc.close(fd) }
}
