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

    /// Stops reading for an upgrade's handover; what it holds still goes out
    /// to the sink (a splice pipe's bytes wait in it instead), and nothing
    /// restarts the reading until `release`.
    func hold()
    /// Nothing in flight outside `handoverState` (no byte queued in user
    /// space for the sink, no half-close pending).
    var isQuiescent: Bool { get }
    /// What a handover carries of this direction, once held and quiescent.
    var handoverState: DirectionState { get }
    /// Reads again: the handover did not happen, or did not take the session.
    func release() -> UVError?
}

/// One direction's state as an upgrade hands it over: the bytes it moved,
/// whether its source's EOF was passed on (half-closed), and a splice pipe
/// with the bytes it still holds for the sink (read from the source, counted
/// in `moved`, not yet written).
struct DirectionState {
    var moved: UInt64 = 0
    var finished = false
    var pipe: PipePool.Pipe? = nil
    var inPipe = 0
}

extension UVError {
    /// The read callback's code when the allocator handed libuv no buffer.
    static let noBufferSpace = UVError(UV_ENOBUFS.rawValue)
}
