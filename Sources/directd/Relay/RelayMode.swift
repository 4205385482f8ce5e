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
    /// `states`: where a session an upgrade handed over stood (client to
    /// upstream first); its directions continue from there. A handed-over pipe
    /// with bytes is drained by splicing, whatever the mode (copy mode then
    /// splices that session on, as auto would).
    func directions(for session: Session, client: UnsafeMutablePointer<uv_stream_t>,
                    upstream: UnsafeMutablePointer<uv_stream_t>,
                    states: [DirectionState] = [DirectionState(), DirectionState()]) -> [any RelayDirection] {
        let handedPipe = states.contains { $0.pipe != nil }
        if mode != .copy || handedPipe,
           let toUpstream = SpliceDirection(session: session, source: client, sink: upstream, pipes: pipes,
                                            mode: mode == .copy ? .auto : mode, state: states[0]),
           let toClient = SpliceDirection(session: session, source: upstream, sink: client, pipes: pipes,
                                          mode: mode == .copy ? .auto : mode, state: states[1]) {
            return [toUpstream, toClient]
        }
        return [CopyDirection(session: session, source: client, sink: upstream,
                              alreadyMoved: states[0].moved, finished: states[0].finished),
                CopyDirection(session: session, source: upstream, sink: client,
                              alreadyMoved: states[1].moved, finished: states[1].finished)]
    }
}
