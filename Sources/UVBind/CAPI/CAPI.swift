import CUV
import CUVBind

// The C API declared in Modules/UVBind/uvbind.h. Each function is `@c
// @implementation`, so the compiler checks its signature against the header.
// Nothing Swift crosses into C: every failure, including NULL and invalid
// arguments, becomes a negative code, and no function here can trap on input.

@c @implementation
public func uvbind_version() -> UInt32 {
    UInt32(UVBIND_VERSION_MAJOR << 16 | UVBIND_VERSION_MINOR << 8 | UVBIND_VERSION_PATCH)
}

@c @implementation
public func uvbind_version_string() -> UnsafePointer<CChar>! {
    CStrings.version
}

@c @implementation
public func uvbind_err_name(_ err: Int32) -> UnsafePointer<CChar>! {
    CStrings.name(of: err)
}

@c @implementation
public func uvbind_strerror(_ err: Int32) -> UnsafePointer<CChar>! {
    CStrings.message(of: err)
}

@c @implementation
public func uvbind_validate(_ value: UnsafePointer<CChar>!, _ message: UnsafeMutablePointer<CChar>!,
                            _ messageSize: Int) -> Int32 {
    let output = MessageBuffer(message, messageSize)
    guard let value else { return output.fail(UV_EINVAL.rawValue, "value is NULL") }
    do throws(BindError) {
        let plan = try BindPlan(value: try cString(value), port: 0)
        output.write(plan.notes.map(\.description).joined(separator: "; "))
        return 0
    } catch {
        return output.fail(error)
    }
}

@c @implementation
public func uvbind_resolve(_ value: UnsafePointer<CChar>!, _ port: Int32,
                           _ addresses: UnsafeMutablePointer<uvbind_address_t>!,
                           _ count: UnsafeMutablePointer<Int>!,
                           _ message: UnsafeMutablePointer<CChar>!, _ messageSize: Int) -> Int32 {
    let output = MessageBuffer(message, messageSize)
    guard let value else { return output.fail(UV_EINVAL.rawValue, "value is NULL") }
    guard let count else { return output.fail(UV_EINVAL.rawValue, "count is NULL") }
    do throws(BindError) {
        let plan = try BindPlan(value: try cString(value), port: ListenPort.validate(Int(port)))
        let capacity = count.pointee
        count.pointee = plan.targets.count
        guard capacity >= plan.targets.count, addresses != nil || plan.targets.isEmpty else {
            return output.fail(UV_ENOBUFS.rawValue,
                               "room for \(plan.targets.count) addresses is needed, \(capacity) given")
        }
        for (index, target) in plan.targets.enumerated() {
            fill(&addresses[index], with: target.address, ipv6Only: target.ipv6Only)
        }
        output.write(plan.notes.map(\.description).joined(separator: "; "))
        return 0
    } catch {
        return output.fail(error)
    }
}

@c @implementation
public func uvbind_listen(_ listeners: UnsafeMutablePointer<OpaquePointer?>!, _ loop: UnsafeMutablePointer<uv_loop_t>!,
                          _ value: UnsafePointer<CChar>!, _ port: Int32, _ backlog: Int32,
                          _ connectionCallback: uvbind_connection_cb!, _ data: UnsafeMutableRawPointer!,
                          _ message: UnsafeMutablePointer<CChar>!, _ messageSize: Int) -> Int32 {
    openListeners(listeners, loop, value, connectionCallback, MessageBuffer(message, messageSize)) {
        loop, text, callback throws(BindError) in
        try CListeners.open(BindPlan(value: text, port: ListenPort.validate(Int(port))), loop: loop,
                            backlog: backlog > 0 ? backlog : 511, callback: callback, data: data)
    }
}

