/// What one `ListenerGroup.reconcile` did.
public struct ListenerChanges {
    /// Already listening on a wanted target: untouched, the same socket.
    public var kept: [Listener] = []
    /// Opened by this call.
    public var opened: [Listener] = []
    /// Closed by this call (no longer wanted); their `address` stays readable.
    public var closed: [Listener] = []
    /// Optional targets skipped (a family the host cannot open).
    public var skipped: [BindNote] = []

    public init() {}

    /// Nothing opened or closed.
    public var isEmpty: Bool { opened.isEmpty && closed.isEmpty }
}
