import CUV
import CUVBind
import Synchronization

/// What a C host's `uvbind_listeners_t *` points to: a listener group, the host's
/// callbacks and data, and the state of its closing.
///
/// The C pointer is a retained reference to this object, handed out by
/// `uvbind_listen` and released after the close callback. Every pointer handed
/// out is kept in `live` until then, so that a pointer that was never handed out,
/// or is already gone, is told apart (UV_EINVAL) instead of dereferenced.
final class CListeners {
    let group: ListenerGroup
    private(set) var closing = false

    private init(group: ListenerGroup) {
        self.group = group
    }

    /// Opens a group whose connection callback calls the host's C callback.
    static func open(_ plan: BindPlan, loop: UnsafeMutablePointer<uv_loop_t>, backlog: Int32,
                     callback: uvbind_connection_cb?, data: UnsafeMutableRawPointer?) throws(BindError) -> OpaquePointer {
        // The pointer is known only once the group exists; the callback reads it
        // from this box, which is filled in before the loop can run a callback.
        final class Box { var pointer: OpaquePointer? }
        let box = Box()
        let group = try ListenerGroup.open(plan, loop: loop, backlog: backlog) { listener, error in
            callback?(box.pointer, listener.stream, error?.code ?? 0, data)
        }
        let pointer = OpaquePointer(Unmanaged.passRetained(CListeners(group: group)).toOpaque())
        box.pointer = pointer
        live.withLock { _ = $0.insert(UInt(bitPattern: pointer)) }
        return pointer
    }

    /// The object behind a pointer the host passes in, if it is one of ours and alive.
    static func from(_ pointer: OpaquePointer?) -> CListeners? {
        guard let pointer, live.withLock({ $0.contains(UInt(bitPattern: pointer)) }) else { return nil }
        return Unmanaged<CListeners>.fromOpaque(UnsafeRawPointer(pointer)).takeUnretainedValue()
    }

    /// Closes every listener; when libuv has closed the last one, calls `callback`
    /// and lets go of the object (the host's pointer is invalid from then on).
    func close(pointer: OpaquePointer, callback: uvbind_close_cb?, data: UnsafeMutableRawPointer?) {
        closing = true
        var remaining = group.listeners.count
        let finish = {
            Self.live.withLock { _ = $0.remove(UInt(bitPattern: pointer)) }
            callback?(data)
            Unmanaged<CListeners>.fromOpaque(UnsafeRawPointer(pointer)).release()
        }
        guard remaining > 0 else { return finish() }
        for listener in group.listeners {
            listener.close {
                remaining -= 1
                if remaining == 0 { finish() }
            }
        }
    }

    /// Pointers handed out and not yet released. Hosts may run loops on several
    /// threads, each with its own listeners; the lock makes the set safe for that.
    private static let live = Mutex<Set<UInt>>([])
}