@c @implementation
public func uvbind_follow(_ listeners: UnsafeMutablePointer<OpaquePointer?>!, _ loop: UnsafeMutablePointer<uv_loop_t>!,
                          _ value: UnsafePointer<CChar>!, _ port: Int32, _ backlog: Int32, _ flags: UInt32,
                          _ connectionCallback: uvbind_connection_cb!, _ changeCallback: uvbind_change_cb!,
                          _ data: UnsafeMutableRawPointer!,
                          _ message: UnsafeMutablePointer<CChar>!, _ messageSize: Int) -> Int32 {
    let output = MessageBuffer(message, messageSize)
    guard flags & ~UVBIND_FOLLOW_BIND_TO_DEVICE == 0 else {
        listeners?.pointee = nil
        return output.fail(UV_EINVAL.rawValue, "unknown flags \(flags & ~UVBIND_FOLLOW_BIND_TO_DEVICE)")
    }
    return openListeners(listeners, loop, value, connectionCallback, output) { loop, text, callback throws(BindError) in
        try CListeners.follow(text, port: ListenPort.validate(Int(port)), loop: loop,
                              backlog: backlog > 0 ? backlog : 511,
                              bindToDevice: flags & UVBIND_FOLLOW_BIND_TO_DEVICE != 0,
                              callback: callback, change: changeCallback, data: data)
    }
}

/// What `uvbind_listen` and `uvbind_follow` share: the argument checks, then
/// `open`, then the pointer and the notes handed back (or the error's message).
private func openListeners(
    _ listeners: UnsafeMutablePointer<OpaquePointer?>?, _ loop: UnsafeMutablePointer<uv_loop_t>?,
    _ value: UnsafePointer<CChar>?, _ connectionCallback: uvbind_connection_cb?, _ output: MessageBuffer,
    _ open: (UnsafeMutablePointer<uv_loop_t>, String, uvbind_connection_cb) throws(BindError) -> OpaquePointer
) -> Int32 {
    guard let listeners else { return output.fail(UV_EINVAL.rawValue, "listeners is NULL") }
    listeners.pointee = nil
    guard let loop else { return output.fail(UV_EINVAL.rawValue, "loop is NULL") }
    guard let value else { return output.fail(UV_EINVAL.rawValue, "value is NULL") }
    guard let connectionCallback else { return output.fail(UV_EINVAL.rawValue, "connection_cb is NULL") }
    do throws(BindError) {
        let pointer = try open(loop, try cString(value), connectionCallback)
        listeners.pointee = pointer
        output.write(CListeners.from(pointer)?.group.notes.map(\.description).joined(separator: "; ") ?? "")
        return 0
    } catch {
        return output.fail(error)
    }
}

@c @implementation
public func uvbind_listeners_count(_ listeners: OpaquePointer!) -> Int {
    CListeners.from(listeners)?.group.listeners.count ?? 0
}

@c @implementation
public func uvbind_listeners_address(_ listeners: OpaquePointer!, _ index: Int,
                                     _ address: UnsafeMutablePointer<uvbind_address_t>!) -> Int32 {
    guard let object = CListeners.from(listeners), let address else { return UV_EINVAL.rawValue }
    guard !object.closing else { return UVBIND_ECLOSED }
    guard object.group.listeners.indices.contains(index) else { return UV_EINVAL.rawValue }
    let listener = object.group.listeners[index]
    fill(address, with: listener.address, ipv6Only: listener.target.ipv6Only)
    return 0
}

@c @implementation
public func uvbind_listeners_stream(_ listeners: OpaquePointer!, _ index: Int) -> UnsafeMutablePointer<uv_stream_t>! {
    guard let object = CListeners.from(listeners), !object.closing,
          object.group.listeners.indices.contains(index) else { return nil }
    return object.group.listeners[index].stream
}

@c @implementation
public func uvbind_accept(_ listeners: OpaquePointer!, _ server: UnsafeMutablePointer<uv_stream_t>!,
                          _ client: UnsafeMutablePointer<uv_stream_t>!) -> Int32 {
    guard let object = CListeners.from(listeners) else { return UV_EINVAL.rawValue }
    guard !object.closing else { return UVBIND_ECLOSED }
    guard let server, let client else { return UV_EINVAL.rawValue }
    // uv_accept asserts on these instead of returning an error: check first.
    let type = uv_handle_get_type(HandleStorage.base(client))
    guard type == UV_TCP || type == UV_NAMED_PIPE, client.pointee.loop == server.pointee.loop else {
        return UV_EINVAL.rawValue
    }
    guard let listener = object.group.listeners.first(where: { $0.stream == server }) else {
        return UV_EINVAL.rawValue
    }
    return listener.accept(into: client)?.code ?? 0
}

