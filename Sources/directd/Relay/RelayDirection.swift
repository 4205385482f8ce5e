import CUV
import UVBind

/// One direction of a connection: bytes read from `source` are written to `sink`,
/// and the source's EOF becomes a half-close of the sink.
///
/// An echo has one direction (the client to itself), a relay two. `Session`
/// starts, stops and counts them through this protocol only, so that another
/// way of moving bytes (splice(2) through a pipe, say) is one new conforming
/// type. Every implementation keeps the same rules: backpressure (a sink that
/// does not drain stops the reading of its source), half-close passed on after
/// every queued byte, and an error reported to the session, which resets both
/// sides.
protocol RelayDirection: AnyObject {
    var source: UnsafeMutablePointer<uv_stream_t> { get }
    var sink: UnsafeMutablePointer<uv_stream_t> { get }
    /// Starts (or resumes) moving bytes; libuv's error if reading cannot start.
    func start() -> UVError?
    /// Stops reading; the session is closing, and its handles' close ends the rest.
    func stop()
    /// Bytes read from the source so far.
    var bytesMoved: UInt64 { get }
    /// The source's EOF has been passed on and the sink's shutdown completed.
    var finished: Bool { get }
    /// Descriptors this direction holds besides the connection's two sockets
    /// (a splice pipe would hold two), for the descriptor budget.
    var descriptorsUsed: Int { get }

    /// Where this direction stands, for an upgrade's record; nil when it
    /// cannot be told exactly (the session then stays with this process).
    /// Taken while the loop waits on the handover, so nothing moves under it.
    var handoverState: DirectionState? { get }
}

/// One direction's state as an upgrade hands it over: the bytes it moved;
/// whether its source's EOF was passed on (`finished`: half-closed) or seen
/// but not yet passed on (`ending`: the sink's FIN goes after what is still
/// held); a splice pipe with the bytes it still holds for the sink; and the
/// bytes libuv still had queued for the sink (`unsent`, copying only). Held
/// bytes were read from the source and counted in `moved`, not yet written.
struct DirectionState {
    var moved: UInt64 = 0
    var finished = false
    var ending = false
    var pipe: PipePool.Pipe? = nil
    var inPipe = 0
    var unsent: [UInt8] = []
}

extension UVError {
    /// The read callback's code when the allocator handed libuv no buffer.
    static let noBufferSpace = UVError(UV_ENOBUFS.rawValue)
}
