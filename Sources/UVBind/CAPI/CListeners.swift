import CUV
import CUVBind
import Synchronization

/// What a C host's `uvbind_listeners_t *` points to: a listener group (fixed,
/// from `uvbind_listen`, or following the network, from `uvbind_follow`), the
/// host's callbacks and data, and the state of its closing.
///
/// The C pointer is a retained reference to this object, handed out by
/// `uvbind_listen` or `uvbind_follow` and released after the close callback.
/// Every pointer handed out is kept in `live` until then, so that a pointer that
/// was never handed out, or is already gone, is told apart (UV_EINVAL) instead
/// of dereferenced.
final class CListeners {
    /// Set once, right after the object exists (the pointer must exist first,
    /// for the callbacks of a follower's first pass).
    private(set) var group: ListenerGroup!
    private var follower: ListenerFollower?
    private(set) var closing = false

    private init() {}

    /// Opens a group whose connection callback calls the host's C callback.
    static func open(_ plan: BindPlan, loop: UnsafeMutablePointer<uv_loop_t>, backlog: Int32,
                     callback: uvbind_connection_cb?, data: UnsafeMutableRawPointer?) throws(BindError) -> OpaquePointer {
        let object = CListeners()
        let pointer = object.pointer
        object.group = try ListenerGroup.open(plan, loop: loop, backlog: backlog) { listener, error in
            callback?(pointer, listener.stream, error?.code ?? 0, data)
        }
        return object.handOut()
    }

    /// Starts following `value`; `change` hears of every change, the first pass's
    /// included, with the pointer this returns.
    static func follow(_ value: String, port: UInt16, loop: UnsafeMutablePointer<uv_loop_t>, backlog: Int32,
                       bindToDevice: Bool, callback: uvbind_connection_cb?, change: uvbind_change_cb?,
                       data: UnsafeMutableRawPointer?) throws(BindError) -> OpaquePointer {
        let object = CListeners()
        let pointer = object.handOut()
        do throws(BindError) {
            _ = try ListenerFollower(
                value: value, port: port, loop: loop, backlog: backlog, bindToDevice: bindToDevice,
                onConnection: { listener, error in callback?(pointer, listener.stream, error?.code ?? 0, data) },
                onChange: { event in Self.report(event, to: change, pointer: pointer, data: data) },
                beforeFirstPass: { follower in
                    // Before the first change callback: the host may ask about
                    // the listeners, or close them, from it.
                    object.follower = follower
                    object.group = follower.group
                })
        } catch {
            object.forget(pointer)
            Unmanaged<CListeners>.fromOpaque(UnsafeRawPointer(pointer)).release()
            throw error
        }
        return pointer
    }

    /// A follower's event as the C host's `uvbind_change_t`.
    private static func report(_ event: ListenerFollower.Event, to callback: uvbind_change_cb?,
                               pointer: OpaquePointer, data: UnsafeMutableRawPointer?) {
        guard let callback else { return }
        var change = uvbind_change_t()
        var address = uvbind_address_t()
        let element = event.element
        switch event.kind {
        case .listening: change.type = Int32(UVBIND_LISTENING.rawValue)
        case .stopped: change.type = Int32(UVBIND_STOPPED.rawValue)
        case .waiting: change.type = Int32(UVBIND_WAITING.rawValue)
        case .failed:
            change.type = Int32(UVBIND_FAILED.rawValue)
            change.status = event.error?.cCode ?? 0
        case .resynchronised: change.type = Int32(UVBIND_RESYNC.rawValue)
        }
        let hasAddress = event.address != nil
        if let bound = event.address { fill(&address, with: bound, ipv6Only: bound.family == .ipv6) }
        event.description.withCString { message in
            change.message = message
            withUnsafePointer(to: &address) { addressPointer in
                change.address = hasAddress ? addressPointer : nil
                if let element {
                    element.withCString { text in
                        change.element = text
                        callback(pointer, &change, data)
                    }
                } else {
                    callback(pointer, &change, data)
                }
            }
        }
    }

    /// Retains the object for the host and records the pointer as live.
    private func handOut() -> OpaquePointer {
        let pointer = OpaquePointer(Unmanaged.passRetained(self).toOpaque())
        Self.live.withLock { _ = $0.insert(UInt(bitPattern: pointer)) }
        return pointer
    }

    private func forget(_ pointer: OpaquePointer) {
        Self.live.withLock { _ = $0.remove(UInt(bitPattern: pointer)) }
    }

    /// The pointer this object will be handed out as.
    private var pointer: OpaquePointer {
        OpaquePointer(Unmanaged.passUnretained(self).toOpaque())
    }

    /// The object behind a pointer the host passes in, if it is one of ours and alive.
    static func from(_ pointer: OpaquePointer?) -> CListeners? {
        guard let pointer, live.withLock({ $0.contains(UInt(bitPattern: pointer)) }) else { return nil }
        return Unmanaged<CListeners>.fromOpaque(UnsafeRawPointer(pointer)).takeUnretainedValue()
    }

    /// Closes every listener (and stops following); when libuv has closed the
    /// last handle, calls `callback` and lets go of the object (the host's
    /// pointer is invalid from then on).
    func close(pointer: OpaquePointer, callback: uvbind_close_cb?, data: UnsafeMutableRawPointer?) {
        closing = true
        let finish = {
            self.forget(pointer)
            callback?(data)
            Unmanaged<CListeners>.fromOpaque(UnsafeRawPointer(pointer)).release()
        }
        if let follower {
            follower.close(closed: finish)
            return
        }
        var remaining = group.listeners.count
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