@c @implementation
public func uvbind_close(_ listeners: OpaquePointer!, _ closeCallback: uvbind_close_cb!,
                         _ data: UnsafeMutableRawPointer!) -> Int32 {
    guard let listeners, let object = CListeners.from(listeners) else { return UV_EINVAL.rawValue }
    guard !object.closing else { return UVBIND_ECLOSED }
    object.close(pointer: listeners, callback: closeCallback, data: data)
    return 0
}

// MARK: - Helpers

/// The host's string, or a format error for bytes that are not UTF-8.
private func cString(_ value: UnsafePointer<CChar>) throws(BindError) -> String {
    guard let text = String(validatingCString: value) else {
        // String(cString:) repairs the bytes, so the message can show them.
        throw BindError(kind: .invalidFormat, value: String(cString: value), step: .parse,
                        detail: "the value is not valid UTF-8", remedy: BindValue.expected)
    }
    return text
}

func fill(_ out: UnsafeMutablePointer<uvbind_address_t>, with address: SocketAddress, ipv6Only: Bool) {
    out.pointee = uvbind_address_t()
    address.withSockaddr { sockaddr in
        let size = address.family == .ipv6 ? MemoryLayout<sockaddr_in6>.size : MemoryLayout<sockaddr_in>.size
        withUnsafeMutableBytes(of: &out.pointee.addr) { storage in
            storage.copyMemory(from: UnsafeRawBufferPointer(start: sockaddr, count: size))
        }
    }
    withUnsafeMutableBytes(of: &out.pointee.text) { text in
        MessageBuffer(text.baseAddress!.assumingMemoryBound(to: CChar.self), text.count).write(address.description)
    }
    out.pointee.ipv6only = ipv6Only ? 1 : 0
}

extension BindError {
    /// The C API's code for this error: UVBind's own for refused values, the
    /// libuv code for everything a libuv call (or the kernel's view) decided.
    var cCode: Int32 {
        switch kind {
        case .invalidFormat: UVBIND_EFORMAT
        case .unknownInterface: UVBIND_EIFACE
        case .unknownZone: UVBIND_EZONE
        case .linkLocalWithoutZone: UVBIND_ELINKLOCAL
        case .interfaceWithoutAddresses: UVBIND_ENOADDR
        case .invalidPort: UVBIND_EPORT
        case .addressNotAvailable, .addressInUse, .permissionDenied, .familyNotSupported, .system:
            code?.code ?? UV_EINVAL.rawValue
        }
    }
}

/// The host's `char *message, size_t message_size`: NUL-terminated, truncated
/// to fit on a UTF-8 character boundary; NULL or size 0 means no message wanted.
struct MessageBuffer {
    let buffer: UnsafeMutablePointer<CChar>?
    let size: Int

    init(_ buffer: UnsafeMutablePointer<CChar>?, _ size: Int) {
        self.buffer = buffer
        self.size = size
    }

    func write(_ text: String) {
        guard let buffer, size > 0 else { return }
        var bytes = Array(text.utf8.prefix(size - 1))
        if bytes.count < text.utf8.count {
            // Drop a character cut in half: continuation bytes, then its lead byte.
            while let last = bytes.last, last & 0xC0 == 0x80 { bytes.removeLast() }
            if let last = bytes.last, last & 0x80 != 0 { bytes.removeLast() }
        }
        for (index, byte) in bytes.enumerated() { buffer[index] = CChar(bitPattern: byte) }
        buffer[bytes.count] = 0
    }

    func fail(_ error: BindError) -> Int32 {
        write(error.description)
        return error.cCode
    }

    func fail(_ code: Int32, _ text: String) -> Int32 {
        write(text)
        return code
    }
}
