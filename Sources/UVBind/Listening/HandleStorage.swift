import CUV
#if canImport(Glibc)
import Glibc
#endif

/// The one place where Swift objects and libuv handles meet; all of UVBind's (and
/// directd's) unsafe pointer code for handle lifetimes lives here. `package`:
/// directd, in the same package, uses it; hosts of the library do not see it.
///
/// libuv gives a callback the handle pointer and nothing else, so the Swift object
/// that handles the event travels in the handle's `data` field. The rules:
/// - `allocate` makes zeroed memory for a handle (libuv never touches `data`).
/// - `attach` stores a *retained* reference to the owner in `data`: the owner
///   lives at least as long as its handle, whatever the rest of the program drops.
/// - `owner(of:)` reads that reference inside a callback without changing counts.
/// - `close` calls `uv_close`; only its callback, when libuv is done with the
///   handle, releases the owner and frees the memory. A handle whose init failed
///   was never known to libuv and is `discard`ed instead.
@_spi(Daemon) public enum HandleStorage {
    package static func allocate<Handle>(_: Handle.Type) -> UnsafeMutablePointer<Handle> {
        let size = MemoryLayout<Handle>.size
        let raw = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: MemoryLayout<Handle>.alignment)
        raw.initializeMemory(as: UInt8.self, repeating: 0, count: size)
        return raw.bindMemory(to: Handle.self, capacity: 1)
    }

    package static func attach<Handle>(_ owner: AnyObject, to handle: UnsafeMutablePointer<Handle>) {
        base(handle).pointee.data = Unmanaged.passRetained(owner).toOpaque()
    }

    /// The owner attached to a handle, inside one of its callbacks.
    package static func owner<Owner: AnyObject, Handle>(of handle: UnsafeMutablePointer<Handle>?,
                                                       as _: Owner.Type) -> Owner {
        let data = base(handle!).pointee.data!
        return Unmanaged<Owner>.fromOpaque(data).takeUnretainedValue()
    }

    /// Runs `body` with the owner of a handle without retaining and releasing it:
    /// the handle's own reference keeps it alive for the whole callback. For the
    /// per-read callbacks, where that pair of atomic operations shows in profiles.
    /// SPI-public (`@_spi(Daemon) import UVBind`), not `package` like the rest:
    /// the compiler does not inline a member of a `package` type into another
    /// module, and this one sits in every read callback (it cost 30 more
    /// instructions per echo round trip, called unspecialised).
    @inlinable
    @_spi(Daemon) public static func withOwner<Owner: AnyObject, Handle, Result>(
        of handle: UnsafeMutablePointer<Handle>?, as _: Owner.Type, _ body: (Owner) -> Result
    ) -> Result {
        let data = UnsafeMutableRawPointer(handle!).assumingMemoryBound(to: uv_handle_t.self).pointee.data!
        return Unmanaged<Owner>.fromOpaque(data)._withUnsafeGuaranteedRef(body)
    }

    /// The owner of a request (`uv_write_t`, `uv_shutdown_t`, `uv_connect_t`), stored
    /// *unretained* with `attachUnretained`: requests belong to an object whose
    /// handle keeps it alive, and libuv runs every request's callback (with
    /// `UV_ECANCELED` if need be) before the handle's close callback.
    package static func requestOwner<Owner: AnyObject>(of request: UnsafeMutableRawPointer?,
                                                      as _: Owner.Type) -> Owner {
        let data = request!.assumingMemoryBound(to: uv_req_t.self).pointee.data!
        return Unmanaged<Owner>.fromOpaque(data).takeUnretainedValue()
    }

    package static func attachUnretained<Request>(_ owner: AnyObject, to request: UnsafeMutablePointer<Request>) {
        UnsafeMutableRawPointer(request).assumingMemoryBound(to: uv_req_t.self).pointee.data =
            Unmanaged.passUnretained(owner).toOpaque()
    }

    /// Closes a handle; the owner is released and the memory freed once libuv is done.
    /// Closing a handle that is already closing does nothing.
    package static func close<Handle>(_ handle: UnsafeMutablePointer<Handle>) {
        let handle = base(handle)
        guard uv_is_closing(handle) == 0 else { return }
        uv_close(handle, releaseClosedHandle)
    }

    /// Closes a TCP handle with a reset (RST) instead of an orderly FIN, so that
    /// the peer learns the connection failed. libuv refuses while a shutdown is
    /// pending; then SO_LINGER 0 is set here, so that the plain close that
    /// follows still sends a reset, not a FIN.
    package static func closeWithReset(_ handle: UnsafeMutablePointer<uv_tcp_t>) {
        guard uv_is_closing(base(handle)) == 0 else { return }
        if uv_tcp_close_reset(handle, releaseClosedHandle) != 0 {
            var descriptor: uv_os_fd_t = -1
            if uv_fileno(base(handle), &descriptor) == 0 {
                var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
                setsockopt(descriptor, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
            }
            uv_close(base(handle), releaseClosedHandle)
        }
    }

    /// Frees a handle that libuv never initialised (its init call failed).
    package static func discard<Handle>(_ handle: UnsafeMutablePointer<Handle>) {
        if let data = base(handle).pointee.data {
            Unmanaged<AnyObject>.fromOpaque(data).release()
        }
        UnsafeMutableRawPointer(handle).deallocate()
    }

    /// Every handle type starts with the `uv_handle_t` fields.
    package static func base<Handle>(_ handle: UnsafeMutablePointer<Handle>) -> UnsafeMutablePointer<uv_handle_t> {
        UnsafeMutableRawPointer(handle).assumingMemoryBound(to: uv_handle_t.self)
    }

    /// Every stream handle (TCP, pipe, TTY) starts with the `uv_stream_t` fields.
    package static func stream<Handle>(_ handle: UnsafeMutablePointer<Handle>) -> UnsafeMutablePointer<uv_stream_t> {
        UnsafeMutableRawPointer(handle).assumingMemoryBound(to: uv_stream_t.self)
    }
}

/// An owner that wants to know when libuv has finished closing its handle.
package protocol HandleCloseObserver: AnyObject {
    /// The handle's memory is gone; called once, from the close callback.
    func handleDidClose()
}

/// The close callback of every handle from `HandleStorage`: libuv is done with
/// it, so the memory goes, the owner hears of it, and its reference goes.
private func releaseClosedHandle(_ handle: UnsafeMutablePointer<uv_handle_t>?) {
    guard let handle else { return }
    let data = handle.pointee.data
    UnsafeMutableRawPointer(handle).deallocate()
    guard let data else { return }
    let owner = Unmanaged<AnyObject>.fromOpaque(data).takeRetainedValue()
    (owner as? HandleCloseObserver)?.handleDidClose()
}
