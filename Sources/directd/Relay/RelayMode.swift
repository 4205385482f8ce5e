import CUV
import UVBind

/// How relayed bytes move (`relay-mode`).
enum RelayMode: String, CaseIterable, CustomStringConvertible, Sendable {
    /// splice(2) for bulk, copying for small messages (a round trip is faster
    /// copied), and copying where the kernel cannot splice (the default).
    case auto
    /// splice(2); a connection whose sockets the kernel cannot splice fails.
    case splice
    /// Through user-space buffers, as before splice existed.
    case copy

    var description: String { rawValue }

    /// What the start-up log and `directd check` say.
    var explanation: String {
        switch self {
        case .auto: "relay mode auto: bulk through splice(2) and pooled pipes, small messages copied; copying where the kernel cannot splice or descriptors are short"
        case .splice: "relay mode splice: splice(2) through pooled pipes (copying only where descriptors are short)"
        case .copy: "relay mode copy: through pooled user-space buffers"
        }
    }
}

/// Makes a relayed session's two directions: splicing ones when the mode and
/// the descriptor budget allow, copying ones otherwise. The session asks once,
/// when its upstream has connected; echo always copies (its one socket is
/// both source and sink, and an echo is about round trips, not volume).
final class RelayStrategy {
    let mode: RelayMode
    let pipes: PipePool
    init(mode: RelayMode, pipes: PipePool) {
        self.mode = mode
        self.pipes = pipes
    }

    /// The two directions of a relayed session. A spliced connection holds no
    /// more descriptors than a copying one until bytes flow; its pipes (and a
    /// duplicate of a full sink) are taken from the pool as they are needed,
    /// and a direction that cannot have them copies instead.
    ///
    func directions(for session: Session, client: UnsafeMutablePointer<uv_stream_t>,
                    upstream: UnsafeMutablePointer<uv_stream_t>) -> [any RelayDirection] {
        if mode != .copy,
           let toUpstream = SpliceDirection(session: session, source: client, sink: upstream, pipes: pipes, mode: mode),
           let toClient = SpliceDirection(session: session, source: upstream, sink: client, pipes: pipes, mode: mode) {
            return [toUpstream, toClient]
        }
        return [CopyDirection(session: session, source: client, sink: upstream),
                CopyDirection(session: session, source: upstream, sink: client)]
    }

    /// The directions of a session an upgrade handed over, from where each
    /// stood (`states`, client to upstream first), each on its own: one with
    /// bytes libuv had queued copies (they go out through libuv's queue
    /// first); one with bytes in a pipe splices, whatever the mode, to drain
    /// it first; the others as the mode says. Nil when the pool has no room
    /// for the queued bytes.
    func directions(for session: Session, client: UnsafeMutablePointer<uv_stream_t>,
                    upstream: UnsafeMutablePointer<uv_stream_t>, states: [DirectionState]) -> [any RelayDirection]? {
        var directions: [any RelayDirection] = []
        for ((source, sink), state) in zip([(client, upstream), (upstream, client)], states) {
            if state.unsent.isEmpty, mode != .copy || state.pipe != nil,
               let splicing = SpliceDirection(session: session, source: source, sink: sink, pipes: pipes,
                                              mode: mode == .copy ? .auto : mode, state: state) {
                directions.append(splicing)
            } else if state.pipe == nil,
                      let copying = CopyDirection(session: session, source: source, sink: sink, handedOver: state) {
                directions.append(copying)
            } else {
                directions.forEach { $0.stop() }
                return nil
            }
        }
        return directions
    }
}
